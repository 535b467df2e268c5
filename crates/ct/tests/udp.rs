//! The UDP loop: batched reads, including GRO-coalesced bursts (a client sending with GSO), and
//! the rate limiter seen over the socket.

use std::time::Duration;

use cps_ct::{ClockStatus, FixedClock, NtpServer, ResponderConfig, SystemTimeSource};
use quinn_udp::{Transmit, UdpSocketState};
use tokio::io::Interest;

#[tokio::test]
async fn gso_burst_is_split_and_rate_limited() {
    let server = NtpServer::bind(
        "127.0.0.1:0",
        ResponderConfig::default(),
        FixedClock(ClockStatus::synchronized(1_000, 100)),
        SystemTimeSource,
    )
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let task = tokio::spawn(server.run());

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let state = UdpSocketState::new((&sock).into()).unwrap();
    let mut req = [0u8; 48];
    req[0] = 0x23;
    let burst: Vec<u8> = req.iter().copied().cycle().take(48 * 12).collect();
    eprintln!("GSO segments: {}", state.max_gso_segments());
    if state.max_gso_segments() >= 12 {
        let t = Transmit {
            destination: addr,
            ecn: None,
            contents: &burst,
            segment_size: Some(48),
            src_ip: None,
        };
        sock.writable().await.unwrap();
        sock.try_io(Interest::WRITABLE, || state.try_send((&sock).into(), &t))
            .unwrap();
    } else {
        for _ in 0..12 {
            sock.send_to(&req, addr).await.unwrap();
        }
    }

    let (mut time, mut kod) = (0, 0);
    let mut buf = [0u8; 128];
    while time + kod < 12 {
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .expect("all 12 answered")
            .unwrap();
        assert_eq!(n, 48);
        assert_eq!(buf[0] & 7, 4);
        if buf[1] == 0 && &buf[12..16] == b"RATE" {
            kod += 1;
        } else {
            assert_eq!(buf[1], 8);
            time += 1;
        }
    }
    // Default policy: a burst of 8 answered, the rest told to slow down.
    assert_eq!((time, kod), (8, 4));

    // Garbage and a control packet get no answer, and do not stop the server.
    sock.send_to(&[0xff; 7], addr).await.unwrap();
    let mut control = [0u8; 48];
    control[0] = 0x26;
    sock.send_to(&control, addr).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf))
            .await
            .is_err()
    );
    assert!(!task.is_finished());
    task.abort();
}

/// Requests from more sources than one `sendmmsg` carries: every source gets its own answer
/// (origin = its transmit timestamp), transmit timestamp not before the receive timestamp.
async fn many_sources_each_get_their_answer(bind: &str) {
    let config = ResponderConfig {
        rate_limit: cps_ct::RateLimitConfig::disabled(),
        ..ResponderConfig::default()
    };
    let server = NtpServer::bind(
        bind,
        config,
        FixedClock(ClockStatus::synchronized(1_000, 100)),
        SystemTimeSource,
    )
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let stats = server.stats_handle();
    let task = tokio::spawn(server.run());

    const CLIENTS: u64 = 80;
    let mut socks = Vec::new();
    for _ in 0..CLIENTS {
        socks.push(tokio::net::UdpSocket::bind((addr.ip(), 0)).await.unwrap());
    }
    for (i, sock) in (0u64..).zip(&socks) {
        let mut req = [0u8; 48];
        req[0] = 0x23;
        req[40..48].copy_from_slice(&(0x1234_5678_0000_0000 + i).to_be_bytes());
        sock.send_to(&req, addr).await.unwrap();
    }
    for (i, sock) in (0u64..).zip(&socks) {
        let mut buf = [0u8; 128];
        let (n, from) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .expect("answered")
            .unwrap();
        assert_eq!((n, from), (48, addr));
        assert_eq!((buf[0] & 7, buf[1]), (4, 8));
        let at = |o: usize| u64::from_be_bytes(buf[o..o + 8].try_into().unwrap());
        assert_eq!(at(24), 0x1234_5678_0000_0000 + i, "origin of client {i}");
        let (receive, transmit) = (at(32), at(40));
        assert!(transmit.wrapping_sub(receive) as i64 >= 0, "client {i}");
        assert!(
            transmit.wrapping_sub(receive) < 1 << 32,
            "client {i}: under a second"
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while stats.get().answered < CLIENTS && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.get().answered, CLIENTS);
    task.abort();
}

#[tokio::test]
async fn batched_answers_reach_every_ipv4_source() {
    many_sources_each_get_their_answer("127.0.0.1:0").await;
}

#[tokio::test]
async fn batched_answers_reach_every_ipv6_source() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback: skipped");
        return;
    }
    many_sources_each_get_their_answer("[::1]:0").await;
}
