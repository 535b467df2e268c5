//! OCSP responses read back: responses made by our own `Responder` parse, verify with the
//! issuer and name the certificate by SHA-1 and SHA-256 CertIDs; foreign signers, tampering,
//! malformed and truncated input are refused without a panic.

mod common;

use std::sync::Arc;

use common::*;
use cps_ocsp::{
    CertStatusAnswer, CrlReason, NotIssuedPolicy, ResponseError, ResponseLimits, SignedBy,
    SingleCertStatus, parse_response,
};

fn limits() -> ResponseLimits {
    ResponseLimits::default()
}

fn answer(pki: &TestPki, ca: usize, ee: usize, hash: Hash, nonce: Option<&[u8]>) -> Vec<u8> {
    let (r, _) = responder(pki, config(NotIssuedPolicy::Unknown));
    let c = &pki.cas[ca];
    let req = request(
        vec![cert_id(&c.cert_der, &c.ee[ee].serial, hash, false)],
        nonce,
    );
    r.respond(&req, pki.now).der.to_vec()
}

#[test]
fn our_responses_verify_with_the_issuer_and_name_the_certificate() {
    let pki = build_pki(1_800_000_000, 3);
    let ca = &pki.cas[0];
    for hash in [Hash::Sha1, Hash::Sha256] {
        // ee0 good, with a nonce.
        let der = answer(&pki, 0, 0, hash, Some(b"0123456789abcdef"));
        let v = parse_response(&der, &limits())
            .unwrap()
            .verify(&ca.cert_der)
            .unwrap();
        assert_eq!(v.signed_by, SignedBy::Delegated(ca.ocsp_cert_der.clone()));
        assert_eq!(v.produced_at(), pki.now);
        assert_eq!(v.nonce(), Some(&b"0123456789abcdef"[..]));
        let s = v.status_of(&ca.ee[0].cert_der).unwrap();
        assert_eq!(s.status, SingleCertStatus::Good);
        assert_eq!(s.this_update, pki.now);
        assert_eq!(s.next_update, Some(pki.now + 4 * 3600));
        // The response names ee0 only.
        assert_eq!(
            v.status_of(&ca.ee[2].cert_der).unwrap_err(),
            ResponseError::NotForCertificate
        );
        // A certificate of another issuer is not this response's business.
        assert!(matches!(
            v.status_of(&pki.cas[1].ee[0].cert_der),
            Err(ResponseError::Certificate(_))
        ));

        // ee1 revoked for keyCompromise (see common::responder).
        let der = answer(&pki, 0, 1, hash, None);
        let v = parse_response(&der, &limits())
            .unwrap()
            .verify(&ca.cert_der)
            .unwrap();
        assert_eq!(v.nonce(), None);
        assert_eq!(
            v.status_of(&ca.ee[1].cert_der).unwrap().status,
            SingleCertStatus::Revoked {
                time: pki.now - 600,
                reason: Some(CrlReason::KeyCompromise),
                invalidity_date: None
            }
        );
    }
}

#[test]
fn unknown_and_several_cert_ids() {
    let pki = build_pki(1_800_000_000, 3);
    let ca = &pki.cas[1];
    let (r, source) = responder(&pki, config(NotIssuedPolicy::Unknown));
    source.set(&ca.id, &ca.ee[2].serial, CertStatusAnswer::Unknown);
    let req = request(
        vec![
            cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha256, true),
            cert_id(&ca.cert_der, &ca.ee[2].serial, Hash::Sha1, false),
            // The same certificate twice, by two hashes: the statuses agree.
            cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha1, false),
        ],
        None,
    );
    let der = r.respond(&req, pki.now).der.to_vec();
    let v = parse_response(&der, &limits())
        .unwrap()
        .verify(&ca.cert_der)
        .unwrap();
    assert_eq!(v.responses().len(), 3);
    assert_eq!(
        v.status_of(&ca.ee[0].cert_der).unwrap().status,
        SingleCertStatus::Good
    );
    assert_eq!(
        v.status_of(&ca.ee[2].cert_der).unwrap().status,
        SingleCertStatus::Unknown
    );
}

#[test]
fn a_response_signed_by_the_ca_key_itself_verifies() {
    let pki = build_pki(1_800_000_000, 2);
    let ca = &pki.cas[0];
    let source = Arc::new(MapSource::default());
    source.set(&ca.id, &ca.ee[0].serial, CertStatusAnswer::Good);
    let mut entry = ca.entry();
    entry.responder_cert_der = ca.cert_der.clone();
    entry.responder_key = ca.key.clone();
    let r =
        cps_ocsp::Responder::new(vec![entry], config(NotIssuedPolicy::Unknown), source).unwrap();
    let req = request(
        vec![cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha1, false)],
        None,
    );
    let der = r.respond(&req, pki.now).der.to_vec();
    let v = parse_response(&der, &limits())
        .unwrap()
        .verify(&ca.cert_der)
        .unwrap();
    assert_eq!(v.signed_by, SignedBy::Issuer);
    assert_eq!(
        v.status_of(&ca.ee[0].cert_der).unwrap().status,
        SingleCertStatus::Good
    );
}

