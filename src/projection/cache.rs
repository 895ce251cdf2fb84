//! The on-disk cache of compiled projectors: a component compiled once by this
//! engine is stored as `<component sha256>-<engine compatibility>.cwasm` and a
//! restart deserializes it instead of compiling again. Each file ends with the
//! SHA-256 of the component's digest and the compiled bytes before it (and a
//! marker): a file changed in place (bit rot, a partial overwrite), or one
//! compiled from another component and renamed or copied under this one's
//! name, is recompiled, never run — wasmtime checks the header and the
//! engine, not the code and data, and not which component they came from.
//! (The checksum is no defence against someone who can write the directory
//! on purpose: a file there is native code the server runs, so the
//! directory must be writable by the server and those it trusts only.) It owns that directory's
//! naming, atomic writes and pruning (a file's modification time is when it
//! was last used: a hit sets it, [`prune`] deletes files unused for longer
//! than the server keeps them). It must never deserialize a file it did not write
//! itself under its own naming scheme (deserializing compiled code is `unsafe`:
//! it is trusted native code), never delete a file not named by that scheme,
//! and a cache problem must never stop a load: it only costs a recompilation.

use crate::digest::Sha256;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Ends every file this cache writes: after the compiled bytes and their
/// SHA-256.
/// (Version 1 hashed the compiled bytes alone: such files are recompiled.)
const TRAILER_MARK: &[u8; 8] = b"lev-sha\x02";
const TRAILER_LEN: usize = 32 + TRAILER_MARK.len();

/// The checksum in the trailer of `compiled`, the compiled form of component
/// `digest`.
fn checksum(digest: &Sha256, compiled: &[u8]) -> Sha256 {
    Sha256::of_parts(&[&digest.0, compiled])
}

/// The compiled bytes of a cache file of component `digest`, if its trailer
/// is there and they hash to it with that digest.
fn checked<'a>(file: &'a [u8], digest: &Sha256) -> Result<&'a [u8], &'static str> {
    let Some(split) = file.len().checked_sub(TRAILER_LEN) else {
        return Err("shorter than its checksum trailer");
    };
    let (compiled, trailer) = file.split_at(split);
    let (sum, mark) = trailer.split_at(32);
    if mark != TRAILER_MARK {
        return Err("no checksum trailer (written by an older server, or not by this cache)");
    }
    if checksum(digest, compiled).0 != sum {
        return Err(
            "its bytes do not hash to its checksum (changed in place, or compiled from another \
             component)",
        );
    }
    Ok(compiled)
}

/// Where a component's compiled form came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Read back from the cache.
    Cache,
    /// Compiled now (and written to the cache when there is one).
    Compiled,
}

pub(crate) struct CompiledCache {
    dir: PathBuf,
    /// Hex of a SHA-256 over wasmtime's compatibility hash of the engine: any
    /// setting or version that changes the compiled form changes it.
    engine_key: String,
}

