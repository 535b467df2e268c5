//! End to end through pcscd with the simulated card: import the registry, enrol a card with the
//! appliance, use it with OpenSC, log in with it (VIHF assertion checked by xmlsec1), manage its
//! lifecycle, and watch OCSP follow.

use std::path::Path;
use std::process::{Command, Output};

use cps_trust_tests::pcsc::{
    IDNAT, PcscStack, STRUCTURE, appliance_with_blank_card, certificate_pem as cert_pem,
    enrol_card, registry_csv,
};
use cps_trust_tests::*;

fn openssl(args: &[&str]) -> Output {
    Command::new(peer("openssl")).args(args).output().unwrap()
}

#[test]
fn enrol_use_log_in_and_oppose_a_card() {
    let (stack, _sim, reader) = PcscStack::with_blank_card("issuance");
    let dir = stack.dir.path().to_path_buf();
    let (home, mut app) = Appliance::fresh_in(stack.home());

    // Registry, then enrolment through the appliance's reader.
    let card = enrol_card(&home, &dir, &reader);
    let (pin, serial, auth_serial, sign_serial) = (
        card.pin.clone(),
        card.serial.clone(),
        card.auth_serial.clone(),
        card.sign_serial.clone(),
    );
    let out = home.cps(&[
        "professional",
        "import",
        registry_csv(&dir).to_str().unwrap(),
    ]);
    assert!(
        text(&out.stdout).contains("outcome unchanged"),
        "{}",
        text(&out.stdout)
    );
    let auth_pem = cert_pem(&home, &dir, &auth_serial);
    let sign_pem = cert_pem(&home, &dir, &sign_serial);

    // The certificate names the professional from the registry.
    let subject = text(
        &openssl(&[
            "x509",
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
            "-in",
            auth_pem.to_str().unwrap(),
        ])
        .stdout,
    );
    for want in [IDNAT, "DONNAT-GADY", "ISABELLE", "Médecin"] {
        assert!(
            subject.contains(want) || subject.contains(&want.replace('é', "\\C3\\A9")),
            "{want} not in {subject}"
        );
    }

    // OpenSC signs with the card's authentication key; openssl verifies with the certificate.
    let data = dir.join("data.txt");
    std::fs::write(&data, b"signed by the enrolled card\n").unwrap();
    let sig = dir.join("sig.bin");
    stack.sign_with_card(&pin, "01", &data, &sig);
    let pubkey = dir.join("auth.pub");
    assert_success(
        &openssl(&[
            "x509",
            "-pubkey",
            "-noout",
            "-in",
            auth_pem.to_str().unwrap(),
            "-out",
            pubkey.to_str().unwrap(),
        ]),
        "x509 -pubkey",
    );
    let v = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        pubkey.to_str().unwrap(),
        "-signature",
        sig.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    assert!(
        text(&v.stdout).contains("Verified OK"),
        "{}{}",
        text(&v.stdout),
        text(&v.stderr)
    );

    let ocsp = |app: &Appliance, certs: &[&Path]| ocsp_query(&home, app, "personnes", certs, &[]);
    let out = ocsp(&app, &[&auth_pem, &sign_pem]);
    assert_eq!(out.matches(": good").count(), 2, "{out}");

    // Card login: the assertion names the professional; xmlsec1 verifies its signature.
    let assertion = dir.join("assertion.xml");
    let out = card_login(&home, &reader, &pin, &assertion);
    assert_success(&out, "cps-trust login");
    let xml = std::fs::read_to_string(&assertion).unwrap();
    assert!(xml.contains(IDNAT) && xml.contains("DONNAT-GADY"), "{xml}");
    let v = Command::new(peer("xmlsec1"))
        .args([
            "--verify",
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
            "--trusted-pem",
        ])
        .arg(home.join("ca/root.pem"))
        .arg("--untrusted-pem")
        .arg(home.join("ca/organisations.pem"))
        .arg(&assertion)
        .output()
        .unwrap();
    assert!(v.status.success(), "xmlsec1: {}", text(&v.stderr));
    // A DMP service validates it once; the same assertion again is a replay. Validation is the
    // `service` role's alone: the administrator cannot burn a service's assertion.
    let out = home.cps(&["xua", "validate", assertion.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("lacks the role service"),
        "{}",
        text(&out.stderr)
    );
    assert_success(
        &home.cps(&["operator", "add", "--name", "svc", "--role", "service"]),
        "operator add",
    );
    let validate = |a: &Path| home.cps(&["xua", "--as", "svc", "validate", a.to_str().unwrap()]);
    let out = validate(&assertion);
    assert_success(&out, "xua validate");
    assert!(text(&out.stdout).contains(IDNAT));
    let out = validate(&assertion);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("replayed"),
        "{}",
        text(&out.stderr)
    );
    // The validation was durable before its answer: killed and restarted, the appliance still
    // refuses the replay.
    let _ = app.daemon.child.kill();
    let _ = app.daemon.child.wait();
    app = Appliance::start(&home);
    let out = validate(&assertion);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("replayed"),
        "after a restart: {}",
        text(&out.stderr)
    );

    // A wrong PIN fails and counts down the card's tries.
    let out = card_login(&home, &reader, "000000", &assertion);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.to_lowercase().contains("pin"), "{err}");
    let status = text(&home.cps(&["card", "status", "--reader", &reader]).stdout);
    assert!(
        status.contains("2 tries") || status.contains("tries left: 2") || status.contains("PIN: 2"),
        "{status}"
    );
    assert_success(
        &card_login(&home, &reader, &pin, &assertion),
        "login after a wrong PIN",
    );

    // The signature certificate cannot log in, even with a valid signature of its own key over
    // the challenge (made by the card through OpenSC).
    let (code, body) = login_challenge(&app);
    assert_eq!(code, 201);
    let ch: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let to_sign = dir.join("challenge.bin");
    std::fs::write(
        &to_sign,
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            ch["challenge"].as_str().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let sig = dir.join("challenge.sig");
    stack.sign_with_card(&pin, "02", &to_sign, &sig);
    let sign_b64 = std::fs::read_to_string(&sign_pem).unwrap();
    let req = serde_json::json!({
        "challenge_id": ch["challenge_id"], "certificate": sign_b64,
        "signature": base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            std::fs::read(&sig).unwrap(),
        ),
    });
    let (code, body) = curl(&[
        "-sk",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        &format!("https://{}/api/v1/login", app.https),
        "-d",
        &req.to_string(),
    ]);
    assert_eq!(code, 401, "{}", text(&body));
    assert!(
        text(&body).contains("wrong_certificate_profile"),
        "{}",
        text(&body)
    );

    // A suspended card cannot log in; resumed, it can.
    assert_success(&home.cps(&["card", "suspend", &serial]), "card suspend");
    let out = card_login(&home, &reader, &pin, &assertion);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("revoked_certificate")
            || text(&out.stderr).contains("card_not_active"),
        "{}",
        text(&out.stderr)
    );
    assert_success(&home.cps(&["card", "resume", &serial]), "card resume");
    assert_success(
        &card_login(&home, &reader, &pin, &assertion),
        "login after resume",
    );

    // Opposition: both certificates revoked in OCSP, and the card never comes back.
    let out = home.cps(&["card", "oppose", &serial, "--reason", "stolen"]);
    assert_success(&out, "card oppose");
    let out = ocsp(&app, &[&auth_pem, &sign_pem]);
    assert_eq!(out.matches(": revoked").count(), 2, "{out}");
    let out = home.cps(&["card", "resume", &serial]);
    assert!(!out.status.success(), "an opposed card must not come back");
}

