//! The `card` crate drives the simulator end to end through the real PC/SC stack
//! (pcscd + vpcd + firmware-sim): generate, write certificate, verify PIN, sign, block and
//! unblock with the PUK; card removal/insertion and a pcscd restart; login state never leaks
//! to another process (attack class 18).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cps_card::{CardError, KeyAlgorithm, ManagementKey, Pcsc, PinStatus, Piv, Slot};
use cps_trust_tests::pcsc::{PcscStack, TestCa, blank_card, child_env};
use cps_trust_tests::{assert_success, peer, text};

fn var(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"))
}

fn open(reader: &str) -> Piv<cps_card::PcscCard> {
    let pcsc = Pcsc::establish().expect("pcscd");
    pcsc.wait_for_card(reader, Duration::from_secs(10))
        .expect("card");
    Piv::select(pcsc.connect(reader).expect("connect")).expect("select PIV")
}

/// openssl verifies `sig` over `data` with the public key of the DER certificate.
fn openssl_verify(dir: &std::path::Path, name: &str, cert_der: &[u8], data: &[u8], sig: &[u8]) {
    let c = dir.join(format!("{name}.crt.der"));
    std::fs::write(&c, cert_der).unwrap();
    std::fs::write(dir.join(format!("{name}.data")), data).unwrap();
    std::fs::write(dir.join(format!("{name}.sig")), sig).unwrap();
    let out = Command::new(peer("openssl"))
        .args(["x509", "-inform", "DER", "-in"])
        .arg(&c)
        .args(["-pubkey", "-noout"])
        .output()
        .unwrap();
    assert_success(&out, "openssl x509 -pubkey");
    std::fs::write(dir.join(format!("{name}.pub")), &out.stdout).unwrap();
    let out = Command::new(peer("openssl"))
        .args(["dgst", "-sha256", "-verify"])
        .arg(dir.join(format!("{name}.pub")))
        .arg("-signature")
        .arg(dir.join(format!("{name}.sig")))
        .arg(dir.join(format!("{name}.data")))
        .output()
        .unwrap();
    assert_success(&out, "openssl dgst -verify");
    assert!(text(&out.stdout).contains("Verified OK"));
}

const E2E: &str = "card_crate_drives_the_simulator_through_pcscd";

#[test]
fn card_crate_drives_the_simulator_through_pcscd() {
    if child_env(E2E).is_some() {
        return e2e_child();
    }
    let stack = PcscStack::start("crate");
    let card = stack.dir.path().join("card.json");
    blank_card(&card);
    let ca = TestCa::new(&stack.dir.path().join("ca"));
    let _sim = stack.simulator(&[(0, &card)], &[]);
    stack.run_child(
        E2E,
        &[
            ("CARD_READER", stack.reader(0)),
            ("CARD_CA", ca.dir.display().to_string()),
        ],
    );
    // the card state on disk holds both keys; `show` prints no private material
    let out = Command::new(cps_trust_tests::pcsc::firmware_sim_bin())
        .args(["show", "--state"])
        .arg(&card)
        .output()
        .unwrap();
    assert_success(&out, "firmware-sim show");
    let shown = text(&out.stdout);
    assert!(
        shown.contains("key 9a: ECC P-256") && shown.contains("key 9c: RSA-2048"),
        "{shown}"
    );
    assert!(shown.contains("PIN tries left: 3"), "{shown}");
}

fn e2e_child() {
    let reader = var("CARD_READER");
    let ca = TestCa {
        dir: PathBuf::from(var("CARD_CA")),
    };
    let pcsc = Pcsc::establish().unwrap();
    let readers = pcsc.readers().unwrap();
    assert!(
        readers
            .iter()
            .any(|r| r.name == reader && r.card_present && !r.atr.is_empty()),
        "{readers:?}"
    );
    assert_eq!(pcsc.resolve_reader(None).unwrap(), reader);
    let mut piv = open(&reader);
    assert_eq!(piv.label(), "CPS-Trust PIV card simulator");

    // enrolment: keys generated on the card, certificates written
    assert!(matches!(
        piv.generate_key(Slot::Authentication, KeyAlgorithm::EccP256),
        Err(CardError::AdminRequired { .. })
    ));
    piv.authenticate(&ManagementKey::default_aes192()).unwrap();
    let auth_pk = piv
        .generate_key(Slot::Authentication, KeyAlgorithm::EccP256)
        .unwrap();
    let sign_pk = piv
        .generate_key(Slot::Signature, KeyAlgorithm::Rsa2048)
        .unwrap();
    let auth_cert = ca.certify("auth", &auth_pk.spki_pem());
    let sign_cert = ca.certify("sign", &sign_pk.spki_pem());
    piv.write_certificate(Slot::Authentication, &auth_cert)
        .unwrap();
    piv.write_certificate(Slot::Signature, &sign_cert).unwrap();
    assert_eq!(
        piv.read_certificate(Slot::Authentication)
            .unwrap()
            .as_deref(),
        Some(&auth_cert[..])
    );
    assert_eq!(
        piv.read_certificate(Slot::Signature).unwrap().as_deref(),
        Some(&sign_cert[..])
    );

    // login signature (PIN + 9A), checked by ring and by openssl with the certificate
    let challenge = b"appliance login challenge 0001";
    let sig = piv
        .sign_challenge("123456", KeyAlgorithm::EccP256, challenge)
        .unwrap();
    auth_pk.verify(challenge, &sig).unwrap();
    openssl_verify(&ca.dir, "auth", &auth_cert, challenge, &sig);
    // 9C signature: PIN before each use
    let doc = b"document signed with the CPS signature key";
    let sig = piv
        .sign(Slot::Signature, KeyAlgorithm::Rsa2048, doc)
        .unwrap();
    openssl_verify(&ca.dir, "sign", &sign_cert, doc, &sig);
    assert!(matches!(
        piv.sign(Slot::Signature, KeyAlgorithm::Rsa2048, doc),
        Err(CardError::PinRequired { .. })
    ));

    // block with three wrong PINs, with the messages an officer sees
    let e1 = piv.verify_pin("000000").unwrap_err();
    assert_eq!(e1.to_string(), "wrong PIN: 2 tries left");
    assert!(matches!(
        piv.verify_pin("000000"),
        Err(CardError::WrongPin { tries_left: 1 })
    ));
    let e3 = piv.verify_pin("000000").unwrap_err();
    assert!(matches!(e3, CardError::PinBlocked), "{e3}");
    assert!(e3.to_string().contains("unblock with the PUK"));
    assert!(matches!(
        piv.verify_pin("123456"),
        Err(CardError::PinBlocked)
    ));
    assert_eq!(piv.pin_status().unwrap(), PinStatus::Blocked);
    assert!(
        piv.sign(Slot::Authentication, KeyAlgorithm::EccP256, challenge)
            .is_err()
    );

    // unblock with the PUK and a new PIN
    assert!(matches!(
        piv.unblock_pin("00000000", "246810"),
        Err(CardError::WrongPuk { tries_left: 2 })
    ));
    piv.unblock_pin("12345678", "246810").unwrap();
    assert_eq!(
        piv.pin_status().unwrap(),
        PinStatus::NotVerified { tries_left: 3 }
    );
    let sig = piv
        .sign_challenge("246810", KeyAlgorithm::EccP256, challenge)
        .unwrap();
    auth_pk.verify(challenge, &sig).unwrap();
    piv.change_pin("246810", "123456").unwrap();
    // the state survives a new connection
    drop(piv);
    let mut piv = open(&reader);
    assert_eq!(
        piv.read_certificate(Slot::Authentication)
            .unwrap()
            .as_deref(),
        Some(&auth_cert[..])
    );
    assert_eq!(
        piv.pin_status().unwrap(),
        PinStatus::NotVerified { tries_left: 3 },
        "disconnect reset the card"
    );
}

