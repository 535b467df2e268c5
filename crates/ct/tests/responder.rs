//! The sans-IO NTP core: packet fields, unsynchronised host, malformed input, Kiss-o'-Death.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cps_ct::{
    ClockStatus, NtpResponder, RateLimitConfig, ResponderConfig, TimeSource, TrustPolicy,
    restamp_transmit,
};

const NTP_UNIX: u64 = 2_208_988_800;

#[derive(Clone)]
struct FixedTime(SystemTime);
impl TimeSource for FixedTime {
    fn now(&self) -> SystemTime {
        self.0
    }
}

fn ts(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap();
    (((d.as_secs() + NTP_UNIX) & 0xffff_ffff) << 32)
        | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

fn request(version: u8, mode: u8, transmit: u64) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = (version << 3) | mode;
    p[2] = 6; // poll
    p[40..48].copy_from_slice(&transmit.to_be_bytes());
    p
}

struct Fields {
    li: u8,
    version: u8,
    mode: u8,
    stratum: u8,
    poll: u8,
    root_delay: u32,
    root_dispersion: u32,
    refid: [u8; 4],
    origin: u64,
    receive: u64,
    transmit: u64,
}

fn fields(p: &[u8]) -> Fields {
    assert!(p.len() >= 48, "response too short: {}", p.len());
    let u64at = |i: usize| u64::from_be_bytes(p[i..i + 8].try_into().unwrap());
    let u32at = |i: usize| u32::from_be_bytes(p[i..i + 4].try_into().unwrap());
    Fields {
        li: p[0] >> 6,
        version: (p[0] >> 3) & 7,
        mode: p[0] & 7,
        stratum: p[1],
        poll: p[2],
        root_delay: u32at(4),
        root_dispersion: u32at(8),
        refid: p[12..16].try_into().unwrap(),
        origin: u64at(24),
        receive: u64at(32),
        transmit: u64at(40),
    }
}

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_790_000_000, 123_456_789)
}

fn responder(rate_limit: RateLimitConfig) -> NtpResponder<FixedTime> {
    NtpResponder::new(
        ResponderConfig {
            rate_limit,
            ..ResponderConfig::default()
        },
        FixedTime(t0() + Duration::from_micros(15)),
    )
}

#[test]
fn synchronised_answer_fields() {
    let mut r = responder(RateLimitConfig::disabled());
    let status = ClockStatus::synchronized(2_000, 100);
    let client_tx = 0x0123_4567_89ab_cdef;
    let recv = t0();
    let resp = r
        .respond_vec(
            CLIENT,
            &request(4, 3, client_tx),
            recv,
            Instant::now(),
            &status,
        )
        .expect("answered");
    assert_eq!(resp.len(), 48);
    let f = fields(&resp);
    assert_eq!((f.li, f.version, f.mode), (0, 4, 4));
    assert_eq!(f.stratum, 8);
    assert_eq!(f.poll, 6);
    assert_eq!(f.refid, [127, 127, 1, 1]);
    assert_eq!(f.origin, client_tx, "client transmit echoed as origin");
    assert_eq!(f.receive, ts(recv));
    assert_eq!(f.transmit, ts(t0() + Duration::from_micros(15)));
    assert_eq!(f.root_delay, 0);
    // 2 ms in NTP short format (16.16): 0.002 * 65536 ≈ 131.
    assert!(
        (130..=132).contains(&f.root_dispersion),
        "{}",
        f.root_dispersion
    );
    assert_eq!(r.stats().answered, 1);
}

#[test]
fn ntpv3_is_answered_as_v3() {
    let mut r = responder(RateLimitConfig::disabled());
    let resp = r
        .respond_vec(
            CLIENT,
            &request(3, 3, 42),
            t0(),
            Instant::now(),
            &ClockStatus::synchronized(10, 1),
        )
        .expect("answered");
    let f = fields(&resp);
    assert_eq!((f.version, f.mode, f.origin), (3, 4, 42));
}

#[test]
fn leap_second_announced() {
    let mut r = responder(RateLimitConfig::disabled());
    let mut status = ClockStatus::synchronized(10, 1);
    status.leap = cps_ct::Leap::Insert;
    let resp = r
        .respond_vec(CLIENT, &request(4, 3, 1), t0(), Instant::now(), &status)
        .unwrap();
    assert_eq!(fields(&resp).li, 1);
}

