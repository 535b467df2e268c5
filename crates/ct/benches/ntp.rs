//! NTP server benchmark (issue 7 target: ≥ 100 000 requests/s answered, median offset against
//! the host clock < 100 µs on loopback).
//!
//! `cargo bench -p cps-ct --bench ntp`
//!
//! 1. in-process: `NtpResponder::respond` alone;
//! 2. UDP load: the tokio server on one thread, a client thread on a second socket keeping a
//!    window of requests in flight over loopback (bounded count, GSO sends and batched reads);
//!    answered requests/s and the
//!    offset of every answer against the host clock, computed as an NTP client does:
//!    ((t2 − t1) + (t3 − t4)) / 2;
//! 3. UDP ping-pong: one request at a time, the offset a real client sees — on an idle server
//!    and while the load of 2. runs.
//!
//! The rate limiter is disabled (every request comes from 127.0.0.1) and the host clock status
//! is a synchronised fake, so every request gets a full time answer.

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cps_ct::{
    ClockStatus, FixedClock, NtpResponder, NtpServer, RateLimitConfig, ResponderConfig,
    SystemTimeSource,
};

use quinn_udp::{BATCH_SIZE, RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;

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

/// Load client: each window of requests leaves in one `sendmsg` (GSO, segment size 48, when the
/// kernel supports it) and answers are read in batches (`recvmmsg`), so the client costs far less
/// than the server per request and the server is what is measured.
fn udp_load(server: SocketAddr, n: usize, window: usize, depth: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let state = UdpSocketState::new((&sock).into()).unwrap();
        let gso = state.max_gso_segments() >= window;
        let mut offsets = Vec::with_capacity(n);
        const SLOT: usize = 64 * 1024;
        let mut bufs = vec![0u8; SLOT * BATCH_SIZE];
        let mut meta = [RecvMeta::default(); BATCH_SIZE];
        let mut lost = 0usize;
        let mut contents = Vec::with_capacity(48 * window);
        let start = Instant::now();
        let mut sent = 0usize;
        let mut outstanding = 0usize;
        while sent < n || outstanding > 0 {
            // Keep up to `depth` windows in flight so the server never waits for the client.
            while sent < n && outstanding + window <= window * depth {
                let w = window.min(n - sent);
                let req = request(ntp_now());
                contents.clear();
                for _ in 0..w {
                    contents.extend_from_slice(&req);
                }
                if gso {
                    let t = Transmit {
                        destination: server,
                        ecn: None,
                        contents: &contents,
                        segment_size: Some(48),
                        src_ip: None,
                    };
                    sock.writable().await.unwrap();
                    sock.try_io(Interest::WRITABLE, || state.try_send((&sock).into(), &t))
                        .unwrap();
                } else {
                    for _ in 0..w {
                        sock.send_to(&req, server).await.unwrap();
                    }
                }
                sent += w;
                outstanding += w;
            }
            let ready =
                tokio::time::timeout(Duration::from_millis(200), sock.readable()).await;
            if ready.is_err() {
                lost += outstanding;
                outstanding = 0;
                continue;
            }
            let read = {
                let mut iovs: Vec<IoSliceMut<'_>> =
                    bufs.chunks_mut(SLOT).map(IoSliceMut::new).collect();
                sock.try_io(Interest::READABLE, || {
                    state.recv((&sock).into(), &mut iovs, &mut meta)
                })
            };
            let t4 = ntp_now();
            let Ok(count) = read else { continue };
            for (slot, m) in bufs.chunks(SLOT).zip(&meta).take(count) {
                for resp in slot[..m.len].chunks(m.stride.max(1)) {
                    outstanding = outstanding.saturating_sub(1);
                    if let Some(o) = offset_of(resp, t4) {
                        offsets.push(o);
                    }
                }
            }
        }
        let el = start.elapsed();
        let answered = offsets.len();
        let med = median(&mut offsets);
        println!(
            "UDP load (window {window} x {depth} in flight, GSO {gso}): {answered}/{n} answered in {:.3} s = \
             {:.0} answered/s; median offset {:+.1} µs (t1 stamped per window, t4 per read batch: includes the \
             client's own queueing); lost {lost}",
            el.as_secs_f64(),
            answered as f64 / el.as_secs_f64(),
            med * 1e6
        );
    });
}

fn udp_ping_pong(server: SocketAddr, n: usize, label: &str) {
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
        "UDP ping-pong{label}: {answered}/{n} answered in {:.3} s = {:.0} answered/s; median offset \
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
    udp_ping_pong(server, 1_000, " (warm-up)");
    udp_load(server, 300_000, 32, 1);
    udp_load(server, 300_000, 32, 4);
    udp_load(server, 300_000, 64, 2);
    // What a well-behaved client sees while the server is under load.
    let prober = std::thread::spawn(move || udp_ping_pong(server, 5_000, " during load"));
    udp_load(server, 600_000, 64, 2);
    prober.join().unwrap();
    udp_ping_pong(server, 20_000, " (idle server)");
}
