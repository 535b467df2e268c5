//! The CA in process: software keys, a temporary sled store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cps_hsm::{KeyAlgorithm, SigFormat, Signer, SoftwareSigner};
use cps_ocsp::{CertStatusAnswer, CrlReason, StatusSource};
use cps_pki::{DistinguishedName, OrganisationIdentity, PersonIdentity};
use cps_store::{AuditRecord, CertStatus, SledStore, Store, WriteOp};
use parking_lot::Mutex;

use crate::hierarchy;
use crate::*;

const NOW: i64 = 1_790_000_000;
const CRL_VALIDITY: i64 = 86_400;

/// A gate the test opens and closes.
struct Switch(AtomicBool);

impl SigningGate for Switch {
    fn check(&self) -> Result<(), String> {
        if self.0.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("the clock is not trusted".into())
        }
    }
}

/// Records every status change and every published CRL.
#[derive(Default)]
struct Recorder {
    changes: Mutex<Vec<(String, Vec<u8>)>>,
    published: Mutex<Vec<(String, Vec<u8>)>>,
    fail_publish: AtomicBool,
}

impl StatusListener for Recorder {
    fn status_changed(&self, ca: &str, serial: &[u8]) {
        self.changes.lock().push((ca.into(), serial.to_vec()));
    }
}

impl CrlPublisher for Recorder {
    fn publish(&self, ca: &str, der: &[u8]) -> std::io::Result<()> {
        if self.fail_publish.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("disk full"));
        }
        self.published.lock().push((ca.into(), der.to_vec()));
        Ok(())
    }
}

struct Fx {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    ca: CaService,
    gate: Arc<Switch>,
    rec: Arc<Recorder>,
}

fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    let profiles = cps_pki::profile::builtin_profiles();
    let h = hierarchy::software(
        &profiles,
        &["personnes", "organisations"],
        "https://ca.test/",
        NOW - 86_400,
    )
    .unwrap();
    let gate = Arc::new(Switch(AtomicBool::new(true)));
    let rec = Arc::new(Recorder::default());
    let ca = CaService::new(
        h.authorities,
        store.clone(),
        profiles,
        gate.clone(),
        CaConfig {
            public_base_url: "https://ca.test/".into(),
            crl_validity_secs: CRL_VALIDITY,
            key_policy: cps_pki::KeyPolicy::default(),
            reserved_profiles: vec!["audit-checkpoint".into()],
            node_id: "node-1".into(),
            crl_lease_secs: crate::crl::DEFAULT_LEASE_SECS,
            crl_shards: Default::default(),
        },
    )
    .with_crl_publisher(rec.clone());
    ca.add_listener(rec.clone());
    Fx {
        _dir: dir,
        store,
        ca,
        gate,
        rec,
    }
}

impl Fx {
    /// A `cps-auth` certificate for a new key.
    fn issue(&self) -> cps_store::CertificateRecord {
        self.ca
            .issue(&auth_request(csr_for(&key()), "810002813839"), "a", NOW)
            .unwrap()
    }

    /// A status change of a `personnes` certificate.
    fn revoke(
        &self,
        serial: &[u8],
        reason: RevocationReason,
        at: i64,
    ) -> Result<cps_store::CertificateRecord, CaError> {
        self.ca.revoke("personnes", serial, reason, None, "o", at)
    }
}

/// `r` is a conflict that says `want`.
fn conflict<T: std::fmt::Debug>(r: Result<T, CaError>, want: &str) {
    match r {
        Err(CaError::Conflict(m)) if m.contains(want) => {}
        other => panic!("expected a conflict saying '{want}', got {other:?}"),
    }
}

pub(super) fn key() -> SoftwareSigner {
    SoftwareSigner::generate("holder", KeyAlgorithm::EcP256).unwrap()
}

pub(super) fn csr_for(k: &SoftwareSigner) -> Vec<u8> {
    let subject = DistinguishedName::parse("CN=ignored").unwrap();
    let alg = k.key_algorithm().default_signature();
    cps_pki::build_csr(&subject, k.public_key_der(), alg, |tbs| {
        k.sign(alg, tbs, SigFormat::Der)
    })
    .unwrap()
}

