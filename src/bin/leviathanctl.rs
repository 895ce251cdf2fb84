//! `leviathanctl`: the operator CLI for a running Leviathan control plane
//! (docs/CLI.md). All of it lives in `leviathan::ctl`.

fn main() -> std::process::ExitCode {
    leviathan::ctl::main()
}
