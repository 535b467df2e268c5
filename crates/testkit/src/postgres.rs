//! A real PostgreSQL 15 server for a test: its own data directory, loopback port and socket
//! directory, started and stopped by PID.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the server (and `initdb`,
//! `pg_basebackup`) run as the `postgres` user, in a temporary directory that user owns. The
//! server runs with `fsync=on` and `synchronous_commit=on`: what it acknowledges is on disk (and,
//! with a synchronous standby, on the standby's disk too).
//!
//! Every server is watched by a small shell process that stops it (SIGINT, PostgreSQL's fast
//! shutdown) and deletes its directory when the test process is gone, so a server kept in a
//! `static` or left behind by a killed test run does not outlive the tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where Debian's `postgresql-15` package installs the server binaries.
pub const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running PostgreSQL server, stopped (fast shutdown) and deleted when dropped.
#[derive(Debug)]
pub struct Postgres {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    watchdog: Option<Child>,
    /// `application_name` under which a standby connects to its primary.
    name: String,
    user: Option<(u32, u32)>,
}

/// The uid and gid to run the server as: `postgres` when we are root, else ourselves.
fn server_user() -> Option<(u32, u32)> {
    let me = run_text(Command::new("id").arg("-u")).ok()?;
    if me.trim() != "0" {
        return None;
    }
    let uid = run_text(Command::new("id").args(["-u", "postgres"]))
        .expect("tests run as root need the `postgres` user (Debian package postgresql-15)");
    let gid = run_text(Command::new("id").args(["-g", "postgres"])).expect("gid of postgres");
    Some((
        uid.trim().parse().expect("uid"),
        gid.trim().parse().expect("gid"),
    ))
}

fn run_text(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn fresh_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "cps-pg-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("create the PostgreSQL test directory");
    dir
}

impl Postgres {
    /// Initialises and starts a new primary server.
    pub fn start() -> Postgres {
        let user = server_user();
        let dir = fresh_dir();
        let port = crate::port();
        let mut pg = Postgres {
            dir,
            port,
            child: None,
            watchdog: None,
            name: format!("node{port}"),
            user,
        };
        pg.prepare_dirs();
        let mut initdb = pg.as_server_user(Path::new(BIN_DIR).join("initdb"));
        initdb.args(["-D"]).arg(pg.data()).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run_text(&mut initdb).expect("initdb");
        pg.write_config();
        pg.launch();
        pg
    }

    /// A new server streaming from `primary` (`pg_basebackup -R`), made the primary's
    /// synchronous standby: from now on the primary acknowledges a commit only once this standby
    /// has it on disk (`synchronous_standby_names`, `synchronous_commit = on`). Returns once the
    /// primary reports the standby as `sync`.
    pub fn standby_of(primary: &Postgres) -> Postgres {
        let user = server_user();
        let dir = fresh_dir();
        let port = crate::port();
        let mut pg = Postgres {
            dir,
            port,
            child: None,
            watchdog: None,
            name: format!("node{port}"),
            user,
        };
        pg.prepare_dirs();
        let mut backup = pg.as_server_user(Path::new(BIN_DIR).join("pg_basebackup"));
        backup
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
            .args(["-U", "postgres", "-D"])
            .arg(pg.data())
            .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"]);
        run_text(&mut backup).expect("pg_basebackup");
        pg.write_config();
        // After `-R`'s line in postgresql.auto.conf: the last setting wins.
        append(
            &pg.data().join("postgresql.auto.conf"),
            &format!(
                "primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name={}'\n",
                primary.port, pg.name
            ),
        );
        primary
            .psql(
                "postgres",
                &format!("ALTER SYSTEM SET synchronous_standby_names = '{}'", pg.name),
            )
            .expect("set synchronous_standby_names");
        primary
            .psql("postgres", "SELECT pg_reload_conf()")
            .expect("reload the primary's configuration");
        pg.launch();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let state = primary
                .psql(
                    "postgres",
                    &format!(
                        "SELECT sync_state FROM pg_stat_replication WHERE application_name = '{}'",
                        pg.name
                    ),
                )
                .unwrap_or_default();
            if state.trim() == "sync" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "standby on port {} never became synchronous (state {state:?})",
                pg.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn prepare_dirs(&self) {
        std::fs::create_dir_all(self.socket_dir()).expect("socket dir");
        if let Some((uid, gid)) = self.user {
            for p in [self.dir.clone(), self.socket_dir()] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown to postgres");
            }
        }
    }