fn person() -> SubjectRequest {
    SubjectRequest::Person(PersonIdentity {
        idnat_ps: "810002813839".into(),
        surname: "Martin".into(),
        given_name: "Claire".into(),
        profession_code: "10".into(),
    })
}

fn organisation() -> SubjectRequest {
    SubjectRequest::Organisation(OrganisationIdentity {
        state: "Paris (75)".into(),
        name: "Clinique Test".into(),
        structure_id: "318751275100020".into(),
        common_name: "client.test".into(),
    })
}

pub(super) fn auth_request(csr: Vec<u8>, holder: &str) -> IssueRequest {
    IssueRequest {
        profile: "cps-auth".into(),
        csr,
        subject: person(),
        sans: vec![],
        holder: holder.into(),
    }
}

fn audit(store: &dyn Store) -> Vec<AuditRecord> {
    store
        .audit_range(1, 10_000)
        .unwrap()
        .into_iter()
        .map(|e| e.record)
        .collect()
}

/// What a refused request left: nothing in the certificates, nothing in the audit trail.
fn assert_nothing_written(f: &Fx, audit_before: usize) {
    assert_eq!(
        audit(f.store.as_ref()).len(),
        audit_before,
        "an audit record was written"
    );
    for ca in ["personnes", "organisations"] {
        let l = f.store.list_certificates(Some(ca), None, 10).unwrap();
        assert!(l.certificates.is_empty(), "a certificate was recorded");
    }
}

#[test]
fn issuance_records_the_certificate_and_its_audit_record_in_one_commit() {
    let f = fx();
    let k = key();
    let rec =
        f.ca.issue(
            &auth_request(csr_for(&k), "810002813839"),
            "officer:alice",
            NOW,
        )
        .unwrap();
    assert_eq!(rec.issuer, "personnes");
    assert_eq!(rec.status, CertStatus::Valid);
    assert_eq!(rec.holder.as_deref(), Some("810002813839"));
    assert_eq!(rec.issued_at, NOW);
    // The stored record is the returned one.
    let stored = f.store.get_certificate("personnes", &rec.serial).unwrap();
    assert_eq!(stored.as_ref(), Some(&rec));
    // The certificate certifies the CSR's key, under the CA's key, with the registry subject.
    let ca_key =
        f.ca.authority("personnes")
            .unwrap()
            .key
            .public_key_der()
            .to_vec();
    cps_pki::verify_issued_by(&rec.der, &ca_key).unwrap();
    let parsed = cps_pki::parse_certificate(&rec.der).unwrap();
    assert_eq!(parsed.spki, k.public_key_der());
    assert!(
        parsed.subject.to_string().contains("810002813839"),
        "{}",
        parsed.subject
    );
    assert!(!parsed.subject.to_string().contains("ignored"));
    // Publication points under the configured base, without a doubled '/'.
    let has = |needle: &[u8]| rec.der.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"https://ca.test/crl/personnes.crl"));
    assert!(has(b"https://ca.test/ocsp"));
    assert!(!has(b"ca.test//"));
    // Exactly one audit record, with what was issued.
    let a = audit(f.store.as_ref());
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].kind, "cert.issue");
    assert_eq!(a[0].actor, "officer:alice");
    assert_eq!(a[0].outcome, "success");
    assert_eq!(a[0].detail["serial"], hex::encode_upper(&rec.serial));
    assert_eq!(a[0].detail["ca"], "personnes");
    assert_eq!(a[0].detail["profile"], "cps-auth");
    assert_eq!(a[0].detail["holder"], "810002813839");
    // The OCSP cache is told (an "unknown" for the serial may be cached).
    assert_eq!(
        f.rec.changes.lock().as_slice(),
        &[("personnes".to_string(), rec.serial.clone())]
    );
}

