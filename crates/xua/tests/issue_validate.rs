//! Issuance and validation together, with software signers: round trips, the canonical form of
//! what we write, the SOAP envelope, the flavours, refusals at issuance, and the typed answer.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use cps_xua::c14n::{InclusivePrefixes, canonicalize};
use cps_xua::{
    CommentPolicy, Flavour, IssueError, IssuerConfig, PurposeOfUse, RefusalCode,
    XmlSignatureAlgorithm, ns,
};

#[test]
fn rsa_and_ecdsa_round_trip_with_every_claim() {
    let p = pki();
    let (ec, ec_der) = p.new_seal(false, 20);
    for (signer, der, alg) in [
        (
            p.seal.signer.clone() as Arc<dyn cps_hsm::Signer>,
            p.seal_der.clone(),
            XmlSignatureAlgorithm::RsaSha256,
        ),
        (
            ec.signer.clone(),
            ec_der,
            XmlSignatureAlgorithm::EcdsaSha256,
        ),
    ] {
        let issuer = issuer_for(signer, &der, IssuerConfig::default());
        assert_eq!(issuer.signature_algorithm(), alg);
        let mut c = claims();
        c.roles
            .push(cps_xua::CodedValue::new("SM26", "1.2.250.1.71.4.2.5"));
        c.confidentiality_code = Some(cps_xua::CodedValue::new("N", "2.16.840.1.113883.5.25"));
        let a = issuer.issue(&c, corpus_now(), &id(1)).unwrap();
        let v = validator(Setup::default().with_own_seal(&der))
            .validate(a.xml.as_bytes(), corpus_now())
            .unwrap();
        assert_eq!(v.id, a.id);
        assert_eq!(v.claims, c, "claims read back equal the claims signed");
        assert_eq!(v.signature_algorithm, alg);
        assert_eq!(v.signer.der, der);
        assert_eq!(v.issuer, issuer.issuer_name());
        assert_eq!(v.not_before, a.not_before);
        assert_eq!(v.not_on_or_after, a.not_on_or_after);
        assert!(!v.in_soap_envelope);
    }
}

#[test]
fn output_is_already_canonical_and_digest_input_is_the_document_minus_signature() {
    let a = corpus_issuer()
        .issue(&claims(), corpus_now(), &id(2))
        .unwrap();
    let doc = roxmltree::Document::parse(&a.xml).unwrap();
    let root = doc.root_element();
    let sig = root
        .children()
        .find(|n| n.has_tag_name((ns::DS, "Signature")))
        .unwrap();
    // exc-c14n of the whole assertion is the document itself.
    let mut all = Vec::new();
    canonicalize(root, None, &InclusivePrefixes::none(), &mut all).unwrap();
    assert_eq!(String::from_utf8(all).unwrap(), a.xml);
    // and of the assertion without its signature, the document with the signature cut out.
    let mut digest_input = Vec::new();
    canonicalize(
        root,
        Some(sig),
        &InclusivePrefixes::none(),
        &mut digest_input,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(digest_input).unwrap(),
        strip_signature(&a.xml)
    );
    // The signature sits right after Issuer.
    let names: Vec<&str> = root
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name())
        .collect();
    assert_eq!(
        names,
        [
            "Issuer",
            "Signature",
            "Subject",
            "Conditions",
            "AuthnStatement",
            "AttributeStatement"
        ]
    );
}

#[test]
fn soap_envelope_is_accepted_and_reported() {
    let a = corpus_issuer()
        .issue(&claims(), corpus_now(), &id(3))
        .unwrap();
    let v = validator(Setup::default())
        .validate(a.soap_envelope().as_bytes(), corpus_now())
        .unwrap();
    assert!(v.in_soap_envelope);
    assert_eq!(v.id, a.id);
}

