//! Shared fixtures for integration tests: a real `leviathan serve` process on an
//! ephemeral loopback port with a temp data dir, and a small blocking client.
#![allow(dead_code)]

pub mod pg;
pub mod wasm;

use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

pub const TOKEN: &str = "test-token-12345";

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// Says (by closing) that the reader of the server's stderr reached its
    /// end: every line the process wrote is in `log`.
    log_done: Option<Mutex<mpsc::Receiver<()>>>,
    pub client: Client,
}

impl Server {
    /// A fresh server on a fresh data dir.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut s = Self::start_in(tmp.path(), env);
        s._tmp = Some(tmp);
        s
    }

    /// A server on an existing data dir (for restarts).
    pub fn start_in(dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = serve_command(dir);
        // LEVIATHAN_TEST_STORE=postgres: the same tests on the PostgreSQL store.
        for (k, v) in pg::store_env(dir).unwrap_or_default() {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(cmd, dir)
    }

    /// Starts `cmd` (a [`serve_command`], adjusted) and waits until it listens.
    pub fn spawn(mut cmd: Command, dir: &Path) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn leviathan");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let (done_tx, log_done) = mpsc::channel::<()>();
        let log2 = log.clone();
        std::thread::spawn(move || {
            // Dropped at the end of the stream (the process exited).
            let _done = done_tx;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Text logs end the address at a space, JSON logs at a quote.
                let addr = line.find("listening on ").map(|i| {
                    line[i + 13..]
                        .split(|c: char| c.is_whitespace() || c == '"')
                        .next()
                        .unwrap_or("")
                        .to_string()
                });
                // Kept before the address is sent: once `spawn` returns, every
                // line up to "listening on" is in the log.
                log2.lock().unwrap().push(line);
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Server {
            child: Some(child),
            base: format!("http://{addr}"),
            data_dir: dir.to_path_buf(),
            _tmp: None,
            log,
            log_done: Some(Mutex::new(log_done)),
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    /// A server process started by the caller, already listening on `addr`.
    pub fn adopt(child: Child, addr: &str, dir: &Path) -> Server {
        Server {
            child: Some(child),
            base: format!("http://{addr}"),
            data_dir: dir.to_path_buf(),
            _tmp: None,
            log: Arc::new(Mutex::new(Vec::new())),
            log_done: None,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    /// The server's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Sends `sig` (`kill`'s spelling: `-STOP`, `-CONT`, `-TERM`) to the server.
    pub fn signal(&self, sig: &str) {
        let st = std::process::Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill {sig} {}", self.pid());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The `/metrics` exposition text (no token needed; must answer 200).
    #[allow(dead_code)] // tests/polyglot.rs does not read metrics
    pub fn metrics_text(&self) -> String {
        let resp = self
            .client
            .get(self.url("/metrics"))
            .send()
            .expect("GET /metrics");
        assert_eq!(resp.status().as_u16(), 200, "GET /metrics");
        resp.text().expect("the metrics text")
    }

    /// A request to `path` carrying the token, to adjust and [`Server::send`].
    pub fn req(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(TOKEN)
    }

    /// Sends a request; (status, JSON body or `Null` when empty).
    pub fn send(&self, req: RequestBuilder) -> (u16, Value) {
        parse(req.send().expect("request reaches the server"))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.req(reqwest::Method::GET, path))
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.req(reqwest::Method::POST, path).json(body))
    }

    pub fn ingest(&self, bundle: &Value) -> (u16, Value) {
        self.post("/v1/events/ingest", bundle)
    }

    /// `PUT /v1/artifacts/{sha256 of data}`.
    pub fn put_artifact(&self, data: &[u8]) -> (u16, Value) {
        let path = format!("/v1/artifacts/{}", sha256_hex(data));
        self.send(self.req(reqwest::Method::PUT, &path).body(data.to_vec()))
    }

    /// `GET /v1/artifacts/{sha}`, the raw response.
    pub fn get_artifact(&self, sha: &str) -> Response {
        self.req(reqwest::Method::GET, &format!("/v1/artifacts/{sha}"))
            .send()
            .unwrap()
    }

    /// Every stored event, in log order, through the paging route.
    pub fn all_events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let (st, page) = self.get(&format!("/v1/events?after_seq={after}&limit=1000"));
            assert_eq!(st, 200, "{page}");
            let events = page["events"].as_array().unwrap().clone();
            if events.is_empty() {
                return out;
            }
            after = page["next_after_seq"].as_u64().unwrap();
            out.extend(events);
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        let status = self.terminate(Duration::from_secs(60));
        assert!(status.success(), "server exited with {status}");
    }

    /// SIGTERM; the exit status, which must come within `within` (else the
    /// server is killed and the test fails: shutdown hung).
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server is running");
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                self.wait_for_the_whole_log();
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("the server did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `within` for the server to exit by itself: its exit
    /// status (its whole log read), or `None` while it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let c = self.child.as_mut().expect("server is running");
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                self.wait_for_the_whole_log();
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Once the process has exited: waits (bounded) until the thread that
    /// reads its stderr has reached the end, so that `log` holds its last
    /// lines (the exit does not wait for that thread).
    fn wait_for_the_whole_log(&mut self) {
        if let Some(done) = self.log_done.take() {
            let done = done.into_inner().unwrap_or_else(|e| e.into_inner());
            let _ = done.recv_timeout(Duration::from_secs(30));
        }
    }

    /// Takes the temp dir out so that it outlives this server (for restarts).
    pub fn keep_dir(&mut self) -> tempfile::TempDir {
        self._tmp.take().expect("server owns its temp dir")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `leviathan` with the tests' environment: the shared projector cache, quiet
/// logs, and none of the settings of the machine running the tests.
pub fn leviathan() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leviathan"));
    cmd.env_remove("LEVIATHAN_BACKEND")
        .env_remove("LEVIATHAN_SYNC")
        .env_remove("LEVIATHAN_DATA_DIR")
        .env_remove("LEVIATHAN_PROJECTORS")
        .env_remove("LEVIATHAN_PROJECTORS_FILE")
        .env_remove("LEVIATHAN_CONTROL_PLANE_TOKEN")
        .env("LEVIATHAN_LOG", "warn")
        // Compiled projectors are cached by digest: share them across tests.
        .env("LEVIATHAN_PROJECTOR_CACHE", shared_cache());
    cmd
}

/// `leviathan serve` on a loopback ephemeral port over `dir`, with the test token.
pub fn serve_command(dir: &Path) -> Command {
    let mut cmd = leviathan();
    cmd.args(["serve", "--host", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(dir)
        .env("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN)
        .env("LEVIATHAN_LOG", "info,fjall=warn,lsm_tree=warn");
    cmd
}

/// Runs `cmd` (a server expected to refuse to start) and returns its stderr
/// once it has exited non-zero. Panics if it starts listening instead, or is
/// still running after a minute.
pub fn refused(mut cmd: Command) -> String {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn leviathan");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening on ") {
                let _ = tx.send(Err(line.clone()));
            }
            text.push_str(&line);
            text.push('\n');
        }
        let _ = tx.send(Ok(text));
    });
    // The reader ends when the process closes stderr, i.e. when it exits.
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(text)) => {
            let status = child.wait().expect("wait for leviathan");
            assert!(!status.success(), "exited with {status}: {text}");
            text
        }
        Ok(Err(line)) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started instead of refusing: {line}")
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server neither refused nor started within a minute")
        }
    }
}

/// Opens the fjall store of a stopped server's data dir, as an attacker (or
/// a disk fault) with access to the files would, and runs `f` on it; the
/// changes are made durable before it returns.
pub fn with_store<R>(dir: &Path, f: impl FnOnce(&fjall::Database) -> R) -> R {
    let db = fjall::Database::builder(dir.join("store")).open().unwrap();
    let r = f(&db);
    db.persist(fjall::PersistMode::SyncAll).unwrap();
    r
}

/// A keyspace of an opened store (see `src/log/mod.rs` and `src/graph/store.rs`
/// for the names and layouts).
pub fn keyspace(db: &fjall::Database, name: &str) -> fjall::Keyspace {
    db.keyspace(name, fjall::KeyspaceCreateOptions::default)
        .unwrap()
}

/// Rewrites the canonical record stored at `seq` with `edit` and stores it
/// with the SHA-256 of the new bytes, so the record is self-consistent and
/// only the chain can tell.
pub fn forge_event(dir: &Path, seq: u64, edit: impl FnOnce(&str) -> String) {
    with_store(dir, |db| {
        let ks = keyspace(db, "log_events");
        let key = seq.to_be_bytes();
        let v = ks.get(key).unwrap().expect("the seq is stored").to_vec();
        let text = String::from_utf8(v[32..].to_vec()).unwrap();
        let forged = edit(&text);
        assert_ne!(forged, text, "the edit changed nothing");
        let mut value = sha2_of(forged.as_bytes()).to_vec();
        value.extend_from_slice(forged.as_bytes());
        ks.insert(key, value).unwrap();
    })
}

/// The stored record (canonical JSON, without the stored hash) at `seq`.
pub fn stored_record(dir: &Path, seq: u64) -> String {
    with_store(dir, |db| {
        let v = keyspace(db, "log_events")
            .get(seq.to_be_bytes())
            .unwrap()
            .expect("the seq is stored");
        String::from_utf8(v[32..].to_vec()).unwrap()
    })
}

fn sha2_of(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Forges the stored event at `seq` of a stopped server's data dir: replaces
/// `from` by `to` in its canonical bytes and keeps its stored hash, as an
/// attacker with disk access would. Verification must then fail at `seq`.
pub fn tamper_with_event(dir: &Path, seq: u64, from: &str, to: &str) {
    let db = fjall::Database::builder(dir.join("store")).open().unwrap();
    let ks = db
        .keyspace("log_events", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let key = seq.to_be_bytes();
    let v = ks.get(key).unwrap().unwrap().to_vec();
    let text = String::from_utf8(v[32..].to_vec()).unwrap();
    assert!(text.contains(from), "seq {seq} has no {from:?}: {text}");
    let mut forged = v[..32].to_vec();
    forged.extend_from_slice(text.replace(from, to).as_bytes());
    ks.insert(key, forged).unwrap();
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

/// A compiled-projector cache shared by every test server.
pub fn shared_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("projector-cache")
}

pub fn parse(resp: Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"))
    };
    (status, v)
}

/// An event as executors send it.
pub fn event(id: &str, event_type: &str, payload: Value) -> Value {
    json!({
        "event_id": id,
        "event_type": event_type,
        "timestamp": "2026-01-24T10:00:00.123456",
        "actor_id": "worker-1",
        "payload": payload,
    })
}

pub fn bundle(bundle_id: &str, events: Vec<Value>) -> Value {
    json!({"target": "radix", "bundle_id": bundle_id, "events": events})
}

/// `n` simple events with ids `{prefix}-{i}`.
pub fn events(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| event(&format!("{prefix}-{i}"), "attempt.created", json!({"attempt_id": format!("{prefix}-a{i}"), "task_id": "t1", "attempt_number": 1})))
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The bundles an executor fleet sends for `attempts` attempts: one bundle per
/// attempt (created, started, artifact, tests, PR, succeeded or failed), plus
/// target and task registration up front. Every standard event type appears.
pub fn mixed_log(attempts: usize) -> Vec<Value> {
    let mut out = vec![bundle(
        "setup",
        vec![
            event(
                "target-radix",
                "target.registered",
                json!({"target_id": "radix", "name": "radix", "repo_url": "git@github.com:o/radix.git", "default_branch": "main"}),
            ),
            event(
                "task-1",
                "task.created",
                json!({"task_id": "t1", "target_id": "radix", "title": "bump", "scope": "deps", "priority": "p1", "estimated_size": "s", "allowed_paths": ["Cargo.toml"], "acceptance_criteria": ["builds"]}),
            ),
        ],
    )];
    for i in 0..attempts {
        let a = format!("att-{i}");
        let mut evs = vec![
            event(
                &format!("{a}-created"),
                "attempt.created",
                json!({"attempt_id": a, "task_id": "t1", "target_id": "radix", "attempt_number": i + 1, "status": "created"}),
            ),
            event(
                &format!("{a}-started"),
                "attempt.started",
                json!({"attempt_id": a, "status": "running", "started_at": "2026-01-24T10:00:01Z"}),
            ),
            event(
                &format!("{a}-job"),
                "job.submitted",
                json!({"attempt_id": a, "job_id": format!("job-{i}")}),
            ),
            event(
                &format!("{a}-art"),
                "artifact.created",
                json!({"artifact_id": format!("artifact-{i:08x}"), "attempt_id": a, "sha256": sha256_hex(a.as_bytes()), "artifact_type": "log", "size_bytes": 100 + i, "storage_path": format!("file:///a/{i}")}),
            ),
            event(
                &format!("{a}-tests"),
                if i % 3 == 0 {
                    "tests.failed"
                } else {
                    "tests.passed"
                },
                json!({"test_run_id": format!("tr-{i}"), "attempt_id": a, "scope": "unit", "test_count": 10, "failure_count": if i % 3 == 0 { 1 } else { 0 }}),
            ),
            event(
                &format!("{a}-model"),
                "model.call_completed",
                json!({"call_id": format!("mc-{i}"), "attempt_id": a, "model": "m1", "tokens_input": 1000, "cost_usd": 0.25}),
            ),
        ];
        if i % 3 == 0 {
            evs.push(event(&format!("{a}-failed"), "attempt.failed", json!({"attempt_id": a, "status": "failed", "failure_type": "execution_failed", "error_summary": format!("case {i} failed")})));
        } else {
            evs.push(event(&format!("{a}-pr"), "pr.created", json!({"attempt_id": a, "pr_number": 1000 + i, "pr_url": format!("https://github.com/o/radix/pull/{}", 1000 + i), "title": "bump", "state": "open"})));
            evs.push(event(&format!("{a}-ok"), "attempt.succeeded", json!({"attempt_id": a, "status": "succeeded", "pr_number": 1000 + i, "pr_url": format!("https://github.com/o/radix/pull/{}", 1000 + i)})));
        }
        evs.push(event(
            &format!("{a}-note"),
            "custom.note",
            json!({"attempt_id": a, "text": "é\u{1F600}"}),
        ));
        out.push(bundle(&format!("bundle-{a}"), evs));
    }
    out.push(bundle(
        "late",
        vec![
            event("pr-merge", "pr.merged", json!({"pr_number": 1001})),
            event(
                "task-done",
                "task.completed",
                json!({"task_id": "t1", "target_id": "radix"}),
            ),
            event(
                "att-1-invalid",
                "attempt.invalidated",
                json!({"attempt_id": "att-1", "reason": "flaky"}),
            ),
        ],
    ));
    out
}

/// Runs `leviathan <args> --data-dir <dir>`; returns (exit code, stdout).
pub fn admin(args: &[&str], dir: &Path) -> (i32, String) {
    let (code, stdout, _) = admin_full(args, dir);
    (code, stdout)
}

/// `leviathan rebuild` with `manifest` on a stopped store: its report.
pub fn offline_rebuild(dir: &Path, manifest: &Path) -> serde_json::Value {
    let (code, out, err) = admin_full(
        &[
            "rebuild",
            "--projectors-file",
            manifest.to_str().unwrap(),
            "--expect-change",
        ],
        dir,
    );
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// Runs `leviathan <args> --data-dir <dir>`; returns (exit code, stdout, stderr).
pub fn admin_full(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = leviathan()
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run leviathan");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("killed: {stderr}"));
    (code, String::from_utf8(out.stdout).unwrap(), stderr)
}

/// `leviathan bench` ingests `events` more events into `s` (its own shapes:
/// targets, tasks, attempts with their artifacts, tests and PRs).
pub fn grow(s: &Server, events: usize) {
    grow_with(s, events, &[]);
}

/// [`grow`] with more bench arguments (`--json`, ...); the bench's stdout
/// (its report).
pub fn grow_with(s: &Server, events: usize, more: &[&str]) -> Vec<u8> {
    let out = leviathan()
        .args(["bench", "--url", &s.base, "--token", TOKEN])
        .args(["--events", &events.to_string(), "--bundle", "500"])
        .args(["--clients", "2", "--grow-factor", "0", "--reads", "1"])
        .args(["--duration-limit", "3600"])
        .args(more)
        .output()
        .expect("leviathan bench runs");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Copies a directory tree (a stopped store, a backup).
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}
