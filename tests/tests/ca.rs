//! Issue "CA and VA": the API over mutual TLS, revocation, CRLs — against a running appliance,
//! curl, openssl and pkilint.

use std::process::Command;
use std::time::Duration;

use cps_trust_tests::pcsc::CardAppliance;
use cps_trust_tests::pkilint::Linter;
use cps_trust_tests::*;

fn operator_curl(
    home: &Home,
    app: &Appliance,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    operator_curl_with(home, app, method, path, body, &[])
}

fn operator_curl_with(
    home: &Home,
    app: &Appliance,
    method: &str,
    path: &str,
    body: Option<&str>,
    extra: &[&str],
) -> (u16, String) {
    let cert = home.join("operator/admin-cert.pem");
    let key = home.join("operator/admin-key.pem");
    curl_mtls(home, app, (&cert, &key), method, path, body, extra)
}

/// No client certificate: 401. The operator: 200. Bad input: precise 4xx, nothing changed.
#[test]
fn api_authentication_and_hostile_input() {
    let (home, app) = Appliance::fresh();
    let (code, body) = curl(&[
        "--cacert",
        home.join("ca/root.pem").to_str().unwrap(),
        &format!("https://{}/api/v1/whoami", app.https),
    ]);
    assert_eq!(code, 401, "{}", text(&body));
    assert!(text(&body).contains("client certificate is required"));

    let (code, body) = operator_curl(&home, &app, "GET", "/api/v1/whoami", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"ca-operator\""), "{body}");

    let ocsp_serial = serial_of(&home.join("ca/personnes-ocsp.pem"));
    let revoke = format!("/api/v1/certificates/personnes/{ocsp_serial}/revoke");
    for (body, expect_code, expect) in [
        ("{not json", 400, "invalid JSON"),
        ("{\"reason\":\"because\"}", 400, "unknown revocation reason"),
        (
            "{\"reason\":\"superseded\",\"extra\":1}",
            400,
            "unknown field",
        ),
        ("{\"reason\":\"removeFromCRL\"}", 409, "not on hold"),
    ] {
        let (code, resp) = operator_curl(&home, &app, "POST", &revoke, Some(body));
        assert_eq!(code, expect_code, "{body} -> {resp}");
        assert!(resp.contains(expect), "{body} -> {resp}");
    }
    let huge = format!(
        "{{\"reason\":\"superseded\",\"pad\":\"{}\"}}",
        "x".repeat(200 * 1024)
    );
    // The server refuses before reading the body (the client waits for 100-continue).
    let (code, _) = operator_curl_with(
        &home,
        &app,
        "POST",
        &revoke,
        Some(&huge),
        &["--http1.1", "-H", "Expect: 100-continue"],
    );
    assert_eq!(code, 413);
    let (code, resp) = operator_curl(
        &home,
        &app,
        "POST",
        "/api/v1/certificates/personnes/0123456789ABCDEF/revoke",
        Some("{\"reason\":\"superseded\"}"),
    );
    assert_eq!(code, 404, "{resp}");
    let (code, resp) = operator_curl(
        &home,
        &app,
        "POST",
        "/api/v1/certificates/personnes/zz/revoke",
        Some("{\"reason\":\"superseded\"}"),
    );
    assert_eq!(code, 400, "{resp}");
    let (code, _) = operator_curl(&home, &app, "GET", "/api/v1/certificates/nope/01", None);
    assert_eq!(code, 404);
    // None of that changed the certificate.
    let (code, resp) = operator_curl(
        &home,
        &app,
        "GET",
        &format!("/api/v1/certificates/personnes/{ocsp_serial}"),
        None,
    );
    assert_eq!(code, 200);
    assert!(resp.contains("\"status\":\"valid\""), "{resp}");
    // The OpenAPI document is served by the appliance.
    let (code, resp) = operator_curl(&home, &app, "GET", "/api/v1/openapi.json", None);
    assert_eq!(code, 200);
    assert!(
        resp.contains("\"openapi\":\"3.1.0\"")
            && resp.contains("/api/v1/certificates/{ca}/{serial}/revoke"),
        "{resp}"
    );
    // Swagger UI comes from the binary, with no reference to a CDN.
    let (code, page) = operator_curl(&home, &app, "GET", "/api/docs/", None);
    assert_eq!(code, 200);
    assert!(
        page.contains("swagger-ui") && !page.contains("unpkg") && !page.contains("cdn"),
        "{page}"
    );
}