#[test]
fn foreign_signers_are_refused() {
    let pki = build_pki(1_800_000_000, 2);
    // Another PKI with the very same names, keys of its own.
    let foreign = build_pki(1_800_000_000, 2);
    let der = answer(&foreign, 0, 0, Hash::Sha1, None);
    let parsed = parse_response(&der, &limits()).unwrap();
    assert!(matches!(
        parsed.clone().verify(&pki.cas[0].cert_der),
        Err(ResponseError::UnauthorizedResponder(_))
    ));
    // It verifies with its own issuer.
    assert!(parsed.verify(&foreign.cas[0].cert_der).is_ok());

    // A response of the personnes responder checked for the organisations CA.
    let der = answer(&pki, 0, 0, Hash::Sha1, None);
    assert!(matches!(
        parse_response(&der, &limits())
            .unwrap()
            .verify(&pki.cas[1].cert_der),
        Err(ResponseError::UnauthorizedResponder(_))
    ));

    // A digit of producedAt changed (signed data; the DER stays valid).
    let mut bad = der.clone();
    let n = bad.len();
    // producedAt is the first GeneralizedTime (tag 0x18, 15 octets); its last seconds digit.
    let at = find(&bad, &[0x18, 0x0f]).expect("a GeneralizedTime") + 2 + 13;
    bad[at] = if bad[at] == b'0' { b'1' } else { b'0' };
    assert_eq!(n, bad.len());
    assert_eq!(
        parse_response(&bad, &limits())
            .unwrap()
            .verify(&pki.cas[0].cert_der)
            .unwrap_err(),
        ResponseError::BadSignature
    );
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn malformed_truncated_and_oversized_input_is_refused() {
    let pki = build_pki(1_800_000_000, 2);
    let ca = &pki.cas[0];
    let der = answer(&pki, 0, 0, Hash::Sha256, Some(b"nonce-nonce"));
    let check =
        |input: &[u8]| parse_response(input, &limits()).and_then(|r| r.verify(&ca.cert_der));
    assert!(check(&der).is_ok());
    for cut in 0..der.len() {
        assert!(check(&der[..cut]).is_err(), "truncated at {cut}");
    }
    let mut trailing = der.clone();
    trailing.push(0);
    assert!(matches!(check(&trailing), Err(ResponseError::Malformed(_))));
    // Every single-byte change is refused, none panics.
    for i in 0..der.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut m = der.clone();
            m[i] ^= x;
            assert!(check(&m).is_err(), "byte {i} ^ {x:#x} accepted");
        }
    }
    // Error statuses are not responses.
    assert_eq!(
        check(&[0x30, 0x03, 0x0a, 0x01, 0x01]).unwrap_err(),
        ResponseError::NotSuccessful(1)
    );
    assert!(check(&[0x30, 0x03, 0x0a, 0x01, 0x00]).is_err());
    assert!(check(b"").is_err());
    assert!(check(b"garbage").is_err());
    let small = ResponseLimits {
        max_bytes: der.len() - 1,
        ..limits()
    };
    assert!(matches!(
        parse_response(&der, &small),
        Err(ResponseError::TooLarge { .. })
    ));
    let no_certs = ResponseLimits {
        max_certs: 0,
        ..limits()
    };
    assert!(matches!(
        parse_response(&der, &no_certs),
        Err(ResponseError::Malformed(_))
    ));
}

/// `certs` is outside the signed data: a certificate put in front of the responder's, naming the
/// same key but certified by someone else, neither hides the responder nor is taken for it.
#[test]
fn a_decoy_certificate_in_front_of_the_responder_is_passed_over() {
    use cps_hsm::{SignatureAlgorithm, Signer};
    use x509_cert_02::der::{Decode, Encode};
    let pki = build_pki(1_800_000_000, 1);
    let foreign = build_pki(1_800_000_000, 1);
    let ca = &pki.cas[0];
    // The responder's key, certified for OCSP signing by a foreign CA of the same name.
    let fca = &foreign.cas[0];
    let fkid = cps_pki::parse_certificate(&fca.cert_der)
        .unwrap()
        .subject_key_id
        .unwrap();
    let decoy = cps_pki::issue_certificate(
        &cps_pki::CertificateParams {
            serial: cps_pki::serial_from_random(rand::random()),
            subject: cps_pki::DistinguishedName::parse("CN=Decoy, O=cps-trust, C=FR").unwrap(),
            subject_public_key: ca.ocsp_key.public_key_der().to_vec(),
            not_before: pki.now - 3600,
            not_after: pki.now + 86_400,
            extensions: cps_pki::hierarchy::ocsp_signer(
                ca.ocsp_key.public_key_der(),
                &fkid,
                &[],
                &Default::default(),
            )
            .unwrap(),
        },
        &cps_pki::Issuer {
            name: &cps_pki::parse_certificate(&fca.cert_der).unwrap().subject,
            signer: fca.key.as_ref(),
            signature: SignatureAlgorithm::EcdsaSha256,
        },
    )
    .unwrap();
    let der = answer(&pki, 0, 0, Hash::Sha1, None);
    let with_decoy = |first: bool| {
        let mut r = x509_ocsp::OcspResponse::from_der(&der).unwrap();
        let bytes = r.response_bytes.as_mut().unwrap();
        let mut basic = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
        let d = x509_cert_02::Certificate::from_der(&decoy).unwrap();
        let certs = basic.certs.get_or_insert_with(Vec::new);
        if first {
            certs.insert(0, d);
        } else {
            *certs = vec![d];
        }
        bytes.response =
            x509_cert_02::der::asn1::OctetString::new(basic.to_der().unwrap()).unwrap();
        r.to_der().unwrap()
    };
    let v = parse_response(&with_decoy(true), &limits())
        .unwrap()
        .verify(&ca.cert_der)
        .unwrap();
    assert_eq!(v.signed_by, SignedBy::Delegated(ca.ocsp_cert_der.clone()));
    // The decoy alone: refused, although its key made the signature.
    assert!(matches!(
        parse_response(&with_decoy(false), &limits())
            .unwrap()
            .verify(&ca.cert_der),
        Err(ResponseError::UnauthorizedResponder(_))
    ));
}
