//! Shared by the integration tests and the benchmarks: a test PKI (kept under
//! `tests/corpus/pki/` so that the attack corpus stays verifiable), sample claims, validators,
//! a generic signer for hand-made assertions, and helpers to run the real peers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use base64::Engine;
use cps_hsm::{SigFormat, Signer, SoftwareSigner};
use cps_pki::ext::{self, Usage};
use cps_pki::{CertificateParams, DistinguishedName, IdNatPs, Issuer, Serial};
use cps_xua::c14n::{InclusivePrefixes, canonicalize};
use cps_xua::{
    AssertionId, AssertionIssuer, AuthenticationMode, CodedValue, EKU_DOCUMENT_SIGNING, EkuPolicy,
    InMemoryReplayCache, IssuerConfig, OrgSealRegistry, PatientId, ProfessionalDirectory,
    PurposeOfUse, RegisteredActivity, RegisteredProfessional, SealTrustPolicy, SoftwareInfo,
    StaticRevocationList, TrustStore, Validator, ValidatorConfig, VihfClaims,
    XmlSignatureAlgorithm, ns, parse_datetime,
};

/// The instant the corpus was made at, and validated at.
pub const CORPUS_NOW: &str = "2026-01-15T10:00:00.000Z";

pub fn corpus_now() -> SystemTime {
    parse_datetime(CORPUS_NOW).unwrap()
}

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn corpus_dir() -> PathBuf {
    crate_dir().join("tests/corpus")
}

pub fn repo_root() -> PathBuf {
    crate_dir().join("../..")
}

/// A Python peer from the project's venv (`CPS_TRUST_PEERS_VENV` or `<repo>/.peers/venv`).
pub fn peers_python() -> PathBuf {
    let venv = std::env::var_os("CPS_TRUST_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".peers/venv"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} missing: run scripts/install-deps.sh (signxml is a required peer)",
        py.display()
    );
    py
}

pub fn pem(label: &str, der: &[u8]) -> String {
    cps_pki::pem_encode(label, der)
}

pub fn cert_from_pem(pem: &str) -> Vec<u8> {
    openssl::x509::X509::from_pem(pem.as_bytes())
        .unwrap()
        .to_der()
        .unwrap()
}

/// A private key kept as PKCS#8 PEM (for xmlsec1) and usable as a software signer.
pub struct TestKey {
    pub pkcs8_pem: String,
    pub signer: Arc<SoftwareSigner>,
}

impl TestKey {
    pub fn generate(label: &str, rsa: bool) -> TestKey {
        let pkey = if rsa {
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap()
        } else {
            let group =
                openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
            openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap()
        };
        let pem = String::from_utf8(pkey.private_key_to_pem_pkcs8().unwrap()).unwrap();
        TestKey::from_pem(label, &pem)
    }

    pub fn from_pem(label: &str, pem: &str) -> TestKey {
        let pkey = openssl::pkey::PKey::private_key_from_pem(pem.as_bytes()).unwrap();
        let der = pkey.private_key_to_pkcs8().unwrap();
        TestKey {
            pkcs8_pem: pem.to_owned(),
            signer: Arc::new(SoftwareSigner::from_pkcs8(label, &der).unwrap()),
        }
    }
}