fn crl_pem(app: &Appliance, ca: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let (code, der) = curl(&[&format!("http://{}/crl/{ca}.crl", app.http)]);
    assert_eq!(code, 200);
    let der_path = dir.join(format!("{ca}.crl"));
    std::fs::write(&der_path, der).unwrap();
    let pem = dir.join(format!("{ca}.crl.pem"));
    let out = Command::new(peer("openssl"))
        .args(["crl", "-inform", "DER", "-in"])
        .arg(&der_path)
        .arg("-out")
        .arg(&pem)
        .output()
        .unwrap();
    assert_success(&out, "openssl crl");
    pem
}

/// `cps-trust cert revoke` → the next CRL lists it; openssl's CRL check says revoked, good
/// certificates still verify; pkilint finds nothing in any CRL; hold/resume/final semantics.
#[test]
fn revocation_reaches_the_crl_and_openssl() {
    let (home, app) = Appliance::fresh();
    let dir = tempfile::tempdir().unwrap();
    let ca = home.join("ca");
    let victim = serial_of(&ca.join("personnes-ocsp.pem"));

    // Suspend, resume, suspend again, then revoke for good.
    for (reason, status) in [
        ("certificateHold", "on-hold"),
        ("removeFromCRL", "valid"),
        ("certificateHold", "on-hold"),
        ("keyCompromise", "revoked"),
    ] {
        let out = home.cps(&[
            "cert",
            "revoke",
            "--ca",
            "personnes",
            "--serial",
            &victim,
            "--reason",
            reason,
        ]);
        assert_success(&out, &format!("cert revoke {reason}"));
        assert!(
            text(&out.stdout).contains(&format!("status      {status}")),
            "{}",
            text(&out.stdout)
        );
    }
    let out = home.cps(&[
        "cert",
        "revoke",
        "--ca",
        "personnes",
        "--serial",
        &victim,
        "--reason",
        "superseded",
    ]);
    assert_one_line_error(&out, &["409", "already revoked (keyCompromise)", "final"]);

    let personnes = crl_pem(&app, "personnes", dir.path());
    let root = crl_pem(&app, "root", dir.path());
    let organisations = crl_pem(&app, "organisations", dir.path());
    let crls = dir.path().join("all.crl.pem");
    std::fs::write(
        &crls,
        [&personnes, &root]
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect::<String>(),
    )
    .unwrap();

    let verify = |cert: &str, untrusted: &str| {
        Command::new(peer("openssl"))
            .args(["verify", "-crl_check_all", "-CRLfile"])
            .arg(&crls)
            .arg("-CAfile")
            .arg(ca.join("root.pem"))
            .arg("-untrusted")
            .arg(ca.join(untrusted))
            .arg(ca.join(cert))
            .output()
            .unwrap()
    };
    let out = verify("personnes-ocsp.pem", "personnes.pem");
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("certificate revoked")
            || text(&out.stderr).contains("certificate revoked"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = verify("personnes.pem", "personnes.pem");
    assert_success(&out, "issuing CA with CRL check");

    let parsed = Command::new(peer("openssl"))
        .args(["crl", "-noout", "-text", "-in"])
        .arg(&personnes)
        .output()
        .unwrap();
    let t = text(&parsed.stdout);
    assert!(t.contains("Key Compromise") && t.contains(&victim), "{t}");
    for crl in [&personnes, &root, &organisations] {
        pkilint::assert_clean(Linter::Crl, crl);
    }
    // The CRL number grows with each new CRL.
    let n = |p: &std::path::Path| {
        let o = Command::new(peer("openssl"))
            .args(["crl", "-noout", "-crlnumber", "-in"])
            .arg(p)
            .output()
            .unwrap();
        i64::from_str_radix(
            text(&o.stdout)
                .trim()
                .trim_start_matches("crlNumber=0x")
                .trim_start_matches("crlNumber="),
            16,
        )
        .unwrap_or(-1)
    };
    let first = n(&personnes);
    let out = home.cps(&[
        "cert",
        "revoke",
        "--ca",
        "organisations",
        "--serial",
        &serial_of(&ca.join("organisations-ocsp.pem")),
        "--reason",
        "superseded",
    ]);
    assert_success(&out, "second revocation");
    let again = crl_pem(&app, "organisations", dir.path());
    assert!(n(&again) >= 1 && first >= 1);

    // Durable: after a restart the revocation is still there.
    drop(app);
    let app = Appliance::start(&home);
    let p2 = crl_pem(&app, "personnes", dir.path());
    let t = text(
        &Command::new(peer("openssl"))
            .args(["crl", "-noout", "-text", "-in"])
            .arg(&p2)
            .output()
            .unwrap()
            .stdout,
    );
    assert!(t.contains(&victim), "revocation lost across restart:\n{t}");
}

/// A client certificate is checked against the live revocation state: once the operator's own
/// certificate is revoked, the next TLS handshake fails.
#[test]
fn revoked_operator_certificate_is_refused_at_the_handshake() {
    let (home, app) = Appliance::fresh();
    let op_serial = serial_of(&home.join("operator/admin-cert.pem"));
    let (code, _) = operator_curl(&home, &app, "GET", "/api/v1/whoami", None);
    assert_eq!(code, 200);
    let out = home.revoke("organisations", &op_serial, "affiliationChanged");
    assert_success(&out, "revoke operator certificate");
    let (code, _) = operator_curl(&home, &app, "GET", "/api/v1/whoami", None);
    assert_eq!(
        code, 0,
        "a revoked client certificate must not complete the handshake"
    );
    let out = home.cps(&["cert", "list"]);
    assert!(
        !out.status.success(),
        "the CLI with a revoked credential must fail"
    );
    let _ = Duration::from_secs(0);
}

/// A CSR made by openssl with a fresh key.
/// openssl ocsp: `good` for a fresh certificate, `revoked` with the reason immediately after
/// `cps-trust cert revoke`, `Response verify OK`; the RFC 5019 GET form with curl; pkilint
/// on the responses.
#[test]
fn ocsp_good_then_revoked_immediately() {
    // A card certificate (the personnes CA), enrolled on a simulated card.
    let card = CardAppliance::start("ocsp");
    let (home, app) = (&card.home, &card.app);
    let dir = tempfile::tempdir().unwrap();
    let ee = card.auth_pem.clone();
    let t = ocsp_query(home, app, "personnes", &[&ee], &[]);
    assert!(
        t.contains("Response verify OK") && t.contains(": good"),
        "{t}"
    );
    // SHA-256 CertID too.
    let t = ocsp_query(home, app, "personnes", &[&ee], &["-sha256"]);
    assert!(
        t.contains("Response verify OK") && t.contains(": good"),
        "{t}"
    );

    // GET (RFC 5019) with curl, response checked by openssl and pkilint.
    let req = dir.path().join("req.der");
    let out = Command::new(peer("openssl"))
        .args(["ocsp", "-no_nonce", "-issuer"])
        .arg(home.join("ca/personnes.pem"))
        .arg("-cert")
        .arg(&ee)
        .arg("-reqout")
        .arg(&req)
        .output()
        .unwrap();
    assert_success(&out, "openssl ocsp -reqout");
    let b64 = base64_encode(&std::fs::read(&req).unwrap());
    let enc: String = b64
        .chars()
        .map(|c| match c {
            '+' => "%2B".into(),
            '/' => "%2F".into(),
            '=' => "%3D".into(),
            c => c.to_string(),
        })
        .collect();
    let (code, resp) = curl(&[
        "-D",
        dir.path().join("headers").to_str().unwrap(),
        &format!("http://{}/ocsp/{enc}", app.http),
    ]);
    assert_eq!(code, 200);
    let headers = std::fs::read_to_string(dir.path().join("headers"))
        .unwrap()
        .to_lowercase();
    assert!(
        headers.contains("content-type: application/ocsp-response")
            && headers.contains("cache-control: max-age="),
        "{headers}"
    );
    let resp_path = dir.path().join("resp.der");
    std::fs::write(&resp_path, &resp).unwrap();
    let out = Command::new(peer("openssl"))
        .args(["ocsp", "-reqin"])
        .arg(&req)
        .arg("-respin")
        .arg(&resp_path)
        .arg("-issuer")
        .arg(home.join("ca/personnes.pem"))
        .arg("-cert")
        .arg(&ee)
        .arg("-CAfile")
        .arg(home.join("ca/root.pem"))
        .output()
        .unwrap();
    let t = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        t.contains("Response verify OK") && t.contains(": good"),
        "{t}"
    );
    pkilint::assert_clean(Linter::OcspResponse, &resp_path);

    // Revoke: the very next query says revoked, with the reason.
    let serial = serial_of(&ee);
    assert_success(
        &home.cps(&[
            "cert",
            "revoke",
            "--ca",
            "personnes",
            "--serial",
            &serial,
            "--reason",
            "keyCompromise",
        ]),
        "revoke",
    );
    let t = ocsp_query(home, app, "personnes", &[&ee], &[]);
    assert!(
        t.contains("Response verify OK")
            && t.contains(": revoked")
            && t.contains("Reason: keyCompromise"),
        "{t}"
    );
    let (code, resp) = curl(&[&format!("http://{}/ocsp/{enc}", app.http)]);
    assert_eq!(code, 200);
    std::fs::write(&resp_path, &resp).unwrap();
    pkilint::assert_clean(Linter::OcspResponse, &resp_path);

    // A revoked key is blocked for ever: a new CSR with the same key is refused.
    let csr = openssl_csr(dir.path(), "org", "p256");
    let org = dir.path().join("org.pem");
    assert_success(
        &issue_org(
            home,
            &csr,
            &org,
            "org-tls-client",
            "318751275100020",
            "dmp-connector",
            &[],
        ),
        "issue",
    );
    assert_success(
        &home.revoke("organisations", &serial_of(&org), "keyCompromise"),
        "revoke",
    );
    let again = issue_org(
        home,
        &csr,
        &dir.path().join("again.pem"),
        "org-tls-client",
        "318751275100020",
        "dmp-connector",
        &[],
    );
    assert_one_line_error(&again, &["compromised-key blocklist"]);
}

