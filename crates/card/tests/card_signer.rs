//! `CardSigner` against the simulator's applet wired in memory: the 9C key signs only with the
//! PIN verified before each signature, only under a `cps-sign` certificate, and only with the
//! key that certificate certifies.

use cps_card::{
    CardError, CardSigner, CardSignerError, KeyAlgorithm as CardAlgorithm, ManagementKey,
    PinStatus, Piv, SignCertificateRule, Slot, Transport,
};
use cps_hsm::{HsmError, SigFormat, SignatureAlgorithm, Signer};
use cps_pki::DistinguishedName;
use cps_pki::profile::{IssuerInfo, builtin_profiles, end_entity_params};
use firmware_sim::applet::Card;
use firmware_sim::crypto::TestRng;
use firmware_sim::state::{CardState, DEFAULT_PIN, MgmtAlg};
use zeroize::Zeroizing;

const NOW: i64 = 1_800_000_000;
const PERSON: &str = "CN=810002813839+SN=DONNAT-GADY+GN=ISABELLE,title=Médecin,C=FR";

struct Sim {
    card: Card,
    rng: TestRng,
    log: Vec<Vec<u8>>,
}

impl Transport for Sim {
    fn transmit(&mut self, apdu: &[u8]) -> cps_card::Result<Vec<u8>> {
        self.log.push(apdu.to_vec());
        Ok(self.card.process(apdu, &mut self.rng).response)
    }
}

struct Ca {
    h: cps_ca::hierarchy::Hierarchy,
}

impl Ca {
    fn new() -> Ca {
        Ca {
            h: cps_ca::hierarchy::software(
                &builtin_profiles(),
                &["personnes"],
                "http://pki.example.test",
                NOW,
            )
            .unwrap(),
        }
    }

    /// A certificate of profile `name` for `spki`, issued by `personnes`.
    fn certify(&self, name: &str, spki: &[u8]) -> Vec<u8> {
        let a = self
            .h
            .authorities
            .iter()
            .find(|a| a.id == "personnes")
            .unwrap();
        let params = end_entity_params(
            builtin_profiles().get(name).unwrap(),
            &DistinguishedName::parse(PERSON).unwrap(),
            &[],
            spki,
            cps_pki::serial_from_random(rand::random()),
            NOW,
            &IssuerInfo {
                ca_id: "personnes".into(),
                key_id: a.key_id.clone(),
                not_after: None,
                points: cps_pki::hierarchy::PublicationPoints {
                    crl: vec!["http://pki.example.test/crl/personnes.crl".into()],
                    ca_issuers: vec!["http://pki.example.test/ca/personnes.der".into()],
                    ocsp: vec!["http://pki.example.test/ocsp".into()],
                },
            },
        )
        .unwrap();
        cps_pki::issue_certificate(
            &params,
            &cps_pki::Issuer {
                name: &a.name,
                signer: a.key.as_ref(),
                signature: a.signature,
            },
        )
        .unwrap()
    }
}

/// A simulated card with keys in 9A and 9C; 9A gets a `cps-auth` certificate, 9C a
/// certificate of `sign_profile` (for the 9C key, or for the 9A key when `swap`).
fn card(ca: &Ca, alg: CardAlgorithm, sign_profile: Option<&str>, swap: bool) -> Piv<Sim> {
    let sim = Sim {
        card: Card::new(CardState::blank([5; 16], "20301231", MgmtAlg::Aes192)),
        rng: TestRng(7),
        log: Vec::new(),
    };
    let mut piv = Piv::select(sim).unwrap();
    piv.authenticate(&ManagementKey::default_aes192()).unwrap();
    let auth = piv.generate_key(Slot::Authentication, alg).unwrap();
    let sign = piv.generate_key(Slot::Signature, alg).unwrap();
    let auth_cert = ca.certify("cps-auth", &auth.spki_der());
    piv.write_certificate(Slot::Authentication, &auth_cert)
        .unwrap();
    if let Some(profile) = sign_profile {
        let key = if swap { &auth } else { &sign };
        piv.write_certificate(Slot::Signature, &ca.certify(profile, &key.spki_der()))
            .unwrap();
    }
    piv.transport().log.clear();
    piv
}

fn rule() -> SignCertificateRule {
    SignCertificateRule::builtin().unwrap()
}