pub fn unix(t: &str) -> i64 {
    parse_datetime(t)
        .unwrap()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What a test certificate is for.
#[derive(Clone, Copy)]
pub enum Purpose {
    Ca,
    /// Organisation seal: digitalSignature + nonRepudiation, EKU documentSigning.
    Seal,
    /// A TLS server certificate (EKU serverAuth): must not sign assertions.
    Tls,
}

pub fn issue_cert(
    issuer_dn: &DistinguishedName,
    issuer_key: &dyn Signer,
    subject: &str,
    subject_key: &dyn Signer,
    purpose: Purpose,
    validity: (&str, &str),
    serial: u8,
) -> Vec<u8> {
    let spki = subject_key.public_key_der().to_vec();
    let mut extensions = match purpose {
        Purpose::Ca => cps_pki::hierarchy::root_ca(&spki, None).unwrap(),
        Purpose::Seal => vec![
            ext::basic_constraints(false, None).unwrap(),
            ext::key_usage(&[Usage::DigitalSignature, Usage::NonRepudiation]).unwrap(),
            ext::extended_key_usage(
                &[const_oid::ObjectIdentifier::new_unwrap(
                    "1.3.6.1.5.5.7.3.36",
                )],
                false,
            )
            .unwrap(),
        ],
        Purpose::Tls => vec![
            ext::basic_constraints(false, None).unwrap(),
            ext::key_usage(&[Usage::DigitalSignature]).unwrap(),
            ext::extended_key_usage(&[ext::ID_KP_SERVER_AUTH], false).unwrap(),
        ],
    };
    if !matches!(purpose, Purpose::Ca) {
        extensions.push(
            ext::authority_key_identifier(
                &ext::key_identifier(issuer_key.public_key_der()).unwrap(),
            )
            .unwrap(),
        );
    }
    let mut s = [0u8; 16];
    s[0] = 0x11;
    s[15] = serial;
    let params = CertificateParams {
        serial: Serial::from_bytes(&s).unwrap(),
        subject: DistinguishedName::parse(subject).unwrap(),
        subject_public_key: spki,
        not_before: unix(validity.0),
        not_after: unix(validity.1),
        extensions,
    };
    cps_pki::issue_certificate(
        &params,
        &Issuer {
            name: issuer_dn,
            signer: issuer_key,
            signature: issuer_key.key_algorithm().default_signature(),
        },
    )
    .unwrap()
}

pub const ROOT_DN: &str = "/C=FR/O=cps-trust tests/CN=Test Root CA";
pub const SEAL_DN: &str =
    "/C=FR/ST=Paris (75)/O=Clinique du Test/OU=310000000000001/CN=Clinique du Test cachet";
pub const VALIDITY: (&str, &str) = ("2025-01-01T00:00:00Z", "2045-01-01T00:00:00Z");
/// Another organisation's seal: it vouches for its own structure (`OU`) only.
pub const ORG_SEAL_DN: &str =
    "/C=FR/ST=Rhone (69)/O=Maison de sante des Tests/OU=1690000014/CN=MSP des Tests cachet";
/// The structure of [`ORG_SEAL_DN`].
pub const ORG_STRUCTURE: &str = "1690000014";

/// The test PKI: a root (EC P-256), an RSA seal certified by it (plus a TLS and an expired
/// certificate for the same key), and an attacker's self-signed RSA key and certificate.
pub struct TestPki {
    pub root: TestKey,
    pub root_dn: DistinguishedName,
    pub root_der: Vec<u8>,
    pub seal: TestKey,
    pub seal_der: Vec<u8>,
    pub seal_tls_der: Vec<u8>,
    pub seal_expired_der: Vec<u8>,
    pub attacker: TestKey,
    pub attacker_der: Vec<u8>,
    /// Another organisation's seal (RSA-2048, EKU documentSigning), certified by the root.
    pub org_seal: TestKey,
    pub org_seal_der: Vec<u8>,
    /// A certificate from the root with the own seal's subject, for another key.
    pub lookalike: TestKey,
    pub lookalike_der: Vec<u8>,
}

impl TestPki {
    /// Load the PKI kept with the corpus, creating it the first time.
    pub fn load_or_create(dir: &Path) -> TestPki {
        let file = |n: &str| dir.join(n);
        if !file("root.crt.pem").exists() {
            std::fs::create_dir_all(dir).unwrap();
            let root = TestKey::generate("root", false);
            let root_dn = DistinguishedName::parse(ROOT_DN).unwrap();
            let root_der = issue_cert(
                &root_dn,
                root.signer.as_ref(),
                ROOT_DN,
                root.signer.as_ref(),
                Purpose::Ca,
                VALIDITY,
                1,
            );
            let seal = TestKey::generate("seal", true);
            let seal_der = issue_cert(
                &root_dn,
                root.signer.as_ref(),
                SEAL_DN,
                seal.signer.as_ref(),
                Purpose::Seal,
                VALIDITY,
                2,
            );
            let seal_tls_der = issue_cert(
                &root_dn,
                root.signer.as_ref(),
                SEAL_DN,
                seal.signer.as_ref(),
                Purpose::Tls,
                VALIDITY,
                3,
            );
            let seal_expired_der = issue_cert(
                &root_dn,
                root.signer.as_ref(),
                SEAL_DN,
                seal.signer.as_ref(),
                Purpose::Seal,
                ("2025-01-01T00:00:00Z", "2025-06-01T00:00:00Z"),
                4,
            );
            let attacker = TestKey::generate("attacker", true);
            let adn = DistinguishedName::parse(SEAL_DN).unwrap();
            let attacker_der = issue_cert(
                &adn,
                attacker.signer.as_ref(),
                SEAL_DN,
                attacker.signer.as_ref(),
                Purpose::Seal,
                VALIDITY,
                5,
            );
            for (n, s) in [
                ("root.key.pem", root.pkcs8_pem.clone()),
                ("root.crt.pem", pem("CERTIFICATE", &root_der)),
                ("seal.key.pem", seal.pkcs8_pem.clone()),
                ("seal.crt.pem", pem("CERTIFICATE", &seal_der)),
                ("seal-tls.crt.pem", pem("CERTIFICATE", &seal_tls_der)),
                (
                    "seal-expired.crt.pem",
                    pem("CERTIFICATE", &seal_expired_der),
                ),
                ("attacker.key.pem", attacker.pkcs8_pem.clone()),
                ("attacker.crt.pem", pem("CERTIFICATE", &attacker_der)),
            ] {
                std::fs::write(file(n), s).unwrap();
            }
        }
        if !file("org-seal.crt.pem").exists() {
            let root = TestKey::from_pem(
                "root",
                &std::fs::read_to_string(file("root.key.pem")).unwrap(),
            );
            let root_dn = DistinguishedName::parse(ROOT_DN).unwrap();
            for (name, dn, serial) in [("org-seal", ORG_SEAL_DN, 6), ("lookalike", SEAL_DN, 7)] {
                let key = TestKey::generate(name, true);
                let der = issue_cert(
                    &root_dn,
                    root.signer.as_ref(),
                    dn,
                    key.signer.as_ref(),
                    Purpose::Seal,
                    VALIDITY,
                    serial,
                );
                std::fs::write(file(&format!("{name}.key.pem")), &key.pkcs8_pem).unwrap();
                std::fs::write(file(&format!("{name}.crt.pem")), pem("CERTIFICATE", &der)).unwrap();
            }
        }
        let read = |n: &str| std::fs::read_to_string(file(n)).unwrap();
        TestPki {
            root: TestKey::from_pem("root", &read("root.key.pem")),
            root_dn: DistinguishedName::parse(ROOT_DN).unwrap(),
            root_der: cert_from_pem(&read("root.crt.pem")),
            seal: TestKey::from_pem("seal", &read("seal.key.pem")),
            seal_der: cert_from_pem(&read("seal.crt.pem")),
            seal_tls_der: cert_from_pem(&read("seal-tls.crt.pem")),
            seal_expired_der: cert_from_pem(&read("seal-expired.crt.pem")),
            attacker: TestKey::from_pem("attacker", &read("attacker.key.pem")),
            attacker_der: cert_from_pem(&read("attacker.crt.pem")),
            org_seal: TestKey::from_pem("org-seal", &read("org-seal.key.pem")),
            org_seal_der: cert_from_pem(&read("org-seal.crt.pem")),
            lookalike: TestKey::from_pem("lookalike", &read("lookalike.key.pem")),
            lookalike_der: cert_from_pem(&read("lookalike.crt.pem")),
        }
    }

    /// A fresh seal of the given kind certified by the root (for tests not tied to the corpus).
    pub fn new_seal(&self, rsa: bool, serial: u8) -> (TestKey, Vec<u8>) {
        let k = TestKey::generate("seal2", rsa);
        let der = issue_cert(
            &self.root_dn,
            self.root.signer.as_ref(),
            SEAL_DN,
            k.signer.as_ref(),
            Purpose::Seal,
            VALIDITY,
            serial,
        );
        (k, der)
    }

    /// A certificate for a key held elsewhere (e.g. in SoftHSM2).
    pub fn certify(&self, key: &dyn Signer, serial: u8) -> Vec<u8> {
        issue_cert(
            &self.root_dn,
            self.root.signer.as_ref(),
            SEAL_DN,
            key,
            Purpose::Seal,
            VALIDITY,
            serial,
        )
    }
}

/// The corpus PKI (shared by every test of a binary).
pub fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| TestPki::load_or_create(&corpus_dir().join("pki")))
}

