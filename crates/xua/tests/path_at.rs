//! `TrustStore::verify_path_at`: the path of a signer certificate at a given time, for the kind
//! of signer a certificate profile describes, with our software CA hierarchy.

use cps_hsm::{KeyAlgorithm, Signer, SoftwareSigner};
use cps_pki::DistinguishedName;
use cps_pki::profile::{IssuerInfo, builtin_profiles, end_entity_params};
use cps_xua::{
    EKU_DOCUMENT_SIGNING, EKU_TIME_STAMPING, EkuPolicy, PathError, SignerRequirement, TrustStore,
};

const NOW: i64 = 1_800_000_000;
const PERSON: &str = "CN=810002813839+SN=DONNAT-GADY+GN=ISABELLE,title=Médecin,C=FR";
const ORG: &str =
    "CN=dpi.chu-rouen.example,OU=10B0152872,O=CHU de Rouen,ST=Seine-Maritime (76),C=FR";

struct Pki {
    h: cps_ca::hierarchy::Hierarchy,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            h: cps_ca::hierarchy::software(
                &builtin_profiles(),
                &["personnes", "organisations"],
                "http://pki.example.test",
                NOW,
            )
            .unwrap(),
        }
    }

    fn root(&self) -> Vec<u8> {
        self.h.certificate("root").unwrap().to_vec()
    }

    fn ca(&self, id: &str) -> Vec<u8> {
        self.h.certificate(id).unwrap().to_vec()
    }

    /// A certificate of `profile` (possibly altered), issued at `NOW` by `ca`.
    fn issue(&self, profile: &cps_pki::profile::Profile, ca: &str, subject: &str) -> Vec<u8> {
        let a = self.h.authorities.iter().find(|a| a.id == ca).unwrap();
        let key = SoftwareSigner::generate("ee", KeyAlgorithm::EcP256).unwrap();
        let params = end_entity_params(
            profile,
            &DistinguishedName::parse(subject).unwrap(),
            &[],
            key.public_key_der(),
            cps_pki::serial_from_random(rand::random()),
            NOW,
            &IssuerInfo {
                ca_id: ca.into(),
                key_id: a.key_id.clone(),
                not_after: None,
                points: cps_pki::hierarchy::PublicationPoints {
                    crl: vec![format!("http://pki.example.test/crl/{ca}.crl")],
                    ca_issuers: vec![format!("http://pki.example.test/ca/{ca}.der")],
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

    fn store(&self) -> TrustStore {
        TrustStore::new(
            vec![self.root()],
            vec![],
            EkuPolicy::RequiredIfPresent(EKU_DOCUMENT_SIGNING),
        )
        .unwrap()
    }
}

fn requirement(profile: &str) -> SignerRequirement {
    SignerRequirement::from_profile(builtin_profiles().get(profile).unwrap()).unwrap()
}

fn profile(name: &str) -> cps_pki::profile::Profile {
    builtin_profiles().get(name).unwrap().clone()
}

#[test]
fn a_seal_and_a_professional_signature_certificate_verify_for_their_kind() {
    let pki = Pki::new();
    let store = pki.store();
    let seal = pki.issue(&profile("org-cachet"), "organisations", ORG);
    let v = store
        .verify_path_at(
            &[seal.clone(), pki.ca("organisations")],
            NOW + 60,
            &requirement("org-cachet"),
        )
        .unwrap();
    assert_eq!(v.signer.der, seal);
    assert_eq!(v.issuer, pki.ca("organisations"));
    assert_eq!(v.intermediates, vec![pki.ca("organisations")]);
    assert!(v.valid_from <= NOW && v.valid_until > NOW);

    let sign = pki.issue(&profile("cps-sign"), "personnes", PERSON);
    let v = store
        .verify_path_at(
            &[sign, pki.ca("personnes")],
            NOW + 60,
            &requirement("cps-sign"),
        )
        .unwrap();
    assert_eq!(v.issuer, pki.ca("personnes"));

    // The store's own intermediates complete a path that came with the leaf only.
    let with_intermediates = TrustStore::new(
        vec![pki.root()],
        vec![pki.ca("organisations")],
        EkuPolicy::RequiredIfPresent(EKU_DOCUMENT_SIGNING),
    )
    .unwrap();
    assert!(
        with_intermediates
            .verify_path_at(
                std::slice::from_ref(&seal),
                NOW + 60,
                &requirement("org-cachet")
            )
            .is_ok()
    );
    assert!(matches!(
        store.verify_path_at(&[seal], NOW + 60, &requirement("org-cachet")),
        Err(PathError::Untrusted(_))
    ));
}

#[test]
fn the_path_is_judged_at_the_time_given() {
    let pki = Pki::new();
    let store = pki.store();
    let seal = pki.issue(&profile("org-cachet"), "organisations", ORG);
    let chain = [seal.clone(), pki.ca("organisations")];
    let req = requirement("org-cachet");
    let v = store.verify_path_at(&chain, NOW, &req).unwrap();
    // Valid through its last second, expired the next; not valid before it was issued.
    let last = v.valid_until;
    assert!(store.verify_path_at(&chain, last, &req).is_ok());
    assert!(matches!(
        store.verify_path_at(&chain, last + 1, &req),
        Err(PathError::Expired(_))
    ));
    assert!(matches!(
        store.verify_path_at(&chain, v.valid_from - 1, &req),
        Err(PathError::Expired(_))
    ));
    assert!(matches!(
        store.verify_path_at(&chain, -1, &req),
        Err(PathError::Malformed(_))
    ));
}

#[test]
fn a_certificate_of_another_kind_is_refused() {
    let pki = Pki::new();
    let store = pki.store();
    let seal = [
        pki.issue(&profile("org-cachet"), "organisations", ORG),
        pki.ca("organisations"),
    ];
    let auth = [
        pki.issue(&profile("cps-auth"), "personnes", PERSON),
        pki.ca("personnes"),
    ];
    let sign = [
        pki.issue(&profile("cps-sign"), "personnes", PERSON),
        pki.ca("personnes"),
    ];
    let refusal = |certs: &[Vec<u8>], req: &SignerRequirement| match store.verify_path_at(
        certs,
        NOW + 60,
        req,
    ) {
        Err(PathError::Usage(m)) => m,
        other => panic!("{other:?}"),
    };
    let usage = |certs: &[Vec<u8>], req: &SignerRequirement| !refusal(certs, req).is_empty();
    // A card's authentication key never passes for its signature key.
    assert!(refusal(&auth, &requirement("cps-sign")).contains("extended key usage"));
    // A seal is not a professional signature, nor the other way round.
    assert!(usage(&seal, &requirement("cps-sign")));
    assert!(refusal(&sign, &requirement("org-cachet")).contains("no extended key usage"));
    assert!(usage(&auth, &requirement("org-cachet")));
    // Not a TSA.
    let tsa = SignerRequirement::extended_key_usage("tsa", EKU_TIME_STAMPING);
    assert!(usage(&seal, &tsa));
    assert!(usage(&sign, &tsa));
    // A cps-sign certificate without its policy.
    let mut no_policy = profile("cps-sign");
    no_policy.policies.clear();
    let bare = [
        pki.issue(&no_policy, "personnes", PERSON),
        pki.ca("personnes"),
    ];
    assert!(refusal(&bare, &requirement("cps-sign")).contains("certificate policy"));
    // Without nonRepudiation.
    let mut ds_only = profile("cps-sign");
    ds_only.key_usages = vec![cps_pki::ext::Usage::DigitalSignature];
    let ds = [
        pki.issue(&ds_only, "personnes", PERSON),
        pki.ca("personnes"),
    ];
    assert!(refusal(&ds, &requirement("cps-sign")).contains("NonRepudiation"));
    // The issuing CA's own certificate as a signer: webpki refuses a CA as end entity.
    let r = store.verify_path_at(&[pki.ca("personnes")], NOW + 60, &requirement("cps-sign"));
    assert!(
        matches!(&r, Err(PathError::Untrusted(m)) if m.contains("CaUsedAsEndEntity")),
        "{r:?}"
    );
}

#[test]
fn a_time_stamping_certificate_verifies_for_a_tsa_only() {
    let pki = Pki::new();
    let store = pki.store();
    let mut tsa_profile = profile("org-cachet");
    tsa_profile.extended_key_usage = Some((
        vec![const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8")],
        true,
    ));
    let tsa = [
        pki.issue(&tsa_profile, "organisations", ORG),
        pki.ca("organisations"),
    ];
    let req = SignerRequirement::extended_key_usage("tsa", EKU_TIME_STAMPING);
    assert!(store.verify_path_at(&tsa, NOW + 60, &req).is_ok());
    assert!(SignerRequirement::from_profile(&tsa_profile).is_ok());
    assert!(matches!(
        store.verify_path_at(&tsa, NOW + 60, &requirement("org-cachet")),
        Err(PathError::Usage(_))
    ));
}

#[test]
fn a_foreign_anchor_is_refused() {
    let pki = Pki::new();
    let foreign = Pki::new();
    let seal = [
        foreign.issue(&profile("org-cachet"), "organisations", ORG),
        foreign.ca("organisations"),
    ];
    // Same names, other keys.
    assert!(matches!(
        pki.store()
            .verify_path_at(&seal, NOW + 60, &requirement("org-cachet")),
        Err(PathError::Untrusted(_))
    ));
    assert!(
        foreign
            .store()
            .verify_path_at(&seal, NOW + 60, &requirement("org-cachet"))
            .is_ok()
    );
    // Our intermediate under a foreign anchor's store.
    let ours = [
        pki.issue(&profile("org-cachet"), "organisations", ORG),
        pki.ca("organisations"),
    ];
    assert!(matches!(
        foreign
            .store()
            .verify_path_at(&ours, NOW + 60, &requirement("org-cachet")),
        Err(PathError::Untrusted(_))
    ));
}

#[test]
fn a_signer_issued_by_the_anchor_itself_names_the_anchor_as_its_issuer() {
    let pki = Pki::new();
    let mut under_root = profile("org-cachet");
    under_root.issuers = vec!["root".into()];
    let seal = pki.issue(&under_root, "root", ORG);
    let v = pki
        .store()
        .verify_path_at(
            std::slice::from_ref(&seal),
            NOW + 60,
            &requirement("org-cachet"),
        )
        .unwrap();
    assert_eq!(v.issuer, pki.root());
    assert!(v.intermediates.is_empty());
}

#[test]
fn requirements_come_only_from_signing_profiles() {
    // Two EKUs, an EKU that is not a signing purpose, no signature key usage.
    let mut two = profile("org-cachet");
    two.extended_key_usage = Some((
        vec![
            const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.36"),
            const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8"),
        ],
        false,
    ));
    let mut odd = profile("org-cachet");
    odd.extended_key_usage = Some((
        vec![const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4")],
        false,
    ));
    let mut no_signature = profile("cps-sign");
    no_signature.key_usages = vec![cps_pki::ext::Usage::KeyEncipherment];
    for p in [two, odd, no_signature] {
        assert!(
            matches!(
                SignerRequirement::from_profile(&p),
                Err(cps_xua::TrustError::Requirement(_))
            ),
            "{}",
            p.name
        );
    }
    assert_eq!(requirement("cps-sign").name(), "cps-sign");
}
