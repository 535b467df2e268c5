//! Responder behaviour, checked with an independent decoder (x509-ocsp 0.2 / der 0.7).

mod common;

use std::sync::Arc;
use std::sync::mpsc;

use common::*;
use cps_hsm::Signer;
use cps_ocsp::{
    CertStatusAnswer, CrlReason, NotIssuedPolicy, Responder, ResponseStatusKind, StatusError,
    StatusSource,
};
use x509_cert_02::der::{Decode, Encode};
use x509_ocsp::{CertStatus, ResponderId};

const NOW: i64 = 1_800_000_000;

fn setup(policy: NotIssuedPolicy) -> (TestPki, Responder, Arc<MapSource>) {
    let pki = build_pki(NOW, 3);
    let (r, s) = responder(&pki, config(policy));
    (pki, r, s)
}

fn sha1_of(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

/// Decode a successful reply and check everything that does not depend on the statuses.
fn successful(
    pki: &TestPki,
    ca: usize,
    reply: &cps_ocsp::OcspReply,
    now: i64,
) -> x509_ocsp::BasicOcspResponse {
    assert_eq!(
        reply.status,
        ResponseStatusKind::Successful,
        "{:?}",
        reply.detail
    );
    let (status, basic) = decode(&reply.der);
    assert_eq!(status, 0);
    let basic = basic.expect("responseBytes");
    let ca = &pki.cas[ca];
    check_signature(&basic, ca.ocsp_key.public_key_der());
    assert_eq!(
        basic.signature_algorithm.oid.to_string(),
        "1.2.840.10045.4.3.2",
        "ecdsa-with-SHA256"
    );
    assert!(basic.signature_algorithm.parameters.is_none());
    let certs = basic.certs.as_ref().expect("certs");
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].to_der().unwrap(), ca.ocsp_cert_der);
    let ocsp_cert = x509_cert_02::Certificate::from_der(&ca.ocsp_cert_der).unwrap();
    let key_bits = ocsp_cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    match &basic.tbs_response_data.responder_id {
        ResponderId::ByKey(k) => assert_eq!(k.as_bytes(), sha1_of(key_bits)),
        other => panic!("responderID must be byKey, got {other:?}"),
    }
    let data = &basic.tbs_response_data;
    assert_eq!(unix(&data.produced_at), now);
    for s in &data.responses {
        assert_eq!(unix(&s.this_update), now);
        assert_eq!(unix(s.next_update.as_ref().unwrap()), now + 4 * 3600);
        assert!(s.single_extensions.is_none());
    }
    assert_eq!(reply.this_update, Some(now));
    assert_eq!(reply.next_update, Some(now + 4 * 3600));
    // Our own encoding must also be exactly what der 0.7 re-encodes (DER is canonical).
    let (_, again) = decode(&reply.der);
    assert_eq!(
        x509_ocsp::OcspResponse::from_der(&reply.der)
            .unwrap()
            .to_der()
            .unwrap(),
        reply.der.to_vec()
    );
    drop(again);
    basic
}

fn status_of(basic: &x509_ocsp::BasicOcspResponse, n: usize) -> CertStatus {
    basic.tbs_response_data.responses[n].cert_status
}

#[test]
fn good_revoked_unknown_with_sha1_certid() {
    let (pki, r, _) = setup(NotIssuedPolicy::Unknown);
    let ca = &pki.cas[0];
    let cases = [
        (ca.ee[0].serial.clone(), "good"),
        (ca.ee[1].serial.clone(), "revoked"),
        (vec![0x12, 0x34, 0x56], "unknown"),
    ];
    for (serial, expected) in cases {
        let id = cert_id(&ca.cert_der, &serial, Hash::Sha1, true);
        let req = request(vec![id.clone()], None);
        let reply = r.respond(&req, NOW);
        let basic = successful(&pki, 0, &reply, NOW);
        assert!(reply.cacheable);
        assert!(basic.tbs_response_data.response_extensions.is_none());
        let single = &basic.tbs_response_data.responses[0];
        assert_eq!(single.cert_id, id, "CertID echoed");
        match (expected, single.cert_status) {
            ("good", CertStatus::Good(_)) | ("unknown", CertStatus::Unknown(_)) => {}
            ("revoked", CertStatus::Revoked(info)) => {
                assert_eq!(unix(&info.revocation_time), NOW - 600);
                assert_eq!(
                    info.revocation_reason,
                    Some(x509_cert_02::ext::pkix::CrlReason::KeyCompromise)
                );
            }
            (e, got) => panic!("expected {e}, got {got:?}"),
        }
    }
}