/// A valid RPPS-based IdNat_PS.
pub const NAME_ID: &str = "810100000008";

/// A valid INS (key = 97 − number mod 97).
pub fn test_ins() -> String {
    let body = "1840575123456";
    let n: u64 = body.parse().unwrap();
    format!("{body}{:02}", 97 - n % 97)
}

pub fn claims() -> VihfClaims {
    VihfClaims {
        vihf_version: "3.0".into(),
        name_id: IdNatPs::parse(NAME_ID).unwrap(),
        subject_id: "DUPONT, Jean".into(),
        roles: vec![CodedValue {
            code: "10".into(),
            code_system: "1.2.250.1.71.1.2.7".into(),
            code_system_name: Some("professions".into()),
            display_name: Some("Médecin".into()),
        }],
        secteur_activite: "SA07^1.2.250.1.71.4.2.4".into(),
        structure_id: "1310000001".into(),
        authentication_mode: AuthenticationMode::Indirect,
        patient: Some(PatientId {
            ins: test_ins(),
            authority: "1.2.250.1.213.1.4.10".into(),
        }),
        resource_urn: "urn:dmp".into(),
        purpose_of_use: PurposeOfUse::Normal,
        confidentiality_code: None,
        software: SoftwareInfo {
            name: "cps-trust tests".into(),
            version: Some("1.0".into()),
            id: Some("1.2.250.1.259.1.1.1234567890".into()),
            homologation: "HOMOL-TEST-0001".into(),
        },
        authn_instant: corpus_now() - Duration::from_secs(30),
        authn_context_class_ref: cps_xua::AUTHN_SMARTCARD_PKI.into(),
    }
}

