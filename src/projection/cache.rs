//! The on-disk cache of compiled projectors: a component compiled once by this
//! engine is stored as `<component sha256>-<engine compatibility>.cwasm` and a
//! restart deserializes it instead of compiling again. It owns that directory's
//! naming and atomic writes. It must never deserialize a file it did not write
//! itself under its own naming scheme (deserializing compiled code is `unsafe`:
//! it is trusted native code), and a cache problem must never stop a load: it
//! only costs a recompilation.

use crate::digest::Sha256;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::component::Component;
use wasmtime::Engine;

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
        if let Ok(compiled) = std::fs::read(&path) {
            // SAFETY: the file is named by this cache's scheme in this cache's
            // directory, which only `write_atomically` below writes (complete
            // files only, via rename). wasmtime checks the engine
            // compatibility header itself and refuses a mismatch. (The crate
            // denies `unsafe_code`; this is one of its documented exceptions.)
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize(engine, &compiled) };
            match loaded {
                Ok(c) => {
                    tracing::debug!(path = %path.display(), "projector loaded from compiled cache");
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
            Ok(compiled) => {
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
