//! The long-term decision (`cps_ocsp::decide`), one test per rule and branch, with responses
//! made by our own `Responder` at chosen times.

mod common;

use common::*;
use cps_ocsp::{
    CertStatusAnswer, CrlReason, Evidence, LiveStatus, LongTermPolicy, LongTermQuery,
    LongTermRefusal, NotIssuedPolicy, ResponseError, decide,
};

const T: i64 = 1_800_000_000;

struct Fx {
    pki: TestPki,
}

impl Fx {
    fn new() -> Fx {
        Fx {
            pki: build_pki(T - 86_400, 3),
        }
    }

    /// A response about ee `n` of CA 0 with `status`, produced at `at`.
    fn response(&self, n: usize, status: CertStatusAnswer, at: i64) -> Vec<u8> {
        let (r, source) = responder(&self.pki, config(NotIssuedPolicy::Unknown));
        let ca = &self.pki.cas[0];
        source.set(&ca.id, &ca.ee[n].serial, status);
        let req = request(
            vec![cert_id(&ca.cert_der, &ca.ee[n].serial, Hash::Sha256, false)],
            Some(b"fresh-nonce"),
        );
        let reply = r.respond(&req, at);
        assert_eq!(reply.status, cps_ocsp::ResponseStatusKind::Successful);
        reply.der.to_vec()
    }

    fn decide(
        &self,
        proof_time: i64,
        embedded: &[Vec<u8>],
        live: Option<LiveStatus>,
    ) -> Result<cps_ocsp::LongTermValid, LongTermRefusal> {
        let ca = &self.pki.cas[0];
        decide(
            &LongTermQuery {
                proof_time,
                certificate: &ca.ee[0].cert_der,
                issuer: &ca.cert_der,
                embedded,
                live,
            },
            &LongTermPolicy::default(),
        )
    }
}

fn revoked(time: i64, reason: CrlReason) -> CertStatusAnswer {
    CertStatusAnswer::Revoked {
        time,
        reason: Some(reason),
    }
}

#[test]
fn a_fresh_good_answer_is_valid() {
    let fx = Fx::new();
    let r = fx.response(0, CertStatusAnswer::Good, T + 5);
    let v = fx.decide(T, &[r], None).unwrap();
    assert_eq!(v.response, 0);
    assert_eq!(v.this_update, T + 5);
    assert_eq!(v.revoked_later, None);
}

#[test]
fn nothing_embedded_is_refused() {
    let fx = Fx::new();
    assert_eq!(
        fx.decide(T, &[], None).unwrap_err(),
        LongTermRefusal::NoEmbeddedResponse
    );
}

#[test]
fn unusable_responses_are_named_and_refused() {
    let fx = Fx::new();
    // Garbage, a response about another certificate, one signed by a foreign PKI.
    let other = fx.response(2, CertStatusAnswer::Good, T + 5);
    let foreign_pki = build_pki(T - 86_400, 1);
    let (fr, _) = responder(&foreign_pki, config(NotIssuedPolicy::Unknown));
    let fca = &foreign_pki.cas[0];
    let foreign = fr
        .respond(
            &request(
                vec![cert_id(&fca.cert_der, &fca.ee[0].serial, Hash::Sha1, false)],
                None,
            ),
            T + 5,
        )
        .der
        .to_vec();
    let err = fx
        .decide(T, &[b"garbage".to_vec(), other, foreign], None)
        .unwrap_err();
    let LongTermRefusal::NoUsableResponse(errors) = err else {
        panic!("{err:?}");
    };
    assert!(matches!(errors[0], ResponseError::Malformed(_)));
    assert_eq!(errors[1], ResponseError::NotForCertificate);
    assert!(matches!(errors[2], ResponseError::UnauthorizedResponder(_)));
}

#[test]
fn unusable_responses_next_to_a_usable_one_are_ignored() {
    let fx = Fx::new();
    let good = fx.response(0, CertStatusAnswer::Good, T + 5);
    let v = fx.decide(T, &[b"garbage".to_vec(), good], None).unwrap();
    assert_eq!(v.response, 1);
}

#[test]
fn freshness_boundary_is_the_tolerance() {
    let fx = Fx::new();
    let tol = LongTermPolicy::default().tolerance_secs;
    let at_edge = fx.response(0, CertStatusAnswer::Good, T - tol);
    assert!(fx.decide(T, &[at_edge], None).is_ok());
    let stale = fx.response(0, CertStatusAnswer::Good, T - tol - 1);
    assert_eq!(
        fx.decide(T, &[stale], None).unwrap_err(),
        LongTermRefusal::Stale {
            newest_this_update: T - tol - 1,
            proof_time: T
        }
    );
}