#[test]
fn issuance_follows_the_profile_rules() {
    let f = fx();
    let csr = csr_for(&key());
    let refuse = |req: IssueRequest, want: &str| {
        let e = f.ca.issue(&req, "a", NOW).unwrap_err();
        assert!(
            matches!(&e, CaError::Invalid(m) if m.contains(want)),
            "{}: {e:?}",
            req.profile
        );
    };
    refuse(
        IssueRequest {
            profile: "no-such-profile".into(),
            ..auth_request(csr.clone(), "h")
        },
        "unknown profile",
    );
    for hierarchy_profile in ["root-ca", "ca-personnes", "ca-organisations"] {
        refuse(
            IssueRequest {
                profile: hierarchy_profile.into(),
                ..auth_request(csr.clone(), "h")
            },
            "for the CA hierarchy",
        );
    }
    refuse(
        IssueRequest {
            profile: "audit-checkpoint".into(),
            subject: organisation(),
            ..auth_request(csr.clone(), "h")
        },
        "reserved for the appliance's own key",
    );
    // A person profile with an organisation subject, and the other way round.
    refuse(
        IssueRequest {
            subject: organisation(),
            ..auth_request(csr.clone(), "h")
        },
        "needs a person subject",
    );
    refuse(
        IssueRequest {
            profile: "org-tls-client".into(),
            ..auth_request(csr.clone(), "h")
        },
        "needs a organisation subject",
    );
    refuse(auth_request(csr.clone(), ""), "holder must be 1 to 128");
    refuse(
        auth_request(csr.clone(), &"h".repeat(129)),
        "holder must be 1 to 128",
    );
    assert_nothing_written(&f, 0);
    // The reserved profile is issued through the appliance's own path.
    let own =
        f.ca.issue_reserved(
            &IssueRequest {
                profile: "audit-checkpoint".into(),
                subject: organisation(),
                ..auth_request(csr, "appliance:checkpoint")
            },
            "appliance",
            NOW,
        )
        .unwrap();
    assert_eq!(own.issuer, "organisations");
    assert_eq!(own.profile, "audit-checkpoint");
}

#[test]
fn the_csr_signature_is_the_proof_of_possession() {
    let f = fx();
    let mut csr = csr_for(&key());
    // Flip a bit of the signature (the last octets of the DER request).
    let n = csr.len();
    csr[n - 3] ^= 0x01;
    let e =
        f.ca.issue(&auth_request(csr, "810002813839"), "a", NOW)
            .unwrap_err();
    assert!(
        matches!(&e, CaError::Invalid(m) if m.starts_with("CSR:")),
        "{e:?}"
    );
    // A CSR whose key is not the one that signed it: the public key swapped for another.
    let (a, b) = (key(), key());
    let csr_a = csr_for(&a);
    let swapped = {
        let spki_a = a.public_key_der();
        let pos = csr_a
            .windows(spki_a.len())
            .position(|w| w == spki_a)
            .unwrap();
        let mut c = csr_a.clone();
        c[pos..pos + spki_a.len()].copy_from_slice(b.public_key_der());
        c
    };
    let e =
        f.ca.issue(&auth_request(swapped, "810002813839"), "a", NOW)
            .unwrap_err();
    assert!(
        matches!(&e, CaError::Invalid(m) if m.starts_with("CSR:")),
        "{e:?}"
    );
    assert!(matches!(
        f.ca.issue(&auth_request(b"not a CSR".to_vec(), "h"), "a", NOW),
        Err(CaError::Invalid(_))
    ));
    assert_nothing_written(&f, 0);
}

#[test]
fn the_key_policy_refuses_weak_keys() {
    use openssl::{hash, pkey, rsa, x509};
    let f = fx();
    let weak = pkey::PKey::from_rsa(rsa::Rsa::generate(1024).unwrap()).unwrap();
    let mut b = x509::X509ReqBuilder::new().unwrap();
    b.set_pubkey(&weak).unwrap();
    b.sign(&weak, hash::MessageDigest::sha256()).unwrap();
    let csr = b.build().to_der().unwrap();
    let e =
        f.ca.issue(&auth_request(csr, "810002813839"), "a", NOW)
            .unwrap_err();
    assert!(
        matches!(&e, CaError::Invalid(m) if m.starts_with("CSR:")),
        "{e:?}"
    );
    assert_nothing_written(&f, 0);
}