#[test]
fn sha256_certid_with_and_without_null_params() {
    let (pki, r, _) = setup(NotIssuedPolicy::Unknown);
    let ca = &pki.cas[1];
    for null in [false, true] {
        for hash in [Hash::Sha256, Hash::Sha1] {
            let id = cert_id(&ca.cert_der, &ca.ee[0].serial, hash, null);
            let req = request(vec![id.clone()], None);
            let reply = r.respond(&req, NOW);
            let basic = successful(&pki, 1, &reply, NOW);
            let single = &basic.tbs_response_data.responses[0];
            assert_eq!(single.cert_id, id);
            assert_eq!(single.cert_id.hash_algorithm.parameters.is_some(), null);
            assert!(matches!(single.cert_status, CertStatus::Good(_)));
        }
    }
    // A hash we do not support cannot name an issuer.
    let mut id = cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha256, false);
    id.hash_algorithm.oid = "2.16.840.1.101.3.4.2.4".parse().unwrap(); // SHA-224
    let reply = r.respond(&request(vec![id], None), NOW);
    assert_eq!(reply.status, ResponseStatusKind::Unauthorized);
    // Parameters other than NULL are refused, not echoed.
    let mut id = cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha256, false);
    id.hash_algorithm.parameters = Some(
        x509_cert_02::der::asn1::Any::new(x509_cert_02::der::Tag::OctetString, [1u8]).unwrap(),
    );
    let reply = r.respond(&request(vec![id], None), NOW);
    assert_eq!(reply.status, ResponseStatusKind::MalformedRequest);
}

#[test]
fn revoked_extended_for_non_issued_serials() {
    let (pki, r, source) = setup(NotIssuedPolicy::RevokedExtended);
    let ca = &pki.cas[0];
    let long = [0x11u8; 21];
    for serial in [&[0x42u8][..], &[0x80], &[0x00], &long] {
        let calls = source.calls();
        let reply = r.respond(&raw_serial_request(&ca.cert_der, serial), NOW);
        let basic = successful(&pki, 0, &reply, NOW);
        match status_of(&basic, 0) {
            CertStatus::Revoked(info) => {
                assert_eq!(unix(&info.revocation_time), 0);
                assert_eq!(
                    info.revocation_reason,
                    Some(x509_cert_02::ext::pkix::CrlReason::CertificateHold)
                );
            }
            other => panic!("{other:?}"),
        }
        let exts = basic.tbs_response_data.response_extensions.unwrap();
        assert_eq!(exts.len(), 1);
        assert_eq!(exts[0].extn_id, EXTENDED_REVOKE);
        assert!(!exts[0].critical);
        assert_eq!(exts[0].extn_value.as_bytes(), &[0x05, 0x00]);
        // Negative, zero or longer than 20 octets: not ours, the source is not even asked.
        let asked = if serial == [0x42] { 1 } else { 0 };
        assert_eq!(source.calls() - calls, asked, "serial {serial:02x?}");
    }
    // Issued certificates are unaffected, and carry no extended-revoke extension.
    let id = cert_id(&ca.cert_der, &ca.ee[1].serial, Hash::Sha1, true);
    let reply = r.respond(&request(vec![id], None), NOW);
    let basic = successful(&pki, 0, &reply, NOW);
    assert!(matches!(status_of(&basic, 0), CertStatus::Revoked(i)
        if i.revocation_reason == Some(x509_cert_02::ext::pkix::CrlReason::KeyCompromise)));
    assert!(basic.tbs_response_data.response_extensions.is_none());
}

#[test]
fn every_certid_of_a_multi_request_is_answered_and_echoed() {
    let (pki, r, source) = setup(NotIssuedPolicy::Unknown);
    let ca = &pki.cas[0];
    let ids = vec![
        cert_id(&ca.cert_der, &ca.ee[1].serial, Hash::Sha1, true),
        cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha256, false),
        cert_id(&ca.cert_der, &[0x33], Hash::Sha1, false),
        cert_id(&ca.cert_der, &ca.ee[2].serial, Hash::Sha256, true),
        // The same certificate again: looked up once, answered twice, identically.
        cert_id(&ca.cert_der, &ca.ee[1].serial, Hash::Sha256, true),
    ];
    let calls = source.calls();
    let reply = r.respond(&request(ids.clone(), None), NOW);
    let basic = successful(&pki, 0, &reply, NOW);
    assert_eq!(source.calls() - calls, 4);
    let responses = &basic.tbs_response_data.responses;
    assert_eq!(responses.len(), ids.len());
    for (resp, id) in responses.iter().zip(&ids) {
        assert_eq!(&resp.cert_id, id, "echoed in order, same hash algorithm");
    }
    assert!(matches!(status_of(&basic, 0), CertStatus::Revoked(_)));
    assert!(matches!(status_of(&basic, 1), CertStatus::Good(_)));
    assert!(matches!(status_of(&basic, 2), CertStatus::Unknown(_)));
    assert!(matches!(status_of(&basic, 3), CertStatus::Good(_)));
    assert!(matches!(status_of(&basic, 4), CertStatus::Revoked(_)));
    assert_eq!(r.cache_len(), 0, "multi-requests are not pre-signed");
}

