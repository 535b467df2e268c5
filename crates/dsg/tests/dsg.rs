//! IHE DSG signatures with the real peers (signxml's XAdES verifier and signer, xmlsec1), keys
//! certified by our CA's software hierarchy (`org-cachet` profile), and the attack corpus: each
//! altered signature is refused with its own code.
//!
//! The trait implementations are the tests' own: a time-stamp token here is
//! `genTime (8 bytes) ‖ SHA-256(covered) ‖ ECDSA signature of both` by a software TSA key (the
//! RFC 3161 token is the TSA part's); the path check is OpenSSL's chain verification at the
//! given time against our root; revocation is a list of (certificate, reason, time).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cps_dsg::*;
use cps_hsm::{KeyAlgorithm, SigFormat, SignatureAlgorithm, Signer, SoftwareSigner};
use cps_pki::{DistinguishedName, OrganisationIdentity};

const NOW: i64 = 1_790_000_000;

fn python() -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.peers/venv/bin/python");
    assert!(
        p.exists(),
        "{} missing: run scripts/install-deps.sh",
        p.display()
    );
    p
}

fn pem(label: &str, der: &[u8]) -> String {
    cps_pki::pem_encode(label, der)
}

struct Pki {
    _dir: tempfile::TempDir,
    root: Vec<u8>,
    org_ca: Vec<u8>,
    seal: Arc<SoftwareSigner>,
    /// The seal's private key, PKCS#8 DER (for signxml).
    seal_pkcs8: Vec<u8>,
    chain: Vec<Vec<u8>>,
    foreign: Arc<SoftwareSigner>,
    foreign_chain: Vec<Vec<u8>>,
}

fn certify(ca: &cps_ca::CaService, key: &SoftwareSigner, structure: &str) -> Vec<u8> {
    let alg = key.key_algorithm().default_signature();
    let csr = cps_pki::build_csr(
        &DistinguishedName::parse("CN=ignored").unwrap(),
        key.public_key_der(),
        alg,
        |tbs| key.sign(alg, tbs, SigFormat::Der),
    )
    .unwrap();
    ca.issue(
        &cps_ca::IssueRequest {
            profile: "org-cachet".into(),
            csr,
            subject: cps_ca::SubjectRequest::Organisation(OrganisationIdentity {
                state: "Paris (75)".into(),
                name: format!("Structure {structure}"),
                structure_id: structure.into(),
                common_name: format!("Cachet {structure}"),
            }),
            sans: vec![],
            holder: format!("structure:{structure}:{}", key.label()),
        },
        "test",
        NOW - 3600,
    )
    .unwrap()
    .der
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn cps_store::Store> =
        Arc::new(cps_store::SledStore::open(dir.path().join("store")).unwrap());
    let ca = cps_ca::hierarchy::software_ca(store, NOW - 86_400).unwrap();
    let root = ca.authority("root").unwrap().cert_der.clone();
    let org_ca = ca.authority("organisations").unwrap().cert_der.clone();
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let ec =
        openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
    let seal_pkcs8 = ec.private_key_to_pkcs8().unwrap();
    let seal = Arc::new(SoftwareSigner::from_pkcs8("seal", &seal_pkcs8).unwrap());
    let foreign = Arc::new(SoftwareSigner::generate("foreign", KeyAlgorithm::EcP256).unwrap());
    let seal_cert = certify(&ca, &seal, "10B0000001");
    let foreign_cert = certify(&ca, &foreign, "10B0000002");
    Pki {
        _dir: dir,
        chain: vec![seal_cert, org_ca.clone()],
        foreign_chain: vec![foreign_cert, org_ca.clone()],
        root,
        org_ca,
        seal,
        seal_pkcs8,
        foreign,
    }
}

/// The tests' TSA: a software P-256 key signing `genTime ‖ SHA-256(data)`.
struct TestTsa {
    key: SoftwareSigner,
    time: i64,
}

impl TestTsa {
    fn new(time: i64) -> TestTsa {
        TestTsa {
            key: SoftwareSigner::generate("tsa", KeyAlgorithm::EcP256).unwrap(),
            time,
        }
    }
}

