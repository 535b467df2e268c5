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