#[test]
fn ihe_generic_flavour_needs_the_audience() {
    let p = pki();
    let issuer = issuer_for(
        p.seal.signer.clone(),
        &p.seal_der,
        IssuerConfig {
            flavour: Flavour::IheGeneric {
                audience: "https://dmp.example/registry".into(),
            },
            ..IssuerConfig::default()
        },
    );
    let a = issuer.issue(&claims(), corpus_now(), &id(4)).unwrap();
    assert!(
        a.xml
            .contains("<saml:Audience>https://dmp.example/registry</saml:Audience>")
    );
    assert!(a.xml.contains(ns::CM_BEARER));
    // A VIHF validator (no audience) refuses an assertion restricted to someone.
    let e = validator(Setup::default())
        .verify(a.xml.as_bytes(), corpus_now())
        .unwrap_err();
    assert_eq!(e.code, RefusalCode::AudienceMismatch, "{e}");
    // The named service accepts it; another service does not.
    let mut s = Setup::default();
    s.config.audience = Some("https://dmp.example/registry".into());
    let v = validator(s).verify(a.xml.as_bytes(), corpus_now()).unwrap();
    assert_eq!(v.audiences, ["https://dmp.example/registry"]);
    let mut s = Setup::default();
    s.config.audience = Some("https://other.example/".into());
    let e = validator(s)
        .verify(a.xml.as_bytes(), corpus_now())
        .unwrap_err();
    assert_eq!(e.code, RefusalCode::AudienceMismatch);
    // And a service with an audience refuses an unrestricted VIHF.
    let vihf = corpus_issuer()
        .issue(&claims(), corpus_now(), &id(5))
        .unwrap();
    let mut s = Setup::default();
    s.config.audience = Some("https://dmp.example/registry".into());
    assert_eq!(
        validator(s)
            .verify(vihf.xml.as_bytes(), corpus_now())
            .unwrap_err()
            .code,
        RefusalCode::AudienceMismatch
    );
}

#[test]
fn break_glass_needs_a_justification_at_issuance_and_is_read_back() {
    let issuer = corpus_issuer();
    for empty in ["", "   "] {
        let mut c = claims();
        c.purpose_of_use = PurposeOfUse::BreakGlass {
            justification: empty.into(),
        };
        assert!(matches!(
            issuer.issue(&c, corpus_now(), &id(6)),
            Err(IssueError::BreakGlassWithoutJustification)
        ));
    }
    let mut c = claims();
    c.purpose_of_use = PurposeOfUse::BreakGlass {
        justification: "Patient inconscient aux urgences".into(),
    };
    let a = issuer.issue(&c, corpus_now(), &id(7)).unwrap();
    assert!(a.break_glass);
    let v = validator(Setup::default())
        .validate(a.xml.as_bytes(), corpus_now())
        .unwrap();
    assert_eq!(v.claims.purpose_of_use, c.purpose_of_use);
}

#[test]
fn malformed_claims_are_refused_at_issuance() {
    let issuer = corpus_issuer();
    type Change = Box<dyn Fn(&mut cps_xua::VihfClaims)>;
    let cases: Vec<Change> = vec![
        Box::new(|c| c.roles.clear()),
        Box::new(|c| c.secteur_activite = "SA07".into()),
        Box::new(|c| c.structure_id = "9XYZ".into()),
        Box::new(|c| c.resource_urn = "dmp".into()),
        Box::new(|c| c.vihf_version = "9.9".into()),
        Box::new(|c| c.subject_id = " ".into()),
        Box::new(|c| {
            c.patient.as_mut().unwrap().ins = "184057512345600".into();
        }),
        Box::new(|c| c.roles[0].code_system = "not-an-oid".into()),
    ];
    for (i, f) in cases.iter().enumerate() {
        let mut c = claims();
        f(&mut c);
        assert!(
            matches!(
                issuer.issue(&c, corpus_now(), &id(8)),
                Err(IssueError::Claims(_))
            ),
            "case {i}"
        );
    }
}

