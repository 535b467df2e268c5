//! The time-stamping authority end to end: the real `cps-trust serve` against SoftHSM2, queried
//! by `openssl ts -query` over HTTP (curl), its replies read and verified by `openssl ts`; its
//! certificate linted by pkilint; hostile queries refused with their failure bit; no token
//! while the clock is untrusted; every token in the audit trail.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cps_trust_tests::pkilint::{Linter, assert_clean};
use cps_trust_tests::{Appliance, Home, curl, http_get, peer, text, wait_for};

const POLICY: &str = "1.3.6.1.4.1.32473.4.1";

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(peer("openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// POST `body` to `/tsa` with `content_type`: (HTTP status, body).
fn post(app: &Appliance, body: &Path, content_type: &str) -> (u16, Vec<u8>) {
    curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Content-Type: {content_type}"),
        "--data-binary",
        &format!("@{}", body.display()),
        &format!("http://{}/tsa", app.http),
    ])
}

/// The TSA certificate and its issuing CA, as the appliance wrote them (PEM chain), split.
fn chain(home: &Home, dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let pem = std::fs::read_to_string(home.join("tsa/tsa.pem")).expect("tsa/tsa.pem");
    let blocks: Vec<&str> = pem.split_inclusive("-----END CERTIFICATE-----\n").collect();
    assert_eq!(blocks.len(), 2, "TSA certificate, then its CA:\n{pem}");
    let (tsa, ca) = (dir.join("tsa.pem"), dir.join("untrusted.pem"));
    std::fs::write(&tsa, blocks[0]).unwrap();
    std::fs::write(&ca, pem.as_bytes()).unwrap();
    (tsa, ca)
}

/// Query with `extra` options, POST, check the reply text and verify it with openssl; the
/// token's serial (as openssl prints it).
fn stamp_and_verify(home: &Home, app: &Appliance, dir: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "ts", "-query", "-data", "data.txt", "-cert", "-out", "q.tsq",
    ];
    args.extend(extra);
    let (ok, out) = openssl(dir, &args);
    assert!(ok, "{out}");
    let (code, reply) = post(app, &dir.join("q.tsq"), "application/timestamp-query");
    assert_eq!(code, 200, "{extra:?}: {}", text(&reply));
    std::fs::write(dir.join("r.tsr"), &reply).unwrap();
    let (ok, t) = openssl(dir, &["ts", "-reply", "-in", "r.tsr", "-text"]);
    assert!(ok, "{t}");
    assert!(t.contains("Status: Granted."), "{t}");
    assert!(t.contains(&format!("Policy OID: {POLICY}")), "{t}");
    assert!(t.contains("Ordering: no"), "{t}");
    assert!(
        !t.contains("Accuracy: unspecified\n"),
        "accuracy from the clock: {t}"
    );
    if extra.contains(&"-no_nonce") {
        assert!(t.contains("Nonce: unspecified"), "{t}");
    } else {
        // openssl prints the nonce it put in the query; the same line is in the reply.
        let (_, q) = openssl(dir, &["ts", "-query", "-in", "q.tsq", "-text"]);
        let nonce = q
            .lines()
            .find(|l| l.starts_with("Nonce: "))
            .expect("nonce in the query")
            .to_owned();
        assert!(t.contains(&nonce), "{nonce} echoed: {t}");
    }
    let hash = if extra.contains(&"-sha512") {
        "Hash Algorithm: sha512"
    } else {
        "Hash Algorithm: sha256"
    };
    assert!(t.contains(hash), "{t}");
    let root = home.join("ca/root.pem");
    let (_, untrusted) = chain(home, dir);
    let verify = |data: &str| {
        openssl(
            dir,
            &[
                "ts",
                "-verify",
                "-data",
                data,
                "-in",
                "r.tsr",
                "-CAfile",
                root.to_str().unwrap(),
                "-untrusted",
                untrusted.to_str().unwrap(),
            ],
        )
    };
    let (ok, out) = verify("data.txt");
    assert!(ok && out.contains("Verification: OK"), "{extra:?}: {out}");
    let (ok, out) = verify("tampered.txt");
    assert!(!ok, "{extra:?}: a tampered file verified: {out}");
    // The token passes our own verifier too, with our certificate.
    let token = cps_tsa::parse_response(&reply).unwrap().token.unwrap();
    let t2 = cps_tsa::verify_token(&token).unwrap();
    assert_eq!(t2.policy, POLICY);
    t.lines()
        .find(|l| l.starts_with("Serial number: "))
        .expect("serial")
        .trim_start_matches("Serial number: 0x")
        .to_ascii_lowercase()
}