/// The initial PIN and PUK of an enrolment go to the operator certificate that started it, once:
/// not to an auditor who follows the job, not to the administrator, and not to another
/// certificate of an operator with the same name and roles (made while the first one was on
/// hold: names are unique only among valid certificates).
#[test]
fn one_time_pin_and_puk_go_only_to_the_enrolling_certificate() {
    let (stack, _sim, home, app) = appliance_with_blank_card("secrets");
    let dir = stack.dir.path().to_path_buf();
    assert_success(
        &home.cps(&[
            "professional",
            "import",
            registry_csv(&dir).to_str().unwrap(),
        ]),
        "professional import",
    );
    for (name, role) in [("officer", "ra-officer"), ("reader", "auditor")] {
        let out = home.cps(&["operator", "add", "--name", name, "--role", role]);
        assert_success(&out, &format!("operator add {name}"));
    }
    let call = |cert: &Path, key: &Path, method: &str, path: &str, body: Option<&str>| {
        let (code, body) = curl_mtls(&home, &app, (cert, key), method, path, body, &[]);
        (
            code,
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    let cred = |name: &str| {
        (
            home.join(&format!("operator/{name}-cert.pem")),
            home.join(&format!("operator/{name}-key.pem")),
        )
    };
    let (officer_cert, officer_key) = cred("officer");
    let (reader_cert, reader_key) = cred("reader");
    let (admin_cert, admin_key) = cred("admin");

    // The officer starts the enrolment through the API; the auditor follows it to the end.
    let (code, started) = call(
        &officer_cert,
        &officer_key,
        "POST",
        "/api/v1/cards/enrol",
        Some(
            &serde_json::json!({
                "reader": stack.reader(0), "idnat_ps": IDNAT, "structure_id": STRUCTURE,
            })
            .to_string(),
        ),
    );
    assert_eq!(code, 202, "{started}");
    let job = format!("/api/v1/jobs/{}", started["job"].as_str().unwrap());
    let done = wait_for(
        "the enrolment job",
        std::time::Duration::from_secs(90),
        || {
            let (code, j) = call(&reader_cert, &reader_key, "GET", &job, None);
            assert_eq!(code, 200, "{j}");
            (j["status"] != "running").then_some(j)
        },
    );
    assert_eq!(done["status"], "done", "{done}");
    assert!(done["secrets"].is_null(), "the auditor got them: {done}");
    let (_, j) = call(&admin_cert, &admin_key, "GET", &job, None);
    assert!(j["secrets"].is_null(), "the administrator got them: {j}");

    // A second credential named "officer", with the same role, made while the first is on hold.
    let serial_of = |pem: &Path| {
        let o = openssl(&["x509", "-noout", "-serial", "-in", pem.to_str().unwrap()]);
        text(&o.stdout)
            .trim()
            .trim_start_matches("serial=")
            .to_owned()
    };
    let officer_serial = serial_of(&officer_cert);
    let revoke = |reason: &str| {
        let out = home.revoke("organisations", &officer_serial, reason);
        assert_success(&out, &format!("cert revoke --reason {reason}"));
    };
    revoke("certificateHold");
    let csr = openssl_csr(&dir, "officer-twin", "p256");
    let (code, made) = call(
        &admin_cert,
        &admin_key,
        "POST",
        "/api/v1/operators",
        Some(
            &serde_json::json!({
                "name": "officer", "roles": ["ra-officer"],
                "csr": std::fs::read_to_string(&csr).unwrap(),
            })
            .to_string(),
        ),
    );
    assert!(code == 200 || code == 201, "{code} {made}");
    let twin_cert = dir.join("officer-twin.pem");
    std::fs::write(&twin_cert, made["pem"].as_str().unwrap()).unwrap();
    let twin_key = dir.join("officer-twin.key");
    revoke("removeFromCRL");
    let (code, me) = call(&twin_cert, &twin_key, "GET", "/api/v1/whoami", None);
    assert_eq!(code, 200, "{me}");
    let (code, first) = call(&officer_cert, &officer_key, "GET", "/api/v1/whoami", None);
    assert_eq!(code, 200, "{first}");
    assert_eq!(me, first, "same name and roles");
    let (code, j) = call(&twin_cert, &twin_key, "GET", &job, None);
    assert_eq!(code, 200, "{j}");
    assert!(
        j["secrets"].is_null(),
        "another certificate with the same name got them: {j}"
    );

    // The certificate that started the enrolment takes them, once; they are the card's.
    let (code, mine) = call(&officer_cert, &officer_key, "GET", &job, None);
    assert_eq!(code, 200, "{mine}");
    let pin = mine["secrets"]["pin"].as_str().expect("the PIN").to_owned();
    let puk = mine["secrets"]["puk"].as_str().expect("the PUK");
    assert_eq!((pin.len(), puk.len()), (6, 8), "{mine}");
    let (_, again) = call(&officer_cert, &officer_key, "GET", &job, None);
    assert!(again["secrets"].is_null(), "shown twice: {again}");
    let out = card_login(&home, &stack.reader(0), &pin, &dir.join("assertion.xml"));
    assert_success(&out, "login with the PIN handed out");
}
