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
    let seal = Arc::new(SoftwareSigner::generate("seal", KeyAlgorithm::EcP256).unwrap());
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
        let ok = ctx
            .init(&store, &leaf, &chain, |c| {
                let ok = c.verify_cert()?;
                Ok(if ok {
                    Ok(())
                } else {
                    Err(c.error().to_string())
                })
            })
            .map_err(|e| e.to_string())?;
        ok
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