#[test]
fn issuer_refuses_a_certificate_of_another_key_and_unfit_algorithms() {
    let p = pki();
    assert!(matches!(
        cps_xua::AssertionIssuer::new(
            p.seal.signer.clone(),
            std::slice::from_ref(&p.root_der),
            IssuerConfig::default()
        ),
        Err(IssueError::Certificate(_))
    ));
    assert!(matches!(
        cps_xua::AssertionIssuer::new(
            p.seal.signer.clone(),
            std::slice::from_ref(&p.seal_der),
            IssuerConfig {
                signature: Some(XmlSignatureAlgorithm::EcdsaSha256),
                ..IssuerConfig::default()
            }
        ),
        Err(IssueError::Config(_))
    ));
}

#[test]
fn validity_window_and_skew() {
    let issuer = corpus_issuer();
    let a = issuer.issue(&claims(), corpus_now(), &id(9)).unwrap();
    let v = validator(Setup::default());
    let skew = Duration::from_secs(60);
    // Inside the skew before NotBefore: accepted.
    v.verify(
        a.xml.as_bytes(),
        corpus_now() - skew + Duration::from_millis(1),
    )
    .unwrap();
    // Beyond it: not yet valid.
    assert_eq!(
        v.verify(
            a.xml.as_bytes(),
            corpus_now() - skew - Duration::from_secs(1)
        )
        .unwrap_err()
        .code,
        RefusalCode::NotYetValid
    );
    // At NotOnOrAfter + skew: expired; just before, accepted.
    let end = a.not_on_or_after + skew;
    v.verify(a.xml.as_bytes(), end - Duration::from_millis(1))
        .unwrap();
    assert_eq!(
        v.verify(a.xml.as_bytes(), end).unwrap_err().code,
        RefusalCode::Expired
    );
}

#[test]
fn replay_is_refused_but_verify_does_not_consume() {
    let a = corpus_issuer()
        .issue(&claims(), corpus_now(), &id(10))
        .unwrap();
    let v = validator(Setup::default());
    v.verify(a.xml.as_bytes(), corpus_now()).unwrap();
    v.verify(a.xml.as_bytes(), corpus_now()).unwrap();
    v.validate(a.xml.as_bytes(), corpus_now()).unwrap();
    let e = v.validate(a.xml.as_bytes(), corpus_now()).unwrap_err();
    assert_eq!(e.code, RefusalCode::Replayed);
    // The same assertion in an envelope is the same ID: still a replay.
    assert_eq!(
        v.validate(a.soap_envelope().as_bytes(), corpus_now())
            .unwrap_err()
            .code,
        RefusalCode::Replayed
    );
}

#[test]
fn comments_policy_refuse() {
    let a = corpus_issuer()
        .issue(&claims(), corpus_now(), &id(11))
        .unwrap();
    let with_comment = a
        .xml
        .replacen("<saml:Subject>", "<saml:Subject><!-- hi -->", 1);
    validator(Setup::default())
        .verify(with_comment.as_bytes(), corpus_now())
        .unwrap();
    let mut s = Setup::default();
    s.config.comments = CommentPolicy::Refuse;
    assert_eq!(
        validator(s)
            .verify(with_comment.as_bytes(), corpus_now())
            .unwrap_err()
            .code,
        RefusalCode::CommentInAssertion
    );
}

#[test]
fn refusal_codes_are_stable_strings() {
    assert_eq!(RefusalCode::Replayed.as_str(), "replayed");
    assert_eq!(RefusalCode::DigestMismatch.to_string(), "digest_mismatch");
    let e = validator(Setup::default())
        .verify(b"<x/>", corpus_now())
        .unwrap_err();
    assert_eq!(e.code, RefusalCode::NotAnAssertion);
    assert!(e.to_string().starts_with("not_an_assertion: "), "{e}");
}

struct Unreachable;

impl cps_xua::RevocationCheck for Unreachable {
    fn status(
        &self,
        _: &cps_xua::SignerCertificate,
        _: &[Vec<u8>],
        _: std::time::SystemTime,
    ) -> Result<cps_xua::RevocationStatus, String> {
        Err("store unreachable".into())
    }
}

