//! `cps_card::CardSigner` through the real PC/SC stack (pcscd + vpcd + firmware-sim) with a card
//! enrolled by the appliance (`cps-trust card enroll`): the `cps-sign` key of slot 9C signs
//! after the PIN and openssl verifies the signature with the certificate the appliance issued;
//! a wrong PIN signs nothing and costs a try on the card; a card whose slot 9C holds the
//! `cps-auth` certificate makes no signer. (`CardSigner` has no constructor taking a slot: it
//! cannot be made over 9A at all.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cps_card::{
    CardError, CardSigner, CardSignerError, ManagementKey, Pcsc, PinStatus, Piv,
    SignCertificateRule, Slot, Zeroizing,
};
use cps_trust_tests::pcsc::{PcscStack, blank_card, certificate_pem, child_env, enrol_card};
use cps_trust_tests::{assert_success, peer, text};

const NAME: &str = "the_enrolled_cards_signature_key_signs_through_pcscd";

fn open(pcsc: &Pcsc, reader: &str) -> Piv<cps_card::PcscCard> {
    pcsc.wait_for_card(reader, Duration::from_secs(10))
        .expect("card");
    Piv::select(pcsc.connect(reader).expect("connect")).expect("select PIV")
}

fn der_of(pem: &Path) -> Vec<u8> {
    cps_pki::pem_certificates(&std::fs::read_to_string(pem).unwrap()).remove(0)
}

fn child() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}"));
    let out = PathBuf::from(var("SIGNER_OUT"));
    let (enrolled, blank) = (var("SIGNER_READER"), var("SIGNER_BLANK_READER"));
    let pin = var("SIGNER_PIN");
    let rule = SignCertificateRule::builtin().unwrap();
    let pcsc = Pcsc::establish().expect("pcscd");

    // The PIN verified before each of two signatures.
    let signer = CardSigner::open(open(&pcsc, &enrolled), Zeroizing::new(pin.clone()), &rule)
        .expect("a signer over the enrolled card");
    std::fs::write(out.join("card-sign.der"), signer.certificate()).unwrap();
    for n in 0..2 {
        let data = std::fs::read(out.join("data.txt")).unwrap();
        let sig = signer.sign_message(&data).expect("signature");
        std::fs::write(out.join(format!("sig{n}.der")), sig).unwrap();
    }
    let mut piv = signer.into_piv().unwrap();
    assert_eq!(
        piv.pin_status().unwrap(),
        PinStatus::NotVerified { tries_left: 3 },
        "no PIN state left after signing"
    );
    drop(piv);

    // A wrong PIN: no signature, one try less on the card.
    let wrong = if pin == "000000" { "111111" } else { "000000" };
    let signer = CardSigner::open(
        open(&pcsc, &enrolled),
        Zeroizing::new(wrong.to_owned()),
        &rule,
    )
    .unwrap();
    let e = signer.sign_message(b"not signed").unwrap_err();
    assert!(
        matches!(
            e,
            CardSignerError::Card(CardError::WrongPin { tries_left: 2 })
        ),
        "{e:?}"
    );
    let mut piv = signer.into_piv().unwrap();
    assert_eq!(
        piv.pin_status().unwrap(),
        PinStatus::NotVerified { tries_left: 2 }
    );
    // The right PIN again: signs, and the counter is back.
    let signer = CardSigner::open(piv, Zeroizing::new(pin), &rule).unwrap();
    signer.sign_message(b"signed again").unwrap();
    let mut piv = signer.into_piv().unwrap();
    assert_eq!(
        piv.pin_status().unwrap(),
        PinStatus::NotVerified { tries_left: 3 }
    );
    drop(piv);

    // A card whose 9C holds the enrolled card's cps-auth certificate.
    let auth = std::fs::read(out.join("auth.der")).unwrap();
    let mut blank = open(&pcsc, &blank);
    blank
        .authenticate(&ManagementKey::default_aes192())
        .or_else(|_| blank.authenticate(&ManagementKey::default_3des()))
        .expect("default management key of a blank card");
    blank
        .generate_key(Slot::Signature, cps_card::KeyAlgorithm::EccP256)
        .unwrap();
    blank.write_certificate(Slot::Signature, &auth).unwrap();
    match CardSigner::open(blank, Zeroizing::new("123456".to_owned()), &rule) {
        Err(CardSignerError::NotSignCertificate(m)) => {
            assert!(m.contains("nonRepudiation"), "{m}")
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a signer over a cps-auth certificate"),
    }
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(peer("openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert_success(&out, &format!("openssl {}", args.join(" ")));
    text(&out.stdout)
}

#[test]
fn the_enrolled_cards_signature_key_signs_through_pcscd() {
    if child_env(NAME).is_some() {
        return child();
    }
    let stack = PcscStack::start("card-signer");
    let dir = stack.dir.path().to_path_buf();
    let (card0, card1) = (dir.join("card0.json"), dir.join("card1.json"));
    blank_card(&card0);
    blank_card(&card1);
    let _sim = stack.simulator(&[(0, &card0), (1, &card1)], &[]);
    let (home, _app) = cps_trust_tests::Appliance::fresh_in(stack.home());
    let card = enrol_card(&home, &dir, &stack.reader(0));
    let sign_pem = certificate_pem(&home, &dir, &card.sign_serial);
    let auth_pem = certificate_pem(&home, &dir, &card.auth_serial);
    let out = dir.join("signer");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("auth.der"), der_of(&auth_pem)).unwrap();
    std::fs::write(
        out.join("data.txt"),
        b"a document signed with the CPS card\n",
    )
    .unwrap();
    stack.run_child(
        NAME,
        &[
            ("SIGNER_OUT", out.display().to_string()),
            ("SIGNER_READER", stack.reader(0)),
            ("SIGNER_BLANK_READER", stack.reader(1)),
            ("SIGNER_PIN", card.pin.clone()),
        ],
    );
    // The signer's certificate is the cps-sign certificate the appliance issued.
    assert_eq!(
        std::fs::read(out.join("card-sign.der")).unwrap(),
        der_of(&sign_pem)
    );
    let sign_pem = sign_pem.display().to_string();
    openssl(
        &out,
        &[
            "x509", "-in", &sign_pem, "-pubkey", "-noout", "-out", "sign.pub",
        ],
    );
    for sig in ["sig0.der", "sig1.der"] {
        let v = openssl(
            &out,
            &[
                "dgst",
                "-sha256",
                "-verify",
                "sign.pub",
                "-signature",
                sig,
                "data.txt",
            ],
        );
        assert!(v.contains("Verified OK"), "{v}");
    }
    // Not with the authentication key.
    let auth_pem = auth_pem.display().to_string();
    openssl(
        &out,
        &[
            "x509", "-in", &auth_pem, "-pubkey", "-noout", "-out", "auth.pub",
        ],
    );
    let o = Command::new(peer("openssl"))
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "auth.pub",
            "-signature",
            "sig0.der",
            "data.txt",
        ])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(!o.status.success(), "the 9A key did not sign");
}