#[test]
fn foreign_and_other_issuers_get_unknown_only_all_foreign_is_unauthorized() {
    let (pki, r, _) = setup(NotIssuedPolicy::RevokedExtended);
    let (personnes, organisations) = (&pki.cas[0], &pki.cas[1]);
    let mut foreign = cert_id(
        &personnes.cert_der,
        &personnes.ee[0].serial,
        Hash::Sha1,
        true,
    );
    foreign.issuer_key_hash = x509_cert_02::der::asn1::OctetString::new([7u8; 20]).unwrap();
    let ids = vec![
        foreign.clone(),
        cert_id(
            &organisations.cert_der,
            &organisations.ee[1].serial,
            Hash::Sha1,
            true,
        ),
        cert_id(
            &personnes.cert_der,
            &personnes.ee[1].serial,
            Hash::Sha1,
            true,
        ),
    ];
    let reply = r.respond(&request(ids.clone(), None), NOW);
    // The first CertID we serve names "organisations": its signer answers.
    let basic = successful(&pki, 1, &reply, NOW);
    assert!(
        matches!(status_of(&basic, 0), CertStatus::Unknown(_)),
        "foreign issuer"
    );
    assert!(matches!(status_of(&basic, 1), CertStatus::Revoked(_)));
    assert!(
        matches!(status_of(&basic, 2), CertStatus::Unknown(_)),
        "another of our CAs: this signer is not authorised for it"
    );
    assert!(
        basic.tbs_response_data.response_extensions.is_none(),
        "RevokedExtended applies to our own non-issued serials only"
    );

    let reply = r.respond(&request(vec![foreign.clone(), foreign], None), NOW);
    assert_eq!(reply.status, ResponseStatusKind::Unauthorized);
    assert_eq!(&reply.der[..], &[0x30, 0x03, 0x0a, 0x01, 0x06]);
    assert!(!reply.cacheable);
    let (status, basic) = decode(&reply.der);
    assert_eq!((status, basic.is_none()), (6, true));
}

#[test]
fn nonce_is_echoed_and_requests_with_nonce_are_signed_each_time() {
    let (pki, r, source) = setup(NotIssuedPolicy::Unknown);
    let ca = &pki.cas[0];
    for len in [1usize, 16, 32] {
        let nonce: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
        let id = cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha1, true);
        let req = request(vec![id], Some(&nonce));
        let calls = source.calls();
        let a = r.respond(&req, NOW);
        let b = r.respond(&req, NOW);
        assert_eq!(source.calls() - calls, 2, "no cache for nonce requests");
        assert!(!a.cacheable && !a.from_cache && !b.from_cache);
        assert_ne!(a.der, b.der, "each signed anew (ECDSA is randomised)");
        let basic = successful(&pki, 0, &a, NOW);
        let exts = basic.tbs_response_data.response_extensions.unwrap();
        assert_eq!(exts.len(), 1);
        assert_eq!(exts[0], nonce_extension(&nonce), "echoed verbatim");
    }
    assert_eq!(r.cache_len(), 0);
}

#[test]
fn nonce_outside_rfc_8954_bounds_is_malformed() {
    let (pki, r, _) = setup(NotIssuedPolicy::Unknown);
    let ca = &pki.cas[0];
    let id = || cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha1, true);
    for len in [0usize, 33, 64, 1000] {
        let reply = r.respond(&request(vec![id()], Some(&vec![1u8; len])), NOW);
        assert_eq!(
            reply.status,
            ResponseStatusKind::MalformedRequest,
            "len {len}"
        );
        assert_eq!(&reply.der[..], &[0x30, 0x03, 0x0a, 0x01, 0x01]);
    }
    // Legacy raw nonce (extnValue not an OCTET STRING).
    let raw = x509_cert_02::ext::Extension {
        extn_id: NONCE,
        critical: false,
        extn_value: x509_cert_02::der::asn1::OctetString::new([9u8; 16]).unwrap(),
    };
    let reply = r.respond(&request_with(vec![id()], vec![raw]), NOW);
    assert_eq!(reply.status, ResponseStatusKind::MalformedRequest);
}

/// Re-wrap the TBSRequest of `req` with `prefix` and `suffix` around its content (drops any
/// optional signature).
fn with_tbs(req: &[u8], prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    use x509_cert_02::der::{Tag, asn1::Any};
    let tbs = x509_ocsp::OcspRequest::from_der(req)
        .unwrap()
        .tbs_request
        .to_der()
        .unwrap();
    let mut content = prefix.to_vec();
    content.extend_from_slice(Any::from_der(&tbs).unwrap().value());
    content.extend_from_slice(suffix);
    let tbs = Any::new(Tag::Sequence, content).unwrap().to_der().unwrap();
    Any::new(Tag::Sequence, tbs).unwrap().to_der().unwrap()
}