#[test]
fn openssl_time_stamps_verify_and_hostile_queries_are_refused() {
    let (home, mut app) = Appliance::fresh();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("data.txt"), b"CDA document, version 1\n").unwrap();
    std::fs::write(d.join("tampered.txt"), b"CDA document, version 2\n").unwrap();

    // The TSA certificate: pkilint clean, timeStamping only and critical.
    let (tsa_pem, _) = chain(&home, d);
    assert_clean(Linter::Certificate, &tsa_pem);
    let (_, t) = openssl(
        d,
        &["x509", "-in", tsa_pem.to_str().unwrap(), "-noout", "-text"],
    );
    assert!(t.contains("X509v3 Extended Key Usage: critical"), "{t}");
    assert!(t.contains("Time Stamping"), "{t}");

    // The issuance API refuses the profile: only the appliance's own key is a TSA.
    let csr = cps_trust_tests::openssl_csr(d, "outsider", "p256");
    let out = cps_trust_tests::issue_org(
        &home,
        &csr,
        &d.join("outsider.pem"),
        "tsa",
        "outsider",
        "outsider TSA",
        &[],
    );
    assert!(
        !out.status.success(),
        "a tsa certificate for an outside key"
    );
    assert!(
        text(&out.stderr).contains("reserved for the appliance's own key"),
        "{}",
        text(&out.stderr)
    );
    assert!(!d.join("outsider.pem").exists());

    let mut serials = Vec::new();
    for extra in [&["-sha256"][..], &["-sha256", "-no_nonce"], &["-sha512"]] {
        serials.push(stamp_and_verify(&home, &app, d, extra));
    }
    let mut unique = serials.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), serials.len(), "unique serials: {serials:?}");

    // Hostile queries: each a TimeStampResp with status rejection and its failure bit, no token.
    let (ok, out) = openssl(
        d,
        &[
            "ts", "-query", "-data", "data.txt", "-sha256", "-out", "good.tsq",
        ],
    );
    assert!(ok, "{out}");
    let good = std::fs::read(d.join("good.tsq")).unwrap();
    let mut trailing = good.clone();
    trailing.push(0);
    let mut wrong_length = good.clone();
    // The imprint OCTET STRING (04 20 …) made one byte shorter, every length fixed up.
    let at = good.windows(2).position(|w| w == [0x04, 0x20]).unwrap();
    wrong_length.remove(at + 2);
    wrong_length[at + 1] = 0x1f;
    wrong_length[1] -= 1;
    wrong_length[at - 14 + 1] -= 1; // the MessageImprint SEQUENCE (30 2f 30 0b … / 30 31 30 0d …)
    let mut unknown_hash = good.clone();
    // sha256 (…04 02 01) → an OID of the same length no one defined for hashing (…04 02 7f).
    let h = good
        .windows(9)
        .position(|w| w == [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01])
        .unwrap();
    unknown_hash[h + 8] = 0x7f;
    let (ok, out) = openssl(
        d,
        &[
            "ts",
            "-query",
            "-data",
            "data.txt",
            "-sha256",
            "-tspolicy",
            "1.2.3.4",
            "-out",
            "policy.tsq",
        ],
    );
    assert!(ok, "{out}");
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "garbage",
            b"hello, TSA".to_vec(),
            "application/timestamp-query",
            400,
            "the data submitted has the wrong format",
        ),
        (
            "truncated",
            good[..good.len() - 4].to_vec(),
            "application/timestamp-query",
            400,
            "the data submitted has the wrong format",
        ),
        (
            "trailing bytes",
            trailing,
            "application/timestamp-query",
            400,
            "the data submitted has the wrong format",
        ),
        (
            "huge",
            vec![0x30; 64 * 1024],
            "application/timestamp-query",
            413,
            "transaction not permitted or supported",
        ),
        (
            "imprint one byte short",
            wrong_length,
            "application/timestamp-query",
            400,
            "the data submitted has the wrong format",
        ),
        (
            "unknown hash",
            unknown_hash,
            "application/timestamp-query",
            400,
            "unrecognized or unsupported algorithm identifier",
        ),
        (
            "wrong content type",
            good.clone(),
            "application/octet-stream",
            415,
            "transaction not permitted or supported",
        ),
        (
            "a policy we do not serve",
            std::fs::read(d.join("policy.tsq")).unwrap(),
            "application/timestamp-query",
            400,
            "the requested TSA policy is not supported by the TSA",
        ),
    ];
    for (name, body, ct, status, fail) in cases {
        let f = d.join("hostile.tsq");
        std::fs::write(&f, &body).unwrap();
        let (code, reply) = post(&app, &f, ct);
        assert_eq!(code, status, "{name}: {}", text(&reply));
        std::fs::write(d.join("hostile.tsr"), &reply).unwrap();
        let (ok, t) = openssl(d, &["ts", "-reply", "-in", "hostile.tsr", "-text"]);
        assert!(ok, "{name}: {t}");
        assert!(t.contains("Status: Rejected."), "{name}: {t}");
        assert!(t.contains(&format!("Failure info: {fail}")), "{name}: {t}");
        let parsed = cps_tsa::parse_response(&reply).unwrap();
        assert!(parsed.token.is_none(), "{name}");
        assert_eq!(parsed.fail_info.len(), 1, "{name}");
    }
    // Still healthy, still stamping.
    let (code, _) = http_get(&app.http, "/health").unwrap();
    assert_eq!(code, 200);
    serials.push(stamp_and_verify(&home, &app, d, &["-sha256"]));

    // Every token is in the audit trail (a DICOM message per token, the serial as its object),
    // and no refusal is.
    wait_for("the tokens' audit records", Duration::from_secs(15), || {
        let out = home.cps(&[
            "audit",
            "events",
            "--event-type",
            "timestamp-issued",
            "--limit",
            "1000",
        ]);
        (text(&out.stdout).lines().count() == serials.len()).then_some(())
    });
    let log = records_log(&home.path);
    for serial in &serials {
        assert!(
            log.windows(serial.len()).any(|w| w == serial.as_bytes()),
            "token {serial} not in the audit log"
        );
    }
    app.daemon.stop(Duration::from_secs(10));
}