#[test]
fn unsynchronised_host_says_so() {
    let mut r = responder(RateLimitConfig::disabled());
    let resp = r
        .respond_vec(
            CLIENT,
            &request(4, 3, 7),
            t0(),
            Instant::now(),
            &ClockStatus::unsynchronized(),
        )
        .expect("still answered, flagged unsynchronised");
    let f = fields(&resp);
    assert_eq!((f.li, f.stratum, f.mode, f.origin), (3, 16, 4, 7));
    assert_eq!(r.stats().answered_unsynchronized, 1);

    // Synchronised but beyond the trust tolerance: advertised unsynchronised too.
    let mut r = NtpResponder::new(
        ResponderConfig {
            trust: TrustPolicy {
                max_error_us: 1_000,
            },
            ..ResponderConfig::default()
        },
        FixedTime(t0()),
    );
    let resp = r
        .respond_vec(
            CLIENT,
            &request(4, 3, 7),
            t0(),
            Instant::now(),
            &ClockStatus::synchronized(5_000, 10),
        )
        .unwrap();
    let f = fields(&resp);
    assert_eq!((f.li, f.stratum), (3, 16));
    // And back to synchronised when the status recovers.
    let resp = r
        .respond_vec(
            CLIENT,
            &request(4, 3, 7),
            t0(),
            Instant::now(),
            &ClockStatus::synchronized(500, 10),
        )
        .unwrap();
    let f = fields(&resp);
    assert_eq!((f.li, f.stratum), (0, 8));
}

#[test]
fn non_client_modes_and_other_versions_are_dropped() {
    let mut r = responder(RateLimitConfig::disabled());
    let s = ClockStatus::synchronized(10, 1);
    for mode in [0u8, 1, 2, 4, 5, 6, 7] {
        for version in [3u8, 4] {
            assert!(
                r.respond_vec(CLIENT, &request(version, mode, 1), t0(), Instant::now(), &s)
                    .is_none(),
                "mode {mode} v{version}"
            );
        }
    }
    for version in [0u8, 1, 2, 5, 6, 7] {
        assert!(
            r.respond_vec(CLIENT, &request(version, 3, 1), t0(), Instant::now(), &s)
                .is_none(),
            "version {version}"
        );
    }
    assert_eq!(r.stats().answered, 0);
}

#[test]
fn every_truncation_is_dropped() {
    let mut r = responder(RateLimitConfig::disabled());
    let s = ClockStatus::synchronized(10, 1);
    let full = request(4, 3, 99);
    for len in 0..full.len() {
        assert!(
            r.respond_vec(CLIENT, &full[..len], t0(), Instant::now(), &s)
                .is_none(),
            "truncated to {len}"
        );
    }
    assert!(
        r.respond_vec(CLIENT, &full, t0(), Instant::now(), &s)
            .is_some()
    );
}

/// xorshift64*: deterministic, no RNG dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut r = responder(RateLimitConfig::disabled());
    let s = ClockStatus::synchronized(10, 1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut answered = 0;
    for i in 0..50_000 {
        let len = (rng.next() % 200) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half the corpus looks like a v4 client request, so the deeper parser (extension
        // fields, MACs) is exercised too.
        if i % 2 == 0 && len > 0 {
            buf[0] = 0x23;
        }
        if let Some(resp) = r.respond_vec(CLIENT, &buf, t0(), Instant::now(), &s) {
            answered += 1;
            let f = fields(&resp);
            assert_eq!(f.mode, 4);
        }
    }
    eprintln!("random corpus: {answered} of 50000 answered");
}

#[test]
fn ntp_valid_request_with_trailing_garbage_does_not_panic() {
    let mut r = responder(RateLimitConfig::disabled());
    let s = ClockStatus::synchronized(10, 1);
    for extra in 1..=80 {
        let mut p = request(4, 3, 5);
        p.extend(std::iter::repeat_n(0xAAu8, extra));
        let _ = r.respond_vec(CLIENT, &p, t0(), Instant::now(), &s);
    }
}

#[test]
fn kiss_of_death_after_a_burst() {
    let cfg = RateLimitConfig {
        rate_per_sec: 1.0,
        burst: 8,
        table_size: 1024,
    };
    let mut r = responder(cfg);
    let s = ClockStatus::synchronized(10, 1);
    let now = Instant::now();
    for i in 0..8 {
        let resp = r
            .respond_vec(CLIENT, &request(4, 3, i), t0(), now, &s)
            .unwrap();
        assert_eq!(
            fields(&resp).stratum,
            8,
            "request {i} of the burst answered"
        );
    }
    for i in 0..8 {
        let resp = r
            .respond_vec(CLIENT, &request(4, 3, 1000 + i), t0(), now, &s)
            .expect("kiss-o'-death");
        let f = fields(&resp);
        assert_eq!((f.mode, f.stratum, &f.refid), (4, 0, b"RATE"));
        assert_eq!(f.origin, 1000 + i);
    }
    // Still hammering: silence (no reflection).
    assert!(
        r.respond_vec(CLIENT, &request(4, 3, 1), t0(), now, &s)
            .is_none()
    );
    // Other clients are served.
    let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11));
    assert_eq!(
        fields(
            &r.respond_vec(other, &request(4, 3, 1), t0(), now, &s)
                .unwrap()
        )
        .stratum,
        8
    );
    // After backing off, served again.
    let later = now + Duration::from_secs(20);
    assert_eq!(
        fields(
            &r.respond_vec(CLIENT, &request(4, 3, 1), t0(), later, &s)
                .unwrap()
        )
        .stratum,
        8
    );
    let st = r.stats();
    assert_eq!((st.kiss_rate, st.rate_dropped), (8, 1));
}

