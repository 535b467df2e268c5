//! Interop against real NTP clients: chronyd in client-only mode (`-Q`, never touches the clock)
//! and ntplib (PyPI), on a free loopback UDP port. See `../shared/peers/PEERS.md` §6.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cps_ct::{
    ClockSource, ClockStatus, FixedClock, KernelClock, NtpServer, ResponderConfig, SystemTimeSource,
};

const CHRONYD: &str = "/usr/sbin/chronyd";
const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.peers/venv/bin/python");

/// An NTP server on a background runtime; stopped on drop.
struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(clock: impl ClockSource) -> Running {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = NtpServer::bind(
                "127.0.0.1:0",
                ResponderConfig::default(),
                clock,
                SystemTimeSource,
            )
            .await
            .expect("bind");
            addr_tx.send(server.local_addr().unwrap()).unwrap();
            tokio::select! {
                r = server.run() => r.expect("server"),
                _ = stop_rx => {}
            }
        });
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server started");
    Running {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

fn synchronised() -> FixedClock {
    FixedClock(ClockStatus::synchronized(1_000, 100))
}

fn unsynchronised() -> FixedClock {
    FixedClock(ClockStatus::unsynchronized())
}

/// Runs chronyd -Q against the server; returns (exit success, combined output). chronyd is
/// killed by PID if it outlives its own `-t` timeout by 10 s.
fn chronyd(port: u16, timeout_s: u32) -> (bool, String) {
    assert!(
        Path::new(CHRONYD).exists(),
        "{CHRONYD} missing: install chrony (apt-get install chrony)"
    );
    let mut child = Command::new(CHRONYD)
        .arg("-Q")
        .arg("-t")
        .arg(timeout_s.to_string())
        .arg(format!("server 127.0.0.1 port {port} iburst maxsamples 1"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chronyd");
    let deadline = Instant::now() + Duration::from_secs(u64::from(timeout_s) + 10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    eprintln!("chronyd -Q (port {port}) -> {status}:\n{out}");
    (status.success(), out)
}

#[test]
fn chronyd_accepts_a_synchronised_server() {
    let server = start(synchronised());
    let (ok, out) = chronyd(server.addr.port(), 10);
    assert!(ok, "chronyd -Q failed against our server:\n{out}");
    assert!(out.contains("System clock wrong by"), "{out}");
}

#[test]
fn chronyd_refuses_an_unsynchronised_server() {
    let server = start(unsynchronised());
    let (ok, out) = chronyd(server.addr.port(), 4);
    assert!(!ok, "chronyd must not accept LI 3 / stratum 16:\n{out}");
    assert!(out.contains("Timeout reached"), "{out}");
}

#[test]
fn chronyd_follows_the_real_host_clock_state() {
    let real = KernelClock.status().expect("adjtimex");
    let trusted = ResponderConfig::default()
        .trust
        .evaluate(&real)
        .is_trusted();
    let server = start(KernelClock);
    let (ok, out) = chronyd(server.addr.port(), if trusted { 10 } else { 4 });
    // A container without a time daemon reports STA_UNSYNC: then we answer LI 3 / stratum 16
    // and chronyd must not accept us.
    assert_eq!(ok, trusted, "host clock {real:?}; chronyd said:\n{out}");
}

/// Queries with ntplib; returns the fields it decoded.
fn ntplib(port: u16) -> std::collections::HashMap<String, String> {
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} missing: run scripts/install-deps.sh (it installs ntplib from scripts/peers/requirements.lock)"
    );
    // Like any NTP client's clock filter, keep the sample with the smallest round-trip delay
    // out of 5 (a loaded CI machine can delay one exchange by milliseconds).
    let script = "import sys, ntplib\n\
        c = ntplib.NTPClient()\n\
        rs = [c.request('127.0.0.1', port=int(sys.argv[1]), version=4, timeout=2) for _ in range(5)]\n\
        r = min(rs, key=lambda r: r.delay)\n\
        print(f'version={r.version}\\nmode={r.mode}\\nstratum={r.stratum}\\nleap={r.leap}\\n\
        offset={r.offset:.9f}\\ndelay={r.delay:.9f}\\nref_id={ntplib.ref_id_to_text(r.ref_id, r.stratum)}')\n";
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ntplib failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("ntplib (port {port}):\n{stdout}");
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn ntplib_synchronised() {
    let server = start(synchronised());
    let r = ntplib(server.addr.port());
    assert_eq!(r["version"], "4");
    assert_eq!(r["mode"], "4");
    assert_eq!(r["stratum"], "8");
    assert_eq!(r["leap"], "0");
    assert_eq!(r["ref_id"], "127.127.1.1");
    let offset: f64 = r["offset"].parse().unwrap();
    assert!(
        offset.abs() < 1e-3,
        "offset {offset} s against the host clock"
    );
}

#[test]
fn ntplib_unsynchronised() {
    let server = start(unsynchronised());
    let r = ntplib(server.addr.port());
    assert_eq!(r["version"], "4");
    assert_eq!(r["mode"], "4");
    assert_eq!(r["leap"], "3");
    assert_eq!(r["stratum"], "16");
}

#[test]
fn kiss_of_death_over_udp() {
    let server = start(synchronised());
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut req = [0u8; 48];
    req[0] = 0x23;
    let mut kod = 0;
    let mut buf = [0u8; 128];
    for _ in 0..12 {
        sock.send_to(&req, server.addr).unwrap();
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(n, 48);
        if buf[1] == 0 && &buf[12..16] == b"RATE" {
            kod += 1;
        }
    }
    // Default policy: a burst of 8 is answered, the rest get a KoD RATE.
    assert_eq!(kod, 4);
}