#[test]
fn a_key_is_certified_for_one_holder_only() {
    let f = fx();
    let k = key();
    let first =
        f.ca.issue(&auth_request(csr_for(&k), "810002813839"), "a", NOW)
            .unwrap();
    let e =
        f.ca.issue(&auth_request(csr_for(&k), "810100000002"), "a", NOW)
            .unwrap_err();
    assert!(
        matches!(&e, CaError::Conflict(m) if m.contains(&hex::encode_upper(&first.serial))),
        "{e:?}"
    );
    // The same holder may have the key certified again (renewal).
    let again =
        f.ca.issue(&auth_request(csr_for(&k), "810002813839"), "a", NOW + 1)
            .unwrap();
    assert_ne!(again.serial, first.serial);
    assert_eq!(
        f.store
            .certificates_by_spki(&first.spki_sha256)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn hold_release_and_final_revocation() {
    let f = fx();
    let rec = f.issue();
    let s = &rec.serial;
    let state = || f.ca.cert_state("personnes", s).unwrap();
    assert_eq!(state(), Some(CertState::Valid));

    let held = f
        .revoke(s, RevocationReason::CertificateHold, NOW + 10)
        .unwrap();
    assert_eq!(
        held.status,
        CertStatus::Revoked {
            time: NOW + 10,
            reason: 6,
            invalidity_date: None
        }
    );
    assert_eq!(state(), Some(CertState::OnHold));
    conflict(
        f.revoke(s, RevocationReason::CertificateHold, NOW + 11),
        "already on hold",
    );

    f.revoke(s, RevocationReason::RemoveFromCrl, NOW + 20)
        .unwrap();
    assert_eq!(state(), Some(CertState::Valid));
    conflict(
        f.revoke(s, RevocationReason::RemoveFromCrl, NOW + 21),
        "not on hold",
    );

    // Hold again, then make it final: the final revocation's own time and invalidity date.
    f.revoke(s, RevocationReason::CertificateHold, NOW + 30)
        .unwrap();
    let fin =
        f.ca.revoke(
            "personnes",
            s,
            RevocationReason::Superseded,
            Some(NOW - 5),
            "o",
            NOW + 40,
        )
        .unwrap();
    assert_eq!(
        fin.status,
        CertStatus::Revoked {
            time: NOW + 40,
            reason: 4,
            invalidity_date: Some(NOW - 5)
        }
    );
    assert_eq!(
        state(),
        Some(CertState::Revoked(RevocationReason::Superseded))
    );
    // Final is final: no release, no hold, no second revocation.
    for r in [
        RevocationReason::RemoveFromCrl,
        RevocationReason::CertificateHold,
        RevocationReason::KeyCompromise,
    ] {
        let e =
            f.ca.revoke("personnes", s, r, None, "o", NOW + 50)
                .unwrap_err();
        assert!(matches!(e, CaError::Conflict(_)), "{r:?}: {e:?}");
    }
    // One audit record per change, of the right kind, and nothing for the refusals.
    let kinds: Vec<String> = audit(f.store.as_ref())
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "cert.issue",
            "cert.suspend",
            "cert.resume",
            "cert.suspend",
            "cert.revoke"
        ]
    );
    let last = audit(f.store.as_ref()).pop().unwrap();
    assert_eq!(last.detail["reason"], "superseded");
    assert_eq!(last.detail["serial"], hex::encode_upper(s));
    // Every change was told to the OCSP cache (issue + 4 changes).
    assert_eq!(f.rec.changes.lock().len(), 5);
    // A valid certificate revoked directly gets the revocation's own time.
    let other = f.issue();
    let r = f
        .revoke(
            &other.serial,
            RevocationReason::CessationOfOperation,
            NOW + 60,
        )
        .unwrap();
    assert!(matches!(r.status, CertStatus::Revoked { time, reason: 5, .. } if time == NOW + 60));
}