    fn as_server_user(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(program);
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir(&self.dir).env_remove("PGDATA");
        cmd
    }

    fn write_config(&self) {
        append(
            &self.data().join("postgresql.conf"),
            &format!(
                "\n# cps-trust test server\n\
                 listen_addresses = '127.0.0.1'\n\
                 port = {}\n\
                 unix_socket_directories = '{}'\n\
                 fsync = on\n\
                 synchronous_commit = on\n\
                 full_page_writes = on\n\
                 wal_level = replica\n\
                 max_wal_senders = 5\n\
                 hot_standby = on\n\
                 max_connections = 60\n\
                 shared_buffers = 32MB\n\
                 wal_retrieve_retry_interval = 100ms\n\
                 logging_collector = off\n",
                self.port,
                self.socket_dir().display()
            ),
        );
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.log_path()).expect("server log");
        if let Some((uid, gid)) = self.user {
            let _ = std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid));
        }
        let err = log.try_clone().expect("server log");
        let child = self
            .as_server_user(Path::new(BIN_DIR).join("postgres"))
            .arg("-D")
            .arg(self.data())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start postgres");
        let pid = child.id();
        self.child = Some(child);
        // Stops the server once this test process is gone, however it ended.
        self.watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; \
                 kill -0 {me} 2>/dev/null && exit 0; kill -INT {pid} 2>/dev/null; \
                 while kill -0 {pid} 2>/dev/null; do sleep 0.2; done; rm -rf '{dir}'",
                me = std::process::id(),
                dir = self.dir.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.psql("postgres", "SELECT 1").is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "postgres on port {} exited ({status}): {}",
                    self.port,
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "postgres on port {} did not start: {}",
                self.port,
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PID of the postmaster, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Connection URL of the `postgres` database.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// Connection URL of database `db`.
    pub fn url_of(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// `host:port` of this server, for multi-host URLs.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates database `name` (letters, digits and `_` only) and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "database name {name:?}"
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .expect("create database");
        self.url_of(name)
    }

    /// Runs `sql` with `psql` against database `db` (unaligned, tuples only) and returns its
    /// output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        run_text(
            Command::new(Path::new(BIN_DIR).join("psql"))
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres", "-d", db, "-c", sql])
                .env("PGCONNECT_TIMEOUT", "5")
                .stdin(Stdio::null()),
        )
    }

    /// Promotes this standby to a primary and waits until it accepts writes.
    pub fn promote(&self) {
        self.psql("postgres", "SELECT pg_promote(true, 60)")
            .expect("pg_promote");
        let deadline = Instant::now() + START_TIMEOUT;
        while self
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .map(|s| s.trim() != "f")
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "promotion did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the postmaster with SIGKILL (a crash: no shutdown checkpoint) and waits for it. Its
    /// backends notice the postmaster's death and exit on their own.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Give the orphaned backends a moment to see the postmaster gone and close their sockets.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on its data directory and port, after [`Postgres::stop`] or
    /// [`Postgres::kill9`] (crash recovery replays the WAL).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        self.launch();
    }

    /// Stops the server (fast shutdown, SIGINT) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_takes_databases_and_stops() {
        let mut pg = Postgres::start();
        let url = pg.create_database("t1");
        assert!(url.ends_with("/t1"), "{url}");
        assert_eq!(pg.psql("t1", "SELECT 40 + 2").unwrap().trim(), "42");
        assert_eq!(pg.psql("postgres", "SHOW fsync").unwrap().trim(), "on");
        let pid = pg.pid().unwrap();
        pg.stop();
        // `stop` waited for (and so reaped) the postmaster.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