/// `[2] EXPLICIT SEQUENCE OF` the given raw Extension TLVs.
fn raw_extensions(exts: &[&[u8]]) -> Vec<u8> {
    let inner: Vec<u8> = exts.concat();
    let mut seq = vec![0x30, inner.len() as u8];
    seq.extend_from_slice(&inner);
    let mut out = vec![0xa2, seq.len() as u8];
    out.extend_from_slice(&seq);
    out
}

#[test]
fn request_extensions_and_optional_fields() {
    let (pki, r, _) = setup(NotIssuedPolicy::Unknown);
    let ca = &pki.cas[0];
    let id = || cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha1, true);
    let plain = request(vec![id()], None);
    let status = |der: &[u8]| r.respond(der, NOW).status;
    use ResponseStatusKind::{MalformedRequest, Successful};

    // Unknown non-critical extension: ignored. Unknown critical: refused.
    let ext = |oid: &str, critical: bool| x509_cert_02::ext::Extension {
        extn_id: oid.parse().unwrap(),
        critical,
        extn_value: x509_cert_02::der::asn1::OctetString::new([0x05, 0x00]).unwrap(),
    };
    assert_eq!(
        status(&request_with(vec![id()], vec![ext("1.2.3.4", false)])),
        Successful
    );
    assert_eq!(
        status(&request_with(vec![id()], vec![ext("1.2.3.4", true)])),
        MalformedRequest
    );
    // Acceptable responses (basic) marked critical: understood.
    let acceptable = x509_cert_02::ext::Extension {
        extn_id: "1.3.6.1.5.5.7.48.1.4".parse().unwrap(),
        critical: true,
        extn_value: x509_cert_02::der::asn1::OctetString::new(
            [
                &[0x30, 0x0b, 0x06, 0x09][..],
                &[0x2b, 6, 1, 5, 5, 7, 0x30, 1, 1],
            ]
            .concat(),
        )
        .unwrap(),
    };
    assert_eq!(
        status(&request_with(vec![id()], vec![acceptable])),
        Successful
    );
    // Duplicate extension.
    let dup = request_with(
        vec![id()],
        vec![nonce_extension(&[1; 8]), nonce_extension(&[1; 8])],
    );
    assert_eq!(status(&dup), MalformedRequest);
    // An extension OID that const-oid cannot hold (2.999.1) is still ignored when not critical.
    let odd_oid = &[
        0x30, 0x09, 0x06, 0x03, 0x88, 0x37, 0x01, 0x04, 0x02, 0x05, 0x00,
    ][..];
    assert_eq!(
        status(&with_tbs(&plain, &[], &raw_extensions(&[odd_oid]))),
        Successful
    );
    let odd_critical = &[
        0x30, 0x0c, 0x06, 0x03, 0x88, 0x37, 0x01, 0x01, 0x01, 0xff, 0x04, 0x02, 0x05, 0x00,
    ][..];
    assert_eq!(
        status(&with_tbs(&plain, &[], &raw_extensions(&[odd_critical]))),
        MalformedRequest
    );
    // critical FALSE encoded explicitly (a DER DEFAULT violation) is tolerated.
    let explicit_false = &[
        0x30, 0x0c, 0x06, 0x03, 0x2a, 0x03, 0x04, 0x01, 0x01, 0x00, 0x04, 0x02, 0x05, 0x00,
    ][..];
    assert_eq!(
        status(&with_tbs(&plain, &[], &raw_extensions(&[explicit_false]))),
        Successful
    );
    // A BOOLEAN that is neither 0x00 nor 0xFF is not DER.
    let bad_bool = &[
        0x30, 0x0c, 0x06, 0x03, 0x2a, 0x03, 0x04, 0x01, 0x01, 0x01, 0x04, 0x02, 0x05, 0x00,
    ][..];
    assert_eq!(
        status(&with_tbs(&plain, &[], &raw_extensions(&[bad_bool]))),
        MalformedRequest
    );
    // Empty Extensions.
    assert_eq!(
        status(&with_tbs(&plain, &[], &[0xa2, 0x02, 0x30, 0x00])),
        MalformedRequest
    );

    // requestorName, and an optional signature: accepted and ignored.
    let mut req = x509_ocsp::OcspRequest::from_der(&plain).unwrap();
    req.tbs_request.requestor_name = Some(x509_cert_02::ext::pkix::name::GeneralName::DnsName(
        x509_cert_02::der::asn1::Ia5String::new("client.example.test").unwrap(),
    ));
    assert_eq!(status(&req.to_der().unwrap()), Successful);
    req.optional_signature = Some(x509_ocsp::Signature {
        signature_algorithm: x509_cert_02::spki::AlgorithmIdentifierOwned {
            oid: "1.2.840.10045.4.3.2".parse().unwrap(),
            parameters: None,
        },
        signature: x509_cert_02::der::asn1::BitString::from_bytes(&[0x30, 0x00]).unwrap(),
        certs: None,
    });
    assert_eq!(status(&req.to_der().unwrap()), Successful);

    // version: an explicitly encoded v1 is tolerated, v2 refused.
    assert_eq!(
        status(&with_tbs(&plain, &[0xa0, 0x03, 0x02, 0x01, 0x00], &[])),
        Successful
    );
    assert_eq!(
        status(&with_tbs(&plain, &[0xa0, 0x03, 0x02, 0x01, 0x01], &[])),
        MalformedRequest
    );
    // Fields out of order, or an unknown context tag.
    assert_eq!(
        status(&with_tbs(&plain, &[], &[0xa0, 0x03, 0x02, 0x01, 0x00])),
        MalformedRequest
    );
    assert_eq!(
        status(&with_tbs(&plain, &[], &[0xa5, 0x00])),
        MalformedRequest
    );
}