pub fn issuer_for(signer: Arc<dyn Signer>, cert: &[u8], config: IssuerConfig) -> AssertionIssuer {
    AssertionIssuer::new(signer, &[cert.to_vec()], config).unwrap()
}

/// The corpus seal's issuer.
pub fn corpus_issuer() -> AssertionIssuer {
    let p = pki();
    issuer_for(p.seal.signer.clone(), &p.seal_der, IssuerConfig::default())
}

pub fn id(n: u8) -> AssertionId {
    let mut b = [0u8; 16];
    b[0] = 0xa5;
    b[15] = n;
    AssertionId::from_random(b)
}

pub struct Setup {
    pub config: ValidatorConfig,
    pub revocation: Arc<StaticRevocationList>,
    pub replay: Arc<InMemoryReplayCache>,
    /// Certificates whose keys are the issuer's own seals (their assertions are trusted as
    /// issued): the corpus seal.
    pub own_seals: Vec<Vec<u8>>,
    /// How the professionals of organisation seals are checked: the corpus registry.
    pub registry: OrgSealRegistry,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            config: ValidatorConfig::default(),
            revocation: Arc::new(StaticRevocationList::new()),
            replay: Arc::new(InMemoryReplayCache::new(100_000)),
            own_seals: vec![pki().seal_der.clone()],
            registry: OrgSealRegistry::Required(Arc::new(corpus_registry())),
        }
    }
}

