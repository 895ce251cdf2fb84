//! `artifacts put FILE` and `artifacts get SHA256 [-o FILE]`. `put` hashes the
//! file first, then streams it to `PUT /v1/artifacts/{sha256}` (the server checks
//! the digest again); `--dry-run` prints the digest and size and only asks the
//! server (HEAD) whether it already has them. `get` streams the body, hashing as
//! it writes; with `-o` it writes a temporary file next to the target and renames
//! it only when the digest matches, deleting it otherwise.

use super::client::Client;
use super::error::CtlError;
use super::output::{bytes, Out, Style};
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const BUF: usize = 256 * 1024;

/// Reads `r` to the end in chunks, feeding each chunk to `sink`; returns the
/// SHA-256 (hex) and size of what was read. `on_error` turns a read error
/// (after `size` bytes) into the command's error.
fn copy_hashing(
    mut r: impl Read,
    mut sink: impl FnMut(&[u8]) -> Result<(), CtlError>,
    on_error: impl Fn(u64, std::io::Error) -> CtlError,
) -> Result<(String, u64), CtlError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut size = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(on_error(size, e)),
        };
        h.update(&buf[..n]);
        sink(&buf[..n])?;
        size += n as u64;
    }
    Ok((hex::encode(h.finalize()), size))
}

/// SHA-256 (hex) and size of a file.
fn hash_file(path: &Path) -> Result<(String, u64), CtlError> {
    let ctx = || format!("reading {}", path.display());
    let f = File::open(path).map_err(|e| CtlError::local(ctx(), e))?;
    copy_hashing(f, |_| Ok(()), |_, e| CtlError::local(ctx(), e))
}

pub fn put(
    c: &Client,
    out: &mut Out,
    json: bool,
    file: &Path,
    dry_run: bool,
) -> Result<(), CtlError> {
    if file.is_dir() {
        return Err(CtlError::Usage(format!(
            "{} is a directory, not a file",
            file.display()
        )));
    }
    let (sha, size) = hash_file(file)?;
    let url = c.endpoint(&["v1", "artifacts", &sha], &[]);
    if dry_run {
        // `Err`: whether the server has it is unknown, and why. The upload
        // needs `ingest`, the HEAD `read`: an ingest-only token can still
        // learn what it would upload.
        let stored: Result<bool, String> = match c.send(c.request(Method::HEAD, url, true)) {
            Ok(_) => Ok(true),
            Err(CtlError::Refused(r)) if r.status == 404 => Ok(false),
            Err(CtlError::Refused(r)) if r.status == 403 => Err(format!(
                "the token lacks the `read` role that {} {} needs (403); the upload itself \
                 needs `ingest`",
                r.method, r.path
            )),
            Err(e) => return Err(e),
        };
        if json {
            // No server answer to pass on: this object is leviathanctl's own.
            let v = match &stored {
                Ok(stored) => {
                    json!({"dry_run": true, "sha256": sha, "size": size, "stored": stored})
                }
                Err(why) => json!({"dry_run": true, "sha256": sha, "size": size,
                                   "stored": null, "stored_unknown": why}),
            };
            return out.line(&v.to_string());
        }
        let state = match &stored {
            Ok(true) => "the server already has it".to_string(),
            Ok(false) => "the server does not have it yet".to_string(),
            Err(why) => format!("whether the server already has it is unknown: {why}"),
        };
        return out.text(&format!(
            "dry run: would upload {}\n  sha256 {sha}\n  size   {}\n  {state}; nothing was uploaded\n",
            file.display(),
            bytes(size)
        ));
    }
    let f =
        File::open(file).map_err(|e| CtlError::local(format!("opening {}", file.display()), e))?;
    let req = c
        .request(Method::PUT, url.clone(), false)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::blocking::Body::sized(f, size));
    let r = c.json(req, &format!("PUT {}", url.path()))?;
    if json {
        return out.raw(&r.raw);
    }
    let created = r.parse::<crate::wire::Stored>()?.created;
    let verb = if created {
        out.paint(Style::Green, "stored")
    } else {
        "already stored (unchanged):".to_string()
    };
    out.line(&format!(
        "{verb} {} as sha256 {sha} ({})",
        file.display(),
        bytes(size)
    ))
}

/// Removes a temporary file unless it was kept.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Copies the body to `sink`, hashing it; returns (hex digest, size).
fn stream(
    c: &Client,
    resp: &mut reqwest::blocking::Response,
    sink: impl FnMut(&[u8]) -> Result<(), CtlError>,
) -> Result<(String, u64), CtlError> {
    copy_hashing(resp, sink, |size, e| CtlError::Unreachable {
        url: c.url().clone(),
        cause: format!("the download was cut off after {size} bytes: {e}"),
        hint: String::new(),
    })
}

fn mismatch(expected: &str, actual: &str, size: u64, what: &str) -> CtlError {
    CtlError::Failed(format!(
        "the download does not verify: asked for sha256 {expected}, received {size} bytes \
         hashing to {actual}; {what}"
    ))
}

pub fn get(
    c: &Client,
    out: &mut Out,
    json: bool,
    sha: &str,
    output: Option<&Path>,
) -> Result<(), CtlError> {
    let Some(path) = output else {
        if json {
            return Err(CtlError::Usage(
                "--json describes the written file: give -o FILE (without -o the artifact's bytes are the output)".into(),
            ));
        }
        if out.is_terminal() {
            return Err(CtlError::Usage(
                "refusing to write an artifact to a terminal: give -o FILE or redirect stdout"
                    .into(),
            ));
        }
        let url = c.endpoint(&["v1", "artifacts", sha], &[]);
        let mut resp = c.send(c.request(Method::GET, url, false))?;
        let (actual, size) = stream(c, &mut resp, |b| out.bytes(b))?;
        if actual != sha {
            return Err(mismatch(
                sha,
                &actual,
                size,
                "discard what was written to stdout",
            ));
        }
        return Ok(());
    };
    let name = path
        .file_name()
        .ok_or_else(|| CtlError::Usage(format!("-o {}: not a file name", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if path.is_dir() {
        return Err(CtlError::Usage(format!(
            "-o {}: is a directory",
            path.display()
        )));
    }
    // Ask first, so that a 404 leaves no file behind.
    let url = c.endpoint(&["v1", "artifacts", sha], &[]);
    let mut resp = c.send(c.request(Method::GET, url, false))?;
    let tmp_path = dir.join(format!(
        ".{}.{}.leviathanctl-part",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp_path)
        .map_err(|e| CtlError::local(format!("creating {}", tmp_path.display()), e))?;
    let mut tmp = TempFile(Some(tmp_path.clone()));
    let write_ctx = || format!("writing {}", tmp_path.display());
    let (actual, size) = stream(c, &mut resp, |b| {
        file.write_all(b)
            .map_err(|e| CtlError::local(write_ctx(), e))
    })?;
    if actual != sha {
        return Err(mismatch(
            sha,
            &actual,
            size,
            &format!("{} was not written", path.display()),
        ));
    }
    file.sync_all()
        .map_err(|e| CtlError::local(write_ctx(), e))?;
    drop(file);
    std::fs::rename(&tmp_path, path).map_err(|e| {
        CtlError::local(
            format!("renaming {} to {}", tmp_path.display(), path.display()),
            e,
        )
    })?;
    tmp.0 = None;
    if json {
        let v = json!({"sha256": sha, "size": size, "path": path.display().to_string(), "verified": true});
        return out.line(&v.to_string());
    }
    out.line(&format!(
        "{} {} ({}; sha256 verified)",
        out.paint(Style::Green, "wrote"),
        path.display(),
        bytes(size)
    ))
}
