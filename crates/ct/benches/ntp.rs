//! NTP server benchmark (issue 7 target: ≥ 100 000 requests/s answered, median offset against
//! the host clock < 100 µs on loopback).
//!
//! `cargo bench -p cps-ct --bench ntp`
//!
//! 1. in-process: `NtpResponder::respond` alone;
//! 2. UDP load: the tokio server on one thread, a client thread on a second socket keeping a
//!    window of requests in flight over loopback (bounded count); answered requests/s and the
//!    offset of every answer against the host clock, computed as an NTP client does:
//!    ((t2 − t1) + (t3 − t4)) / 2;
//! 3. UDP ping-pong: one request at a time, the offset a real client sees.
//!
//! The rate limiter is disabled (every request comes from 127.0.0.1) and the host clock status
//! is a synchronised fake, so every request gets a full time answer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cps_ct::{
    ClockStatus, FixedClock, NtpResponder, NtpServer, RateLimitConfig, ResponderConfig,
    SystemTimeSource,
};

const NTP_UNIX: u64 = 2_208_988_800;

fn ntp_now() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (((d.as_secs() + NTP_UNIX) & 0xffff_ffff) << 32)
        | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// Signed difference a − b of two NTP timestamps, in seconds.
fn diff(a: u64, b: u64) -> f64 {
    (a.wrapping_sub(b) as i64) as f64 / 4_294_967_296.0
}

fn config() -> ResponderConfig {
    ResponderConfig {
        rate_limit: RateLimitConfig::disabled(),
        ..ResponderConfig::default()
    }
}

fn request(t1: u64) -> [u8; 48] {
    let mut p = [0u8; 48];
    p[0] = 0x23;
    p[40..48].copy_from_slice(&t1.to_be_bytes());
    p
}

fn in_process(n: u32) {
    let mut r = NtpResponder::new(config(), SystemTimeSource);
    let status = ClockStatus::synchronized(1_000, 100);
    let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let req = request(ntp_now());
    let mut out = [0u8; 1024];
    let start = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..n {
        let now = Instant::now();
        bytes += r
            .respond(client, &req, SystemTime::now(), now, &status, &mut out)
            .map_or(0, <[u8]>::len);
    }
    let el = start.elapsed();
    assert_eq!(bytes, 48 * n as usize);
    println!(
        "in-process respond: {n} requests in {:.3} s = {:.0} requests/s ({:.0} ns each)",
        el.as_secs_f64(),
        f64::from(n) / el.as_secs_f64(),
        el.as_nanos() as f64 / f64::from(n)
    );
}

fn start_server() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = NtpServer::bind(
                "127.0.0.1:0",
                config(),
                FixedClock(ClockStatus::synchronized(1_000, 100)),
                SystemTimeSource,
            )
            .await
            .unwrap();
            tx.send(server.local_addr().unwrap()).unwrap();
            server.run().await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn offset_of(resp: &[u8], t4: u64) -> Option<f64> {
    if resp.len() < 48 || resp[0] & 7 != 4 {
        return None;
    }
    let at = |i: usize| u64::from_be_bytes(resp[i..i + 8].try_into().unwrap());
    let (t1, t2, t3) = (at(24), at(32), at(40));
    Some((diff(t2, t1) + diff(t3, t4)) / 2.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn udp_load(server: SocketAddr, n: usize, window: usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut offsets = Vec::with_capacity(n);
    let mut buf = [0u8; 1024];
    let mut lost = 0usize;
    let start = Instant::now();
    let mut sent = 0usize;
    while sent < n {
        let w = window.min(n - sent);
        for _ in 0..w {
            sock.send(&request(ntp_now())).unwrap();
        }
        sent += w;
        for _ in 0..w {
            match sock.recv(&mut buf) {
                Ok(len) => {
                    let t4 = ntp_now();
                    if let Some(o) = offset_of(&buf[..len], t4) {
                        offsets.push(o);
                    }
                }
                Err(_) => {
                    lost += w;
                    break;
                }
            }
        }
    }
    let el = start.elapsed();
    let answered = offsets.len();
    let med = median(&mut offsets);
    println!(
        "UDP load (window {window}): {answered}/{n} answered in {:.3} s = {:.0} answered/s; \
         median offset {:+.1} µs; lost ≤ {lost}",
        el.as_secs_f64(),
        answered as f64 / el.as_secs_f64(),
        med * 1e6
    );
}

fn udp_ping_pong(server: SocketAddr, n: usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut offsets = Vec::with_capacity(n);
    let mut delays = Vec::with_capacity(n);
    let mut buf = [0u8; 1024];
    let start = Instant::now();
    for _ in 0..n {
        sock.send(&request(ntp_now())).unwrap();
        if let Ok(len) = sock.recv(&mut buf) {
            let t4 = ntp_now();
            if let Some(o) = offset_of(&buf[..len], t4) {
                offsets.push(o);
                let at = |i: usize| u64::from_be_bytes(buf[i..i + 8].try_into().unwrap());
                delays.push(diff(t4, at(24)) - diff(at(40), at(32)));
            }
        }
    }
    let el = start.elapsed();
    let answered = offsets.len();
    let med = median(&mut offsets);
    let med_abs = {
        let mut a: Vec<f64> = offsets.iter().map(|o| o.abs()).collect();
        median(&mut a)
    };
    println!(
        "UDP ping-pong: {answered}/{n} answered in {:.3} s = {:.0} answered/s; median offset \
         {:+.1} µs (median |offset| {:.1} µs), median delay {:.1} µs",
        el.as_secs_f64(),
        answered as f64 / el.as_secs_f64(),
        med * 1e6,
        med_abs * 1e6,
        median(&mut delays) * 1e6
    );
}

fn main() {
    // `cargo test --all-targets` / `cargo bench -- --list` pass flags: only run when benching.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    in_process(1_000_000);
    let server = start_server();
    // Warm-up.
    udp_ping_pong(server, 1_000);
    udp_load(server, 300_000, 32);
    udp_load(server, 300_000, 128);
    udp_ping_pong(server, 20_000);
}
