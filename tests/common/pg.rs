//! A throwaway PostgreSQL cluster for tests of `LEVIATHAN_STORE=postgres`:
//! `initdb` into a temp dir, `pg_ctl start` on a free loopback port with the
//! socket in that dir, `pg_ctl stop -m immediate` and the dir removed on drop.
//!
//! The binaries are found on `PATH` or under `/usr/lib/postgresql/*/bin`
//! (Debian's layout; the highest version wins). Without them a test prints a
//! SKIP line and passes, unless `LEVIATHAN_REQUIRE_POSTGRES=1` (CI sets it),
//! where a missing PostgreSQL fails the test. `initdb` refuses to run as root:
//! as root the cluster is created and run as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    /// `pg_ctl`, `initdb`… live here.
    bin: PathBuf,
    /// The cluster's data dir (and its socket dir).
    dir: tempfile::TempDir,
    pub port: u16,
    /// Run the tools as `postgres` (we are root).
    as_postgres: bool,
    running: bool,
    /// The TLS options of `pg_ctl start` (empty without TLS).
    ssl: String,
}

/// Where the PostgreSQL server binaries are, if anywhere.
fn find_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join("pg_ctl").is_file() && d.join("initdb").is_file() {
                return Some(d);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A free loopback port below Linux's ephemeral range (32768–60999): a port
/// the kernel hands out for outgoing connections can be taken by one of the
/// suite's own clients between a stop and a restart on it. Each call of a
/// process tries the next port from a start derived from its pid.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port from {LOW} to {}", LOW + SPAN)
}

impl Postgres {
    /// A started cluster, or `None` (after a SKIP line naming `test`) when
    /// PostgreSQL is not installed and not required.
    pub fn start(test: &str) -> Option<Postgres> {
        Self::start_tls(test, None)
    }

    /// [`Postgres::start`], with TLS on (`ssl=on`) serving `cert_pem` with
    /// `key_pem` when given.
    pub fn start_tls(test: &str, tls: Option<(&str, &str)>) -> Option<Postgres> {
        let Some(bin) = find_bin() else {
            if std::env::var("LEVIATHAN_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "{test}: PostgreSQL is required (LEVIATHAN_REQUIRE_POSTGRES=1) but no pg_ctl/initdb \
                     was found on PATH or under /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)"
                );
            }
            eprintln!(
                "SKIP {test}: PostgreSQL not found (pg_ctl/initdb on PATH or under \
                 /usr/lib/postgresql/*/bin); set LEVIATHAN_REQUIRE_POSTGRES=1 to fail instead"
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("lvpg")
            .tempdir()
            .expect("temp dir");
        let as_postgres = is_root();
        let mut pg = Postgres {
            bin,
            dir,
            port: 0,
            as_postgres,
            running: false,
            ssl: String::new(),
        };
        if as_postgres {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.dir.path())
                .status()
                .expect("run chown");
            assert!(st.success(), "chown of the cluster dir failed");
        }
        let data = pg.data_dir();
        if let Some((cert, key)) = tls {
            let (cert_file, key_file) = (
                pg.dir.path().join("server.crt"),
                pg.dir.path().join("server.key"),
            );
            std::fs::write(&cert_file, cert).expect("write the server certificate");
            std::fs::write(&key_file, key).expect("write the server key");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
                .expect("chmod the server key");
            if as_postgres {
                let st = Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&cert_file)
                    .arg(&key_file)
                    .status()
                    .expect("run chown");
                assert!(st.success(), "chown of the TLS files failed");
            }
            pg.ssl = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert_file.display(),
                key_file.display()
            );
        }
        let out = pg
            .tool("initdb")
            .args(["-A", "trust", "-U", "postgres", "-N", "-E", "UTF8", "-D"])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A port taken between our probe and the server's bind: try another.
        for attempt in 0..5 {
            pg.port = free_port();
            let out = pg.pg_ctl_start();
            if out.status.success() {
                pg.running = true;
                return Some(pg);
            }
            if attempt == 4 {
                panic!(
                    "pg_ctl start failed: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    pg.server_log()
                );
            }
        }
        unreachable!()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn tool(&self, name: &str) -> Command {
        let exe = self.bin.join(name);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    /// The cluster's own log (for failure messages).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A connection string for the `postgres` database, over TCP on loopback.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    pub fn url_for(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }

    /// A fresh database in this cluster (one per server under test, so
    /// several logs can share one cluster); returns its connection string.
    pub fn create_db(&self, name: &str) -> String {
        let mut c = self.client();
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        self.url_for(name)
    }

    /// A client for the `postgres` database.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls)
            .expect("connect to the test cluster")
    }

    /// A client for `url`.
    pub fn connect(url: &str) -> postgres::Client {
        postgres::Client::connect(url, postgres::NoTls).expect("connect to the test cluster")
    }

    /// Stops the cluster at once (`-m immediate`: as a crash or a failover).
    pub fn stop(&mut self) {
        let out = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = false;
    }

    /// `pg_ctl start` of the cluster on its port, with its options.
    fn pg_ctl_start(&self) -> std::process::Output {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50{}",
            self.port,
            self.dir.path().display(),
            self.ssl
        );
        self.tool("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .output()
            .expect("run pg_ctl start")
    }

    /// Starts the stopped cluster again on the same port.
    pub fn restart(&mut self) {
        let out = self.pg_ctl_start();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.server_log()
        );
        self.running = true;
    }

    /// The socket dir (unused by the server, which connects over TCP).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .tool("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// Whether the suite runs on the PostgreSQL store (`LEVIATHAN_TEST_STORE=postgres`).