/// The bytes of every `records.log` (the audit repository's log) under `dir`.
fn records_log(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(records_log(&p));
        } else if p.file_name().is_some_and(|n| n == "records.log") {
            out.extend(std::fs::read(&p).unwrap_or_default());
        }
    }
    out
}

/// Switch a home to the kernel's clock state with a zero tolerance: the clock is not trusted
/// (as in `tests/tests/time.rs`).
fn distrust_the_clock(home: &Home) {
    let cfg = home.config_text();
    let start = cfg.find("\n[time]\n").expect("[time] section") + 1;
    let end = cfg[start + 1..]
        .find("\n[")
        .map_or(cfg.len(), |i| start + 1 + i + 1);
    let mut cfg = cfg;
    cfg.replace_range(
        start..end,
        "[time]\nsource = \"kernel\"\nmax_error_ms = 0\n",
    );
    home.set_config_text(&cfg);
}

#[test]
fn with_an_untrusted_clock_no_token() {
    let (home, mut app) = Appliance::fresh();
    app.daemon.stop(Duration::from_secs(10));
    distrust_the_clock(&home);
    let app = Appliance::start(&home);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("data.txt"), b"CDA document\n").unwrap();
    let (ok, out) = openssl(
        d,
        &[
            "ts", "-query", "-data", "data.txt", "-sha256", "-cert", "-out", "q.tsq",
        ],
    );
    assert!(ok, "{out}");
    let (code, reply) = post(&app, &d.join("q.tsq"), "application/timestamp-query");
    assert_eq!(code, 503, "{}", text(&reply));
    std::fs::write(d.join("r.tsr"), &reply).unwrap();
    let (ok, t) = openssl(d, &["ts", "-reply", "-in", "r.tsr", "-text"]);
    assert!(ok, "{t}");
    assert!(t.contains("Status: Rejected."), "{t}");
    assert!(
        t.contains("Failure info: the request cannot be handled due to system failure"),
        "{t}"
    );
    assert!(cps_tsa::parse_response(&reply).unwrap().token.is_none());
}
