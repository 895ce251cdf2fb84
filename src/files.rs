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