pub fn suite_on_postgres() -> bool {
    std::env::var("LEVIATHAN_TEST_STORE").as_deref() == Ok("postgres")
}

/// The suite's store switch: with `LEVIATHAN_TEST_STORE=postgres`, every
/// server a test starts ([`crate::common::Server::start_in`]) keeps its log in
/// PostgreSQL: one cluster for the whole test process, one database per data
/// dir (so a restart on the same dir finds its log again). `None` for the
/// default store (fjall alone).
pub fn store_env(dir: &Path) -> Option<Vec<(&'static str, String)>> {
    match std::env::var("LEVIATHAN_TEST_STORE").as_deref() {
        Ok("postgres") => {}
        Ok("fjall") | Ok("") | Err(_) => return None,
        Ok(other) => panic!("LEVIATHAN_TEST_STORE={other:?}: expected fjall or postgres"),
    }
    let url = shared().database_for(dir);
    Some(vec![
        ("LEVIATHAN_STORE", "postgres".to_string()),
        ("LEVIATHAN_POSTGRES_URL", url),
    ])
}

/// The test process's shared cluster, started on first use. A static is never
/// dropped, so a watcher process stops the cluster and removes its files
/// once this process has exited (however it exits).
fn shared() -> &'static Postgres {
    static SHARED: std::sync::OnceLock<Postgres> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        std::env::set_var("LEVIATHAN_REQUIRE_POSTGRES", "1");
        let pg = Postgres::start("LEVIATHAN_TEST_STORE=postgres").expect("required");
        let mut stop = pg.tool("pg_ctl");
        stop.arg("-D")
            .arg(pg.data_dir())
            .args(["-m", "immediate", "-w", "stop"]);
        let mut watcher = Command::new("sh");
        watcher
            .arg("-c")
            .arg(r#"pid="$1"; dir="$2"; shift 2; tail --pid="$pid" -f /dev/null; "$@" >/dev/null 2>&1; rm -rf "$dir""#)
            .arg("leviathan-pg-watcher")
            .arg(std::process::id().to_string())
            .arg(pg.dir.path())
            .arg(stop.get_program())
            .args(stop.get_args())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // Never waited for: it must outlive this process (init reaps it).
        #[allow(clippy::zombie_processes)]
        let _watcher = watcher.spawn().expect("start the cluster's watcher");
        pg
    })
}

impl Postgres {
    /// The database of the server on `dir`, created on first use.
    fn database_for(&self, dir: &Path) -> String {
        static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let name = format!(
            "lv_{}",
            &crate::common::sha256_hex(dir.to_string_lossy().as_bytes())[..20]
        );
        let _one_at_a_time = CREATE.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = self.client();
        let exists = c
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .expect("query pg_database")
            .is_some();
        if !exists {
            c.batch_execute(&format!("CREATE DATABASE {name}"))
                .expect("create database");
        }
        self.url_for(&name)
    }
}

/// A TCP proxy on loopback in front of a cluster that can be switched to a
/// black hole: it stops forwarding in both directions but keeps every socket
/// open (no RST, no FIN), as a network path that silently drops packets. New
/// connections are still accepted (by the kernel) and then hear nothing.
pub struct Proxy {
    pub port: u16,
    black_hole: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    /// Forwards `127.0.0.1:<port>` to the cluster on `target` (loopback).
    pub fn start(target: u16) -> Proxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind the proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().unwrap().port();
        let black_hole = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (hole, stopped) = (black_hole.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (hole, stopped) = (hole.clone(), stopped.clone());
                    std::thread::spawn(move || pump(from, to, &hole, &stopped));
                }
            }
        });
        Proxy {
            port,
            black_hole,
            stop,
        }
    }

    /// Stops (`true`) or resumes forwarding.
    pub fn black_hole(&self, on: bool) {
        self.black_hole
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// A connection string for `dbname` through the proxy.
    pub fn url_for(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }
}

/// Copies `from` to `to` except while `hole` is set (then reads nothing, so
/// the bytes wait in the kernel's buffers), until either side closes.
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    hole: &std::sync::atomic::AtomicBool,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    from.set_read_timeout(Some(std::time::Duration::from_millis(20)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::SeqCst) {
        if hole.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                let _ = to.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
