//! Start-up refusals and defaults: one process per data dir, a token that is
//! required and not blank, and the compiled-projector cache under the data
//! dir by default, reused by the next start and pruned of what no start used
//! for `LEVIATHAN_PROJECTOR_CACHE_KEEP_DAYS`.

use crate::common::*;
use std::path::Path;

#[test]
fn a_second_process_on_the_same_data_dir_is_refused_naming_it() {
    let s = Server::start();
    let (st, _) = s.ingest(&bundle("b", events("x", 3)));
    assert_eq!(st, 200);
    let dir = s.data_dir.display().to_string();

    let err = refused(serve_command(&s.data_dir));
    assert!(
        err.contains(&format!("cannot open the store in {dir}"))
            && err.contains("another leviathan process"),
        "{err}"
    );
    // The offline commands too: none may touch a store a server is using.
    for cmd in [&["verify"][..], &["rebuild"], &["dump"]] {
        let (code, out, err) = admin_full(cmd, &s.data_dir);
        assert_eq!(code, 1, "{cmd:?}: {out}\n{err}");
        assert!(
            err.contains(&format!("cannot open the store in {dir}")),
            "{cmd:?}: {err}"
        );
    }
    // The running server is untouched.
    assert_eq!(s.get("/v1/log/verify").1["verified_events"], 3);
    assert_eq!(s.all_events().len(), 3);
}

/// The offline commands that read a store refuse a data dir that holds
/// none, and create nothing: an empty store would "verify" (ok, 0 events)
/// and hide a mistyped --data-dir.
#[test]
fn offline_commands_refuse_a_data_dir_without_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for target in [&missing, &empty] {
        for cmd in [&["verify"][..], &["rebuild"], &["dump"]] {
            let (code, out, err) = admin_full(cmd, target);
            assert_eq!(code, 1, "{cmd:?} {}: {out}\n{err}", target.display());
            assert!(err.contains("holds no Leviathan store"), "{cmd:?}: {err}");
        }
    }
    assert!(!missing.exists(), "nothing created");
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "nothing created"
    );
}

#[test]
fn an_empty_or_blank_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for token in ["", "   "] {
        let mut cmd = serve_command(dir.path());
        cmd.env("LEVIATHAN_CONTROL_PLANE_TOKEN", token);
        let err = refused(cmd);
        assert!(err.contains("no token is configured"), "{token:?}: {err}");
    }
    // Nothing was created: the refusal comes before the store is opened.
    assert!(!dir.path().join("store").exists());
}

#[test]
fn a_log_filter_that_would_log_nothing_is_refused_and_levels_take_any_case() {
    let dir = tempfile::tempdir().unwrap();
    // Read as target names, these turned every log line off, errors included.
    for filter in ["warning", "verbose", "info,leviathan=loud"] {
        let mut cmd = serve_command(dir.path());
        cmd.env("LEVIATHAN_LOG", filter);
        let err = refused(cmd);
        assert!(
            err.contains("LEVIATHAN_LOG") && err.contains("is not a level"),
            "{filter:?}: {err}"
        );
    }
    assert!(!dir.path().join("store").exists());
    // A level in capitals is a level: the server logs that it listens.
    let s = Server::start_with(&[("LEVIATHAN_LOG", "INFO,fjall=WARN")]);
    assert!(
        s.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("listening on")),
        "nothing logged at INFO"
    );
}

/// The cache's compiled files with their contents.
fn compiled_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

fn logged(s: &Server, needle: &str) -> bool {
    s.log.lock().unwrap().iter().any(|l| l.contains(needle))
}