#[test]
fn revoked_at_or_before_the_proof_time_is_refused() {
    let fx = Fx::new();
    for time in [T - 100, T] {
        let r = fx.response(0, revoked(time, CrlReason::Superseded), T + 5);
        assert_eq!(
            fx.decide(T, &[r], None).unwrap_err(),
            LongTermRefusal::RevokedBeforeProof {
                effective_time: time,
                reason: Some(CrlReason::Superseded),
                proof_time: T,
                from: Evidence::Embedded(0)
            }
        );
    }
    // Even in a response older than the freshness window: a dated revocation is a fact.
    let old = fx.response(0, revoked(T - 7200, CrlReason::Unspecified), T - 3600);
    assert!(matches!(
        fx.decide(T, &[old], None).unwrap_err(),
        LongTermRefusal::RevokedBeforeProof { .. }
    ));
}

#[test]
fn revoked_after_the_proof_time_stays_valid() {
    let fx = Fx::new();
    // The embedded answer predates the revocation (good), and the signature is checked later
    // with a later response also embedded that says revoked after the proof time.
    let good = fx.response(0, CertStatusAnswer::Good, T + 5);
    let later = fx.response(0, revoked(T + 3600, CrlReason::Superseded), T + 7200);
    let v = fx.decide(T, &[good, later], None).unwrap();
    assert_eq!(
        v.revoked_later,
        Some((T + 3600, Some(CrlReason::Superseded), Evidence::Embedded(1)))
    );
    // keyCompromise after the proof time, no compromise date known: still valid.
    let kc = fx.response(0, revoked(T + 3600, CrlReason::KeyCompromise), T + 7200);
    assert!(fx.decide(T, &[kc], None).is_ok());
}

#[test]
fn live_status_overrides_a_good_answer_only_when_it_refuses() {
    let fx = Fx::new();
    let good = || vec![fx.response(0, CertStatusAnswer::Good, T + 5)];
    // Live good: no change.
    assert!(fx.decide(T, &good(), Some(LiveStatus::Good)).is_ok());
    // Live superseded after the proof time: valid.
    let live_later = LiveStatus::Revoked {
        time: T + 86_400,
        reason: Some(CrlReason::Superseded),
        invalidity_date: None,
    };
    let v = fx.decide(T, &good(), Some(live_later)).unwrap();
    assert_eq!(
        v.revoked_later,
        Some((T + 86_400, Some(CrlReason::Superseded), Evidence::Live))
    );
    // Live keyCompromise revoked later, compromised before the signing time: refused.
    let compromised = LiveStatus::Revoked {
        time: T + 86_400,
        reason: Some(CrlReason::KeyCompromise),
        invalidity_date: Some(T - 60),
    };
    assert_eq!(
        fx.decide(T, &good(), Some(compromised)).unwrap_err(),
        LongTermRefusal::RevokedBeforeProof {
            effective_time: T - 60,
            reason: Some(CrlReason::KeyCompromise),
            proof_time: T,
            from: Evidence::Live
        }
    );
    // The same compromise dated after the signing time: valid.
    let after = LiveStatus::Revoked {
        time: T + 86_400,
        reason: Some(CrlReason::KeyCompromise),
        invalidity_date: Some(T + 60),
    };
    assert!(fx.decide(T, &good(), Some(after)).is_ok());
    // An invalidity date only counts for keyCompromise.
    let superseded_dated = LiveStatus::Revoked {
        time: T + 86_400,
        reason: Some(CrlReason::Superseded),
        invalidity_date: Some(T - 60),
    };
    assert!(fx.decide(T, &good(), Some(superseded_dated)).is_ok());
    // Live revoked before the proof time: refused.
    let before = LiveStatus::Revoked {
        time: T - 1,
        reason: None,
        invalidity_date: None,
    };
    assert!(matches!(
        fx.decide(T, &good(), Some(before)).unwrap_err(),
        LongTermRefusal::RevokedBeforeProof {
            from: Evidence::Live,
            ..
        }
    ));
}

#[test]
fn a_live_good_does_not_override_an_embedded_revocation() {
    let fx = Fx::new();
    let r = fx.response(0, revoked(T - 10, CrlReason::CessationOfOperation), T + 5);
    assert!(matches!(
        fx.decide(T, &[r], Some(LiveStatus::Good)).unwrap_err(),
        LongTermRefusal::RevokedBeforeProof {
            from: Evidence::Embedded(0),
            ..
        }
    ));
}

#[test]
fn unknown_is_refused() {
    let fx = Fx::new();
    let r = fx.response(0, CertStatusAnswer::Unknown, T + 5);
    assert_eq!(
        fx.decide(T, &[r], None).unwrap_err(),
        LongTermRefusal::Unknown(0)
    );
    // Also next to a good one.
    let good = fx.response(0, CertStatusAnswer::Good, T + 5);
    let unknown = fx.response(0, CertStatusAnswer::Unknown, T + 6);
    assert_eq!(
        fx.decide(T, &[good, unknown], None).unwrap_err(),
        LongTermRefusal::Unknown(1)
    );
}