impl cps_xua::ReplayCache for Unreachable {
    fn check_and_insert(
        &self,
        _: &str,
        _: std::time::SystemTime,
        _: std::time::SystemTime,
    ) -> Result<(), cps_xua::ReplayError> {
        Err(cps_xua::ReplayError::Unavailable(
            "store unreachable".into(),
        ))
    }
}

#[test]
fn revocation_and_replay_sources_fail_closed() {
    let a = corpus_issuer()
        .issue(&claims(), corpus_now(), &id(12))
        .unwrap();
    let trust = Arc::new(
        cps_xua::TrustStore::new(
            vec![pki().root_der.clone()],
            vec![],
            cps_xua::EkuPolicy::RequiredIfPresent(cps_xua::EKU_DOCUMENT_SIGNING),
        )
        .unwrap(),
    );
    let v = cps_xua::Validator::new(
        cps_xua::ValidatorConfig::default(),
        trust.clone(),
        Arc::new(Unreachable),
        Arc::new(Setup::default().policy()),
        Arc::new(cps_xua::InMemoryReplayCache::new(16)),
    );
    let e = v.validate(a.xml.as_bytes(), corpus_now()).unwrap_err();
    assert_eq!(e.code, RefusalCode::RevocationUnavailable, "{e}");
    let v = cps_xua::Validator::new(
        cps_xua::ValidatorConfig::default(),
        trust,
        Arc::new(cps_xua::StaticRevocationList::new()),
        Arc::new(Setup::default().policy()),
        Arc::new(Unreachable),
    );
    v.verify(a.xml.as_bytes(), corpus_now()).unwrap();
    let e = v.validate(a.xml.as_bytes(), corpus_now()).unwrap_err();
    assert_eq!(e.code, RefusalCode::ReplayCacheUnavailable, "{e}");
    // No verdict on the assertion (a service answers 503 and it may be presented again), unlike
    // a replay or any check of the assertion itself.
    assert!(e.code.is_unavailable());
    for code in [
        RefusalCode::RevocationUnavailable,
        RefusalCode::RegistryUnavailable,
    ] {
        assert!(code.is_unavailable(), "{code:?}");
    }
    for code in [
        RefusalCode::Replayed,
        RefusalCode::SignerRevoked,
        RefusalCode::BadSignature,
        RefusalCode::Expired,
    ] {
        assert!(!code.is_unavailable(), "{code:?}");
    }
}

#[test]
fn trust_store_needs_usable_anchors() {
    use cps_xua::{EKU_DOCUMENT_SIGNING, EkuPolicy, TrustError, TrustStore};
    assert_eq!(
        TrustStore::new(
            vec![],
            vec![],
            EkuPolicy::RequiredIfPresent(EKU_DOCUMENT_SIGNING)
        )
        .unwrap_err(),
        TrustError::NoAnchor
    );
    assert!(matches!(
        TrustStore::new(
            vec![pki().root_der.clone(), b"not a certificate".to_vec()],
            vec![],
            EkuPolicy::RequiredIfPresent(EKU_DOCUMENT_SIGNING)
        ),
        Err(TrustError::Anchor { index: 1, .. })
    ));
    // A policy that requires the documentSigning EKU accepts our seal, which has it.
    let strict = TrustStore::new(
        vec![pki().root_der.clone()],
        vec![],
        EkuPolicy::Required(EKU_DOCUMENT_SIGNING),
    )
    .unwrap();
    let v = cps_xua::Validator::new(
        cps_xua::ValidatorConfig::default(),
        Arc::new(strict),
        Arc::new(cps_xua::StaticRevocationList::new()),
        Arc::new(Setup::default().policy()),
        Arc::new(cps_xua::InMemoryReplayCache::new(16)),
    );
    let a = corpus_issuer()
        .issue(&claims(), corpus_now(), &id(13))
        .unwrap();
    v.validate(a.xml.as_bytes(), corpus_now()).unwrap();
}