#[test]
fn the_projector_cache_defaults_to_the_data_dir_and_is_reused() {
    let data = tempfile::tempdir().unwrap();
    let start = || {
        let mut cmd = serve_command(data.path());
        cmd.env_remove("LEVIATHAN_PROJECTOR_CACHE");
        Server::spawn(cmd, data.path())
    };
    let mut s = start();
    let cache = data.path().join("projector-cache");
    let first = compiled_files(&cache);
    assert_eq!(first.len(), 1, "the core projector, compiled: {first:?}");
    assert!(
        logged(&s, "from_cache=false"),
        "compiled on the first start: {:?}",
        s.log.lock().unwrap()
    );
    s.stop();

    let mut s = start();
    assert!(
        logged(&s, "from_cache=true"),
        "loaded from the cache on restart: {:?}",
        s.log.lock().unwrap()
    );
    assert_eq!(
        compiled_files(&cache),
        first,
        "the cached file is reused as is"
    );
    s.stop();

    // The offline rebuild uses the same default.
    let out = leviathan()
        .env_remove("LEVIATHAN_PROJECTOR_CACHE")
        .env("LEVIATHAN_LOG", "info")
        .args(["rebuild", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("from_cache=true"), "{err}");
    assert_eq!(compiled_files(&cache), first);
}

/// Sets a file's modification time `days` back: when the cache last used it.
fn unused_for_days(path: &Path, days: u64) {
    let when = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(when))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// Compiled projectors no start has used for `LEVIATHAN_PROJECTOR_CACHE_KEEP_DAYS`
/// (30 by default) are deleted at start, with the temporary files of writes a
/// crash cut short; what this start loaded is kept (a cache hit marks it used)
/// and so is anything the cache did not name. 0 turns pruning off.
#[test]
fn a_start_prunes_compiled_projectors_no_start_used_for_longer_than_kept() {
    let data = tempfile::tempdir().unwrap();
    let cache = data.path().join("projector-cache");
    let start = |keep_days: Option<&str>| {
        let mut cmd = serve_command(data.path());
        cmd.env_remove("LEVIATHAN_PROJECTOR_CACHE")
            .env_remove("LEVIATHAN_PROJECTOR_CACHE_KEEP_DAYS");
        if let Some(days) = keep_days {
            cmd.env("LEVIATHAN_PROJECTOR_CACHE_KEEP_DAYS", days);
        }
        Server::spawn(cmd, data.path())
    };
    start(None).stop();
    let files = compiled_files(&cache);
    assert_eq!(files.len(), 1, "{files:?}");
    let (live, live_bytes) = files[0].clone();

    // What an earlier server version or an old projector set left behind.
    let name = |component: char, engine: char| {
        format!(
            "{}-{}.cwasm",
            component.to_string().repeat(64),
            engine.to_string().repeat(32)
        )
    };
    let stale = cache.join(name('a', 'b'));
    let recent = cache.join(name('c', 'd'));
    let leftover = cache.join(format!(".{}.tmp-12345-0", name('a', 'b')));
    let foreign = cache.join("README.cwasm");
    for (path, days) in [(&stale, 31), (&recent, 29), (&leftover, 1), (&foreign, 365)] {
        std::fs::write(path, b"not compiled code").unwrap();
        unused_for_days(path, days);
    }
    unused_for_days(&live, 90);

    let mut s = start(Some("0"));
    assert!(!logged(&s, "pruned compiled projectors"));
    s.stop();
    for path in [&stale, &recent, &leftover, &foreign, &live] {
        assert!(path.exists(), "0 keeps everything: {}", path.display());
    }

    unused_for_days(&live, 90);
    let mut s = start(None);
    assert!(
        logged(&s, "from_cache=true"),
        "the live projector was still cached: {:?}",
        s.log.lock().unwrap()
    );
    assert!(
        logged(&s, "pruned compiled projectors") && logged(&s, "files=1"),
        "{:?}",
        s.log.lock().unwrap()
    );
    // The server still projects.
    let (st, _) = s.ingest(&bundle("b", events("x", 2)));
    assert_eq!(st, 200);
    s.stop();
    assert!(!stale.exists() && !leftover.exists(), "pruned");
    assert!(recent.exists() && foreign.exists(), "kept");
    assert_eq!(std::fs::read(&live).unwrap(), live_bytes, "kept as is");
    let used = modified(&live);
    assert!(
        used > std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
        "the live file is marked used: {used:?}"
    );

    // A shorter keep applies to what this start did not load.
    unused_for_days(&recent, 3);
    start(Some("2")).stop();
    assert!(!recent.exists() && live.exists() && foreign.exists());
}

/// A projector file is read with a cap: `/dev/zero`, a directory or a file
/// over `LEVIATHAN_MAX_PROJECTOR_BYTES` is refused at start with a message
/// naming it, before anything is read into memory.
#[test]
fn projector_files_are_capped_and_must_be_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    std::fs::write(&big, vec![0u8; 4096]).unwrap();
    // (file, LEVIATHAN_MAX_PROJECTOR_BYTES, what the refusal says)
    let cases = [
        (
            "/dev/zero",
            None,
            "is not a regular file (a device, pipe or socket)",
        ),
        ("/tmp", None, "is not a regular file (a directory)"),
        (
            big.to_str().unwrap(),
            Some("1000"),
            "is 4096 bytes, over the cap of 1000 bytes",
        ),
    ];
    for (path, cap, expected) in cases {
        let mut cmd = serve_command(&dir.path().join("data"));
        cmd.env("LEVIATHAN_PROJECTORS", format!("core,{path}"));
        if let Some(cap) = cap {
            cmd.env("LEVIATHAN_MAX_PROJECTOR_BYTES", cap);
        }
        let err = refused(cmd);
        assert!(
            err.contains(expected) && err.contains(path),
            "{path}: {err}"
        );
    }
}
