//! The `leviathan` binary's settings as an operator meets them before anything
//! starts: `--help` never shows a secret taken from the environment, and an
//! invalid value is a usage error (exit 2), named with its flag.

use crate::common::{self, TOKEN};

/// `leviathan <args>` with `env` set; returns (exit code, stdout, stderr).
fn leviathan(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = common::leviathan();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run leviathan");
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_never_prints_a_secret_from_the_environment() {
    const SECRET: &str = "PGSEKRIT";
    let url = format!("postgres://u:{SECRET}@h/db");
    let (code, out, err) = leviathan(
        &["export", "--help"],
        &[("LEVIATHAN_POSTGRES_URL", url.as_str())],
    );
    assert_eq!(code, 0, "{err}");
    // The variable is still named, its value is not shown.
    assert!(out.contains("LEVIATHAN_POSTGRES_URL"), "{out}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET), "{out}{err}");
    // The same for the tokens of the commands that take one from the environment.
    for args in [&["bench", "--help"][..], &["audit", "bundle", "--help"][..]] {
        let (code, out, err) = leviathan(
            args,
            &[
                ("LEVIATHAN_CONTROL_PLANE_TOKEN", SECRET),
                ("LEVIATHAN_METRICS_TOKEN", SECRET),
            ],
        );
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(!out.contains(SECRET), "{args:?}: {out}");
    }
    let out = std::process::Command::new(crate::ctl::BIN)
        .arg("--help")
        .env_clear()
        .env("LEVIATHAN_CONTROL_PLANE_TOKEN", SECRET)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains(SECRET), "{text}");
}

#[test]
fn a_bad_cache_size_is_a_usage_error() {
    for bad in ["0", "65537", "lots"] {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_str().unwrap();
        let (code, _, err) = leviathan(
            &[
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--data-dir",
                data_dir,
            ],
            &[
                ("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN),
                ("LEVIATHAN_CACHE_MB", bad),
            ],
        );
        // Exit 2, as for every invalid value (docs/RUNBOOK.md, "Errors at
        // start"), before anything is opened.
        assert_eq!(code, 2, "LEVIATHAN_CACHE_MB={bad}: {err}");
        assert!(err.contains("--cache-mb"), "{err}");
    }
}

#[test]
fn a_bad_allowed_hosts_list_is_refused_at_start_with_the_entry() {
    for (bad, says) in [
        ("leviathan.example.com:8000", "without a scheme or port"),
        ("*,leviathan.example.com", "cannot be combined"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_str().unwrap();
        let (code, _, err) = leviathan(
            &["serve", "--port", "0", "--data-dir", data_dir],
            &[
                ("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN),
                ("LEVIATHAN_ALLOWED_HOSTS", bad),
            ],
        );
        assert_eq!(code, 1, "LEVIATHAN_ALLOWED_HOSTS={bad}: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: LEVIATHAN_ALLOWED_HOSTS: ") && last.contains(says),
            "{err}"
        );
        // Refused before the store is opened.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{err}");
    }
}