#[test]
fn revocation_of_what_does_not_exist() {
    let f = fx();
    let e =
        f.ca.revoke(
            "personnes",
            &[0x01, 0x02],
            RevocationReason::KeyCompromise,
            None,
            "o",
            NOW,
        )
        .unwrap_err();
    assert!(
        matches!(&e, CaError::NotFound { ca, serial } if ca == "personnes" && serial == "0102"),
        "{e:?}"
    );
    let e =
        f.ca.revoke(
            "nowhere",
            &[0x01],
            RevocationReason::KeyCompromise,
            None,
            "o",
            NOW,
        )
        .unwrap_err();
    assert!(matches!(e, CaError::UnknownCa(_)), "{e:?}");
    // A certificate of one CA is not found under another.
    let rec = f.issue();
    let e =
        f.ca.revoke(
            "organisations",
            &rec.serial,
            RevocationReason::Superseded,
            None,
            "o",
            NOW,
        )
        .unwrap_err();
    assert!(matches!(e, CaError::NotFound { .. }), "{e:?}");
    assert_eq!(audit(f.store.as_ref()).len(), 1);
}

#[test]
fn key_compromise_blocks_the_key_for_any_later_issuance() {
    let f = fx();
    let k = key();
    let rec =
        f.ca.issue(&auth_request(csr_for(&k), "810002813839"), "a", NOW)
            .unwrap();
    // Put on hold first: a hold made final for keyCompromise blocks too.
    f.revoke(&rec.serial, RevocationReason::CertificateHold, NOW + 1)
        .unwrap();
    assert!(f.store.blocked_key(&rec.spki_sha256).unwrap().is_none());
    f.revoke(&rec.serial, RevocationReason::KeyCompromise, NOW + 2)
        .unwrap();
    let blocked = f.store.blocked_key(&rec.spki_sha256).unwrap().unwrap();
    assert_eq!(blocked.at, NOW + 2);
    assert!(blocked.reason.contains(&hex::encode_upper(&rec.serial)));
    let audit_before = audit(f.store.as_ref()).len();
    // The same holder, another profile, another CA, another subject: the key is refused.
    for req in [
        auth_request(csr_for(&k), "810002813839"),
        IssueRequest {
            profile: "cps-sign".into(),
            ..auth_request(csr_for(&k), "810002813839")
        },
        IssueRequest {
            profile: "org-tls-client".into(),
            subject: organisation(),
            ..auth_request(csr_for(&k), "other-holder")
        },
    ] {
        let e = f.ca.issue(&req, "a", NOW + 3).unwrap_err();
        assert!(
            matches!(&e, CaError::Invalid(m) if m.contains("compromised-key blocklist")),
            "{}: {e:?}",
            req.profile
        );
    }
    let e =
        f.ca.issue_operator("bob", &csr_for(&k), "operator", NOW + 3, |_| vec![])
            .unwrap_err();
    assert!(matches!(e, CaError::Conflict(_)), "{e:?}");
    assert_eq!(audit(f.store.as_ref()).len(), audit_before);
    // Another reason does not block.
    let k2 = key();
    let r2 =
        f.ca.issue(&auth_request(csr_for(&k2), "810002813839"), "a", NOW)
            .unwrap();
    f.revoke(&r2.serial, RevocationReason::Superseded, NOW + 1)
        .unwrap();
    assert!(f.store.blocked_key(&r2.spki_sha256).unwrap().is_none());
    f.ca.issue(&auth_request(csr_for(&k2), "810002813839"), "a", NOW + 2)
        .unwrap();
}

struct ParsedCrl {
    number: u64,
    this_update: i64,
    next_update: i64,
    entries: Vec<(Vec<u8>, Option<u8>)>,
}

fn parse_crl(der: &[u8], ca_spki: &[u8]) -> ParsedCrl {
    let (rest, crl) = x509_parser::parse_x509_crl(der).unwrap();
    assert!(rest.is_empty());
    // The signature verifies with the CA's public key (openssl, independently of our encoder).
    let key = openssl::pkey::PKey::public_key_from_der(ca_spki).unwrap();
    assert!(
        openssl::x509::X509Crl::from_der(der)
            .unwrap()
            .verify(&key)
            .unwrap()
    );
    let number: u64 = crl
        .crl_number()
        .unwrap()
        .to_u64_digits()
        .first()
        .copied()
        .unwrap_or(0);
    ParsedCrl {
        number,
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update().unwrap().timestamp(),
        entries: crl
            .iter_revoked_certificates()
            .map(|r| (r.raw_serial().to_vec(), r.reason_code().map(|(_, c)| c.0)))
            .collect(),
    }
}