fn base64_encode(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// One certificate of every issuance profile, through the API with the CA keys in the HSM:
/// pkilint reports nothing, openssl verifies each against the chain.
#[test]
fn every_profile_issued_by_the_appliance_passes_pkilint() {
    // Card certificates come only from enrolment: one simulated card.
    let card = CardAppliance::start("pkilint");
    let home = &card.home;
    let dir = tempfile::tempdir().unwrap();
    let org = |profile: &str, cn: &str, extra: &[&str]| {
        let csr = openssl_csr(dir.path(), profile, "rsa2048");
        let out_path = dir.path().join(format!("{profile}.pem"));
        let out = issue_org(home, &csr, &out_path, profile, "318751275100020", cn, extra);
        assert_success(&out, profile);
        (out_path, "organisations")
    };
    let mut issued = vec![
        org("org-tls-client", "dmp-connector", &[]),
        org(
            "org-tls-server",
            "dmp.example.test",
            &["--dns", "api.example.test"],
        ),
        org("org-cachet", "DMP SIGN", &[]),
    ];
    for (profile, pem) in [("cps-auth", &card.auth_pem), ("cps-sign", &card.sign_pem)] {
        let out_path = dir.path().join(format!("{profile}.pem"));
        std::fs::copy(pem, &out_path).unwrap();
        issued.push((out_path, "personnes"));
    }
    // The appliance's own audit checkpoint certificate (its profile is not issued through the
    // API), made at start.
    let own = std::fs::read_to_string(home.join("audit/checkpoint.pem")).unwrap();
    let leaf = &own[..own.find("-----END CERTIFICATE-----").unwrap() + 26];
    let checkpoint_pem = dir.path().join("audit-checkpoint.pem");
    std::fs::write(&checkpoint_pem, leaf).unwrap();
    issued.push((checkpoint_pem, "organisations"));
    // And its time-stamping certificate (profile `tsa`, also the appliance's own).
    let own = std::fs::read_to_string(home.join("tsa/tsa.pem")).unwrap();
    let leaf = &own[..own.find("-----END CERTIFICATE-----").unwrap() + 26];
    let tsa_pem = dir.path().join("tsa.pem");
    std::fs::write(&tsa_pem, leaf).unwrap();
    issued.push((tsa_pem, "organisations"));
    // With explicit policy: each end-entity policy is certified by its issuing CA.
    for (profile, policy) in [
        ("cps-auth", "1.3.6.1.4.1.32473.1.1.1"),
        ("org-tls-server", "1.3.6.1.4.1.32473.1.2.2"),
        ("audit-checkpoint", "1.3.6.1.4.1.32473.1.2.4"),
        ("tsa", "1.3.6.1.4.1.32473.1.2.5"),
    ] {
        let (pem, ca) = issued
            .iter()
            .find(|(p, _)| p.ends_with(format!("{profile}.pem")))
            .unwrap();
        let v = Command::new(peer("openssl"))
            .args([
                "verify",
                "-policy_check",
                "-explicit_policy",
                "-policy",
                policy,
                "-CAfile",
            ])
            .arg(home.join("ca/root.pem"))
            .arg("-untrusted")
            .arg(home.join(&format!("ca/{ca}.pem")))
            .arg(pem)
            .output()
            .unwrap();
        assert_success(&v, &format!("explicit policy {profile}"));
    }
    for (pem, ca) in &issued {
        pkilint::assert_clean(Linter::Certificate, pem);
        let v = Command::new(peer("openssl"))
            .args(["verify", "-CAfile"])
            .arg(home.join("ca/root.pem"))
            .arg("-untrusted")
            .arg(home.join(&format!("ca/{ca}.pem")))
            .arg(pem)
            .output()
            .unwrap();
        assert_success(&v, &format!("openssl verify {}", pem.display()));
    }
}

/// Hostile CSRs and OCSP requests: a precise 4xx (or malformedRequest) and an unchanged store.
#[test]
fn hostile_csr_and_ocsp_corpus() {
    let (home, app) = Appliance::fresh();
    let dir = tempfile::tempdir().unwrap();
    let count = || {
        text(&home.cps(&["cert", "list", "--limit", "1000"]).stdout)
            .lines()
            .count()
    };
    let before = count();
    let good = openssl_csr(dir.path(), "good", "p256");
    let good_bytes = std::fs::read(&good).unwrap();
    let der_path = dir.path().join("good.der");
    assert_success(
        &Command::new(peer("openssl"))
            .args(["req", "-in"])
            .arg(&good)
            .args(["-outform", "DER", "-out"])
            .arg(&der_path)
            .output()
            .unwrap(),
        "csr to der",
    );
    let der = std::fs::read(&der_path).unwrap();
    let mut cases: Vec<(String, Vec<u8>, &str)> = vec![
        ("garbage".into(), b"this is not a CSR".to_vec(), "CSR"),
        ("empty".into(), vec![], "CSR"),
        ("truncated".into(), der[..der.len() / 2].to_vec(), "CSR"),
    ];
    let mut flipped = der.clone();
    let n = flipped.len();
    flipped[n - 5] ^= 0x40; // inside the signature
    cases.push(("bad signature".into(), flipped, "signature"));
    let weak = openssl_csr(dir.path(), "weak", "rsa1024");
    cases.push(("RSA-1024".into(), std::fs::read(&weak).unwrap(), "2048"));
    // A ROCA-fingerprinted modulus (tests/vectors/roca-2048.hex) spliced into an RSA-2048 CSR in
    // place of its own modulus: refused by the key policy before anything else.
    let rsa = openssl_csr(dir.path(), "rsa", "rsa2048");
    let rsa_der_path = dir.path().join("rsa.der");
    assert_success(
        &Command::new(peer("openssl"))
            .args(["req", "-in"])
            .arg(&rsa)
            .args(["-outform", "DER", "-out"])
            .arg(&rsa_der_path)
            .output()
            .unwrap(),
        "csr to der",
    );
    let mut rsa_der = std::fs::read(&rsa_der_path).unwrap();
    let modulus_hex = text(
        &Command::new(peer("openssl"))
            .args(["req", "-noout", "-modulus", "-in"])
            .arg(&rsa)
            .output()
            .unwrap()
            .stdout,
    );
    let own: Vec<u8> = hex_bytes(modulus_hex.trim().trim_start_matches("Modulus="));
    let roca: Vec<u8> = hex_bytes(
        std::fs::read_to_string(repo_root().join("tests/vectors/roca-2048.hex"))
            .unwrap()
            .trim(),
    );
    assert_eq!(own.len(), roca.len());
    let at = rsa_der
        .windows(own.len())
        .position(|w| w == own.as_slice())
        .expect("modulus inside the CSR");
    rsa_der[at..at + roca.len()].copy_from_slice(&roca);
    cases.push(("ROCA".into(), rsa_der, "ROCA"));
    let mut huge = good_bytes.clone();
    huge.extend(std::iter::repeat_n(b'A', 70 * 1024));
    cases.push(("oversized".into(), huge, "413"));
    let org = |csr: &std::path::Path, out: &str, holder: &str| {
        issue_org(
            &home,
            csr,
            &dir.path().join(out),
            "org-tls-client",
            holder,
            "dmp-connector",
            &[],
        )
    };
    for (name, bytes, expect) in cases {
        let f = dir.path().join("case.csr");
        std::fs::write(&f, &bytes).unwrap();
        let out = org(&f, "x.pem", "318751275100020");
        assert_one_line_error(&out, &[expect]);
        let _ = name;
    }
    // The same key for a different holder is refused.
    assert_success(&org(&good, "a.pem", "318751275100020"), "first holder");
    let out = org(&good, "b.pem", "499700367909006");
    assert_one_line_error(&out, &["409", "already certified for another holder"]);
    // Card certificates never come from a CSR, whoever asks (card enrolment makes them).
    for profile in ["cps-auth", "cps-sign"] {
        let out = issue_person(
            &home,
            &good,
            &dir.path().join("c.pem"),
            profile,
            "810002813839",
        );
        assert_one_line_error(&out, &["403", "only by card enrolment"]);
    }
    // Profile / subject mismatches and bad identities.
    let other = openssl_csr(dir.path(), "other", "p256");
    let out = issue_person(
        &home,
        &other,
        &dir.path().join("c.pem"),
        "org-tls-client",
        "810002813839",
    );
    assert_one_line_error(&out, &["400"]);
    let out = issue_person(
        &home,
        &other,
        &dir.path().join("c.pem"),
        "no-such-profile",
        "810002813839",
    );
    assert_one_line_error(&out, &["unknown profile"]);
    assert_eq!(
        count(),
        before + 1,
        "only the one good issuance may have changed the store"
    );

    // OCSP: garbage, empty, oversized → malformedRequest (OCSPResponseStatus 1); a CA we do not
    // know → unauthorized (6).
    for body in [
        b"garbage".to_vec(),
        vec![],
        vec![0x30, 0x82, 0xff, 0xff, 0x00],
    ] {
        let f = dir.path().join("req.bin");
        std::fs::write(&f, &body).unwrap();
        let (code, resp) = curl(&[
            "-H",
            "Content-Type: application/ocsp-request",
            "--data-binary",
            &format!("@{}", f.display()),
            &format!("http://{}/ocsp", app.http),
        ]);
        assert_eq!(
            (code, resp.as_slice()),
            (200, &[0x30, 0x03, 0x0a, 0x01, 0x01][..])
        );
    }
    let f = dir.path().join("big.bin");
    std::fs::write(&f, vec![0x30; 100 * 1024]).unwrap();
    let (code, _) = curl(&[
        "-H",
        "Content-Type: application/ocsp-request",
        "--data-binary",
        &format!("@{}", f.display()),
        &format!("http://{}/ocsp", app.http),
    ]);
    assert!(code == 413 || code == 200, "{code}");
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    let ca_out = Command::new(peer("openssl"))
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=Foreign CA",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(foreign.join("ca.key"))
        .arg("-out")
        .arg(foreign.join("ca.pem"))
        .output()
        .unwrap();
    assert_success(&ca_out, "foreign CA");
    let out = Command::new(peer("openssl"))
        .args(["ocsp", "-issuer"])
        .arg(foreign.join("ca.pem"))
        .args([
            "-serial",
            "0x1234",
            "-url",
            &format!("http://{}/ocsp", app.http),
            "-noverify",
        ])
        .output()
        .unwrap();
    let t = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(t.contains("unauthorized") || t.contains("(6)"), "{t}");
}

/// Many parallel issuances and revocations: unique serials, and every acknowledged revocation
/// is in the next CRL and in OCSP.
#[test]
fn concurrent_issuance_and_revocation() {
    let (home, app) = Appliance::fresh();
    let dir = tempfile::tempdir().unwrap();
    let n = 12;
    let csrs: Vec<_> = (0..n)
        .map(|i| openssl_csr(dir.path(), &format!("c{i}"), "p256"))
        .collect();
    let handles: Vec<_> = csrs
        .iter()
        .enumerate()
        .map(|(i, csr)| {
            let out = dir.path().join(format!("c{i}.pem"));
            let child = home
                .command(&[
                    "cert",
                    "issue",
                    "--profile",
                    "org-tls-client",
                    "--csr",
                    csr.to_str().unwrap(),
                    "--holder",
                    "318751275100020",
                    "--cn",
                    "dmp-connector",
                    "-o",
                    out.to_str().unwrap(),
                ])
                .args(ORG_ARGS)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (child, out)
        })
        .collect();
    let mut pems = Vec::new();
    for (child, out) in handles {
        let o = child.wait_with_output().unwrap();
        assert_success(&o, "parallel issue");
        pems.push(out);
    }
    let serials: std::collections::BTreeSet<String> = pems.iter().map(|p| serial_of(p)).collect();
    assert_eq!(serials.len(), n, "serials must be unique");
    let to_revoke: Vec<_> = pems.iter().take(n / 2).collect();
    let children: Vec<_> = to_revoke
        .iter()
        .map(|p| {
            home.command(&[
                "cert",
                "revoke",
                "--ca",
                "organisations",
                "--serial",
                &serial_of(p),
                "--reason",
                "superseded",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for c in children {
        assert_success(&c.wait_with_output().unwrap(), "parallel revoke");
    }
    let crl = crl_pem(&app, "organisations", dir.path());
    let t = text(
        &Command::new(peer("openssl"))
            .args(["crl", "-noout", "-text", "-in"])
            .arg(&crl)
            .output()
            .unwrap()
            .stdout,
    );
    for p in &to_revoke {
        assert!(
            t.contains(&serial_of(p)),
            "revoked serial missing from the CRL"
        );
    }
    let refs: Vec<&std::path::Path> = pems.iter().map(|p| p.as_path()).collect();
    let t = ocsp_query(&home, &app, "organisations", &refs, &[]);
    assert!(t.contains("Response verify OK"), "{t}");
    assert_eq!(t.matches(": revoked").count(), n / 2, "{t}");
    assert_eq!(t.matches(": good").count(), n - n / 2, "{t}");
}

/// Roles: an operator with only `auditor` reads but gets 403 for revocation and issuance; an
/// unknown role is refused.
#[test]
fn operator_roles_are_enforced() {
    let (home, app) = Appliance::fresh();
    let out = home.cps(&["operator", "add", "--name", "audrey", "--role", "auditor"]);
    assert_success(&out, "operator add");
    let out = home.cps(&["operator", "add", "--name", "bad", "--role", "superuser"]);
    assert_one_line_error(&out, &["400", "unknown role 'superuser'"]);
    let out = home.cps(&["cert", "--operator", "audrey", "list"]);
    assert_success(&out, "auditor lists");
    let serial = serial_of(&home.join("ca/personnes-ocsp.pem"));
    let out = home.cps(&[
        "cert",
        "--operator",
        "audrey",
        "revoke",
        "--ca",
        "personnes",
        "--serial",
        &serial,
        "--reason",
        "superseded",
    ]);
    assert_one_line_error(
        &out,
        &["403", "operator 'audrey' lacks the role ca-operator"],
    );
    let dir = tempfile::tempdir().unwrap();
    let csr = openssl_csr(dir.path(), "x", "p256");
    let out = home.cps(&[
        "cert",
        "--operator",
        "audrey",
        "issue",
        "--profile",
        "cps-auth",
        "--csr",
        csr.to_str().unwrap(),
        "--holder",
        "810002813839",
        "--person",
        "810002813839,DONNAT-GADY,ISABELLE,10",
    ]);
    assert_one_line_error(&out, &["403"]);
    // An auditor cannot create operators either.
    let out = home.cps(&[
        "operator",
        "--as",
        "audrey",
        "add",
        "--name",
        "eve",
        "--role",
        "ca-operator",
    ]);
    assert_one_line_error(&out, &["403"]);
    let _ = &app;
}

/// A bad certificate profile in the home stops the appliance with a clear error.
#[test]
fn a_bad_profile_stops_the_appliance() {
    let home = Home::initialised();
    std::fs::create_dir_all(home.join("certs")).unwrap();
    std::fs::write(
        home.join("certs/cps-auth.toml"),
        "name = \"cps-auth\"\nvalidity_dayz = 3\n",
    )
    .unwrap();
    let out = home.cps(&["serve"]);
    assert_one_line_error(&out, &["cps-auth.toml"]);
}

/// A client that never finishes its request headers (slowloris) is disconnected, and the
/// appliance keeps serving others meanwhile.
#[test]
fn slow_clients_are_disconnected() {
    use std::io::{Read, Write};
    let (_home, app) = Appliance::fresh();
    let mut slow = std::net::TcpStream::connect(&app.http).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (code, _) = http_get(&app.http, "/health").unwrap();
    assert_eq!(code, 200, "others are served while a slow client waits");
    let t = std::time::Instant::now();
    let mut buf = [0u8; 512];
    let n = slow.read(&mut buf).unwrap_or(0);
    let elapsed = t.elapsed();
    assert!(
        elapsed < Duration::from_secs(20),
        "slow client still connected after {elapsed:?}"
    );
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// CRLs are kept fresh on a schedule: after a revocation, `<home>/crl/<ca>.crl` lists it without
/// anybody fetching the CRL.
#[test]
fn crl_files_are_refreshed_on_a_schedule() {
    let (home, _app) = Appliance::fresh();
    let victim = serial_of(&home.join("ca/personnes-ocsp.pem"));
    assert_success(
        &home.cps(&[
            "cert",
            "revoke",
            "--ca",
            "personnes",
            "--serial",
            &victim,
            "--reason",
            "superseded",
        ]),
        "revoke",
    );
    let file = home.join("crl/personnes.crl");
    wait_for("refreshed CRL file", Duration::from_secs(40), || {
        let out = Command::new(peer("openssl"))
            .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
            .arg(&file)
            .output()
            .ok()?;
        text(&out.stdout).contains(&victim).then_some(())
    });
}