impl TimestampSource for TestTsa {
    fn timestamp(&self, data: &[u8]) -> Result<Vec<u8>, BoxError> {
        let mut tbs = self.time.to_be_bytes().to_vec();
        tbs.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
        let sig = self
            .key
            .sign(SignatureAlgorithm::EcdsaSha256, &tbs, SigFormat::Raw)?;
        tbs.extend_from_slice(&sig);
        Ok(tbs)
    }
}

impl TimestampCheck for TestTsa {
    fn check(&self, token: &[u8], covered: &[u8]) -> Result<i64, TimestampRefusal> {
        if token.len() != 8 + 32 + 64 {
            return Err(TimestampRefusal::Invalid("length".into()));
        }
        cps_hsm::verify_signature(
            self.key.public_key_der(),
            SignatureAlgorithm::EcdsaSha256,
            &token[..40],
            &token[40..],
            SigFormat::Raw,
        )
        .map_err(|_| TimestampRefusal::Untrusted("not our TSA".into()))?;
        if token[8..40] != *ring::digest::digest(&ring::digest::SHA256, covered).as_ref() {
            return Err(TimestampRefusal::NotCovering);
        }
        Ok(i64::from_be_bytes(token[..8].try_into().unwrap()))
    }
}

/// OpenSSL's chain verification at `at`, anchored at our root.
struct OpenSslPath {
    root: Vec<u8>,
}