#[test]
fn crls_list_revocations_are_numbered_and_signed() {
    let f = fx();
    let spki =
        f.ca.authority("personnes")
            .unwrap()
            .key
            .public_key_der()
            .to_vec();
    let first = f.ca.crl("personnes", NOW).unwrap();
    let p1 = parse_crl(&first, &spki);
    assert!(p1.entries.is_empty());
    assert_eq!((p1.this_update, p1.next_update), (NOW, NOW + CRL_VALIDITY));
    // Published before it is served.
    assert_eq!(f.rec.published.lock().last().unwrap().1, *first);
    // Not stale: the same CRL, not signed again.
    let same = f.ca.crl("personnes", NOW + 100).unwrap();
    assert!(Arc::ptr_eq(&first, &same));
    assert_eq!(f.rec.published.lock().len(), 1);

    let a = f.issue();
    let b = f.issue();
    let c = f.issue();
    f.revoke(&a.serial, RevocationReason::KeyCompromise, NOW + 200)
        .unwrap();
    f.revoke(&b.serial, RevocationReason::CertificateHold, NOW + 200)
        .unwrap();
    // A revocation makes it stale: re-signed at once, with a larger number.
    let second = f.ca.crl("personnes", NOW + 201).unwrap();
    let p2 = parse_crl(&second, &spki);
    assert!(p2.number > p1.number, "{} then {}", p1.number, p2.number);
    let mut entries = p2.entries.clone();
    entries.sort();
    let mut want = vec![(a.serial.clone(), Some(1)), (b.serial.clone(), Some(6))];
    want.sort();
    assert_eq!(entries, want);
    // The released hold leaves the CRL; c, never revoked, never appears.
    f.revoke(&b.serial, RevocationReason::RemoveFromCrl, NOW + 300)
        .unwrap();
    let p3 = parse_crl(&f.ca.crl("personnes", NOW + 301).unwrap(), &spki);
    assert!(p3.number > p2.number);
    assert_eq!(p3.entries, vec![(a.serial.clone(), Some(1))]);
    assert!(!p3.entries.iter().any(|(s, _)| *s == c.serial));
    // Half of its validity gone: re-signed without any revocation.
    let later = NOW + 301 + CRL_VALIDITY / 2;
    let p4 = parse_crl(&f.ca.crl("personnes", later).unwrap(), &spki);
    assert!(p4.number > p3.number);
    assert_eq!(p4.this_update, later);
    assert_eq!(p4.entries, p3.entries);
    // Each CA has its own CRL, signed by its own key.
    let org_spki =
        f.ca.authority("organisations")
            .unwrap()
            .key
            .public_key_der()
            .to_vec();
    let org = parse_crl(&f.ca.crl("organisations", NOW).unwrap(), &org_spki);
    assert!(org.entries.is_empty());
    assert!(matches!(
        f.ca.crl("nowhere", NOW),
        Err(CaError::UnknownCa(_))
    ));
}

#[test]
fn a_crl_that_cannot_be_published_is_not_served() {
    let f = fx();
    let first = f.ca.crl("personnes", NOW).unwrap();
    let a = f.issue();
    f.revoke(&a.serial, RevocationReason::Superseded, NOW + 1)
        .unwrap();
    f.rec.fail_publish.store(true, Ordering::SeqCst);
    // Stale (a revocation is missing from it): not served, an error instead.
    let e = f.ca.crl("personnes", NOW + 2).unwrap_err();
    assert!(matches!(e, CaError::Internal(_)), "{e:?}");
    f.rec.fail_publish.store(false, Ordering::SeqCst);
    let next = f.ca.crl("personnes", NOW + 3).unwrap();
    assert!(!Arc::ptr_eq(&first, &next));
    let spki =
        f.ca.authority("personnes")
            .unwrap()
            .key
            .public_key_der()
            .to_vec();
    assert_eq!(parse_crl(&next, &spki).entries.len(), 1);
}