impl CompiledCache {
    /// Opens (creating if needed) the cache directory. `None` if it cannot be
    /// created: the set then loads without a cache.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> Option<Self> {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "projector cache directory unusable; compiling without cache");
            return None;
        }
        Some(CompiledCache {
            dir: dir.to_owned(),
            engine_key: engine_key(engine),
        })
    }

    /// The file the compiled form of component `digest` lives in.
    pub(crate) fn path_for(&self, digest: &Sha256) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", digest.to_hex(), self.engine_key))
    }

    /// The component for `bytes` (whose digest is `digest`), from the cache if
    /// it is there, else compiled and written to the cache.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &Sha256,
    ) -> wasmtime::Result<(Component, Origin)> {
        let path = self.path_for(digest);
        // Read into memory rather than `Component::deserialize_file`: that
        // one maps the file, and a file truncated or rewritten in place while
        // mapped (by an operator, a backup tool, a second Leviathan) kills the
        // process with SIGBUS. The copy costs well under a millisecond.
        if let Ok(file) = std::fs::read(&path) {
            let loaded = checked(&file, digest)
                .map_err(wasmtime::Error::msg)
                .and_then(|compiled| {
                    // SAFETY: the file is named by this cache's scheme in this
                    // cache's directory, which only `write_atomically` below
                    // writes (complete files only, via rename), and its bytes hash
                    // to the checksum written with them for this component. wasmtime checks the engine
                    // compatibility header itself and refuses a mismatch. (The
                    // crate denies `unsafe_code`; this is one of its documented
                    // exceptions.)
                    #[allow(unsafe_code)]
                    unsafe {
                        Component::deserialize(engine, compiled)
                    }
                });
            match loaded {
                Ok(c) => {
                    tracing::debug!(path = %path.display(), "projector loaded from compiled cache");
                    mark_used(&path);
                    return Ok((c, Origin::Cache));
                }
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %format!("{e:#}"),
                    "compiled projector in cache is unusable; recompiling"
                ),
            }
        }
        let component = Component::new(engine, bytes)?;
        match component.serialize() {
            Ok(mut compiled) => {
                let sum = checksum(digest, &compiled);
                compiled.extend_from_slice(&sum.0);
                compiled.extend_from_slice(TRAILER_MARK);
                if let Err(e) = write_atomically(&path, &compiled) {
                    tracing::warn!(path = %path.display(), error = %e, "could not write compiled projector to cache");
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not serialize compiled projector")
            }
        }
        Ok((component, Origin::Compiled))
    }
}

/// Sets the file's modification time to now: [`prune`] keeps what was used
/// recently. Best effort (a read-only cache still loads).
fn mark_used(path: &Path) {
    let touched = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = touched {
        tracing::debug!(path = %path.display(), error = %e, "could not mark the compiled projector as used");
    }
}

/// What [`prune`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Compiled projectors deleted (unused for longer than kept).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Temporary files a crash left mid-write, deleted.
    pub leftovers: u64,
}

/// A temporary file of [`write_atomically`] older than this was left by a
/// process that stopped mid-write (a write takes well under a minute).
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

/// Deletes from the cache directory `dir` the compiled projectors (files named
/// `<64 hex>-<32 hex>.cwasm`) not used for longer than `keep`, and the
/// temporary files of writes that never finished. Files named otherwise are
/// never touched. A file in use by any process is safe to delete (loads read it
/// whole into memory); the cost of deleting one still wanted is one
/// recompilation. Per-file failures are logged and skipped.
pub fn prune(dir: &Path, keep: Duration) -> std::io::Result<Pruned> {
    let now = SystemTime::now();
    let mut pruned = Pruned::default();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let (age_limit, compiled) = if is_compiled_name(name) {
            (keep, true)
        } else if is_leftover_name(name) {
            (LEFTOVER_AGE, false)
        } else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let unused_for = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or(Duration::ZERO);
        if unused_for <= age_limit {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) if compiled => {
                pruned.files += 1;
                pruned.bytes += meta.len();
                tracing::debug!(path = %path.display(), unused_days = unused_for.as_secs() / 86_400, "pruned a compiled projector");
            }
            Ok(()) => pruned.leftovers += 1,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not prune from the projector cache")
            }
        }
    }
    Ok(pruned)
}

/// `<component sha256 hex>-<engine key hex>.cwasm`, as [`CompiledCache::path_for`] names.
fn is_compiled_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    name.strip_suffix(".cwasm")
        .and_then(|stem| stem.split_once('-'))
        .is_some_and(|(component, engine)| hex(component, 64) && hex(engine, 32))
}

/// `.<compiled name>.tmp-<pid>-<n>`, as [`write_atomically`] names.
fn is_leftover_name(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|rest| rest.split_once(".tmp-"))
        .is_some_and(|(file, suffix)| {
            is_compiled_name(file)
                && suffix.split_once('-').is_some_and(|(pid, n)| {
                    !pid.is_empty()
                        && !n.is_empty()
                        && pid.bytes().chain(n.bytes()).all(|b| b.is_ascii_digit())
                })
        })
}