#[test]
fn malformed_corpus_never_panics() {
    let (pki, r, _) = setup(NotIssuedPolicy::Unknown);
    let ca = &pki.cas[0];
    let valid = request(
        vec![cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha1, true)],
        Some(&[3u8; 16]),
    );
    assert_eq!(
        r.respond(&valid, NOW).status,
        ResponseStatusKind::Successful
    );
    let malformed = |input: &[u8], what: &str| {
        let reply = r.respond(input, NOW);
        assert_eq!(reply.status, ResponseStatusKind::MalformedRequest, "{what}");
        assert_eq!(&reply.der[..], &[0x30, 0x03, 0x0a, 0x01, 0x01], "{what}");
        assert!(reply.detail.is_some());
    };
    malformed(&[], "empty");
    for n in 0..valid.len() {
        malformed(&valid[..n], &format!("truncated at {n}"));
    }
    let mut trailing = valid.clone();
    trailing.push(0);
    malformed(&trailing, "trailing byte");
    let mut two = valid.clone();
    two.extend_from_slice(&valid);
    malformed(&two, "two requests back to back");
    for huge in [
        &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x30, 0x00][..],
        &[0x30, 0x88, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
        &[0x30, 0x80, 0x30, 0x00, 0x00, 0x00][..], // indefinite length (BER only)
        &[0x30, 0x81, 0x05, 0x30, 0x03, 0x30, 0x01, 0x00][..], // non-minimal length
        &[0x30, 0x82, 0x00, 0x03, 0x30, 0x01, 0x00][..],
    ] {
        malformed(huge, &format!("length field {huge:02x?}"));
    }
    // Non-minimal INTEGER serial (DER violation), empty INTEGER.
    malformed(
        &raw_serial_request(&ca.cert_der, &[0x00, 0x01]),
        "non-minimal serial",
    );
    malformed(
        &raw_serial_request(&ca.cert_der, &[0xff, 0x80]),
        "non-minimal negative",
    );
    malformed(&raw_serial_request(&ca.cert_der, &[]), "empty INTEGER");
    assert_eq!(
        r.respond(&raw_serial_request(&ca.cert_der, &[0x00, 0x80]), NOW)
            .status,
        ResponseStatusKind::Successful,
        "the raw helper itself builds valid requests"
    );
    // An empty requestList.
    malformed(&request(vec![], None), "empty requestList");
    // Random garbage, seeded.
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(6960);
    for _ in 0..2000 {
        let len = rand::Rng::gen_range(&mut rng, 0..300);
        let mut g: Vec<u8> = (0..len).map(|_| rand::Rng::r#gen::<u8>(&mut rng)).collect();
        if rand::Rng::gen_bool(&mut rng, 0.5) && !g.is_empty() {
            g[0] = 0x30;
        }
        let reply = r.respond(&g, NOW);
        assert_ne!(reply.status, ResponseStatusKind::Successful);
    }
    // More single requests than allowed (8), and an oversized body.
    let many: Vec<_> = (1u8..=9)
        .map(|i| cert_id(&ca.cert_der, &[i], Hash::Sha1, true))
        .collect();
    malformed(&request(many[..9].to_vec(), None), "9 single requests");
    assert_eq!(
        r.respond(&request(many[..8].to_vec(), None), NOW).status,
        ResponseStatusKind::Successful
    );
    let mut big = valid.clone();
    big.resize(4097, 0);
    malformed(&big, "oversized body");
}