#[test]
fn nothing_is_signed_while_the_gate_is_closed() {
    let f = fx();
    let k = key();
    let current = f.ca.crl("personnes", NOW).unwrap();
    f.gate.0.store(false, Ordering::SeqCst);
    // Issuance: refused before anything is read or written.
    let e =
        f.ca.issue(&auth_request(csr_for(&k), "810002813839"), "a", NOW)
            .unwrap_err();
    assert!(
        matches!(&e, CaError::Unavailable(m) if m.contains("not trusted")),
        "{e:?}"
    );
    let e =
        f.ca.issue_operator("bob", &csr_for(&k), "operator", NOW, |_| vec![])
            .unwrap_err();
    assert!(matches!(e, CaError::Unavailable(_)), "{e:?}");
    assert_nothing_written(&f, 0);
    // A CRL that is complete and still current is served as it is, even past half-life.
    let served = f.ca.crl("personnes", NOW + CRL_VALIDITY / 2 + 1).unwrap();
    assert!(Arc::ptr_eq(&current, &served));
    // Not once it has expired, and never one a revocation made stale.
    assert!(matches!(
        f.ca.crl("personnes", NOW + CRL_VALIDITY),
        Err(CaError::Unavailable(_))
    ));
    assert!(matches!(
        f.ca.crl("organisations", NOW),
        Err(CaError::Unavailable(_))
    ));
    f.gate.0.store(true, Ordering::SeqCst);
    let rec =
        f.ca.issue(&auth_request(csr_for(&k), "810002813839"), "a", NOW)
            .unwrap();
    f.gate.0.store(false, Ordering::SeqCst);
    // Revocation signs nothing: it is recorded while the gate is closed...
    f.revoke(&rec.serial, RevocationReason::Superseded, NOW + 5)
        .unwrap();
    // ...and the CRL it made stale is no longer served.
    assert!(matches!(
        f.ca.crl("personnes", NOW + 6),
        Err(CaError::Unavailable(_))
    ));
    f.gate.0.store(true, Ordering::SeqCst);
    let spki =
        f.ca.authority("personnes")
            .unwrap()
            .key
            .public_key_der()
            .to_vec();
    let p = parse_crl(&f.ca.crl("personnes", NOW + 7).unwrap(), &spki);
    assert_eq!(p.entries, vec![(rec.serial, Some(4))]);
}

#[test]
fn live_status_for_the_long_term_decision() {
    let f = fx();
    let status = StoreStatus(f.store.clone());
    let good = f.issue();
    let compromised = f.issue();
    assert_eq!(
        status.live_status("personnes", &good.serial).unwrap(),
        Some(cps_ocsp::LiveStatus::Good)
    );
    f.ca.revoke(
        "personnes",
        &compromised.serial,
        RevocationReason::KeyCompromise,
        Some(NOW - 3600),
        "o",
        NOW + 5,
    )
    .unwrap();
    assert_eq!(
        status
            .live_status("personnes", &compromised.serial)
            .unwrap(),
        Some(cps_ocsp::LiveStatus::Revoked {
            time: NOW + 5,
            reason: Some(CrlReason::KeyCompromise),
            invalidity_date: Some(NOW - 3600),
        })
    );
    assert_eq!(
        status.live_status("personnes", &[0x7f, 0x01]).unwrap(),
        None
    );
    assert_eq!(
        status.live_status("organisations", &good.serial).unwrap(),
        None
    );
}

#[test]
fn status_as_the_ocsp_responder_sees_it() {
    let f = fx();
    let status = StoreStatus(f.store.clone());
    let good = f.issue();
    let held = f.issue();
    let revoked = f.issue();
    f.revoke(&held.serial, RevocationReason::CertificateHold, NOW + 1)
        .unwrap();
    f.revoke(&revoked.serial, RevocationReason::KeyCompromise, NOW + 2)
        .unwrap();
    assert!(matches!(
        status.status("personnes", &good.serial).unwrap(),
        CertStatusAnswer::Good
    ));
    assert!(matches!(
        status.status("personnes", &held.serial).unwrap(),
        CertStatusAnswer::Revoked { time, reason: Some(CrlReason::CertificateHold) } if time == NOW + 1
    ));
    assert!(matches!(
        status.status("personnes", &revoked.serial).unwrap(),
        CertStatusAnswer::Revoked { time, reason: Some(CrlReason::KeyCompromise) } if time == NOW + 2
    ));
    // Never issued, or issued by another CA: unknown.
    assert!(matches!(
        status.status("personnes", &[0x7f, 0x01]).unwrap(),
        CertStatusAnswer::Unknown
    ));
    assert!(matches!(
        status.status("organisations", &good.serial).unwrap(),
        CertStatusAnswer::Unknown
    ));
    // Released: good again.
    f.revoke(&held.serial, RevocationReason::RemoveFromCrl, NOW + 3)
        .unwrap();
    assert!(matches!(
        status.status("personnes", &held.serial).unwrap(),
        CertStatusAnswer::Good
    ));
}

