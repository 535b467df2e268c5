//! IHE ATNA / BCP 195 (RFC 9325): every TLS listener of the appliance refuses anything below
//! TLS 1.2 and offers only AEAD suites with forward secrecy, checked with sslscan.

use std::process::Command;

use cps_trust_tests::*;

/// TLS 1.2 suites RFC 9325 §4.2 recommends (ECDHE, AEAD), as openssl names them.
const GOOD_TLS12: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
];
const GOOD_TLS13: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Runs sslscan against `addr` and checks the protocols and suites it reports.
pub fn assert_bcp195(addr: &str) {
    let out = Command::new(peer("sslscan"))
        .args(["--no-colour", "--no-heartbleed", addr])
        .output()
        .expect("sslscan (apt-get install sslscan)");
    let report = text(&out.stdout);
    for (proto, want) in [
        ("SSLv2", "disabled"),
        ("SSLv3", "disabled"),
        ("TLSv1.0", "disabled"),
        ("TLSv1.1", "disabled"),
        ("TLSv1.2", "enabled"),
        ("TLSv1.3", "enabled"),
    ] {
        let line = report
            .lines()
            .find(|l| l.starts_with(proto) && (l.contains("enabled") || l.contains("disabled")))
            .unwrap_or_else(|| panic!("sslscan did not report {proto}:\n{report}"));
        assert!(
            line.contains(want),
            "{addr}: {proto} must be {want}:\n{report}"
        );
    }
    let suites: Vec<(&str, &str)> = report
        .lines()
        .filter(|l| l.starts_with("Preferred") || l.starts_with("Accepted"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((*f.get(1)?, *f.get(4)?))
        })
        .collect();
    assert!(!suites.is_empty(), "no suite reported:\n{report}");
    for (proto, suite) in &suites {
        let ok = match *proto {
            "TLSv1.3" => GOOD_TLS13.contains(suite),
            "TLSv1.2" => GOOD_TLS12.contains(suite),
            _ => false,
        };
        assert!(
            ok,
            "{addr}: {proto} {suite} is not a BCP 195 suite:\n{report}"
        );
    }
    // TLS 1.3 is preferred: the first suite listed is a TLS 1.3 one.
    assert_eq!(suites[0].0, "TLSv1.3", "{report}");
}

#[test]
fn https_listener_meets_bcp195() {
    let (_home, app) = Appliance::fresh();
    assert_bcp195(&app.https);
}