#[test]
fn cache_hits_reuse_bytes_and_invalidate_takes_effect_immediately() {
    let (pki, r, source) = setup(NotIssuedPolicy::Unknown);
    let ca = &pki.cas[0];
    let serial = &ca.ee[0].serial;
    let req = request(vec![cert_id(&ca.cert_der, serial, Hash::Sha1, true)], None);
    let first = r.respond(&req, NOW);
    assert!(!first.from_cache);
    let calls = source.calls();
    let second = r.respond(&req, NOW + 10);
    assert!(second.from_cache);
    assert_eq!(second.der, first.der);
    assert_eq!(
        second.der.as_ptr(),
        first.der.as_ptr(),
        "same buffer, no copy"
    );
    assert_eq!(
        second.this_update,
        Some(NOW),
        "the cached response's own times"
    );
    assert_eq!(source.calls(), calls, "no lookup on a hit");
    // The same serial asked with another hash algorithm is another cache entry.
    let req256 = request(
        vec![cert_id(&ca.cert_der, serial, Hash::Sha256, false)],
        None,
    );
    assert!(!r.respond(&req256, NOW).from_cache);
    assert!(r.respond(&req256, NOW).from_cache);
    assert_eq!(r.cache_len(), 2);

    // Revocation: store first, then invalidate; the very next answer is revoked.
    source.set(
        &ca.id,
        serial,
        CertStatusAnswer::Revoked {
            time: NOW + 20,
            reason: Some(CrlReason::Superseded),
        },
    );
    r.invalidate(&ca.id, serial);
    assert_eq!(r.cache_len(), 0, "every hash variant dropped");
    for q in [&req, &req256] {
        let after = r.respond(q, NOW + 30);
        assert!(!after.from_cache);
        let basic = successful(&pki, 0, &after, NOW + 30);
        assert!(matches!(status_of(&basic, 0), CertStatus::Revoked(i)
            if i.revocation_reason == Some(x509_cert_02::ext::pkix::CrlReason::Superseded)));
    }
    // Refresh: once cache_refresh_secs (600) have passed, signed anew.
    assert!(r.respond(&req, NOW + 629).from_cache);
    let refreshed = r.respond(&req, NOW + 630);
    assert!(!refreshed.from_cache);
    assert_eq!(refreshed.this_update, Some(NOW + 630));
    // invalidate_all.
    r.invalidate_all();
    assert_eq!(r.cache_len(), 0);
    assert!(!r.respond(&req, NOW + 631).from_cache);
    // A clock that went backwards does not get a response from its future.
    assert!(!r.respond(&req, NOW + 100).from_cache);
    // Unknown issuer ids are ignored.
    r.invalidate("nope", serial);
}

#[test]
fn cache_is_bounded() {
    let pki = build_pki(NOW, 0);
    let mut cfg = config(NotIssuedPolicy::Unknown);
    cfg.cache_max_entries = 40;
    let (r, _) = responder(&pki, cfg);
    let ca = &pki.cas[0];
    for i in 1u32..=400 {
        let serial = i.to_be_bytes();
        let start = serial.iter().position(|b| *b != 0).unwrap();
        let mut s = serial[start..].to_vec();
        if s[0] & 0x80 != 0 {
            s.insert(0, 0);
        }
        let reply = r.respond(
            &request(vec![cert_id(&ca.cert_der, &s, Hash::Sha1, true)], None),
            NOW,
        );
        assert_eq!(reply.status, ResponseStatusKind::Successful);
    }
    assert!(r.cache_len() <= 48, "{}", r.cache_len());
    assert!(r.cache_len() >= 16, "{}", r.cache_len());
}

/// A source that blocks inside `status` until told to go on.
struct GatedSource {
    inner: Arc<MapSource>,
    entered: std::sync::Mutex<Option<mpsc::Sender<()>>>,
    proceed: std::sync::Mutex<Option<mpsc::Receiver<()>>>,
}

impl StatusSource for GatedSource {
    fn status(&self, issuer_id: &str, serial: &[u8]) -> Result<CertStatusAnswer, StatusError> {
        let answer = self.inner.status(issuer_id, serial);
        if let Some(tx) = self.entered.lock().unwrap().take() {
            tx.send(()).unwrap();
            let rx = self.proceed.lock().unwrap().take().unwrap();
            rx.recv().unwrap();
        }
        answer
    }
}

