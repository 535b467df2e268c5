//! Standard middleware accepts the simulated card: OpenSC's tools and PKCS#11 module through
//! pcscd + vpcd + firmware-sim. Keys are generated on the card and certificates written by our
//! card crate; signatures made by OpenSC are verified by openssl with the certificate's key.
//! Also `cps-trust card readers|status` on the same card.

use std::path::{Path, PathBuf};
use std::process::Output;

use cps_card::{CpsIdentity, KeyAlgorithm, ManagementKey, Pcsc, Piv, Slot};
use cps_trust_tests::pcsc::{PcscStack, TestCa, blank_card, child_env};
use cps_trust_tests::{assert_success, cps_trust_bin, peer, text};

const NAME: &str = "opensc_recognises_the_card_signs_lists_and_blocks";

fn provision_child() {
    let reader = std::env::var("CARD_READER").unwrap();
    let ca = TestCa {
        dir: PathBuf::from(std::env::var("CARD_CA").unwrap()),
    };
    let pcsc = Pcsc::establish().unwrap();
    let mut piv = Piv::select(pcsc.connect(&reader).unwrap()).unwrap();
    piv.authenticate(&ManagementKey::default_aes192()).unwrap();
    let a = piv
        .generate_key(Slot::Authentication, KeyAlgorithm::EccP256)
        .unwrap();
    let s = piv
        .generate_key(Slot::Signature, KeyAlgorithm::Rsa2048)
        .unwrap();
    piv.write_certificate(
        Slot::Authentication,
        &ca.certify("Marie DUPONT auth", &a.spki_pem()),
    )
    .unwrap();
    piv.write_certificate(
        Slot::Signature,
        &ca.certify("Marie DUPONT sign", &s.spki_pem()),
    )
    .unwrap();
    piv.write_identity(&CpsIdentity {
        idnat_ps: "810012345678".into(),
        family_name: "DUPONT".into(),
        given_names: "Marie".into(),
        profession: "10".into(),
        specialty: Some("SM26".into()),
        card_type: Some("CPS".into()),
    })
    .unwrap();
}

fn openssl_verify_with_cert(dir: &Path, cert_der: &Path, data: &Path, sig: &Path) -> Output {
    let pubkey = dir.join("verify.pub.pem");
    let out = std::process::Command::new(peer("openssl"))
        .args(["x509", "-inform", "DER", "-in"])
        .arg(cert_der)
        .args(["-pubkey", "-noout", "-out"])
        .arg(&pubkey)
        .output()
        .unwrap();
    assert_success(&out, "openssl x509 -pubkey");
    std::process::Command::new(peer("openssl"))
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pubkey)
        .arg("-signature")
        .arg(sig)
        .arg(data)
        .output()
        .unwrap()
}

