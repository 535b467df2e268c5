//! Test support: a small PKI made with the openssl CLI, rustls configurations, and rsyslogd
//! processes started in temporary directories and stopped by PID.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA (P-256) and certificates issued by it, as PEM files in `dir`.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("ca.ext"),
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n",
        )
        .unwrap();
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "30",
            ])
            .args([
                "-subj",
                "/O=cps-atna test/CN=ATNA Test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
            ])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(dir.join("ca.crt")));
        Pki {
            dir: dir.to_owned(),
        }
    }

    /// Issue `name.crt` / `name.key` with CN=`cn`, a DNS SAN `cn` (plus IP 127.0.0.1 for
    /// servers) and the client or server EKU.
    pub fn issue(&self, name: &str, cn: &str, server: bool) -> (PathBuf, PathBuf) {
        let d = &self.dir;
        let key = d.join(format!("{name}.key"));
        let crt = d.join(format!("{name}.crt"));
        let csr = d.join(format!("{name}.csr"));
        let ext = d.join(format!("{name}.ext"));
        let san = if server {
            format!("DNS:{cn},IP:127.0.0.1")
        } else {
            format!("DNS:{cn}")
        };
        let eku = if server { "serverAuth" } else { "clientAuth" };
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={eku}\nsubjectAltName={san}\n"
            ),
        )
        .unwrap();
        run(Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args(["-subj", &format!("/O=cps-atna test/CN={cn}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        run(Command::new("openssl")
            .args([
                "x509",
                "-req",
                "-days",
                "30",
                "-set_serial",
                &format!("0x{:x}", rand::random::<u64>() | 1),
            ])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(d.join("ca.crt"))
            .arg("-CAkey")
            .arg(d.join("ca.key"))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&crt));
        (crt, key)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.ca()).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    }
}

pub fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
}

pub fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap()
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration requiring client certificates from the test CA, with `verifier`
/// wrapped around webpki's when given.
pub fn server_config(
    pki: &Pki,
    name: &str,
    wrap: impl FnOnce(
        Arc<dyn rustls::server::danger::ClientCertVerifier>,
    ) -> Arc<dyn rustls::server::danger::ClientCertVerifier>,
    allow_unauthenticated: bool,
) -> Arc<rustls::ServerConfig> {
    let (crt, k) = (
        pki.dir.join(format!("{name}.crt")),
        pki.dir.join(format!("{name}.key")),
    );
    let mut b = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(pki.roots()),
        provider(),
    );
    if allow_unauthenticated {
        b = b.allow_unauthenticated();
    }
    let verifier = wrap(b.build().unwrap());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&crt), key(&k))
            .unwrap(),
    )
}

pub fn client_config(pki: &Pki, client: Option<&str>) -> Arc<rustls::ClientConfig> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(pki.roots());
    Arc::new(match client {
        Some(n) => b
            .with_client_auth_cert(
                certs(&pki.dir.join(format!("{n}.crt"))),
                key(&pki.dir.join(format!("{n}.key"))),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    })
}

pub fn free_port() -> u16 {
    cps_testkit::port()
}

pub fn wait_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on port {port} after {timeout:?}");
}

/// An rsyslogd started with its own configuration, stopped by PID on drop.
pub struct Rsyslog {
    pub child: Child,
    pub dir: PathBuf,
    pub name: String,
}

impl Rsyslog {
    /// Write `conf` to `dir/name.conf`, validate it with `rsyslogd -N1`, and start rsyslogd in
    /// the foreground.
    pub fn start(dir: &Path, name: &str, conf: &str) -> Rsyslog {
        let work = dir.join(format!("work-{name}"));
        std::fs::create_dir_all(&work).unwrap();
        let cpath = dir.join(format!("{name}.conf"));
        std::fs::write(&cpath, conf).unwrap();
        let check = Command::new("rsyslogd")
            .arg("-N1")
            .arg("-f")
            .arg(&cpath)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "rsyslogd -N1 refused {name}.conf: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let out = std::fs::File::create(dir.join(format!("{name}.out"))).unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&cpath)
            .arg("-i")
            .arg(dir.join(format!("{name}.pid")))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Rsyslog {
            child,
            dir: dir.to_owned(),
            name: name.to_owned(),
        }
    }

    /// SIGTERM by PID and wait for the exit.
    pub fn stop(&mut self) {
        let pid = self.child.id() as i32;
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: plain kill(2) on the PID of our own child.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let start = Instant::now();
            while self.child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.wait();
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.out", self.name))).unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `(start, end)` byte ranges of the frames of a file of `magic | u32 length | body` entries
/// followed by `trailer` bytes each: records.log (32-byte hash) or checkpoints.log (none).
pub fn frames_of(path: &Path, trailer: usize) -> Vec<(usize, usize)> {
    let data = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 8 <= data.len() {
        let end =
            i + 8 + u32::from_be_bytes(data[i + 4..i + 8].try_into().unwrap()) as usize + trailer;
        out.push((i, end));
        i = end;
    }
    out
}