#[test]
fn operators_are_certified_once_with_their_writes_in_the_same_commit() {
    let f = fx();
    let k = key();
    let rec =
        f.ca.issue_operator("alice", &csr_for(&k), "operator", NOW, |issued| {
            vec![WriteOp::AppendAudit(AuditRecord {
                time: NOW,
                kind: "operator.create".into(),
                actor: "admin".into(),
                outcome: "success".into(),
                detail: serde_json::json!({ "serial": issued.serial_hex }),
                node: None,
            })]
        })
        .unwrap();
    assert_eq!(rec.issuer, "organisations");
    assert_eq!(rec.holder.as_deref(), Some("operator:alice"));
    assert_eq!(rec.profile, "operator");
    let a = audit(f.store.as_ref());
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].detail["serial"], hex::encode_upper(&rec.serial));
    let org =
        f.ca.authority("organisations")
            .unwrap()
            .key
            .public_key_der()
            .to_vec();
    cps_pki::verify_issued_by(&rec.der, &org).unwrap();
    // A second valid certificate for the same operator is refused; so is a key in use.
    let e =
        f.ca.issue_operator("alice", &csr_for(&key()), "operator", NOW, |_| vec![])
            .unwrap_err();
    assert!(
        matches!(&e, CaError::Conflict(m) if m.contains("already has")),
        "{e:?}"
    );
    let e =
        f.ca.issue_operator("carol", &csr_for(&k), "operator", NOW, |_| vec![])
            .unwrap_err();
    assert!(
        matches!(&e, CaError::Conflict(m) if m.contains("already in use")),
        "{e:?}"
    );
    // Revoked, the operator may be certified again.
    f.ca.revoke(
        "organisations",
        &rec.serial,
        RevocationReason::Superseded,
        None,
        "o",
        NOW + 1,
    )
    .unwrap();
    f.ca.issue_operator("alice", &csr_for(&key()), "operator", NOW + 2, |_| vec![])
        .unwrap();
}

#[test]
fn an_authority_needs_the_key_of_its_certificate() {
    let profiles = cps_pki::profile::builtin_profiles();
    let h = hierarchy::software(&profiles, &["personnes"], "https://ca.test", NOW).unwrap();
    let cert = h.certificate("personnes").unwrap().to_vec();
    let other: Arc<dyn Signer> = Arc::new(key());
    let e = CaAuthority::new(
        "personnes",
        cert,
        other,
        cps_hsm::SignatureAlgorithm::EcdsaSha256,
    )
    .err()
    .unwrap();
    assert!(
        matches!(&e, CaError::Invalid(m) if m.contains("does not match")),
        "{e:?}"
    );
    // The issuing CA chains to the root.
    let root = h.authorities[0].key.public_key_der().to_vec();
    cps_pki::verify_issued_by(h.certificate("personnes").unwrap(), &root).unwrap();
}

#[test]
fn raw_issuance_holders_stay_out_of_the_reserved_namespaces() {
    for h in [
        "appliance:xua-cachet",
        "node:cps-trust.localhost",
        "operator:admin",
        "ca:root",
        "Appliance:xua-cachet",
        " NODE:x",
    ] {
        let e = check_raw_issuance_holder(h).unwrap_err();
        assert!(
            matches!(e, CaError::Invalid(ref m) if m.contains("reserved namespace")),
            "{h}: {e}"
        );
    }
    for h in [
        "810002813839",
        "1ATTACKER1",
        "appliance",
        "nodes-team",
        "x:appliance:",
    ] {
        check_raw_issuance_holder(h).unwrap();
    }
}
