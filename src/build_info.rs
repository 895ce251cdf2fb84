//! Which build this is: the crate's version and the source revision that
//! `build.rs` recorded (`git rev-parse --short=12 HEAD`, `-modified` when
//! tracked files differed, `LEVIATHAN_BUILD_REVISION` when the build set it,
//! else `unknown`). Shown by `--version`, the start-up log line and the
//! `leviathan_build_info` metric. Owns no state and never reads the store.

/// The crate's version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The source revision the binary was built from.
pub const REVISION: &str = env!("LEVIATHAN_BUILD_REVISION");

/// `--version`'s text after the program's name: `0.1.0 (revision 0123456789ab)`.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("LEVIATHAN_BUILD_REVISION"),
    ")"
);

/// The `leviathan_build_info` gauge's sample, for the exposition written by
/// hand while the server starts (the registry's is the same series).
pub fn metric_text() -> String {
    format!(
        "# HELP leviathan_build_info The running binary's version and source revision (always 1)\n\
         # TYPE leviathan_build_info gauge\n\
         leviathan_build_info{{version=\"{VERSION}\",revision=\"{REVISION}\"}} 1\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_revision_is_a_label_value_that_needs_no_escaping() {
        assert!(!REVISION.is_empty());
        assert!(REVISION
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'));
        assert!(VERSION_LINE.starts_with(VERSION));
        assert!(VERSION_LINE.contains(REVISION));
    }
}
