//! Login challenges (numbers in BENCHMARKS.md).
//!
//! Against a running appliance (`cps-trust serve`, release build), with h2load over HTTPS
//! (HTTP/2, no client certificate, as a workstation):
//!
//! 1. **issuance** (`POST /api/v1/login/challenge` with a patient context): 1 000 challenges
//!    issued first, then `REQUESTS` measured; then more issued until 100 000 are outstanding
//!    (unexpired: the challenge lifetime is raised to 600 s for the run), and `REQUESTS`
//!    measured again. Requests/s and the server's CPU per request (from `/proc`);
//! 2. **refused redemptions**, the cost of a flood of logins that prove nothing: one real
//!    challenge posted `REQUESTS` times with a certificate and a signature that do not verify
//!    (the first is refused after its redemption, the rest as `used_challenge`), and a forged
//!    challenge (`forged_challenge`); each is counted into the `login.refused` tally, no write.
//!
//! Then the challenge core in process ([`cps_login::Challenges`]): issue, and
//! redeem with the used-nonce set holding few and 1 000 000 nonces.
//!
//! Run: `cargo bench -p cps-trust-tests --bench login_challenge`
//! Environment: `REQUESTS` (50000), `CONNS` (8 connections), `STREAMS` (32 per connection).

use std::time::{Duration, Instant};

use cps_login::Challenges;
use cps_trust_tests::*;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) used so far by process `pid`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

struct Run {
    n: usize,
    secs: f64,
    server_cpu: f64,
    codes: String,
}

impl Run {
    fn line(&self, what: &str) -> String {
        format!(
            "{what:<58} {:>8.0} req/s  {:>6.1} µs server CPU/request  ({})",
            self.n as f64 / self.secs,
            self.server_cpu / self.n as f64 * 1e6,
            self.codes
        )
    }
}

fn h2load(app: &Appliance, path: &str, body: &str, n: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("body.json");
    std::fs::write(&f, body).unwrap();
    let (conns, streams) = (env("CONNS", 8), env("STREAMS", 32));
    let cpu0 = cpu_secs(app.daemon.pid());
    let t = Instant::now();
    let out = std::process::Command::new(peer("h2load"))
        .args(["-n", &n.to_string(), "-c", &conns.to_string()])
        .args(["-m", &streams.to_string(), "-d"])
        .arg(&f)
        .args(["-H", "content-type: application/json"])
        .arg(format!("https://{}{path}", app.https))
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let server_cpu = cpu_secs(app.daemon.pid()) - cpu0;
    let o = text(&out.stdout);
    let codes = o
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or_else(|| panic!("h2load: {o}{}", text(&out.stderr)))
        .trim_start_matches("status codes: ")
        .to_owned();
    Run {
        n,
        secs,
        server_cpu,
        codes,
    }
}

fn post(app: &Appliance, path: &str, body: &str) -> serde_json::Value {
    let (code, out) = curl(&[
        "-sk",
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        &format!("https://{}{path}", app.https),
        "-d",
        body,
    ]);
    assert!(code == 201 || code == 401, "{code} {}", text(&out));
    serde_json::from_slice(&out).unwrap()
}

fn main() {
    let requests = env("REQUESTS", 50_000);
    let home = Home::initialised();
    let cfg = home.config_text();
    home.set_config_text(&cfg.replacen("challenge_seconds = 120", "challenge_seconds = 600", 1));
    let app = Appliance::start(&home);
    let context = r#"{"context":{"patient_ins":"248079707503828","purpose_of_use":"normal"}}"#;
    let path = "/api/v1/login/challenge";
    println!(
        "login challenges over HTTPS (h2load, {} connections × {} streams), release build:",
        env("CONNS", 8),
        env("STREAMS", 32)
    );
    // Warm-up, and the first 1 000 outstanding.
    h2load(&app, path, context, 1_000);
    let at_1k = h2load(&app, path, context, requests);
    println!(
        "  {}",
        at_1k.line("issuance, 1 000 outstanding before the run")
    );
    let outstanding = 1_000 + requests;
    if outstanding < 100_000 {
        h2load(&app, path, context, 100_000 - outstanding);
    }
    let at_100k = h2load(&app, path, context, requests);
    println!(
        "  {}",
        at_100k.line("issuance, 100 000 outstanding before the run")
    );

    // Refused redemptions: a real challenge, then the same again and again.
    let ch = post(&app, path, context);
    let login = serde_json::json!({
        "challenge_id": ch["challenge_id"],
        "certificate": "MIIBAAAA",
        "signature": "AAAA",
        "context": { "patient_ins": "248079707503828", "purpose_of_use": "normal" },
    })
    .to_string();
    let replayed = h2load(&app, "/api/v1/login", &login, requests);
    println!(
        "  {}",
        replayed.line("login with a used challenge (used_challenge)")
    );
    let mut token = ch["challenge_id"].as_str().unwrap().to_owned();
    let c = if token.as_bytes()[130] == b'A' {
        "B"
    } else {
        "A"
    };
    token.replace_range(130..131, c);
    let forged = login.replace(ch["challenge_id"].as_str().unwrap(), &token);
    let forged_run = h2load(&app, "/api/v1/login", &forged, requests);
    println!(
        "  {}",
        forged_run.line("login with a forged challenge (forged_challenge)")
    );
    drop(app);

    // The core in process.
    let n = 1_000_000u64;
    let core = Challenges::new(b"bench key", [7; 32], Duration::from_secs(600));
    let context = [3u8; 32];
    let nonce = |i: u64| {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        b[8..16].copy_from_slice(&i.to_be_bytes());
        b
    };
    let now = 1_800_000_000;
    let issue = |i: u64| {
        core.issue("urn:dmp", &context, &nonce(i), now)
            .unwrap()
            .token
    };
    let t = Instant::now();
    let window_a: Vec<String> = (0..100_000).map(issue).collect();
    let issue_ns = t.elapsed().as_nanos() as f64 / 100_000.0;
    let redeem = |tokens: &[String]| {
        let t = Instant::now();
        for token in tokens {
            core.redeem(token, |_| context, now + 1).unwrap();
        }
        t.elapsed().as_nanos() as f64 / tokens.len() as f64
    };
    let first = redeem(&window_a);
    for i in 100_000..n {
        core.redeem(&issue(i), |_| context, now + 1).unwrap();
    }
    let window_b: Vec<String> = (n..n + 100_000).map(issue).collect();
    let last = redeem(&window_b);
    let replay_t = Instant::now();
    for t in &window_a {
        assert!(core.redeem(t, |_| context, now + 2).is_err());
    }
    let replay_ns = replay_t.elapsed().as_nanos() as f64 / window_a.len() as f64;
    println!("challenge core in process (1 thread):");
    println!("  issue                                           {issue_ns:>8.0} ns");
    println!("  redeem, used set 0 → 100 000 nonces              {first:>8.0} ns");
    println!("  redeem, used set 1 000 000 → 1 100 000 nonces    {last:>8.0} ns");
    println!("  redeem a used challenge (refused)                {replay_ns:>8.0} ns");
    println!("  used set after the run: {} nonces", core.used_len());
}