impl PathCheck for OpenSslPath {
    fn check(&self, signer: &[u8], intermediates: &[&[u8]], at: i64) -> Result<(), String> {
        use openssl::stack::Stack;
        use openssl::x509::store::X509StoreBuilder;
        use openssl::x509::{X509, X509StoreContext};
        let mut b = X509StoreBuilder::new().map_err(|e| e.to_string())?;
        b.add_cert(X509::from_der(&self.root).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let mut p = openssl::x509::verify::X509VerifyParam::new().map_err(|e| e.to_string())?;
        p.set_time(at);
        b.set_param(&p).map_err(|e| e.to_string())?;
        let store = b.build();
        let mut chain = Stack::new().map_err(|e| e.to_string())?;
        for c in intermediates {
            chain
                .push(X509::from_der(c).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let leaf = X509::from_der(signer).map_err(|e| e.to_string())?;
        let mut ctx = X509StoreContext::new().map_err(|e| e.to_string())?;
        ctx.init(&store, &leaf, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok(if ok {
                Ok(())
            } else {
                Err(c.error().to_string())
            })
        })
        .map_err(|e| e.to_string())?
    }
}

/// Revocations: (certificate, reason, time).
#[derive(Default)]
struct Revocations(Vec<(Vec<u8>, &'static str, i64)>);

impl RevocationDecision for Revocations {
    fn check(
        &self,
        signer: &[u8],
        _intermediates: &[&[u8]],
        _ocsp: &[&[u8]],
        at: i64,
    ) -> Result<(), RevocationRefusal> {
        match self.0.iter().find(|(c, _, _)| c == signer) {
            Some((_, reason, t)) if *t <= at || *reason == "keyCompromise" => {
                Err(RevocationRefusal::Revoked {
                    reason: reason.to_string(),
                    revoked_at: *t,
                })
            }
            _ => Ok(()),
        }
    }
}

struct Env {
    pki: Pki,
    tsa: TestTsa,
    paths: OpenSslPath,
    revoked: Revocations,
}

impl Env {
    fn new() -> Env {
        let pki = pki();
        let paths = OpenSslPath {
            root: pki.root.clone(),
        };
        Env {
            pki,
            tsa: TestTsa::new(NOW + 5),
            paths,
            revoked: Revocations::default(),
        }
    }

    fn ctx(&self) -> VerifyContext<'_> {
        VerifyContext {
            limits: VerifyContext::DEFAULT_LIMITS,
            timestamps: &self.tsa,
            paths: &self.paths,
            revocation: &self.revoked,
            max_skew_secs: 60,
        }
    }
}

const DOCS: [(&str, &[u8]); 2] = [
    (
        "urn:oid:1.2.250.1.999.1.1",
        b"<ClinicalDocument>compte rendu</ClinicalDocument>",
    ),
    ("urn:oid:1.2.250.1.999.1.2", b"%PDF-1.7 not really a pdf"),
];
const SUBMISSION_SET: &str = "urn:oid:1.2.250.1.999.2.1";

fn detached_with(seal: &dyn Signer, chain: &[Vec<u8>], tsa: &TestTsa) -> Vec<u8> {
    let docs: Vec<SignedDocument<'_>> = DOCS
        .iter()
        .enumerate()
        .map(|(i, (u, b))| SignedDocument {
            unique_id: u,
            digest: DocumentDigest::Bytes(b),
            mime_type: if i == 0 {
                "text/xml"
            } else {
                "application/pdf"
            },
        })
        .collect();
    sign(
        &Seal {
            signer: seal,
            chain,
        },
        &SignRequest {
            content: Content::Detached {
                submission_set: Some(SUBMISSION_SET),
                documents: &docs,
            },
            purpose: Purpose::Source,
            signing_time: NOW,
            id: "S-1f2e3d",
            ocsp_responses: &[b"\x30\x03\x0a\x01\x00".to_vec()],
        },
        tsa,
    )
    .unwrap()
}

fn detached(env: &Env) -> Vec<u8> {
    detached_with(env.pki.seal.as_ref(), &env.pki.chain, &env.tsa)
}

fn enveloping(env: &Env) -> Vec<u8> {
    sign(
        &Seal {
            signer: env.pki.seal.as_ref(),
            chain: &env.pki.chain,
        },
        &SignRequest {
            content: Content::Enveloping {
                document: DOCS[0].1,
                mime_type: "text/xml",
            },
            purpose: Purpose::Author,
            signing_time: NOW,
            id: "S-env",
            ocsp_responses: &[],
        },
        &env.tsa,
    )
    .unwrap()
}

fn supplied() -> Vec<SuppliedDocument<'static>> {
    DOCS.iter()
        .map(|(u, b)| SuppliedDocument {
            unique_id: u,
            content: DocumentDigest::Bytes(b),
        })
        .collect()
}

fn code(r: Result<Verified, Refusal>) -> &'static str {
    match r {
        Ok(_) => "accepted",
        Err(e) => e.code(),
    }
}

#[test]
fn detached_and_enveloping_round_trip() {
    let env = Env::new();
    let xml = detached(&env);
    let v = verify(&xml, &supplied(), &env.ctx()).unwrap();
    assert_eq!(v.policy, Policy::Detached);
    assert_eq!(v.purpose, Purpose::Source);
    assert_eq!(v.signing_time, NOW + 5, "the time-stamp's time");
    assert_eq!(v.claimed_signing_time, NOW);
    assert_eq!(v.signer_certificate, env.pki.chain[0]);
    assert!(
        v.signer_subject.contains("10B0000001"),
        "{}",
        v.signer_subject
    );
    assert_eq!(v.submission_set.as_deref(), Some(SUBMISSION_SET));
    assert_eq!(v.documents.len(), 2);
    assert!(
        v.documents
            .iter()
            .all(|d| d.outcome == DocumentOutcome::Verified)
    );
    // Digests instead of bytes.
    let digests: Vec<[u8; 32]> = DOCS
        .iter()
        .map(|(_, b)| {
            ring::digest::digest(&ring::digest::SHA256, b)
                .as_ref()
                .try_into()
                .unwrap()
        })
        .collect();
    let by_digest: Vec<SuppliedDocument<'_>> = DOCS
        .iter()
        .zip(&digests)
        .map(|((u, _), d)| SuppliedDocument {
            unique_id: u,
            content: DocumentDigest::Sha256(d),
        })
        .collect();
    verify(&xml, &by_digest, &env.ctx()).unwrap();

    let xml = enveloping(&env);
    let v = verify(&xml, &[], &env.ctx()).unwrap();
    assert_eq!(v.policy, Policy::Enveloping);
    assert_eq!(v.purpose, Purpose::Author);
    assert_eq!(v.enveloped_document.as_deref(), Some(DOCS[0].1));
}

fn write(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn signxml_verify(
    xml: &[u8],
    cert: &[u8],
    policy: Policy,
    docs: &[(&str, &[u8])],
) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let sig = write(dir.path(), "sig.xml", xml);
    let cert = write(dir.path(), "cert.pem", pem("CERTIFICATE", cert).as_bytes());
    let mut cmd = Command::new(python());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/signxml_verify_dsg.py"))
        .arg(&sig)
        .arg(&cert)
        .arg(policy.urn());
    for (i, (u, b)) in docs.iter().enumerate() {
        let p = write(dir.path(), &format!("doc{i}"), b);
        cmd.arg(format!("{u}={}", p.display()));
    }
    let out = cmd.output().unwrap();
    (
        out.status.success() && out.stdout.starts_with(b"ok"),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn signxml_xades_verifier_accepts_ours_and_refuses_a_changed_document() {
    let env = Env::new();
    let xml = detached(&env);
    let (ok, out) = signxml_verify(&xml, &env.pki.chain[0], Policy::Detached, &DOCS);
    assert!(ok, "signxml on our detached signature: {out}");
    let changed = [
        (
            DOCS[0].0,
            &b"<ClinicalDocument>other</ClinicalDocument>"[..],
        ),
        DOCS[1],
    ];
    let (ok, _) = signxml_verify(&xml, &env.pki.chain[0], Policy::Detached, &changed);
    assert!(!ok, "a changed document must fail the manifest check");
    let (ok, _) = signxml_verify(&xml, &env.pki.chain[0], Policy::Enveloping, &DOCS);
    assert!(!ok, "signxml must compare the policy");

    let xml = enveloping(&env);
    let (ok, out) = signxml_verify(&xml, &env.pki.chain[0], Policy::Enveloping, &DOCS[..1]);
    assert!(ok, "signxml on our enveloping signature: {out}");
}

#[test]
fn xmlsec1_verifies_the_xml_dsig_core() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let root = write(
        dir.path(),
        "root.pem",
        pem("CERTIFICATE", &env.pki.root).as_bytes(),
    );
    let run = |xml: &[u8]| {
        let f = write(dir.path(), "sig.xml", xml);
        let out = Command::new("xmlsec1")
            .arg("--verify")
            // Manifest references name documents by unique ID, resolved by the application.
            .arg("--ignore-manifests")
            .arg("--trusted-pem")
            .arg(&root)
            .args(["--id-attr:Id", "Manifest"])
            .args(["--id-attr:Id", "Object"])
            .args([
                "--id-attr:Id",
                "http://uri.etsi.org/01903/v1.3.2#:SignedProperties",
            ])
            .arg(&f)
            .output()
            .expect("xmlsec1 (a required peer)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for xml in [detached(&env), enveloping(&env)] {
        let (ok, err) = run(&xml);
        assert!(ok, "xmlsec1: {err}");
        // The same signature with one signed property changed fails.
        let bad = String::from_utf8(xml)
            .unwrap()
            .replace(
                "urn:oid:1.2.840.10065.1.12.1.1",
                "urn:oid:1.2.840.10065.1.12.1.2",
            )
            .replace(
                "urn:oid:1.2.840.10065.1.12.1.14",
                "urn:oid:1.2.840.10065.1.12.1.2",
            );
        assert!(
            !run(bad.as_bytes()).0,
            "xmlsec1 accepted a changed SignedProperties"
        );
    }
}

/// Recompute the SignedProperties digest in SignedInfo and sign SignedInfo again with `key`:
/// how an attacker holding some valid key re-signs an altered signature.
fn resign(xml: &str, key: &dyn Signer) -> String {
    use cps_xua::c14n::canonicalize_11;
    let d = roxmltree::Document::parse(xml).unwrap();
    let sp = d
        .descendants()
        .find(|n| n.tag_name().name() == "SignedProperties")
        .unwrap();
    let mut c = Vec::new();
    canonicalize_11(sp, None, false, &mut c).unwrap();
    let new_digest = B64.encode(ring::digest::digest(&ring::digest::SHA256, &c));
    let sp_ref = d
        .descendants()
        .find(|n| {
            n.tag_name().name() == "Reference"
                && n.attribute("Type") == Some(cps_dsg::ns::TYPE_SIGNED_PROPERTIES)
        })
        .unwrap();
    let old_digest = sp_ref
        .descendants()
        .find(|n| n.tag_name().name() == "DigestValue")
        .unwrap()
        .text()
        .unwrap()
        .to_owned();
    let xml = xml.replacen(&old_digest, &new_digest, 1);
    let d = roxmltree::Document::parse(&xml).unwrap();
    let si = d.root_element().first_element_child().unwrap();
    let mut c = Vec::new();
    canonicalize_11(si, None, true, &mut c).unwrap();
    let sig = key
        .sign(SignatureAlgorithm::EcdsaSha256, &c, SigFormat::Raw)
        .unwrap();
    let sv = d
        .descendants()
        .find(|n| n.tag_name().name() == "SignatureValue")
        .unwrap()
        .text()
        .unwrap()
        .to_owned();
    xml.replacen(&sv, &B64.encode(sig), 1)
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> &'a str {
    let i = s.find(open).unwrap();
    let j = s[i..].find(close).unwrap() + i + close.len();
    &s[i..j]
}

#[test]
fn attack_corpus_each_refused_with_its_own_code() {
    let mut env = Env::new();
    let good = String::from_utf8(detached(&env)).unwrap();
    let env_sig = String::from_utf8(enveloping(&env)).unwrap();
    assert_eq!(
        code(verify(good.as_bytes(), &supplied(), &env.ctx())),
        "accepted"
    );
    let sp = between(
        &good,
        "<xades:SignedProperties",
        "</xades:SignedProperties>",
    )
    .to_owned();
    let manifest_obj = between(&good, "<ds:Object><ds:Manifest", "</ds:Object>").to_owned();
    let ki = between(&good, "<ds:KeyInfo>", "</ds:KeyInfo>").to_owned();

    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    // SignedProperties wrapped: the signed original moved into a wrapper object, an altered
    // copy (another Id) in its place.
    let altered = sp
        .replace("S-1f2e3d-SignedProperties", "S-evil-SignedProperties")
        .replace("1.2.840.10065.1.12.1.14", "1.2.840.10065.1.12.1.1");
    cases.push((
        "signed properties wrapped",
        good.replacen(&sp, &altered, 1)
            .replacen("</ds:Signature>", &format!("<ds:Object><xades:QualifyingProperties xmlns:xades=\"{}\" Target=\"#other\">{sp}</xades:QualifyingProperties></ds:Object></ds:Signature>", cps_dsg::ns::XADES), 1),
        "signed_properties_not_bound",
    ));
    // SignedProperties moved out of QualifyingProperties (into an object of their own).
    cases.push((
        "signed properties moved",
        good.replacen(&sp, "", 1).replacen(
            "</ds:Signature>",
            &format!(
                "<ds:Object>{}</ds:Object></ds:Signature>",
                sp.replacen(
                    "<xades:SignedProperties",
                    &format!(
                        "<xades:SignedProperties xmlns:xades=\"{}\"",
                        cps_dsg::ns::XADES
                    ),
                    1
                )
            ),
            1,
        ),
        "signed_properties_not_bound",
    ));
    // The SignedProperties reference pointed at the manifest; the manifest one at the properties.
    cases.push((
        "manifest reference swapped",
        good.replacen(
            "URI=\"#IHEManifest\"",
            "URI=\"#S-1f2e3d-SignedProperties\"",
            1,
        ),
        "manifest_not_bound",
    ));
    cases.push((
        "signed properties reference aimed at the manifest",
        good.replacen(
            "URI=\"#S-1f2e3d-SignedProperties\"",
            "URI=\"#IHEManifest\"",
            1,
        ),
        "signed_properties_not_bound",
    ));
    // Two manifest references exchanged (the documents' digests swap places).
    let (a, b) = (DOCS[0].0, DOCS[1].0);
    cases.push((
        "manifest entries swapped",
        good.replacen(a, "@A@", 1)
            .replacen(b, a, 1)
            .replacen("@A@", b, 1),
        "manifest_digest_mismatch",
    ));
    cases.push((
        "signed properties changed",
        good.replacen("1.2.840.10065.1.12.1.14", "1.2.840.10065.1.12.1.1", 1),
        "signed_properties_digest_mismatch",
    ));
    // The signature over another element: the manifest reference retargeted to a foreign object.
    cases.push((
        "signature over another element",
        good.replacen(
            "URI=\"#IHEManifest\"",
            "URI=\"#S-1f2e3d-SignatureValue\"",
            1,
        )
        .replacen(&format!(" Type=\"{}\"", cps_dsg::ns::TYPE_MANIFEST), "", 1),
        "unexpected_reference",
    ));
    cases.push((
        "duplicate IDs",
        good.replacen(
            "</ds:Signature>",
            &format!(
                "<ds:Object>{}</ds:Object></ds:Signature>",
                manifest_obj
                    .replacen("<ds:Object>", "", 1)
                    .replacen("</ds:Object>", "", 1)
            ),
            1,
        ),
        "duplicate_id",
    ));
    // A foreign seal (valid chain) signs, with the victim's certificate digest kept in
    // SigningCertificateV2.
    let foreign = String::from_utf8(detached_with(
        env.pki.foreign.as_ref(),
        &env.pki.foreign_chain,
        &env.tsa,
    ))
    .unwrap();
    let victim_scv2 = between(
        &good,
        "<xades:SigningCertificateV2>",
        "</xades:SigningCertificateV2>",
    );
    let foreign_scv2 = between(
        &foreign,
        "<xades:SigningCertificateV2>",
        "</xades:SigningCertificateV2>",
    );
    let forged = resign(
        &foreign.replacen(foreign_scv2, victim_scv2, 1),
        env.pki.foreign.as_ref(),
    );
    assert_eq!(
        code(verify(foreign.as_bytes(), &supplied(), &env.ctx())),
        "accepted"
    );
    cases.push((
        "foreign signing certificate",
        forged,
        "signing_certificate_mismatch",
    ));
    // KeyInfo replaced by the foreign certificate: the victim's signature does not verify with it.
    let foreign_ki = between(&foreign, "<ds:KeyInfo>", "</ds:KeyInfo>");
    cases.push((
        "foreign key info",
        good.replacen(&ki, foreign_ki, 1),
        "bad_signature_value",
    ));
    // The time-stamp of another signature.
    let other_ts = between(
        &foreign,
        "<xades:EncapsulatedTimeStamp>",
        "</xades:EncapsulatedTimeStamp>",
    );
    let own_ts = between(
        &good,
        "<xades:EncapsulatedTimeStamp>",
        "</xades:EncapsulatedTimeStamp>",
    );
    cases.push((
        "time-stamp over another signature",
        good.replacen(own_ts, other_ts, 1),
        "timestamp_not_covering",
    ));
    let stranger = TestTsa::new(NOW);
    let stranger_sig = String::from_utf8(detached_with(
        env.pki.seal.as_ref(),
        &env.pki.chain,
        &stranger,
    ))
    .unwrap();
    cases.push(("untrusted TSA", stranger_sig, "timestamp_untrusted"));
    cases.push((
        "no time-stamp",
        good.replacen(
            between(
                &good,
                "<xades:SignatureTimeStamp",
                "</xades:SignatureTimeStamp>",
            ),
            "",
            1,
        ),
        "missing_timestamp",
    ));
    cases.push((
        "unknown commitment",
        resign(
            &good.replacen("1.2.840.10065.1.12.1.14", "1.2.840.10065.1.12.1.19", 1),
            env.pki.seal.as_ref(),
        ),
        "unknown_commitment",
    ));
    cases.push((
        "policy of the other form",
        resign(
            &good.replacen(
                "urn:ihe:iti:dsg:detached:2014",
                "urn:ihe:iti:dsg:enveloping:2014",
                1,
            ),
            env.pki.seal.as_ref(),
        ),
        "policy_mismatch",
    ));
    cases.push((
        "unknown policy",
        resign(
            &good.replacen("urn:ihe:iti:dsg:detached:2014", "urn:example:policy", 1),
            env.pki.seal.as_ref(),
        ),
        "unknown_policy",
    ));
    cases.push((
        "claimed signing time after the time-stamp",
        restamp(
            &resign(
                &good.replacen(&cps_xua_time(NOW), &cps_xua_time(NOW + 3600), 1),
                env.pki.seal.as_ref(),
            ),
            &env.tsa,
        ),
        "signing_time_after_timestamp",
    ));
    cases.push((
        "DTD / XXE",
        format!("<!DOCTYPE s [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{good}"),
        "dtd_forbidden",
    ));
    cases.push((
        "oversized",
        format!("{good}{}", " ".repeat(17 << 20)),
        "too_large",
    ));
    cases.push((
        "two signatures",
        format!("<w>{good}{good}</w>"),
        "multiple_signatures",
    ));
    cases.push((
        "not a signature",
        format!("<w>{good}</w>").replacen(&good, "<x/>", 1),
        "not_a_signature",
    ));
    cases.push((
        "SHA-1 digest",
        good.replacen(
            &format!("Algorithm=\"{}\"", cps_xua::ns::digest::SHA256),
            &format!("Algorithm=\"{}\"", cps_xua::ns::digest::SHA1),
            1,
        ),
        "unsupported_algorithm",
    ));
    cases.push((
        "RSA-SHA1 signature method",
        good.replacen(
            cps_xua::ns::sig::ECDSA_SHA256,
            cps_xua::ns::sig::RSA_SHA1,
            1,
        ),
        "unsupported_algorithm",
    ));
    cases.push((
        "exclusive c14n",
        good.replacen(cps_dsg::ns::C14N11_WITH_COMMENTS, cps_xua::ns::EXC_C14N, 1),
        "unsupported_algorithm",
    ));
    cases.push((
        "enveloped document changed",
        env_sig.replacen(
            &B64.encode(DOCS[0].1),
            &B64.encode(b"<ClinicalDocument>forged</ClinicalDocument>"),
            1,
        ),
        "object_digest_mismatch",
    ));
    cases.push((
        "signature value changed",
        {
            let sv = between(&good, "<ds:SignatureValue", "</ds:SignatureValue>");
            let i = sv.find('>').unwrap() + 1;
            let flipped = if &sv[i..i + 1] == "A" { "B" } else { "A" };
            good.replacen(sv, &format!("{}{flipped}{}", &sv[..i], &sv[i + 1..]), 1)
        },
        "bad_signature_value",
    ));

    let mut failures = Vec::new();
    for (name, xml, want) in &cases {
        let got = code(verify(xml.as_bytes(), &supplied(), &env.ctx()));
        if got != *want {
            failures.push(format!("{name}: expected {want}, got {got}"));
        }
    }
    // Documents.
    let mut docs = supplied();
    docs[1].content = DocumentDigest::Bytes(b"%PDF-1.7 changed");
    match verify(good.as_bytes(), &docs, &env.ctx()) {
        Err(Refusal::DocumentDigestMismatch(r)) => {
            assert_eq!(r[0].outcome, DocumentOutcome::Verified);
            assert_eq!(r[1].outcome, DocumentOutcome::DigestMismatch);
        }
        other => failures.push(format!("document digest changed: {other:?}")),
    }
    match verify(good.as_bytes(), &supplied()[..1], &env.ctx()) {
        Err(Refusal::DocumentMissing(r)) => assert_eq!(r[1].outcome, DocumentOutcome::Missing),
        other => failures.push(format!("document missing: {other:?}")),
    }
    let mut extra = supplied();
    extra.push(SuppliedDocument {
        unique_id: "urn:oid:1.2.3",
        content: DocumentDigest::Bytes(b"x"),
    });
    let got = code(verify(good.as_bytes(), &extra, &env.ctx()));
    if got != "document_not_signed" {
        failures.push(format!("document not signed: {got}"));
    }
    // Path and revocation at the time-stamp's time.
    env.revoked
        .0
        .push((env.pki.chain[0].clone(), "superseded", NOW + 3600));
    let got = code(verify(good.as_bytes(), &supplied(), &env.ctx()));
    if got != "accepted" {
        failures.push(format!("superseded after the signing time: {got}"));
    }
    env.revoked.0[0] = (env.pki.chain[0].clone(), "keyCompromise", NOW - 60);
    let got = code(verify(good.as_bytes(), &supplied(), &env.ctx()));
    if got != "certificate_revoked" {
        failures.push(format!("keyCompromise before the signing time: {got}"));
    }
    env.revoked.0.clear();
    env.paths.root = env.pki.org_ca.clone();
    let got = code(verify(good.as_bytes(), &supplied(), &env.ctx()));
    if got != "certificate_path" {
        failures.push(format!("another anchor: {got}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Replace the time-stamp by a fresh one over the current SignatureValue.
fn restamp(xml: &str, tsa: &TestTsa) -> String {
    let d = roxmltree::Document::parse(xml).unwrap();
    let sv = d
        .descendants()
        .find(|n| n.tag_name().name() == "SignatureValue")
        .unwrap();
    let mut c = Vec::new();
    cps_xua::c14n::canonicalize_11(sv, None, false, &mut c).unwrap();
    let token = B64.encode(tsa.timestamp(&c).unwrap());
    let old = between(
        xml,
        "<xades:EncapsulatedTimeStamp>",
        "</xades:EncapsulatedTimeStamp>",
    );
    xml.replacen(
        old,
        &format!("<xades:EncapsulatedTimeStamp>{token}</xades:EncapsulatedTimeStamp>"),
        1,
    )
}

fn cps_xua_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Add the unsigned properties this crate's signer adds (time-stamp over the canonical
/// SignatureValue, certificate values) to a signature made elsewhere.
fn add_long_term(xml: &str, tsa: &TestTsa, chain: &[Vec<u8>]) -> String {
    let d = roxmltree::Document::parse(xml).unwrap();
    let sv = d
        .descendants()
        .find(|n| n.tag_name().name() == "SignatureValue")
        .unwrap();
    let mut c = Vec::new();
    cps_xua::c14n::canonicalize_11(sv, None, false, &mut c).unwrap();
    let token = tsa.timestamp(&c).unwrap();
    let certs: String = chain
        .iter()
        .map(|c| {
            format!(
                "<xades:EncapsulatedX509Certificate>{}</xades:EncapsulatedX509Certificate>",
                B64.encode(c)
            )
        })
        .collect();
    let up = format!(
        "<xades:UnsignedProperties><xades:UnsignedSignatureProperties><xades:SignatureTimeStamp><ds:CanonicalizationMethod Algorithm=\"{}\"/><xades:EncapsulatedTimeStamp>{}</xades:EncapsulatedTimeStamp></xades:SignatureTimeStamp><xades:CertificateValues>{certs}</xades:CertificateValues></xades:UnsignedSignatureProperties></xades:UnsignedProperties>",
        cps_dsg::ns::C14N11,
        B64.encode(token)
    );
    xml.replacen(
        "</xades:QualifyingProperties>",
        &format!("{up}</xades:QualifyingProperties>"),
        1,
    )
}

#[test]
fn signxml_xades_signatures_verify_here_and_are_refused_once_changed() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let key = write(
        dir.path(),
        "key.pem",
        pem("PRIVATE KEY", &env.pki.seal_pkcs8).as_bytes(),
    );
    let chain_pem: String = env
        .pki
        .chain
        .iter()
        .map(|c| pem("CERTIFICATE", c))
        .collect();
    let chain = write(dir.path(), "chain.pem", chain_pem.as_bytes());
    let out = dir.path().join("sig.xml");
    let mut cmd = Command::new(python());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/signxml_sign_dsg.py"))
        .arg(&key)
        .arg(&chain)
        .arg(&out)
        .arg(Purpose::Verification.urn());
    for (i, (u, b)) in DOCS.iter().enumerate() {
        cmd.arg(format!(
            "{u}={}",
            write(dir.path(), &format!("d{i}"), b).display()
        ));
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "signxml signer: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let theirs = String::from_utf8(std::fs::read(&out).unwrap()).unwrap();
    // signxml writes its own SigningTime (the real clock): the test TSA stamps after it.
    let tsa = TestTsa::new(time::OffsetDateTime::now_utc().unix_timestamp() + 1);
    let env = Env { tsa, ..env };
    let xml = add_long_term(&theirs, &env.tsa, &env.pki.chain);
    let v =
        verify(xml.as_bytes(), &supplied(), &env.ctx()).unwrap_or_else(|e| panic!("{e:?}\n{xml}"));
    assert_eq!(v.purpose, Purpose::Verification);
    assert_eq!(v.policy, Policy::Detached);
    assert_eq!(v.signer_certificate, env.pki.chain[0]);

    let mut docs = supplied();
    docs[0].content = DocumentDigest::Bytes(b"<ClinicalDocument>changed</ClinicalDocument>");
    assert_eq!(
        code(verify(xml.as_bytes(), &docs, &env.ctx())),
        "document_digest_mismatch"
    );
    let changed_sp = xml.replacen(&Purpose::Verification.urn(), &Purpose::Author.urn(), 1);
    assert_eq!(
        code(verify(changed_sp.as_bytes(), &supplied(), &env.ctx())),
        "signed_properties_digest_mismatch"
    );
    let d0 = B64.encode(ring::digest::digest(&ring::digest::SHA256, DOCS[0].1));
    let d_other = B64.encode(ring::digest::digest(&ring::digest::SHA256, b"other"));
    let changed_manifest = xml.replacen(&d0, &d_other, 1);
    assert_eq!(
        code(verify(changed_manifest.as_bytes(), &supplied(), &env.ctx())),
        "manifest_digest_mismatch"
    );
}