/// Writes `bytes` to a temporary file next to `path`, syncs it, then renames it
/// over `path`: readers see either no file or a complete one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A `Hasher` that feeds SHA-256, so wasmtime's `impl Hash` compatibility
/// value gives a key that is stable across processes (std's `DefaultHasher`
/// is not promised to be).
struct Sha256Hasher(sha2::Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Not used: the full digest is taken in `engine_key`.
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }
}

fn engine_key(engine: &Engine) -> String {
    let mut h = Sha256Hasher(<sha2::Sha256 as sha2::Digest>::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    let digest: [u8; 32] = sha2::Digest::finalize(h.0).into();
    hex::encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPONENT: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const ENGINE: &str = "fedcba9876543210fedcba9876543210";

    fn file(dir: &Path, name: &str, unused_for: Duration) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, b"compiled").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - unused_for).unwrap();
        path
    }

    #[test]
    fn only_this_caches_names_are_recognised() {
        let compiled = format!("{COMPONENT}-{ENGINE}.cwasm");
        assert!(is_compiled_name(&compiled));
        for other in [
            format!("{COMPONENT}-{ENGINE}.wasm"),
            format!("{COMPONENT}-{ENGINE}x.cwasm"),
            format!("{}-{ENGINE}.cwasm", &COMPONENT[1..]),
            format!("{}-{ENGINE}.cwasm", COMPONENT.to_uppercase()),
            format!("{COMPONENT}{ENGINE}.cwasm"),
            "notes.txt".into(),
        ] {
            assert!(!is_compiled_name(&other), "{other}");
        }
        assert!(is_leftover_name(&format!(".{compiled}.tmp-4242-7")));
        for other in [
            format!(".{compiled}.tmp-4242"),
            format!(".{compiled}.tmp-42x-7"),
            format!("{compiled}.tmp-4242-7"),
            ".bashrc.tmp-1-2".into(),
        ] {
            assert!(!is_leftover_name(&other), "{other}");
        }
    }

    #[test]
    fn prune_deletes_old_compiled_files_and_leftovers_only() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86_400);
        let compiled = format!("{COMPONENT}-{ENGINE}.cwasm");
        let other_engine = format!("{COMPONENT}-{}.cwasm", "0".repeat(32));
        let recent = file(dir.path(), &compiled, day);
        let old = file(dir.path(), &other_engine, 40 * day);
        let old_leftover = file(
            dir.path(),
            &format!(".{compiled}.tmp-1-0"),
            2 * LEFTOVER_AGE,
        );
        let fresh_leftover = file(dir.path(), &format!(".{compiled}.tmp-1-1"), Duration::ZERO);
        let foreign = file(dir.path(), "operator-notes.cwasm", 400 * day);
        std::fs::create_dir(
            dir.path()
                .join(format!("{}-{ENGINE}.cwasm", "1".repeat(64))),
        )
        .unwrap();

        let pruned = prune(dir.path(), 30 * day).unwrap();
        assert_eq!(
            pruned,
            Pruned {
                files: 1,
                bytes: 8,
                leftovers: 1
            }
        );
        assert!(recent.exists() && fresh_leftover.exists() && foreign.exists());
        assert!(!old.exists() && !old_leftover.exists());
        // Nothing left to do a second time.
        assert_eq!(prune(dir.path(), 30 * day).unwrap(), Pruned::default());
        assert!(prune(&dir.path().join("missing"), day).is_err());
    }

    /// A file changed in place that wasmtime would still load (one byte of
    /// its code or data flipped, or the trailer missing) is recompiled and
    /// rewritten, never run.
    #[test]
    fn a_file_changed_in_place_is_recompiled_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompiledCache::open(dir.path(), &engine).unwrap();
        let bytes =
            wat::parse_bytes(br#"(component (core module (func (export "f") nop)))"#).unwrap();
        let digest = Sha256::of(&bytes);
        let (_, origin) = cache.load_or_compile(&engine, &bytes, &digest).unwrap();
        assert_eq!(origin, Origin::Compiled);
        let path = cache.path_for(&digest);
        let good = std::fs::read(&path).unwrap();
        let compiled = &good[..good.len() - TRAILER_LEN];
        // wasmtime itself accepts the compiled bytes with a byte flipped in
        // the middle: only the checksum tells.
        let mut flipped = good.clone();
        flipped[compiled.len() / 2] ^= 0x01;
        #[allow(unsafe_code)]
        let accepted =
            unsafe { Component::deserialize(&engine, &flipped[..compiled.len()]).is_ok() };
        let no_trailer = compiled.to_vec();
        for (case, file) in [("flipped", flipped), ("no trailer", no_trailer)] {
            std::fs::write(&path, &file).unwrap();
            let (_, origin) = cache.load_or_compile(&engine, &bytes, &digest).unwrap();
            assert_eq!(origin, Origin::Compiled, "{case}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                good,
                "{case}: rewritten whole"
            );
            let (_, origin) = cache.load_or_compile(&engine, &bytes, &digest).unwrap();
            assert_eq!(origin, Origin::Cache, "{case}");
        }
        assert!(accepted, "the flip is one wasmtime would have run");
    }

    /// A valid compiled file of another component, copied or renamed under
    /// this one's name (with its own trailer), is recompiled, never run: the
    /// component's pin must hold whatever the cache holds.
    #[test]
    fn another_components_file_under_this_ones_name_is_recompiled_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompiledCache::open(dir.path(), &engine).unwrap();
        let pinned =
            wat::parse_bytes(br#"(component (core module (func (export "f") nop)))"#).unwrap();
        let other =
            wat::parse_bytes(br#"(component (core module (func (export "f") unreachable)))"#)
                .unwrap();
        let (pinned_digest, other_digest) = (Sha256::of(&pinned), Sha256::of(&other));
        for (bytes, digest) in [(&pinned, &pinned_digest), (&other, &other_digest)] {
            let (_, origin) = cache.load_or_compile(&engine, bytes, digest).unwrap();
            assert_eq!(origin, Origin::Compiled);
        }
        let good = std::fs::read(cache.path_for(&pinned_digest)).unwrap();
        let foreign = std::fs::read(cache.path_for(&other_digest)).unwrap();
        assert_ne!(good, foreign);
        std::fs::write(cache.path_for(&pinned_digest), &foreign).unwrap();
        let (_, origin) = cache
            .load_or_compile(&engine, &pinned, &pinned_digest)
            .unwrap();
        assert_eq!(origin, Origin::Compiled);
        assert_eq!(std::fs::read(cache.path_for(&pinned_digest)).unwrap(), good);
    }

    #[test]
    fn a_cache_hit_marks_the_file_used() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompiledCache::open(dir.path(), &engine).unwrap();
        let wat = br#"(component (core module (func)))"#;
        let bytes = wat::parse_bytes(wat).unwrap();
        let digest = Sha256::of(&bytes);
        let (_, origin) = cache.load_or_compile(&engine, &bytes, &digest).unwrap();
        assert_eq!(origin, Origin::Compiled);
        let path = cache.path_for(&digest);
        let long_ago = SystemTime::now() - Duration::from_secs(90 * 86_400);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let (_, origin) = cache.load_or_compile(&engine, &bytes, &digest).unwrap();
        assert_eq!(origin, Origin::Cache);
        let used = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(
            used > SystemTime::now() - Duration::from_secs(3600),
            "{used:?}"
        );
        assert_eq!(
            prune(dir.path(), Duration::from_secs(86_400)).unwrap(),
            Pruned::default()
        );
        assert!(path.exists());
    }
}