#[test]
fn invalidation_racing_with_an_in_flight_signing_does_not_cache_the_old_status() {
    let pki = build_pki(NOW, 1);
    let ca = &pki.cas[0];
    let inner = Arc::new(MapSource::default());
    inner.set(&ca.id, &ca.ee[0].serial, CertStatusAnswer::Good);
    let (entered_tx, entered_rx) = mpsc::channel();
    let (proceed_tx, proceed_rx) = mpsc::channel();
    let source = Arc::new(GatedSource {
        inner: inner.clone(),
        entered: std::sync::Mutex::new(Some(entered_tx)),
        proceed: std::sync::Mutex::new(Some(proceed_rx)),
    });
    let r = Arc::new(
        Responder::new(vec![ca.entry()], config(NotIssuedPolicy::Unknown), source).unwrap(),
    );
    let req = request(
        vec![cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha1, true)],
        None,
    );
    let in_flight = {
        let (r, req) = (r.clone(), req.clone());
        std::thread::spawn(move || r.respond(&req, NOW))
    };
    // The in-flight request has read "good" and is about to sign.
    entered_rx.recv().unwrap();
    inner.set(
        &ca.id,
        &ca.ee[0].serial,
        CertStatusAnswer::Revoked {
            time: NOW,
            reason: Some(CrlReason::KeyCompromise),
        },
    );
    r.invalidate(&ca.id, &ca.ee[0].serial);
    proceed_tx.send(()).unwrap();
    let old = in_flight.join().unwrap();
    let basic = successful(&pki, 0, &old, NOW);
    assert!(
        matches!(status_of(&basic, 0), CertStatus::Good(_)),
        "read before the revocation"
    );
    assert_eq!(r.cache_len(), 0, "the stale good was not cached");
    let next = r.respond(&req, NOW + 1);
    assert!(!next.from_cache);
    let basic = successful(&pki, 0, &next, NOW + 1);
    assert!(matches!(status_of(&basic, 0), CertStatus::Revoked(_)));
}

#[test]
fn source_errors_fail_closed_and_are_not_cached() {
    let (pki, r, source) = setup(NotIssuedPolicy::Unknown);
    let ca = &pki.cas[0];
    let req = request(
        vec![cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha1, true)],
        None,
    );
    *source.fail.lock().unwrap() = Some(StatusError::Internal("disk on fire".into()));
    let reply = r.respond(&req, NOW);
    assert_eq!(reply.status, ResponseStatusKind::InternalError);
    assert_eq!(&reply.der[..], &[0x30, 0x03, 0x0a, 0x01, 0x02]);
    assert!(reply.detail.unwrap().contains("disk on fire"));
    *source.fail.lock().unwrap() = Some(StatusError::Unavailable("busy".into()));
    let reply = r.respond(&req, NOW);
    assert_eq!(reply.status, ResponseStatusKind::TryLater);
    assert_eq!(&reply.der[..], &[0x30, 0x03, 0x0a, 0x01, 0x03]);
    // In a multi-request, one failing lookup fails the whole response.
    let multi = request(
        vec![
            cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha1, true),
            cert_id(&ca.cert_der, &ca.ee[1].serial, Hash::Sha1, true),
        ],
        None,
    );
    assert_eq!(r.respond(&multi, NOW).status, ResponseStatusKind::TryLater);
    assert_eq!(r.cache_len(), 0);
    *source.fail.lock().unwrap() = None;
    let reply = r.respond(&req, NOW);
    assert_eq!(reply.status, ResponseStatusKind::Successful);
    assert!(!reply.from_cache);
    // A negative revocation time is refused rather than encoded.
    source.set(
        &ca.id,
        &ca.ee[2].serial,
        CertStatusAnswer::Revoked {
            time: -5,
            reason: None,
        },
    );
    let req = request(
        vec![cert_id(&ca.cert_der, &ca.ee[2].serial, Hash::Sha1, true)],
        None,
    );
    assert_eq!(
        r.respond(&req, NOW).status,
        ResponseStatusKind::InternalError
    );
}

/// A signer that always fails.
struct BrokenSigner(Arc<cps_hsm::SoftwareSigner>);

impl Signer for BrokenSigner {
    fn label(&self) -> &str {
        "broken"
    }
    fn key_algorithm(&self) -> cps_hsm::KeyAlgorithm {
        self.0.key_algorithm()
    }
    fn public_key_der(&self) -> &[u8] {
        self.0.public_key_der()
    }
    fn sign(
        &self,
        _: cps_hsm::SignatureAlgorithm,
        _: &[u8],
        _: cps_hsm::SigFormat,
    ) -> Result<Vec<u8>, cps_hsm::HsmError> {
        Err(cps_hsm::HsmError::Malformed("token removed".into()))
    }
}

#[test]
fn signing_failure_and_responder_validity() {
    let pki = build_pki(NOW, 1);
    let ca = &pki.cas[0];
    let mut entry = ca.entry();
    entry.responder_key = Arc::new(BrokenSigner(ca.ocsp_key.clone()));
    let source = Arc::new(MapSource::default());
    source.set(&ca.id, &ca.ee[0].serial, CertStatusAnswer::Good);
    let r = Responder::new(
        vec![entry],
        config(NotIssuedPolicy::Unknown),
        source.clone(),
    )
    .unwrap();
    let req = request(
        vec![cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha1, true)],
        None,
    );
    let reply = r.respond(&req, NOW);
    assert_eq!(reply.status, ResponseStatusKind::InternalError);
    assert!(reply.detail.unwrap().contains("token removed"));

    // The responder certificate is valid for 30 days: nextUpdate is clamped to its notAfter,
    // and past it the responder refuses to sign.
    let r = Responder::new(vec![ca.entry()], config(NotIssuedPolicy::Unknown), source).unwrap();
    let not_after = NOW + 86400 * 30;
    let late = not_after - 3600;
    let reply = r.respond(&req, late);
    assert_eq!(reply.next_update, Some(not_after));
    let (_, basic) = decode(&reply.der);
    let single = &basic.unwrap().tbs_response_data.responses[0];
    assert_eq!(unix(single.next_update.as_ref().unwrap()), not_after);
    assert_eq!(
        r.respond(&req, not_after + 1).status,
        ResponseStatusKind::InternalError
    );
    assert_eq!(
        r.respond(&req, NOW - 7200).status,
        ResponseStatusKind::InternalError
    );
    assert_eq!(
        r.respond(&req, -1).status,
        ResponseStatusKind::InternalError
    );
}