impl Setup {
    /// The default setup with `der`'s key as one more own seal of the issuer.
    pub fn with_own_seal(mut self, der: &[u8]) -> Setup {
        self.own_seals.push(der.to_vec());
        self
    }

    /// The signer policy of this setup.
    pub fn policy(&self) -> SealTrustPolicy {
        SealTrustPolicy::new(
            self.own_seals.iter().map(|d| spki_of(d)).collect(),
            self.registry.clone(),
        )
    }
}

/// The `SubjectPublicKeyInfo` (DER) of a certificate.
pub fn spki_of(der: &[u8]) -> Vec<u8> {
    cps_pki::parse_certificate(der).unwrap().spki
}

/// The registry of professionals the corpus is checked against (`tests/corpus/registry.tsv`).
pub struct TsvRegistry(pub std::collections::HashMap<String, RegisteredProfessional>);

impl ProfessionalDirectory for TsvRegistry {
    fn professional(&self, idnat_ps: &IdNatPs) -> Result<Option<RegisteredProfessional>, String> {
        Ok(self.0.get(idnat_ps.as_str()).cloned())
    }
}

/// A registry that cannot answer.
pub struct UnavailableRegistry;

impl ProfessionalDirectory for UnavailableRegistry {
    fn professional(&self, _: &IdNatPs) -> Result<Option<RegisteredProfessional>, String> {
        Err("registry store unreachable".into())
    }
}

/// `tests/corpus/registry.tsv`: `idnat_ps`, `status`, `profession`, `activities`
/// (`structure:secteur`, comma-separated).
pub fn corpus_registry() -> TsvRegistry {
    let text = std::fs::read_to_string(corpus_dir().join("registry.tsv")).unwrap();
    let mut map = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        let activities = f[3]
            .split(',')
            .map(|a| {
                let (structure_id, secteur_code) = a.split_once(':').unwrap();
                RegisteredActivity {
                    structure_id: structure_id.into(),
                    secteur_code: secteur_code.into(),
                }
            })
            .collect();
        map.insert(
            f[0].to_owned(),
            RegisteredProfessional {
                active: f[1] == "active",
                status: f[1].to_owned(),
                profession_code: f[2].to_owned(),
                activities,
            },
        );
    }
    TsvRegistry(map)
}

pub fn validator_with(anchors: Vec<Vec<u8>>, setup: Setup) -> Validator {
    let trust = TrustStore::new(
        anchors,
        vec![],
        EkuPolicy::RequiredIfPresent(EKU_DOCUMENT_SIGNING),
    )
    .unwrap();
    let policy = Arc::new(setup.policy());
    Validator::new(
        setup.config,
        Arc::new(trust),
        setup.revocation,
        policy,
        setup.replay,
    )
}

pub fn validator(setup: Setup) -> Validator {
    validator_with(vec![pki().root_der.clone()], setup)
}