const LEAK: &str = "login_state_never_leaks_to_another_process";

/// Attack class 18 (CVE-2023-40660): an empty PIN must never ride on a login another process
/// left on the card. Our crate refuses empty PINs before sending anything, and resets the card
/// on disconnect so no verified state is left behind.
#[test]
fn login_state_never_leaks_to_another_process() {
    if child_env(LEAK).is_some() {
        let reader = var("CARD_READER");
        let mut piv = open(&reader);
        match var("STEP").as_str() {
            "provision" => {
                piv.authenticate(&ManagementKey::default_aes192()).unwrap();
                piv.generate_key(Slot::Authentication, KeyAlgorithm::EccP256)
                    .unwrap();
            }
            "login-and-leave" => {
                piv.verify_pin("123456").unwrap();
                assert_eq!(piv.pin_status().unwrap(), PinStatus::Verified);
                // default drop: the card is reset
            }
            "attacker" => {
                assert!(matches!(
                    piv.verify_pin(""),
                    Err(CardError::InvalidPin { .. })
                ));
                assert_eq!(
                    piv.pin_status().unwrap(),
                    PinStatus::NotVerified { tries_left: 3 }
                );
                assert!(matches!(
                    piv.sign(Slot::Authentication, KeyAlgorithm::EccP256, b"x"),
                    Err(CardError::PinRequired { .. })
                ));
            }
            s => panic!("step {s}"),
        }
        return;
    }
    let stack = PcscStack::start("leak");
    let card = stack.dir.path().join("card.json");
    blank_card(&card);
    let _sim = stack.simulator(&[(0, &card)], &[]);
    for step in ["provision", "login-and-leave", "attacker"] {
        stack.run_child(
            LEAK,
            &[("CARD_READER", stack.reader(0)), ("STEP", step.into())],
        );
    }
}

/// Remove and insert the card while the simulator runs; restart pcscd: the simulator
/// reconnects by itself. Two cards in two slots of one simulator process.
#[test]
fn removal_insertion_two_slots_and_pcscd_restart() {
    let mut stack = PcscStack::start("slots");
    let a = stack.dir.path().join("a.json");
    let b = stack.dir.path().join("b.json");
    blank_card(&a);
    blank_card(&b);
    let sim = stack.simulator(&[(0, &a), (1, &b)], &[]);
    let out = stack.opensc_tool(&["-r", &stack.reader(1), "-n"]);
    assert_success(&out, "opensc-tool -n (slot 1)");
    assert!(text(&out.stdout).contains("Personal Identity Verification Card"));

    let out = sim.ctl(&["remove", "0"]);
    assert_success(&out, "ctl remove");
    stack.wait_card(0, false);
    assert!(stack.card_present(1), "slot 1 unaffected");
    let out = sim.ctl(&["insert", "0"]);
    assert_success(&out, "ctl insert");
    stack.wait_card(0, true);
    let out = sim.ctl(&["status"]);
    assert!(
        text(&out.stdout).contains("slot 0: inserted connected"),
        "{}",
        text(&out.stdout)
    );

    stack.stop_pcscd();
    stack.start_pcscd();
    stack.wait_card(0, true);
    stack.wait_card(1, true);
    let out = stack.opensc_tool(&["-r", &stack.reader(0), "-n"]);
    assert_success(&out, "opensc-tool -n after pcscd restart");
    assert!(
        sim.log_text().contains("vpcd closed the connection")
            || sim.log_text().contains("connection ended")
    );
}
