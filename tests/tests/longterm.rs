//! Long-term validation data from the running appliance: answers of its OCSP responder (the
//! delegated signer's key in SoftHSM2) for a card's `cps-sign` certificate, read back and
//! decided with `cps_ocsp::decide` at a proof time; the certificate's path checked at that time
//! with `TrustStore::verify_path_at` for the `cps-sign` kind (and the `cps-auth` certificate of
//! the same card refused for it).

use std::path::Path;
use std::process::Command;

use cps_ocsp::{
    CrlReason, Evidence, LongTermPolicy, LongTermQuery, LongTermRefusal, ResponseLimits, SignedBy,
    SingleCertStatus, decide, parse_response,
};
use cps_trust_tests::pcsc::CardAppliance;
use cps_trust_tests::{assert_success, peer};
use cps_xua::{EKU_DOCUMENT_SIGNING, EkuPolicy, PathError, SignerRequirement, TrustStore};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn der_of(pem: &Path) -> Vec<u8> {
    cps_pki::pem_certificates(&std::fs::read_to_string(pem).unwrap()).remove(0)
}

/// `openssl ocsp` asks the appliance (with a nonce) about `cert`; the response DER.
fn fetch(card: &CardAppliance, cert: &Path, out: &Path) -> Vec<u8> {
    let o = Command::new(peer("openssl"))
        .args(["ocsp", "-issuer"])
        .arg(card.home.join("ca/personnes.pem"))
        .arg("-cert")
        .arg(cert)
        .arg("-CAfile")
        .arg(card.home.join("ca/root.pem"))
        .arg("-url")
        .arg(format!("http://{}/ocsp", card.app.http))
        .arg("-respout")
        .arg(out)
        .output()
        .unwrap();
    assert_success(&o, "openssl ocsp -url");
    std::fs::read(out).unwrap()
}

#[test]
fn appliance_ocsp_answers_decide_at_the_proof_time() {
    let card = CardAppliance::start("longterm");
    let dir = tempfile::tempdir().unwrap();
    let issuer = der_of(&card.home.join("ca/personnes.pem"));
    let root = der_of(&card.home.join("ca/root.pem"));
    let sign = der_of(&card.sign_pem);
    let auth = der_of(&card.auth_pem);

    // The path of the signature certificate at the proof time, for its kind only.
    let proof = now();
    let store = TrustStore::new(
        vec![root],
        vec![issuer.clone()],
        EkuPolicy::RequiredIfPresent(EKU_DOCUMENT_SIGNING),
    )
    .unwrap();
    let profiles = cps_pki::profile::builtin_profiles();
    let cps_sign = SignerRequirement::from_profile(profiles.get("cps-sign").unwrap()).unwrap();
    let path = store
        .verify_path_at(std::slice::from_ref(&sign), proof, &cps_sign)
        .unwrap();
    assert_eq!(path.issuer, issuer);
    assert!(matches!(
        store.verify_path_at(std::slice::from_ref(&auth), proof, &cps_sign),
        Err(PathError::Usage(_))
    ));

    // An answer fetched after the proof time: signed by the HSM-held delegated signer, good.
    let before = fetch(&card, &card.sign_pem, &dir.path().join("before.der"));
    let v = parse_response(&before, &ResponseLimits::default())
        .unwrap()
        .verify(&issuer)
        .unwrap();
    assert!(matches!(v.signed_by, SignedBy::Delegated(_)));
    assert!(v.nonce().is_some(), "the nonce is echoed");
    assert_eq!(v.status_of(&sign).unwrap().status, SingleCertStatus::Good);
    let query = |proof_time: i64, embedded: &[Vec<u8>]| {
        decide(
            &LongTermQuery {
                proof_time,
                certificate: &sign,
                issuer: &issuer,
                embedded,
                live: None,
            },
            &LongTermPolicy::default(),
        )
    };
    assert!(query(proof, std::slice::from_ref(&before)).is_ok());
    // The same answer is not about the auth certificate.
    assert!(matches!(
        decide(
            &LongTermQuery {
                proof_time: proof,
                certificate: &auth,
                issuer: &issuer,
                embedded: std::slice::from_ref(&before),
                live: None,
            },
            &LongTermPolicy::default(),
        ),
        Err(LongTermRefusal::NoUsableResponse(_))
    ));

    // Revoked for superseded afterwards: a signature proven before stays valid, also with the
    // new answer embedded next to the old one; one proven after the revocation is refused.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_success(
        &card
            .home
            .revoke("personnes", &card.card.sign_serial, "superseded"),
        "revoke",
    );
    let after = fetch(&card, &card.sign_pem, &dir.path().join("after.der"));
    let both = vec![before, after.clone()];
    let valid = query(proof, &both).unwrap();
    let (time, reason, from) = valid
        .revoked_later
        .expect("the later revocation is reported");
    assert!(time > proof);
    assert_eq!(reason, Some(CrlReason::Superseded));
    assert_eq!(from, Evidence::Embedded(1));
    assert!(matches!(
        query(now() + 1, std::slice::from_ref(&after)),
        Err(LongTermRefusal::RevokedBeforeProof {
            reason: Some(CrlReason::Superseded),
            ..
        })
    ));
}