/// Sign an arbitrary document the way the issuer does, by hand: the element whose `ID` is
/// `target_id` is digested (enveloped + exc-c14n), and the `ds:Signature` is inserted right after
/// the first `</saml:Issuer>`. Lets tests make validly signed documents the issuer never would.
pub fn sign_xml(
    xml: &str,
    target_id: &str,
    signer: &dyn Signer,
    certs: &[&[u8]],
    alg: XmlSignatureAlgorithm,
) -> String {
    let doc = roxmltree::Document::parse(xml).unwrap();
    let target = doc
        .descendants()
        .find(|n| n.attribute("ID") == Some(target_id))
        .expect("target element");
    let mut c = Vec::new();
    canonicalize(target, None, &InclusivePrefixes::none(), &mut c).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &c);
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = format!(
        "<ds:CanonicalizationMethod Algorithm=\"{c14n}\"></ds:CanonicalizationMethod><ds:SignatureMethod Algorithm=\"{sm}\"></ds:SignatureMethod><ds:Reference URI=\"#{target_id}\"><ds:Transforms><ds:Transform Algorithm=\"{env}\"></ds:Transform><ds:Transform Algorithm=\"{c14n}\"></ds:Transform></ds:Transforms><ds:DigestMethod Algorithm=\"{dm}\"></ds:DigestMethod><ds:DigestValue>{dv}</ds:DigestValue></ds:Reference></ds:SignedInfo>",
        c14n = ns::EXC_C14N,
        sm = alg.uri(),
        env = ns::ENVELOPED,
        dm = ns::digest::SHA256,
        dv = b64.encode(digest.as_ref()),
    );
    let signed_info = format!("<ds:SignedInfo xmlns:ds=\"{}\">{body}", ns::DS);
    let sig = signer
        .sign(
            alg.hsm_algorithm().unwrap(),
            signed_info.as_bytes(),
            SigFormat::Raw,
        )
        .unwrap();
    let certs: String = certs
        .iter()
        .map(|c| format!("<ds:X509Certificate>{}</ds:X509Certificate>", b64.encode(c)))
        .collect();
    let signature = format!(
        "<ds:Signature xmlns:ds=\"{}\"><ds:SignedInfo>{body}<ds:SignatureValue>{}</ds:SignatureValue><ds:KeyInfo><ds:X509Data>{certs}</ds:X509Data></ds:KeyInfo></ds:Signature>",
        ns::DS,
        b64.encode(sig)
    );
    let at = xml.find("</saml:Issuer>").expect("an Issuer") + "</saml:Issuer>".len();
    format!("{}{}{}", &xml[..at], signature, &xml[at..])
}

/// Sign `xml` with signxml (the independent peer, `tests/peers/signxml_sign.py`) with `key`, its
/// certificate `cert_der` in `KeyInfo`: `xml` is a bare assertion we wrote, with or without a
/// signature; the new one goes right after `Issuer`.
pub fn signxml_sign(xml: &str, key: &TestKey, cert_der: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let unsigned = if xml.contains("<ds:Signature") {
        strip_signature(xml)
    } else {
        xml.to_owned()
    };
    let at = unsigned.find("</saml:Issuer>").expect("an Issuer") + "</saml:Issuer>".len();
    let with_placeholder = format!(
        "{}<ds:Signature xmlns:ds=\"{}\" Id=\"placeholder\"></ds:Signature>{}",
        &unsigned[..at],
        ns::DS,
        &unsigned[at..]
    );
    let (doc, key_file, cert_file) = (
        dir.path().join("unsigned.xml"),
        dir.path().join("key.pem"),
        dir.path().join("cert.pem"),
    );
    std::fs::write(&doc, with_placeholder).unwrap();
    std::fs::write(&key_file, &key.pkcs8_pem).unwrap();
    std::fs::write(&cert_file, pem("CERTIFICATE", cert_der)).unwrap();
    let out = std::process::Command::new(peers_python())
        .arg(crate_dir().join("tests/peers/signxml_sign.py"))
        .args([&doc, &key_file, &cert_file])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "signxml_sign.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Remove the `ds:Signature` element of a document we wrote (compact form).
pub fn strip_signature(xml: &str) -> String {
    let start = xml.find("<ds:Signature").unwrap();
    let end = xml.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    format!("{}{}", &xml[..start], &xml[end..])
}

/// Run a command, returning (status success, stdout+stderr).
pub fn run(cmd: &mut std::process::Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
