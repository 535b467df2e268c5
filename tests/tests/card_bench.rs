//! Benchmarks of the card stack through pcscd → vpcd → firmware-sim (numbers in BENCHMARKS.md):
//! * APDU round trips per second (GET DATA of the discovery object, our `cps-card` client);
//! * card login signature latency: VERIFY + GENERAL AUTHENTICATE with P-256 (p50, p99);
//! * the same round trips with a naive socket (no TCP_NODELAY/TCP_QUICKACK): the vpcd trap.
//!
//! Release builds assert the targets (≥ 5 000 APDU/s, login p50 < 5 ms):
//! `cargo test --release -p cps-trust-tests --test card_bench -- --nocapture`.
//! Debug builds only check that the stack works and print the numbers.

use std::time::{Duration, Instant};

use cps_card::{KeyAlgorithm, ManagementKey, Pcsc, Piv, Slot};
use cps_trust_tests::pcsc::{PcscStack, blank_card, child_env};

const NAME: &str = "card_stack_throughput_and_login_latency";

fn child() {
    let reader = std::env::var("CARD_READER").unwrap();
    let out = std::env::var("RESULT_FILE").unwrap();
    let secs: f64 = std::env::var("BENCH_SECS").unwrap().parse().unwrap();
    let pcsc = Pcsc::establish().unwrap();
    pcsc.wait_for_card(&reader, Duration::from_secs(10))
        .unwrap();
    let mut piv = Piv::select(pcsc.connect(&reader).unwrap()).unwrap();
    let mut result = String::new();

    // APDU round trips (one GET DATA = one round trip: the 20-byte object fits in one answer)
    let apdu = [0x00, 0xCB, 0x3F, 0xFF, 0x03, 0x5C, 0x01, 0x7E, 0x00];
    for _ in 0..5 {
        cps_card::Transport::transmit(piv.transport(), &apdu).unwrap();
    }
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        for _ in 0..10 {
            let r = cps_card::Transport::transmit(piv.transport(), &apdu).unwrap();
            assert_eq!(&r[r.len() - 2..], &[0x90, 0x00]);
        }
        n += 10;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    result.push_str(&format!("apdu_per_s {rate:.0}\napdus {n}\n"));

    if std::env::var("LOGIN").is_ok() {
        piv.authenticate(&ManagementKey::default_aes192()).unwrap();
        let pk = piv
            .generate_key(Slot::Authentication, KeyAlgorithm::EccP256)
            .unwrap();
        let mut lat = Vec::new();
        let t0 = Instant::now();
        let mut i = 0u64;
        while t0.elapsed().as_secs_f64() < secs || lat.len() < 100 {
            let challenge = i.to_be_bytes();
            let t = Instant::now();
            let sig = piv
                .sign_challenge("123456", KeyAlgorithm::EccP256, &challenge)
                .unwrap();
            lat.push(t.elapsed());
            if i.is_multiple_of(50) {
                pk.verify(&challenge, &sig).unwrap();
            }
            i += 1;
        }
        lat.sort();
        let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1000.0;
        result.push_str(&format!(
            "login_p50_ms {:.3}\nlogin_p99_ms {:.3}\nlogins {}\n",
            p(0.5),
            p(0.99),
            lat.len()
        ));
    }
    std::fs::write(out, result).unwrap();
}

fn value(text: &str, key: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} missing in {text}"))
}

#[test]
fn card_stack_throughput_and_login_latency() {
    if child_env(NAME).is_some() {
        return child();
    }
    let release = !cfg!(debug_assertions);
    let secs = if release { "3" } else { "1" };
    let stack = PcscStack::start("bench");
    let card = stack.dir.path().join("card.json");
    blank_card(&card);
    let result = stack.dir.path().join("result");
    let vars = |login: bool| {
        let mut v = vec![
            ("CARD_READER", stack.reader(0)),
            ("RESULT_FILE", result.display().to_string()),
            ("BENCH_SECS", secs.to_string()),
        ];
        if login {
            v.push(("LOGIN", "1".to_string()));
        }
        v
    };

    let sim = stack.simulator(&[(0, &card)], &[]);
    stack.run_child(NAME, &vars(true));
    let fast = std::fs::read_to_string(&result).unwrap();
    drop(sim);
    std::thread::sleep(Duration::from_millis(1200));

    // the trap, for comparison: the same card with a naive socket
    let _naive = stack.simulator(&[(0, &card)], &["--naive-socket"]);
    let naive_vars: Vec<(&str, String)> = vars(false)
        .into_iter()
        .map(|(k, v)| {
            if k == "BENCH_SECS" {
                (k, "2".to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    stack.run_child(NAME, &naive_vars);
    let naive = std::fs::read_to_string(&result).unwrap();

    let rate = value(&fast, "apdu_per_s");
    let p50 = value(&fast, "login_p50_ms");
    let p99 = value(&fast, "login_p99_ms");
    let naive_rate = value(&naive, "apdu_per_s");
    eprintln!(
        "BENCH ({}) APDU round trips: {rate:.0}/s (naive socket: {naive_rate:.1}/s); card login VERIFY+GA P-256: p50 {p50:.3} ms, p99 {p99:.3} ms over {} logins",
        if release { "release" } else { "debug" },
        value(&fast, "logins")
    );
    assert!(
        rate > naive_rate * 5.0,
        "TCP_NODELAY/TCP_QUICKACK make no difference?"
    );
    if release {
        assert!(rate >= 5000.0, "{rate:.0} APDU/s < 5000");
        assert!(p50 < 5.0, "login p50 {p50:.3} ms >= 5 ms");
    } else {
        assert!(
            rate >= 500.0,
            "{rate:.0} APDU/s even for a debug build is too slow"
        );
    }
}