fn pin(p: &str) -> Zeroizing<String> {
    Zeroizing::new(p.to_owned())
}

/// `(INS, P2)` of each APDU sent.
fn commands(log: &[Vec<u8>]) -> Vec<(u8, u8)> {
    log.iter().map(|a| (a[1], a[3])).collect()
}

#[test]
fn the_signature_key_signs_after_the_pin_each_time_and_verifies() {
    let ca = Ca::new();
    for alg in [CardAlgorithm::EccP256, CardAlgorithm::Rsa2048] {
        let signer = CardSigner::open(
            card(&ca, alg, Some("cps-sign"), false),
            pin(DEFAULT_PIN),
            &rule(),
        )
        .unwrap();
        let cert = cps_pki::parse_certificate(signer.certificate()).unwrap();
        assert_eq!(signer.public_key_der(), cert.spki.as_slice());
        let sig_alg = signer.signature_algorithm();
        for n in 0..2 {
            let message = format!("document {n}");
            let der = signer
                .sign(sig_alg, message.as_bytes(), SigFormat::Der)
                .unwrap();
            cps_hsm::verify_signature(
                &cert.spki,
                sig_alg,
                message.as_bytes(),
                &der,
                SigFormat::Der,
            )
            .unwrap();
            if sig_alg.is_ecdsa() {
                let raw = signer
                    .sign(sig_alg, message.as_bytes(), SigFormat::Raw)
                    .unwrap();
                assert_eq!(raw.len(), 64);
                cps_hsm::verify_signature(
                    &cert.spki,
                    sig_alg,
                    message.as_bytes(),
                    &raw,
                    SigFormat::Raw,
                )
                .unwrap();
            }
        }
        // Another algorithm than the key's is refused before the card is asked.
        let other = if sig_alg.is_ecdsa() {
            SignatureAlgorithm::EcdsaSha384
        } else {
            SignatureAlgorithm::RsaPssSha256
        };
        assert!(matches!(
            signer.sign(other, b"x", SigFormat::Der),
            Err(HsmError::AlgorithmMismatch { .. })
        ));
        let mut piv = signer.into_piv().unwrap();
        // Every signature: VERIFY with the PIN (P2 80), GENERAL AUTHENTICATE with 9C, then
        // the PIN state reset (VERIFY P1 FF); never the 9A key.
        let log = piv.transport().log.clone();
        let cmds = commands(&log);
        assert!(!cmds.iter().any(|c| c.1 == 0x9A));
        // A signature is a run of GENERAL AUTHENTICATE (chained for RSA) and GET RESPONSE.
        let mut runs = 0;
        let mut i = 0;
        while i < log.len() {
            if cmds[i] != (0x87, 0x9C) {
                i += 1;
                continue;
            }
            let start = i;
            while i < log.len() && matches!(cmds[i].0, 0x87 | 0xC0) {
                i += 1;
            }
            runs += 1;
            let verify = &log[start - 1];
            assert_eq!(
                &verify[..4],
                &[0x00, 0x20, 0x00, 0x80],
                "PIN before signing"
            );
            assert_eq!(verify[4], 8, "the PIN itself, not a status query");
            assert_eq!(&log[i][..4], &[0x00, 0x20, 0xFF, 0x80], "PIN reset after");
        }
        assert_eq!(runs, if sig_alg.is_ecdsa() { 4 } else { 2 });
        assert_eq!(
            piv.pin_status().unwrap(),
            PinStatus::NotVerified { tries_left: 3 }
        );
    }
}

#[test]
fn a_wrong_pin_signs_nothing_and_is_counted() {
    let ca = Ca::new();
    let signer = CardSigner::open(
        card(&ca, CardAlgorithm::EccP256, Some("cps-sign"), false),
        pin("654321"),
        &rule(),
    )
    .unwrap();
    let e = signer.sign_message(b"document").unwrap_err();
    assert!(
        matches!(
            e,
            CardSignerError::Card(CardError::WrongPin { tries_left: 2 })
        ),
        "{e:?}"
    );
    assert!(matches!(
        signer.sign(SignatureAlgorithm::EcdsaSha256, b"document", SigFormat::Der),
        Err(HsmError::Card(_))
    ));
    let mut piv = signer.into_piv().unwrap();
    assert!(!commands(&piv.transport().log).contains(&(0x87, 0x9C)));
    assert_eq!(
        piv.pin_status().unwrap(),
        PinStatus::NotVerified { tries_left: 1 }
    );
    // A PIN that cannot be one is refused before the card is asked.
    assert!(matches!(
        CardSigner::open(piv, pin("12ab"), &rule()),
        Err(CardSignerError::Card(CardError::InvalidPin { .. }))
    ));
}

