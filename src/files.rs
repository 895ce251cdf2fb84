//! Small file-system steps shared by the commands that write directories of
//! their own (backup, restore, export, import): a target directory that must
//! be new or empty, and a file written whole or not at all; and the disk a
//! directory takes. It owns no format; it never writes to the store.

use anyhow::{bail, Context};
use std::io::Write;
use std::path::Path;

/// Creates `dir` if needed; refuses one that holds anything. `what` names
/// what goes there ("a backup", "an export") in the message.
pub(crate) fn new_dir(dir: &Path, what: &str) -> anyhow::Result<()> {
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty: {what} goes into a new (or empty) directory",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// Refuses a `target` directory inside `data_dir` (or equal to it): what a
/// command writes there would land in the live store's own directories (a
/// backup under `store/keyspaces` made the next start panic). Both are
/// compared as the file system resolves them (symbolic links, `..`), the
/// target by its nearest existing ancestor.
pub(crate) fn outside_data_dir(target: &Path, data_dir: &Path, what: &str) -> anyhow::Result<()> {
    let resolve = |p: &Path| -> std::path::PathBuf {
        let mut existing = p;
        let mut rest = Vec::new();
        while !existing.exists() {
            match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_owned());
                    existing = parent;
                }
                _ => break,
            }
        }
        let mut resolved = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_owned());
        for name in rest.iter().rev() {
            resolved.push(name);
        }
        resolved
    };
    let (target_r, data_r) = (resolve(target), resolve(data_dir));
    if target_r.starts_with(&data_r) {
        bail!(
            "{} is inside the server's data dir {}: {what} goes outside it (another volume, \
             ideally)",
            target.display(),
            data_dir.display()
        );
    }
    Ok(())
}

/// Runs `fill` on `dir`, which must be new or empty ([`new_dir`]). If it
/// fails, everything in `dir` is removed again (and `dir` itself if it was
/// new), so a failed restore or import leaves the directory as it found it
/// and can simply be retried. `fill` must close what it opened there (a
/// store) before it returns.
pub(crate) fn fill_new_dir<T>(
    dir: &Path,
    what: &str,
    fill: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let existed = dir.exists();
    new_dir(dir, what)?;
    let filled = fill();
    if filled.is_err() {
        let cleaned = if existed {
            std::fs::read_dir(dir).and_then(|entries| {
                entries.into_iter().try_for_each(|e| {
                    let path = e?.path();
                    if path.is_dir() {
                        std::fs::remove_dir_all(path)
                    } else {
                        std::fs::remove_file(path)
                    }
                })
            })
        } else {
            std::fs::remove_dir_all(dir)
        };
        if let Err(e) = cleaned {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove what the failed {what} wrote");
        }
    }
    filled
}

/// Writes `bytes` to `path` through a synced temporary file renamed over it,
/// then syncs the directory: after a crash the file is whole or absent.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The disk usage (allocated blocks) of every file under `dir`; what cannot
/// be read (a file removed meanwhile) counts as nothing.
pub(crate) fn disk_bytes_under(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}
