//! `leviathan audit …`: the auditor's commands. The checks run on files
//! only (a saved checkpoint, the verifier key, a proof or a bundle); `bundle`
//! makes a bundle from a stopped server's data dir or a running server's URL.

use super::audit::{self, Report};
use super::note::{NoteSigner, NoteVerifier};
use super::{AuditBundle, ConsistencyProof, InclusionProof, Transparency, Tree};
use anyhow::Context;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check an inclusion proof (GET /v1/events/{id}/proof) against a saved
    /// signed checkpoint and the log's verifier key. Exit 1 if it fails.
    CheckInclusion {
        /// The signed checkpoint (GET /v1/log/checkpoint), saved to a file.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The verifier key (`name+id+base64`), or a file holding it.
        #[arg(long)]
        public_key: String,
        /// The proof's JSON, saved to a file.
        #[arg(long)]
        proof: PathBuf,
        /// The stored record's exact bytes: the leaf hash is recomputed from them
        /// (otherwise the proof's leaf_hash is what is checked).
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Check that a newer checkpoint extends an older one with a consistency
    /// proof (GET /v1/log/consistency?from=OLD&to=NEW). Exit 1 if it fails.
    CheckConsistency {
        /// The older signed checkpoint (e.g. last month's).
        #[arg(long)]
        old: PathBuf,
        /// The newer signed checkpoint.
        #[arg(long)]
        new: PathBuf,
        /// The verifier key of the newer checkpoint (and of the older one,
        /// unless --old-public-key is given).
        #[arg(long)]
        public_key: String,
        /// The older checkpoint's verifier key, when the log's signing key
        /// changed between the two (GET /v1/log/signers lists the signers):
        /// a valid proof then shows the new key signs the same log.
        #[arg(long)]
        old_public_key: Option<String>,
        #[arg(long)]
        proof: PathBuf,
    },
    /// Write the audit bundle of one event (JSON): from a stopped server's data
    /// dir (--data-dir), or from a running server (--url, with
    /// LEVIATHAN_CONTROL_PLANE_TOKEN).
    Bundle {
        event_id: String,
        #[arg(long, env = "LEVIATHAN_DATA_DIR", conflicts_with = "url")]
        data_dir: Option<PathBuf>,
        /// The key that signs checkpoints (default: the data dir's).
        #[arg(long, env = "LEVIATHAN_SIGNING_KEY_FILE")]
        signing_key_file: Option<PathBuf>,
        /// A running server, e.g. http://127.0.0.1:8000.
        #[arg(long)]
        url: Option<String>,
        #[arg(long, env = "LEVIATHAN_CONTROL_PLANE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Where to write the bundle (default: stdout).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Check an audit bundle: the record, its hash, the inclusion proof, the
    /// checkpoint's signature and, with --artifacts, the artifact files
    /// (each named by its SHA-256 hex). Exit 1 if any check fails.
    VerifyBundle {
        file: PathBuf,
        #[arg(long)]
        public_key: String,
        #[arg(long)]
        artifacts: Option<PathBuf>,
    },
    /// Prove what the graph was: check the checkpoint's signature, replay the
    /// export up to the checkpoint's tree size with the pinned projector set in
    /// a scratch store, and check that the state digest (and the tree root and
    /// chain head) are the ones the checkpoint signed. Exit 1 if any differ.
    ReplayCheck {
        /// The signed checkpoint (GET /v1/log/checkpoint), saved to a file.
        checkpoint: PathBuf,
        /// The export directory (`leviathan export`).
        export: PathBuf,
        #[arg(long)]
        public_key: String,
        #[command(flatten)]
        projection: crate::config::ProjectionArgs,
        /// Where the scratch store is made (and removed): default the system's
        /// temporary directory.
        #[arg(long)]
        scratch_dir: Option<PathBuf>,
    },
    /// Generate a checkpoint signing key file (0600) named NAME (the log's
    /// origin, e.g. example.com/leviathan) and print its verifier key.
    Keygen {
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
    },
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The verifier key given as a string, or the path of a file holding it.
pub fn verifier(arg: &str) -> anyhow::Result<NoteVerifier> {
    let p = Path::new(arg);
    if p.is_file() {
        return NoteVerifier::from_text(&read(p)?)
            .with_context(|| format!("the key file {}", p.display()));
    }
    if !arg.contains('+') {
        // Every verifier key has two '+'; this was meant as a file.
        anyhow::bail!(
            "cannot read the verifier key file {arg}: no such file (give the file's path or the \
             key itself, <name>+<id>+<base64>)"
        );
    }
    Ok(NoteVerifier::from_text(arg)?)
}

fn json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    serde_json::from_str(&read(path)?)
        .with_context(|| format!("{} is not the expected JSON", path.display()))
}

fn print_report(r: &Report) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    std::io::Write::write_all(
        &mut out,
        format!("{}\n", serde_json::to_string_pretty(r)?).as_bytes(),
    )?;
    Ok(if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::CheckInclusion {
            checkpoint,
            public_key,
            proof,
            record,
        } => {
            let key = verifier(&public_key)?;
            let p: InclusionProof = json(&proof)?;
            let rec = record
                .map(|r| std::fs::read(&r).with_context(|| format!("cannot read {}", r.display())))
                .transpose()?;
            print_report(&audit::check_inclusion(
                &read(&checkpoint)?,
                &key,
                &p,
                rec.as_deref(),
            ))
        }
        AuditCommand::CheckConsistency {
            old,
            new,
            public_key,
            old_public_key,
            proof,
        } => {
            let key = verifier(&public_key)?;
            let old_key = old_public_key.as_deref().map(verifier).transpose()?;
            let p: ConsistencyProof = json(&proof)?;
            print_report(&audit::check_consistency(
                &read(&old)?,
                &read(&new)?,
                &key,
                old_key.as_ref(),
                &p,
            ))
        }
        AuditCommand::VerifyBundle {
            file,
            public_key,
            artifacts,
        } => {
            let key = verifier(&public_key)?;
            let b: AuditBundle = json(&file)?;
            print_report(&audit::verify_bundle(&b, &key, artifacts.as_deref()))
        }
        AuditCommand::Bundle {
            event_id,
            data_dir,
            signing_key_file,
            url,
            token,
            out,
        } => {
            let text = match url {
                Some(url) => bundle_from_server(&url, token.as_deref(), &event_id)?,
                None => {
                    let dir = data_dir.or_else(crate::config::default_data_dir).context(
                        "no data directory: set LEVIATHAN_DATA_DIR, --data-dir or --url",
                    )?;
                    let b = bundle_from_store(&dir, signing_key_file.as_deref(), &event_id)?;
                    format!("{}\n", serde_json::to_string_pretty(&b)?)
                }
            };
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())?,
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::ReplayCheck {
            checkpoint,
            export,
            public_key,
            projection,
            scratch_dir,
        } => {
            let key = verifier(&public_key)?;
            let cache = projection.projector_cache.clone().unwrap_or_else(|| {
                scratch_dir
                    .clone()
                    .unwrap_or_else(std::env::temp_dir)
                    .join("leviathan-projector-cache")
            });
            let rebuild = crate::import::rebuild_with(projection, cache);
            print_report(&crate::import::replay_check(
                &read(&checkpoint)?,
                &key,
                &export,
                scratch_dir.as_deref(),
                rebuild,
            )?)
        }
        AuditCommand::Keygen { name, out } => {
            let signer = NoteSigner::generate(&name)?;
            super::write_key(&out, &signer)?;
            std::io::Write::write_all(
                &mut std::io::stdout().lock(),
                format!("{}\n", signer.verifier_key()).as_bytes(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The bundle from a stopped server's store (the store's lock refuses a
/// running one), signed with the data dir's key.
fn bundle_from_store(
    dir: &Path,
    key_file: Option<&Path>,
    event_id: &str,
) -> anyhow::Result<AuditBundle> {
    let key_path = super::key_path(key_file, dir);
    let signer = NoteSigner::from_text(&read(&key_path)?)
        .with_context(|| format!("the signing key file {} is not usable", key_path.display()))?;
    let store = crate::storage::open_existing_store(dir)?;
    super::signers::check_offline(&store.db, &signer.verifier_key())
        .context("the bundle's checkpoint cannot be signed")?;
    let tree = Tree::open(&store.db, &store.log)?;
    tree.catch_up(&store.db)?;
    let fingerprint = store
        .graph
        .projector_set()?
        .context("the graph has no projector set recorded: run `leviathan rebuild` first")?;
    let cas = crate::cas::Cas::open(&store.db, crate::storage::SyncMode::Always, u64::MAX)?;
    let t = Transparency {
        tree,
        log: store.log.clone(),
        graph: super::GraphSource::Fixed {
            graph: store.graph.clone(),
            fingerprint,
        },
        signer: std::sync::Arc::new(signer),
    };
    Ok(t.bundle(event_id, Some(&cas))?)
}

fn bundle_from_server(url: &str, token: Option<&str>, event_id: &str) -> anyhow::Result<String> {
    let token =
        token.context("--url needs a token: set LEVIATHAN_CONTROL_PLANE_TOKEN or --token")?;
    let mut u = reqwest::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    u.path_segments_mut()
        .map_err(|_| anyhow::anyhow!("{url:?} cannot be a base URL"))?
        .pop_if_empty()
        .extend(["v1", "events", event_id, "bundle"]);
    let resp = reqwest::blocking::Client::new()
        .get(u)
        .bearer_auth(token)
        .send()
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let body = resp.text()?;
    if !status.is_success() {
        anyhow::bail!("the server answered {status}: {body}");
    }
    // Checked to be a bundle before it is written.
    let b: AuditBundle =
        serde_json::from_str(&body).context("the server's answer is not an audit bundle")?;
    Ok(format!("{}\n", serde_json::to_string_pretty(&b)?))
}