#[test]
fn configuration_is_checked() {
    let pki = build_pki(NOW, 1);
    let (a, b) = (&pki.cas[0], &pki.cas[1]);
    let source: Arc<MapSource> = Arc::new(MapSource::default());
    let new = |entries: Vec<cps_ocsp::IssuerEntry>, cfg: cps_ocsp::ResponderConfig| {
        Responder::new(entries, cfg, source.clone()).map(|_| ())
    };
    let cfg = || config(NotIssuedPolicy::Unknown);
    assert!(new(vec![a.entry(), b.entry()], cfg()).is_ok());
    assert!(new(vec![], cfg()).is_err(), "no issuer");
    assert!(new(vec![a.entry(), a.entry()], cfg()).is_err(), "duplicate");
    let mut same_ca = b.entry();
    same_ca.ca_cert_der = a.cert_der.clone();
    same_ca.responder_cert_der = a.ocsp_cert_der.clone();
    same_ca.responder_key = a.ocsp_key.clone();
    assert!(
        new(vec![a.entry(), same_ca], cfg()).is_err(),
        "same CA twice"
    );
    let mut wrong_key = a.entry();
    wrong_key.responder_key = b.ocsp_key.clone();
    assert!(
        new(vec![wrong_key], cfg()).is_err(),
        "key does not match certificate"
    );
    let mut wrong_ca = a.entry();
    wrong_ca.responder_cert_der = b.ocsp_cert_der.clone();
    wrong_ca.responder_key = b.ocsp_key.clone();
    assert!(new(vec![wrong_ca], cfg()).is_err(), "signer of another CA");
    let mut ee_as_ca = a.entry();
    ee_as_ca.ca_cert_der = a.ee[0].cert_der.clone();
    assert!(new(vec![ee_as_ca], cfg()).is_err(), "not a CA");
    let mut ca_signs = a.entry();
    ca_signs.responder_cert_der = a.cert_der.clone();
    ca_signs.responder_key = a.key.clone();
    assert!(new(vec![ca_signs], cfg()).is_ok(), "the CA itself may sign");
    let mut no_eku = a.entry();
    no_eku.responder_cert_der = a.ee[0].cert_der.clone();
    assert!(
        new(vec![no_eku], cfg()).is_err(),
        "no OCSPSigning EKU / wrong key"
    );
    let mut rsa = a.entry();
    rsa.signature = cps_hsm::SignatureAlgorithm::RsaPkcs1Sha256;
    assert!(new(vec![rsa], cfg()).is_err(), "algorithm does not fit key");
    for bad in [
        cps_ocsp::ResponderConfig {
            validity_secs: 0,
            ..cfg()
        },
        cps_ocsp::ResponderConfig {
            cache_refresh_secs: 0,
            ..cfg()
        },
        cps_ocsp::ResponderConfig {
            cache_refresh_secs: 4 * 3600 + 1,
            ..cfg()
        },
        cps_ocsp::ResponderConfig {
            max_request_bytes: 0,
            ..cfg()
        },
        cps_ocsp::ResponderConfig {
            max_requests_per_message: 0,
            ..cfg()
        },
    ] {
        assert!(new(vec![a.entry()], bad).is_err());
    }
    assert!(new(vec![a.entry()], cps_ocsp::ResponderConfig::default()).is_ok());
}

#[test]
fn get_requests_decode_to_the_same_answer() {
    let (pki, r, _) = setup(NotIssuedPolicy::Unknown);
    let ca = &pki.cas[0];
    let req = request(
        vec![cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha1, true)],
        None,
    );
    let b64 = {
        use base64ct::Encoding;
        base64ct::Base64::encode_string(&req)
    };
    let url = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    assert_eq!(r.decode_get(&url).unwrap(), req);
    assert_eq!(r.decode_get(b64.trim_end_matches('=')).unwrap(), req);
    let reply = r.respond(&r.decode_get(&url).unwrap(), NOW);
    assert_eq!(reply.status, ResponseStatusKind::Successful);
    assert!(
        r.decode_get(&"QUFB".repeat(2000)).is_err(),
        "over max_request_bytes"
    );
}
