//! A professional's document signature with the card, through the real PC/SC stack (pcscd +
//! vpcd + firmware-sim): `cps-trust dsg sign --reader R --pin-env VAR` signs with the card's
//! `cps-sign` key (slot 9C) on the workstation, asking the appliance only for the timestamp,
//! the certificates and a fresh OCSP answer. signxml's XAdES verifier and the appliance's
//! verifier (`cps-trust dsg verify`) both accept the signature; a changed document is refused;
//! a wrong PIN signs nothing.

use std::path::Path;

use cps_trust_tests::pcsc::{PcscStack, blank_card, certificate_pem, enrol_card};
use cps_trust_tests::{assert_success, peer, text};

const DETACHED: &str = "urn:ihe:iti:dsg:detached:2014";
const ENVELOPING: &str = "urn:ihe:iti:dsg:enveloping:2014";

fn signxml_verify(sig: &Path, cert: &Path, policy: &str, docs: &[(&str, &Path)]) -> (bool, String) {
    let script = cps_trust_tests::repo_root().join("crates/dsg/tests/peers/signxml_verify_dsg.py");
    let mut cmd = std::process::Command::new(peer("python3"));
    cmd.arg(script).arg(sig).arg(cert).arg(policy);
    for (u, p) in docs {
        cmd.arg(format!("{u}={}", p.display()));
    }
    let out = cmd.output().expect("python3 of the peers' venv");
    (
        out.status.success() && out.stdout.starts_with(b"ok"),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

#[test]
fn a_professional_signs_with_the_card_and_signxml_and_the_appliance_verify() {
    let stack = PcscStack::start("dsg-card");
    let dir = stack.dir.path().to_path_buf();
    let card0 = dir.join("card0.json");
    blank_card(&card0);
    let _sim = stack.simulator(&[(0, &card0)], &[]);
    let (home, _app) = cps_trust_tests::Appliance::fresh_in(stack.home());
    let card = enrol_card(&home, &dir, &stack.reader(0));
    let sign_pem = certificate_pem(&home, &dir, &card.sign_serial);
    let out = home.cps(&["operator", "add", "--name", "dmp", "--role", "service"]);
    assert_success(&out, "operator add");

    let doc = dir.join("cr.xml");
    std::fs::write(&doc, b"<ClinicalDocument>compte rendu</ClinicalDocument>\n").unwrap();
    let other = dir.join("ordonnance.xml");
    std::fs::write(&other, b"<ClinicalDocument>ordonnance</ClinicalDocument>\n").unwrap();
    let d1 = format!("1.2.250.1.999.7.1={}", doc.display());
    let d2 = format!("1.2.250.1.999.7.2={}", other.display());
    let sig = dir.join("sig.xml");
    let reader = stack.reader(0);
    let sign = |extra: &[&str], pin: &str, out: &Path| {
        let mut args = vec![
            "dsg",
            "sign",
            "--reader",
            &reader,
            "--pin-env",
            "CARD_PIN",
            "--purpose",
            "author",
        ];
        args.extend(extra);
        args.extend(["-o", out.to_str().unwrap()]);
        home.command(&args).env("CARD_PIN", pin).output().unwrap()
    };

    // Detached: a manifest over two documents.
    let o = sign(&["--document", &d1, "--document", &d2], &card.pin, &sig);
    assert_success(&o, "dsg sign with the card");
    let (ok, why) = signxml_verify(
        &sig,
        &sign_pem,
        DETACHED,
        &[("1.2.250.1.999.7.1", &doc), ("1.2.250.1.999.7.2", &other)],
    );
    assert!(ok, "signxml: {why}");
    let verify = |sig: &Path, docs: &[&str]| {
        let mut args = vec![
            "dsg",
            "--as",
            "dmp",
            "verify",
            "--signature",
            sig.to_str().unwrap(),
        ];
        for d in docs {
            args.extend(["--document", d]);
        }
        home.cps(&args)
    };
    let v = verify(&sig, &[&d1, &d2]);
    assert_success(&v, "dsg verify");
    let verdict: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert!(
        verdict["signer"]
            .as_str()
            .unwrap()
            .contains(cps_trust_tests::pcsc::IDNAT),
        "{verdict}"
    );
    assert_eq!(verdict["purpose"], "1.2.840.10065.1.12.1.1", "{verdict}");

    // A changed document: signxml's manifest check and ours refuse it.
    let changed = dir.join("cr-changed.xml");
    std::fs::write(
        &changed,
        b"<ClinicalDocument>compte rendu modifie</ClinicalDocument>\n",
    )
    .unwrap();
    let (ok, _) = signxml_verify(
        &sig,
        &sign_pem,
        DETACHED,
        &[
            ("1.2.250.1.999.7.1", &changed),
            ("1.2.250.1.999.7.2", &other),
        ],
    );
    assert!(!ok, "signxml accepted a changed document");
    let c1 = format!("1.2.250.1.999.7.1={}", changed.display());
    let v = verify(&sig, &[&c1, &d2]);
    assert_eq!(v.status.code(), Some(3), "{}", text(&v.stderr));
    let verdict: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(verdict["code"], "document_digest_mismatch", "{verdict}");

    // Enveloping, one document.
    let env_sig = dir.join("enveloping.xml");
    let o = sign(&["--enveloping", "--document", &d1], &card.pin, &env_sig);
    assert_success(&o, "dsg sign --enveloping with the card");
    let (ok, why) = signxml_verify(
        &env_sig,
        &sign_pem,
        ENVELOPING,
        &[("1.2.250.1.999.7.1", &doc)],
    );
    assert!(ok, "signxml: {why}");
    assert_success(&verify(&env_sig, &[]), "dsg verify enveloping");

    // A wrong PIN: nothing signed, a clear refusal.
    let nothing = dir.join("nothing.xml");
    let wrong = if card.pin == "000000" {
        "111111"
    } else {
        "000000"
    };
    let o = sign(&["--document", &d1], wrong, &nothing);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("PIN"), "{}", text(&o.stderr));
    assert!(!nothing.exists());
}
