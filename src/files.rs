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
    // Component by component, as creating the path would resolve it: an
    // existing prefix through its symbolic links, a missing directory as
    // created (so `missing/..` is the directory before it).
    let resolve = |p: &Path| -> std::path::PathBuf {
        use std::path::Component;
        let mut cur = std::path::PathBuf::new();
        for c in p.components() {
            match c {
                Component::Prefix(_) | Component::RootDir => cur.push(c.as_os_str()),
                Component::CurDir => {}
                Component::ParentDir => {
                    cur.pop();
                }
                Component::Normal(name) => {
                    let next = cur.join(name);
                    cur = std::fs::canonicalize(&next).unwrap_or(next);
                }
            }
        }
        cur
    };
    let (target_r, data_r) = (resolve(target), resolve(data_dir));
    if target_r.starts_with(&data_r) || under_same_inode(target, data_dir) {
        bail!(
            "{} is inside the server's data dir {}: {what} goes outside it (another volume, \
             ideally)",
            target.display(),
            data_dir.display()
        );
    }
    Ok(())
}

/// Whether an existing ancestor of `target` (itself included) is the
/// directory `dir` by device and inode: the data dir seen through a bind
/// mount, which no path comparison sees.
fn under_same_inode(target: &Path, dir: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(d) = std::fs::metadata(dir) else {
            return false;
        };
        target
            .ancestors()
            .filter_map(|a| std::fs::metadata(a).ok())
            .any(|m| m.dev() == d.dev() && m.ino() == d.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = (target, dir);
        false
    }
}

/// The file [`fill_new_dir`] keeps in a directory while it fills it: a
/// process killed meanwhile (`kill -9`, OOM, a power cut) cannot clean up,
/// and this file says the directory is partial. Stores holding it are
/// refused ([`refuse_unfinished`]).
pub const UNFINISHED: &str = "UNFINISHED";

/// Refuses `dir` when it holds the [`UNFINISHED`] mark: an import, restore,
/// export or backup into it was stopped before it finished, so it holds part
/// of what it should (a shorter log, missing artifacts) that would otherwise
/// verify and serve as if whole.
pub fn refuse_unfinished(dir: &Path) -> anyhow::Result<()> {
    let mark = dir.join(UNFINISHED);
    match std::fs::read_to_string(&mark) {
        Ok(text) => anyhow::bail!(
            "{} holds an unfinished {} ({} is there: the process was stopped before it \
             finished, so the directory holds only part of it). Remove the directory and run \
             the {} again",
            dir.display(),
            text.lines().next().unwrap_or("copy").trim(),
            mark.display(),
            text.lines().next().unwrap_or("copy").trim(),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", mark.display())),
    }
}

/// Runs `fill` on `dir`, which must be new or empty ([`new_dir`]). If it
/// fails, everything in `dir` is removed again (and `dir` itself if it was
/// new), so a failed restore or import leaves the directory as it found it
/// and can simply be retried. `fill` must close what it opened there (a
/// store) before it returns. While it runs, `dir` holds the [`UNFINISHED`]
/// mark, removed (durably) once `fill` has succeeded: a process killed
/// before leaves a directory every command refuses.
pub(crate) fn fill_new_dir<T>(
    dir: &Path,
    what: &str,
    fill: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    // The first of `dir` and its ancestors that does not exist yet: what a
    // failure removes (the parents `new_dir` created included).
    let created = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .last()
        .map(Path::to_path_buf);
    let existed = created.is_none();
    new_dir(dir, what)?;
    let mark = dir.join(UNFINISHED);
    // "a backup" → "backup": the mark names what, as a noun.
    let noun = what
        .strip_prefix("an ")
        .or_else(|| what.strip_prefix("a "))
        .unwrap_or(what);
    let filled = write_synced(
        &mark,
        format!(
            "{noun}\nleviathan wrote this file when it began; it removes it when the {noun} \
             has finished. Its presence means the process stopped before: the directory holds \
             only part of it. Remove the directory and run the {noun} again.\n"
        )
        .as_bytes(),
    )
    .and_then(|()| fill())
    .and_then(|done| {
        // Test suites only: die as a kill would, at the last moment.
        if std::env::var_os("LEVIATHAN_TEST_ABORT_BEFORE_FINISHING").is_some() {
            std::process::abort();
        }
        std::fs::remove_file(&mark)
            .and_then(|()| std::fs::File::open(dir)?.sync_all())
            .with_context(|| format!("cannot remove {}", mark.display()))?;
        Ok(done)
    });
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
            std::fs::remove_dir_all(created.as_deref().unwrap_or(dir))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_removes_the_parents_it_created_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a").join("b").join("bk");
        let r: anyhow::Result<()> = fill_new_dir(&dir, "a backup", || {
            std::fs::write(dir.join("part"), b"x")?;
            anyhow::bail!("the volume is full")
        });
        assert!(r.is_err());
        assert!(
            !root.path().join("a").exists(),
            "created parents left behind"
        );
        assert!(root.path().exists());
        // An existing parent stays.
        std::fs::create_dir(root.path().join("keep")).unwrap();
        let dir = root.path().join("keep").join("bk");
        let r: anyhow::Result<()> = fill_new_dir(&dir, "a backup", || anyhow::bail!("no"));
        assert!(r.is_err());
        assert!(root.path().join("keep").exists() && !dir.exists());
    }

    #[test]
    fn a_target_inside_the_data_dir_is_refused_however_it_is_reached() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir_all(data.join("store")).unwrap();
        let outside = root.path().join("backups").join("b1");
        outside_data_dir(&outside, &data, "a backup").unwrap();
        for inside in [
            data.join("store").join("bk"),
            data.clone(),
            root.path().join("x").join("..").join("data").join("bk"),
        ] {
            let e = outside_data_dir(&inside, &data, "a backup").unwrap_err();
            assert!(
                e.to_string().contains("inside the server's data dir"),
                "{e}"
            );
        }
        #[cfg(unix)]
        {
            let link = root.path().join("link");
            std::os::unix::fs::symlink(&data, &link).unwrap();
            assert!(outside_data_dir(&link.join("bk"), &data, "a backup").is_err());
            // A bind mount of the data dir (when this process may mount).
            let view = root.path().join("view");
            std::fs::create_dir(&view).unwrap();
            let mounted = std::process::Command::new("mount")
                .arg("--bind")
                .arg(&data)
                .arg(&view)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if mounted {
                let refused = outside_data_dir(&view.join("bk"), &data, "a backup").is_err();
                let _ = std::process::Command::new("umount").arg(&view).status();
                assert!(
                    refused,
                    "a bind mount of the data dir was taken for outside it"
                );
            } else {
                eprintln!("SKIP the bind-mount case: mount --bind is not allowed here");
            }
        }
    }
}
