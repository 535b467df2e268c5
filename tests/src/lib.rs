//! Harness for the end-to-end tests: a temporary home, the `cps-trust` binary, the real peers
//! (pkcs11-tool, openssl, pkilint), and daemons started by the test and stopped by PID.
//!
//! Peers are required, not optional: a missing one fails the test with the command that installs
//! it (`scripts/install-deps.sh`).

pub mod dicom;
pub mod https;
pub mod pcsc;
pub mod pkilint;
pub mod rsyslog;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Repository root (this package lives in `<repo>/tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The `cps-trust` binary of the same build profile as this test; built on demand.
/// `CPS_TRUST_BIN` names another build instead (benchmarks compare two builds in one run).
pub fn cps_trust_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CPS_TRUST_BIN") {
        return PathBuf::from(p);
    }
    static BUILD: std::sync::Once = std::sync::Once::new();
    workspace_bin("cps-trust", &BUILD)
}

/// A binary of this workspace (package and binary named alike) from the same build profile as
/// the running test, built once per test process if needed.
pub fn workspace_bin(name: &str, once: &'static std::sync::Once) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target profile dir")
        .to_path_buf();
    let bin = profile_dir.join(name);
    once.call_once(|| {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", name, "--bin", name])
            .current_dir(repo_root());
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("cargo build");
        assert!(st.success(), "building {name} failed");
    });
    assert!(bin.exists(), "{} missing after build", bin.display());
    bin
}

/// A peer program: from `.peers/venv/bin` for the Python ones, else from PATH.
pub fn peer(name: &str) -> PathBuf {
    let venv = std::env::var_os("CPS_TRUST_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".peers/venv"));
    let in_venv = venv.join("bin").join(name);
    if in_venv.exists() {
        return in_venv;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("peer '{name}' not found: run scripts/install-deps.sh");
}

/// A fresh, not yet initialised home in a temporary directory.
pub struct Home {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    /// Extra environment for every command of this home (e.g. a private pcscd's socket).
    pub env: Vec<(String, std::ffi::OsString)>,
    /// Where `serve` logs (default: `serve.log` in the home).
    pub serve_log: Option<PathBuf>,
}

impl Home {
    pub fn new() -> Home {
        Home::in_tempdir(None)
    }

    /// A home at `path` (which must not exist yet), e.g. on a filesystem the test mounted;
    /// `serve` logs in a temporary directory instead, so that a full home does not stop the log.
    pub fn at(path: PathBuf) -> Home {
        Home::in_tempdir(Some(path))
    }

    fn in_tempdir(path: Option<PathBuf>) -> Home {
        let dir = tempfile::tempdir().expect("tempdir");
        let serve_log = path.as_ref().map(|_| dir.path().join("serve.log"));
        let path = path.unwrap_or_else(|| dir.path().join("home"));
        Home {
            _dir: dir,
            path,
            env: Vec::new(),
            serve_log,
        }
    }

    /// The log file of `serve`.
    pub fn serve_log(&self) -> PathBuf {
        self.serve_log
            .clone()
            .unwrap_or_else(|| self.join("serve.log"))
    }

    /// Sets `key = value` (a TOML value as written, e.g. `5` or `"x"`) on the first line that
    /// assigns `key` in the configuration.
    pub fn set_config_value(&self, key: &str, value: &str) {
        let cfg = self.config_text();
        let mut done = false;
        let out: Vec<String> = cfg
            .lines()
            .map(|l| {
                if !done && l.trim_start().starts_with(&format!("{key} = ")) {
                    done = true;
                    format!("{key} = {value}")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        assert!(done, "no {key} in the configuration");
        self.set_config_text(&(out.join("\n") + "\n"));
    }

    /// The same, with one more variable in the environment of its commands.
    pub fn with_env(mut self, key: &str, value: impl Into<std::ffi::OsString>) -> Home {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// A home where `cps-trust init` has run successfully. The clock is declared trusted: a
    /// container's kernel rarely reports synchronisation (see `tests/tests/time.rs` for the
    /// kernel source).
    pub fn initialised() -> Home {
        let h = Home::new();
        let out = h.cps(&["init", "--time-source", "declared"]);
        assert_success(&out, "cps-trust init");
        h
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    /// `cps-trust --home <home> <args>` with a clean environment for the appliance.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cps_trust_bin());
        c.arg("--home").arg(&self.path).args(args);
        c.env_remove("CPS_TRUST_HOME")
            .env_remove("SOFTHSM2_CONF")
            .env("CPS_TRUST_LOG", "warn");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn cps(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run cps-trust")
    }

    /// `cps-trust cert revoke --ca CA --serial SERIAL --reason REASON` (admin credential).
    pub fn revoke(&self, ca: &str, serial: &str, reason: &str) -> Output {
        self.cps(&[
            "cert", "revoke", "--ca", ca, "--serial", serial, "--reason", reason,
        ])
    }

    pub fn softhsm_conf(&self) -> PathBuf {
        self.join("softhsm2.conf")
    }

    pub fn user_pin(&self) -> String {
        std::fs::read_to_string(self.join("secrets/hsm-user.pin"))
            .expect("pin file")
            .trim()
            .to_owned()
    }

    /// `pkcs11-tool` on this home's embedded token.
    pub fn pkcs11_tool(&self, args: &[&str]) -> Output {
        Command::new(peer("pkcs11-tool"))
            .args(["--module", SOFTHSM_MODULE, "--token-label", "cps-trust"])
            .args(args)
            .env("SOFTHSM2_CONF", self.softhsm_conf())
            .output()
            .expect("run pkcs11-tool")
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(self.join("cps-trust.toml")).expect("config")
    }

    pub fn set_config_text(&self, text: &str) {
        std::fs::write(self.join("cps-trust.toml"), text).expect("write config");
    }
}

impl Default for Home {
    fn default() -> Self {
        Home::new()
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A failed command that explains itself in exactly one `error:` line and did not panic.
pub fn assert_one_line_error(out: &Output, expect: &[&str]) {
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stdout:\n{}",
        text(&out.stdout)
    );
    assert!(!err.contains("panicked"), "panic:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for e in expect {
        assert!(lines[0].contains(e), "expected '{e}' in: {}", lines[0]);
    }
}

/// A background process owned by a test, stopped (SIGTERM, then SIGKILL) by PID on drop.
pub struct Daemon {
    pub child: Child,
    pub name: String,
}

impl Daemon {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Daemon {
        let f = std::fs::File::create(log).expect("log file");
        let child = cmd
            .stdout(Stdio::from(f.try_clone().expect("dup")))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("spawn daemon");
        Daemon {
            child,
            name: name.into(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM by PID, wait up to `grace`, then SIGKILL. Returns the exit status if it stopped.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < grace {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop(Duration::from_secs(3));
        }
    }
}

/// Minimal HTTP/1.0 GET over loopback: (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, buf[split + 4..].to_vec()))
}

/// Wait until `f` returns Some, or panic after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free loopback TCP port, never one the kernel could give an outgoing connection meanwhile
/// (see `cps-testkit`).
pub fn free_port() -> u16 {
    cps_testkit::port()
}

/// A free loopback UDP port (see `free_port`).
pub fn free_udp_port() -> u16 {
    cps_testkit::port()
}

/// A running appliance (`cps-trust serve`) on free loopback ports, stopped by PID on drop.
pub struct Appliance {
    pub http: String,
    pub https: String,
    /// NTP (UDP) and syslog-TLS listeners.
    pub ntp: String,
    pub syslog_tls: String,
    pub daemon: Daemon,
}

impl Appliance {
    /// A new home initialised with its public URL on a free port, and the appliance started.
    pub fn fresh() -> (Home, Appliance) {
        Appliance::fresh_in(Home::new())
    }

    /// [`Appliance::fresh`] in a home prepared by the caller (e.g. with extra environment).
    pub fn fresh_in(home: Home) -> (Home, Appliance) {
        Appliance::fresh_configured(home, |_| {})
    }

    /// [`Appliance::fresh_in`], with `configure` run on the initialised home before the first
    /// start (e.g. to change its configuration).
    pub fn fresh_configured(home: Home, configure: impl FnOnce(&Home)) -> (Home, Appliance) {
        let http = format!("127.0.0.1:{}", free_port());
        let out = home.cps(&[
            "init",
            "--public-url",
            &format!("http://{http}"),
            "--time-source",
            "declared",
        ]);
        assert_success(&out, "cps-trust init");
        configure(&home);
        let app = Appliance::start_on(&home, http, format!("127.0.0.1:{}", free_port()));
        (home, app)
    }

    /// Point the home's listeners at free ports and start `serve`; wait for `/health`.
    pub fn start(home: &Home) -> Appliance {
        Appliance::start_on(
            home,
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        )
    }

    fn start_on(home: &Home, http: String, https: String) -> Appliance {
        let mut cfg = home.config_text();
        let replace_line = |cfg: &mut String, key: &str, value: &str| {
            let start = cfg
                .find(&format!("\n{key} = "))
                .unwrap_or_else(|| panic!("no {key} in config"))
                + 1;
            let end = start + cfg[start..].find('\n').unwrap_or(cfg.len() - start);
            cfg.replace_range(start..end, &format!("{key} = \"{value}\""));
        };
        replace_line(&mut cfg, "http", &http);
        replace_line(&mut cfg, "https", &https);
        // Every appliance of the suite listens on its own ports (UDP for NTP).
        let syslog_tls = format!("127.0.0.1:{}", free_port());
        let ntp = format!("127.0.0.1:{}", free_udp_port());
        replace_line(&mut cfg, "syslog_tls", &syslog_tls);
        replace_line(&mut cfg, "ntp", &ntp);
        home.set_config_text(&cfg);
        let daemon = Daemon::spawn(
            "cps-trust serve",
            home.command(&["serve"]),
            &home.serve_log(),
        );
        let mut app = Appliance {
            http,
            https,
            ntp,
            syslog_tls,
            daemon,
        };
        wait_for("appliance /health", Duration::from_secs(30), || {
            if let Ok(Some(st)) = app.daemon.child.try_wait() {
                panic!(
                    "serve exited early ({st:?}):\n{}",
                    std::fs::read_to_string(home.serve_log()).unwrap_or_default()
                );
            }
            // 503 is an appliance that runs but cannot sign (e.g. its clock is not trusted).
            match http_get(&app.http, "/health") {
                Ok((200 | 503, _)) => Some(()),
                _ => None,
            }
        });
        let _ = &mut app;
        app
    }
}

/// `curl` with the given arguments; returns (HTTP status, body).
pub fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("body");
    let out = Command::new(peer("curl"))
        .args(["-s", "-o"])
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let code = text(&out.stdout).trim().parse().unwrap_or(0);
    (code, std::fs::read(&body).unwrap_or_default())
}

/// `curl` to the appliance's mutual-TLS listener with the client certificate `cert` / `key`
/// (the appliance's root as trust anchor), a JSON `body` if any and `extra` arguments; returns
/// (HTTP status, body as text).
pub fn curl_mtls(
    home: &Home,
    app: &Appliance,
    (cert, key): (&Path, &Path),
    method: &str,
    path: &str,
    body: Option<&str>,
    extra: &[&str],
) -> (u16, String) {
    let mut args: Vec<String> = vec![
        "--cacert".into(),
        home.join("ca/root.pem").display().to_string(),
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
        "-X".into(),
        method.into(),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    if let Some(b) = body {
        let f = dir.path().join("body.json");
        std::fs::write(&f, b).expect("body file");
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "--data-binary".into(),
            format!("@{}", f.display()),
        ]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(format!("https://{}{path}", app.https));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body) = curl(&refs);
    (code, text(&body))
}

/// A fresh key and CSR made by openssl (`p256`, `rsa1024`, otherwise RSA-2048).
pub fn openssl_csr(dir: &std::path::Path, name: &str, key: &str) -> std::path::PathBuf {
    let csr = dir.join(format!("{name}.csr"));
    let keyf = dir.join(format!("{name}.key"));
    let mut cmd = Command::new(peer("openssl"));
    cmd.args(["req", "-new", "-nodes", "-subj", "/CN=ignored", "-keyout"])
        .arg(&keyf)
        .arg("-out")
        .arg(&csr);
    match key {
        "p256" => cmd.args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        "rsa1024" => cmd.args(["-newkey", "rsa:1024"]),
        _ => cmd.args(["-newkey", "rsa:2048"]),
    };
    assert_success(&cmd.output().unwrap(), "openssl req");
    csr
}

/// `cps-trust cert issue` for a médecin (profession 10) with the given IdNat_PS.
pub fn issue_person(
    home: &Home,
    csr: &std::path::Path,
    out: &std::path::Path,
    profile: &str,
    idnat: &str,
) -> std::process::Output {
    home.cps(&[
        "cert",
        "issue",
        "--profile",
        profile,
        "--csr",
        csr.to_str().unwrap(),
        "--holder",
        idnat,
        "--person",
        &format!("{idnat},DONNAT-GADY,ISABELLE,10"),
        "-o",
        out.to_str().unwrap(),
    ])
}

/// The organisation identity used for organisation certificates in the tests.
pub const ORG_ARGS: &[&str] = &[
    "--org-name",
    "Clinique du Parc",
    "--structure-id",
    "318751275100020",
    "--state",
    "Paris (75)",
];

/// `cps-trust cert issue` of an organisation profile (`org-tls-client`, `org-tls-server`,
/// `org-cachet`) for `holder`, common name `cn`, and extra arguments (`--dns`...).
pub fn issue_org(
    home: &Home,
    csr: &std::path::Path,
    out: &std::path::Path,
    profile: &str,
    holder: &str,
    cn: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "cert",
        "issue",
        "--profile",
        profile,
        "--csr",
        csr.to_str().unwrap(),
        "--holder",
        holder,
        "--cn",
        cn,
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(ORG_ARGS);
    args.extend_from_slice(extra);
    home.cps(&args)
}

/// Every audit record of the home's store, in order (read while the appliance is stopped).
pub fn store_audit(home: &Home) -> Vec<cps_store::AuditRecord> {
    use cps_store::Store;
    let store = cps_store::SledStore::open(home.join("store")).expect("store");
    let n = store.audit_len().expect("audit length");
    store
        .audit_range(1, n as usize + 1)
        .expect("audit records")
        .into_iter()
        .map(|e| e.record)
        .collect()
}

/// The serial number (hex, as openssl prints it) of a PEM certificate.
pub fn serial_of(pem: &Path) -> String {
    let out = Command::new(peer("openssl"))
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(pem)
        .output()
        .expect("openssl x509");
    text(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_owned()
}

/// `cps-trust audit verify` succeeds and calls the log intact.
pub fn assert_audit_log_intact(home: &Home) {
    let out = home.cps(&["audit", "verify"]);
    assert_success(&out, "audit verify");
    assert!(
        text(&out.stdout).contains("intact"),
        "{}",
        text(&out.stdout)
    );
}

/// `POST /api/v1/login/challenge` (no client certificate): (status, body).
pub fn login_challenge(app: &Appliance) -> (u16, Vec<u8>) {
    curl(&[
        "-sk",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        &format!("https://{}/api/v1/login/challenge", app.https),
        "-d",
        "{}",
    ])
}

/// `cps-trust login` with the card in `reader`, for a patient; the assertion goes to `out`.
pub fn card_login(home: &Home, reader: &str, pin: &str, out: &Path) -> Output {
    home.cps(&[
        "login",
        "--reader",
        reader,
        "--pin",
        pin,
        "--patient-ins",
        "248079707503828",
        "--out",
        out.to_str().expect("path"),
    ])
}

/// `n` organisation certificates issued for fresh keys (files `<dir>/<tag><i>.pem`, holder
/// `atna-test-holder`): as many audit records.
pub fn issue_certs(home: &Home, dir: &std::path::Path, tag: &str, n: usize) {
    for i in 0..n {
        let csr = openssl_csr(dir, &format!("{tag}{i}"), "p256");
        let out = dir.join(format!("{tag}{i}.pem"));
        assert_success(
            &issue_org(
                home,
                &csr,
                &out,
                "org-tls-client",
                "atna-test-holder",
                "dmp-connector",
                &[],
            ),
            "issue",
        );
    }
}

/// `openssl ocsp` against the appliance for `certs` of CA `ca`; stdout and stderr together.
pub fn ocsp_query(
    home: &Home,
    app: &Appliance,
    ca: &str,
    certs: &[&std::path::Path],
    extra: &[&str],
) -> String {
    let mut cmd = Command::new(peer("openssl"));
    cmd.arg("ocsp")
        .args(extra)
        .arg("-issuer")
        .arg(home.join(&format!("ca/{ca}.pem")));
    for c in certs {
        cmd.arg("-cert").arg(c);
    }
    cmd.args(["-url", &format!("http://{}/ocsp", app.http), "-CAfile"])
        .arg(home.join("ca/root.pem"));
    let out = cmd.output().unwrap();
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// The word after `key` in a command's listing (e.g. `field(out, "initial PIN ")`).
pub fn field<'a>(out: &'a str, key: &str) -> &'a str {
    let i = out
        .find(key)
        .unwrap_or_else(|| panic!("no '{key}' in:\n{out}"))
        + key.len();
    out[i..].split_whitespace().next().unwrap()
}

/// A tmpfs of a given size mounted by the test (root only) on a temporary directory, unmounted
/// when dropped (also when the test fails): drop every process using it first.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_mb` MiB; fails the test, saying why, if it cannot.
    pub fn mount(size_mb: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m,mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (the full-disk tests run as root): {}",
            text(&out.stderr)
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Grow (or shrink) it in place, as an operator grows a volume.
    pub fn resize(&self, size_mb: u64) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size_mb}m")])
            .arg(self.path())
            .output()
            .expect("run mount");
        assert!(out.status.success(), "remount: {}", text(&out.stderr));
    }

    /// Bytes available on it.
    pub fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .expect("df");
        text(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df output")
    }

    /// Writes `name` until the filesystem refuses (ENOSPC): the disk is then full. Returns
    /// the bytes written.
    pub fn fill(&self, name: &str) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path().join(name)).expect("filler");
        let mut total = 0u64;
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0x5Au8; chunk];
            loop {
                match f.write(&buf) {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(e) if e.raw_os_error() == Some(28) => break,
                    Err(e) => panic!("filling the tmpfs: {e}"),
                }
            }
        }
        let _ = f.sync_all();
        total
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process the test could not stop): detach it anyway.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Bytes of a hex string (test input; panics on bad hex).
pub fn hex_bytes(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
        .collect()
}