#[test]
fn opensc_recognises_the_card_signs_lists_and_blocks() {
    if child_env(NAME).is_some() {
        return provision_child();
    }
    let stack = PcscStack::start("opensc");
    let dir = stack.dir.path().to_path_buf();
    let card = dir.join("card.json");
    blank_card(&card);
    let ca = TestCa::new(&dir.join("ca"));
    let _sim = stack.simulator(&[(0, &card)], &[]);
    let reader = stack.reader(0);

    // opensc-tool: reader with a card, recognised as a PIV card
    let out = stack.opensc_tool(&["-l"]);
    assert_success(&out, "opensc-tool -l");
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l.contains(&reader) && l.split_whitespace().nth(1) == Some("Yes")),
        "{}",
        text(&out.stdout)
    );
    let out = stack.opensc_tool(&["-r", &reader, "-n"]);
    assert_success(&out, "opensc-tool -n");
    assert_eq!(
        text(&out.stdout).trim(),
        "Personal Identity Verification Card"
    );

    // keys generated on the card, certificates written (our card crate, in a child process)
    stack.run_child(
        NAME,
        &[
            ("CARD_READER", reader.clone()),
            ("CARD_CA", ca.dir.display().to_string()),
        ],
    );

    // pkcs15-tool lists the certificates
    let out = stack.pkcs15_tool(&["--reader", &reader, "--list-certificates"]);
    assert_success(&out, "pkcs15-tool --list-certificates");
    let listing = text(&out.stdout);
    assert!(
        listing.contains("X.509 Certificate [Certificate for PIV Authentication]"),
        "{listing}"
    );
    assert!(
        listing.contains("X.509 Certificate [Certificate for Digital Signature]"),
        "{listing}"
    );
    assert_eq!(
        listing.matches("X.509 Certificate [").count(),
        2,
        "{listing}"
    );

    // ECDSA P-256 (9A, id 01) and RSA-2048 PKCS#1 v1.5 (9C, id 02, PIN always) through
    // opensc-pkcs11, verified by openssl with the certificate's public key
    let data = dir.join("data.txt");
    std::fs::write(&data, b"pkcs11-tool signs through the simulated card\n").unwrap();
    for (id, mech, cert) in [
        ("01", "ECDSA-SHA256", "Marie DUPONT auth"),
        ("02", "SHA256-RSA-PKCS", "Marie DUPONT sign"),
    ] {
        let sig = dir.join(format!("sig-{id}.bin"));
        let mut args = vec![
            "--login",
            "--pin",
            "123456",
            "--sign",
            "-m",
            mech,
            "--id",
            id,
            "--input-file",
        ];
        let data_s = data.display().to_string();
        let sig_s = sig.display().to_string();
        args.push(&data_s);
        args.extend(["--output-file", &sig_s]);
        if mech.starts_with("ECDSA") {
            args.extend(["--signature-format", "openssl"]);
        }
        let out = stack.pkcs11_tool(&args);
        assert_success(&out, &format!("pkcs11-tool --sign -m {mech} --id {id}"));
        let v = openssl_verify_with_cert(&dir, &ca.dir.join(format!("{cert}.der")), &data, &sig);
        assert_success(&v, &format!("openssl dgst -verify ({mech})"));
        assert!(text(&v.stdout).contains("Verified OK"));
    }

    // cps-trust card readers / status
    let cli = |args: &[&str]| -> Output {
        stack
            .command(cps_trust_bin())
            .args(args)
            .env("CPS_TRUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = cli(&["card", "readers"]);
    assert_success(&out, "cps-trust card readers");
    assert!(
        text(&out.stdout).contains(&format!("{reader}\tcard present")),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("PIV: CPS-Trust PIV card simulator"));
    let out = cli(&["card", "status", "--reader", &reader]);
    assert_success(&out, "cps-trust card status");
    let st = text(&out.stdout);
    for want in [
        "DUPONT Marie",
        "810012345678",
        "10 (specialty SM26)",
        "PIN          3 tries left",
        "CN=Marie DUPONT auth",
        "key 9D       key management — no certificate",
    ] {
        assert!(st.contains(want), "missing '{want}' in:\n{st}");
    }

    // wrong PIN: CKR_PIN_INCORRECT, and after three the PIN is blocked
    for i in 1..=3 {
        let out = stack.pkcs11_tool(&["--login", "--pin", "654321", "--list-objects"]);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        if i < 3 {
            assert!(err.contains("CKR_PIN_INCORRECT"), "attempt {i}: {err}");
        } else {
            assert!(
                err.contains("CKR_PIN_INCORRECT") || err.contains("CKR_PIN_LOCKED"),
                "attempt {i}: {err}"
            );
        }
    }
    let out = stack.pkcs11_tool(&["--login", "--pin", "123456", "--list-objects"]);
    assert!(
        !out.status.success(),
        "the right PIN must not work once blocked"
    );
    assert!(
        text(&out.stderr).contains("CKR_PIN_LOCKED"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&["card", "status"]);
    assert_success(&out, "cps-trust card status (blocked)");
    assert!(
        text(&out.stdout).contains("PIN          BLOCKED (0 tries left) — unblock with the PUK"),
        "{}",
        text(&out.stdout)
    );
    // an unknown reader is one actionable line
    let out = cli(&["card", "status", "--reader", "no such reader"]);
    cps_trust_tests::assert_one_line_error(&out, &["reader 'no such reader' not found", &reader]);
}