#[test]
fn only_a_cps_sign_certificate_makes_a_signer() {
    let ca = Ca::new();
    for (profile, why) in [
        ("cps-auth", "nonRepudiation"),
        ("cps-sign with an EKU", "extended key usage"),
    ] {
        let mut piv = card(&ca, CardAlgorithm::EccP256, None, false);
        let key = {
            piv.authenticate(&ManagementKey::default_aes192()).unwrap();
            piv.generate_key(Slot::Signature, CardAlgorithm::EccP256)
                .unwrap()
        };
        let cert = if profile == "cps-sign with an EKU" {
            // The cps-sign profile with documentSigning added.
            let mut p = builtin_profiles().get("cps-sign").unwrap().clone();
            p.extended_key_usage = Some((
                vec![const_oid::ObjectIdentifier::new_unwrap(
                    "1.3.6.1.5.5.7.3.36",
                )],
                false,
            ));
            let a =
                ca.h.authorities
                    .iter()
                    .find(|a| a.id == "personnes")
                    .unwrap();
            let params = end_entity_params(
                &p,
                &DistinguishedName::parse(PERSON).unwrap(),
                &[],
                &key.spki_der(),
                cps_pki::serial_from_random(rand::random()),
                NOW,
                &IssuerInfo {
                    ca_id: "personnes".into(),
                    key_id: a.key_id.clone(),
                    not_after: None,
                    points: cps_pki::hierarchy::PublicationPoints {
                        crl: vec!["http://pki.example.test/crl/personnes.crl".into()],
                        ca_issuers: vec!["http://pki.example.test/ca/personnes.der".into()],
                        ocsp: vec!["http://pki.example.test/ocsp".into()],
                    },
                },
            )
            .unwrap();
            cps_pki::issue_certificate(
                &params,
                &cps_pki::Issuer {
                    name: &a.name,
                    signer: a.key.as_ref(),
                    signature: a.signature,
                },
            )
            .unwrap()
        } else {
            ca.certify(profile, &key.spki_der())
        };
        piv.write_certificate(Slot::Signature, &cert).unwrap();
        match CardSigner::open(piv, pin(DEFAULT_PIN), &rule()) {
            Err(CardSignerError::NotSignCertificate(m)) => assert!(m.contains(why), "{m}"),
            Err(e) => panic!("{profile}: {e:?}"),
            Ok(_) => panic!("{profile}: a signer was made"),
        }
    }
    // Nothing in 9C.
    assert!(matches!(
        CardSigner::open(
            card(&ca, CardAlgorithm::EccP256, None, false),
            pin(DEFAULT_PIN),
            &rule()
        ),
        Err(CardSignerError::NoCertificate)
    ));
    // A cps-sign certificate without the cps-sign policy.
    let other_policy =
        SignCertificateRule::from_profile(builtin_profiles().get("cps-auth").unwrap()).unwrap();
    assert!(matches!(
        CardSigner::open(
            card(&ca, CardAlgorithm::EccP256, Some("cps-sign"), false),
            pin(DEFAULT_PIN),
            &other_policy
        ),
        Err(CardSignerError::NotSignCertificate(m)) if m.contains("policy")
    ));
}

#[test]
fn a_certificate_for_another_key_signs_nothing() {
    let ca = Ca::new();
    // 9C's certificate certifies the 9A key: the 9C signature does not verify with it.
    let signer = CardSigner::open(
        card(&ca, CardAlgorithm::EccP256, Some("cps-sign"), true),
        pin(DEFAULT_PIN),
        &rule(),
    )
    .unwrap();
    assert!(matches!(
        signer.sign_message(b"document"),
        Err(CardSignerError::KeyMismatch)
    ));
    assert!(matches!(
        signer.sign(SignatureAlgorithm::EcdsaSha256, b"document", SigFormat::Der),
        Err(HsmError::BadSignature)
    ));
}