#[test]
fn rate_table_stays_bounded() {
    let cfg = RateLimitConfig {
        rate_per_sec: 1.0,
        burst: 2,
        table_size: 256,
    };
    let mut r = responder(cfg);
    let s = ClockStatus::synchronized(10, 1);
    let now = Instant::now();
    let req = request(4, 3, 1);
    for i in 0..200_000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        let _ = r.respond_vec(ip, &req, t0(), now, &s);
    }
    assert_eq!(r.rate_limiter().capacity(), 256);
    assert!(r.rate_limiter().len() <= 256);
}

/// ntpd-rs's own client side (its poll message, response validation and KoD detection) in
/// memory against our responder.
#[test]
fn ntp_proto_client_side_accepts_our_answers() {
    use ntp_proto::{NoCipher, NtpAssociationMode, NtpLeapIndicator, NtpPacket, PollInterval};
    use std::io::Cursor;

    let cfg = RateLimitConfig {
        rate_per_sec: 0.1,
        burst: 1,
        table_size: 16,
    };
    let mut r = responder(cfg);
    let s = ClockStatus::synchronized(10, 1);
    let now = Instant::now();
    let exchange = |r: &mut NtpResponder<FixedTime>| {
        let (poll, id) = NtpPacket::poll_message(PollInterval::default());
        let mut buf = [0u8; 1024];
        let mut cursor = Cursor::new(&mut buf[..]);
        poll.serialize(&mut cursor, &NoCipher, None).unwrap();
        let len = cursor.position() as usize;
        let resp = r
            .respond_vec(CLIENT, &buf[..len], t0(), now, &s)
            .expect("answered");
        let (packet, _) = NtpPacket::deserialize(&resp, &NoCipher).expect("parses");
        assert!(packet.valid_server_response(id, false), "origin matches");
        assert_eq!(packet.mode(), NtpAssociationMode::Server);
        (
            packet.stratum(),
            packet.leap(),
            packet.is_kiss_rate(PollInterval::default()),
        )
    };
    assert_eq!(exchange(&mut r), (8, NtpLeapIndicator::NoWarning, false));
    let (stratum, _, kiss_rate) = exchange(&mut r);
    assert_eq!((stratum, kiss_rate), (0, true));
}

#[test]
fn restamp_rewrites_only_the_transmit_timestamp_of_time_answers() {
    let mut r = NtpResponder::new(ResponderConfig::default(), FixedTime(t0()));
    let status = ClockStatus::synchronized(1_000, 100);
    let client_tx = ts(t0() - Duration::from_millis(3));
    let mut answer = r
        .respond_vec(
            CLIENT,
            &request(4, 3, client_tx),
            t0(),
            Instant::now(),
            &status,
        )
        .expect("answered");
    let before = fields(&answer);
    let original = answer.clone();
    let later = t0() + Duration::from_micros(40);
    assert!(restamp_transmit(&mut answer, later));
    let after = fields(&answer);
    assert_eq!(after.transmit, ts(later));
    assert_eq!(
        (after.origin, after.receive, after.stratum, after.refid),
        (before.origin, before.receive, before.stratum, before.refid)
    );
    assert_eq!(answer[..40], original[..40], "only bytes 40..48 change");

    // A Kiss-o'-Death (stratum 0) keeps its zero transmit timestamp.
    let mut kod = answer.clone();
    kod[1] = 0;
    kod[40..48].fill(0);
    let untouched = kod.clone();
    assert!(!restamp_transmit(&mut kod, later));
    assert_eq!(kod, untouched);

    // Anything with extension fields / a MAC after the header, or not a server answer, too.
    let mut long = answer.clone();
    long.extend_from_slice(&[0u8; 20]);
    let untouched = long.clone();
    assert!(!restamp_transmit(&mut long, t0()));
    assert_eq!(long, untouched);
    let mut client = request(4, 3, client_tx);
    assert!(!restamp_transmit(&mut client, t0()));
    assert_eq!(client, request(4, 3, client_tx));
}
