//! One certificate per shipped profile, issued with software CA keys through
//! `issue_certificate`, then checked by other implementations: pkilint (`lint_pkix_cert lint
//! -s WARNING` must print nothing), `openssl verify` (chain, purpose, host name and explicit
//! policy) and `openssl x509 -text` (the key fields).
//!
//! pkilint is taken from `$CPS_TRUST_PEERS_VENV/bin` (default `<repo>/.peers/venv/bin`) or PATH;
//! the test fails when it is missing (`scripts/install-deps.sh` installs it). Its verdict is the
//! findings of its JSON report (`cps_trust_tests::pkilint`), never its stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

use cps_hsm::{KeyAlgorithm, SignatureAlgorithm, Signer, SoftwareSigner};
use cps_pki::hierarchy::{self, PublicationPoints};
use cps_pki::keycheck::KeyPolicy;
use cps_pki::{
    CertificateParams, DistinguishedName, Issuer, IssuerInfo, OrganisationIdentity, PersonIdentity,
    Profile, SubjectAltName, builtin_profiles, end_entity_params, issue_certificate,
    parse_certificate, parse_csr, pem_encode, serial_from_random, verify_issued_by,
};
use cps_trust_tests::pkilint::{self, Linter};

const NOW: i64 = 1_790_000_000; // 2026-09
const BASE: &str = "http://pki.cps-trust.example:8080";

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn openssl(args: &[&str]) -> String {
    let (ok, text) = run(Command::new("openssl").args(args));
    assert!(ok, "openssl {args:?} failed:\n{text}");
    text
}

/// A PKCS#8 RSA key made by openssl, loaded as a software signer.
fn rsa_key(dir: &Path, name: &str, bits: u32) -> (SoftwareSigner, PathBuf) {
    let pem = dir.join(format!("{name}.key.pem"));
    let der = dir.join(format!("{name}.key.der"));
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        &format!("rsa_keygen_bits:{bits}"),
        "-out",
        pem.to_str().unwrap(),
    ]);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        pem.to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        der.to_str().unwrap(),
    ]);
    let signer = SoftwareSigner::from_pkcs8(name, &std::fs::read(&der).unwrap()).unwrap();
    (signer, pem)
}

fn ec_key_file(dir: &Path, name: &str, curve: &str) -> PathBuf {
    let pem = dir.join(format!("{name}.key.pem"));
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        &format!("ec_paramgen_curve:{curve}"),
        "-out",
        pem.to_str().unwrap(),
    ]);
    pem
}

struct Ca {
    id: &'static str,
    name: DistinguishedName,
    key: SoftwareSigner,
    signature: SignatureAlgorithm,
    der: Vec<u8>,
    pem: PathBuf,
}

impl Ca {
    fn info(&self) -> IssuerInfo {
        let parsed = parse_certificate(&self.der).unwrap();
        IssuerInfo {
            ca_id: self.id.into(),
            key_id: parsed.subject_key_id.unwrap(),
            not_after: Some(parsed.not_after),
            points: PublicationPoints {
                crl: vec![format!("{BASE}/crl/{}.crl", self.id)],
                ca_issuers: vec![format!("{BASE}/ca/{}.der", self.id)],
                ocsp: vec![format!("{BASE}/ocsp")],
            },
        }
    }

    fn issuer(&self) -> Issuer<'_> {
        Issuer {
            name: &self.name,
            signer: &self.key,
            signature: self.signature,
        }
    }
}

fn serial(n: u8) -> cps_pki::Serial {
    let mut r = [n; 16];
    r[15] = n.wrapping_mul(37);
    serial_from_random(r)
}

fn write_pem(dir: &Path, name: &str, der: &[u8]) -> PathBuf {
    let p = dir.join(format!("{name}.pem"));
    std::fs::write(&p, pem_encode("CERTIFICATE", der)).unwrap();
    p
}

fn lint(pem: &Path) {
    pkilint::assert_clean(Linter::Certificate, pem);
}

fn text_of(pem: &Path) -> String {
    openssl(&["x509", "-noout", "-text", "-in", pem.to_str().unwrap()])
}

fn profile(name: &str) -> Profile {
    builtin_profiles().get(name).unwrap().clone()
}

struct Pki {
    dir: tempfile::TempDir,
    root: Ca,
    personnes: Ca,
    organisations: Ca,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root_key = SoftwareSigner::generate("root", KeyAlgorithm::EcP384).unwrap();
    let root_name =
        DistinguishedName::parse("CN=cps-trust Root CA, OU=cps-trust IGC, O=cps-trust, C=FR")
            .unwrap();
    let root_params = end_entity_params(
        &profile("root-ca"),
        &root_name,
        &[],
        root_key.public_key_der(),
        serial(1),
        NOW - 3600,
        &IssuerInfo::default(),
    )
    .unwrap();
    // Same extension set as the ceremony's hierarchy module.
    assert_eq!(
        root_params.extensions,
        hierarchy::root_ca(root_key.public_key_der(), None).unwrap()
    );
    let root_der = issue_certificate(
        &root_params,
        &Issuer {
            name: &root_name,
            signer: &root_key,
            signature: SignatureAlgorithm::EcdsaSha384,
        },
    )
    .unwrap();
    let root = Ca {
        id: "root",
        name: root_name,
        key: root_key,
        signature: SignatureAlgorithm::EcdsaSha384,
        pem: write_pem(d, "root", &root_der),
        der: root_der,
    };
    let mut root_info = root.info();
    root_info.points.ocsp.clear();

    let issuing = |id: &'static str, key: SoftwareSigner, sig, n| {
        let name = DistinguishedName::parse(&format!(
            "CN=cps-trust AC {id}, OU=cps-trust IGC, O=cps-trust, C=FR"
        ))
        .unwrap();
        let prof = profile(&format!("ca-{id}"));
        let params = end_entity_params(
            &prof,
            &name,
            &[],
            key.public_key_der(),
            serial(n),
            NOW - 3600,
            &root_info,
        )
        .unwrap();
        assert_eq!(
            params.extensions,
            hierarchy::issuing_ca(
                key.public_key_der(),
                &root_info.key_id,
                &prof.policies,
                &root_info.points
            )
            .unwrap(),
            "ca-{id} profile and hierarchy::issuing_ca agree"
        );
        let der = issue_certificate(&params, &root.issuer()).unwrap();
        verify_issued_by(&der, root.key.public_key_der()).unwrap();
        Ca {
            id,
            name,
            key,
            signature: sig,
            pem: write_pem(d, &format!("ca-{id}"), &der),
            der,
        }
    };
    let personnes = issuing(
        "personnes",
        SoftwareSigner::generate("personnes", KeyAlgorithm::EcP256).unwrap(),
        SignatureAlgorithm::EcdsaSha256,
        2,
    );
    let (org_key, _) = rsa_key(d, "organisations", 3072);
    let organisations = issuing(
        "organisations",
        org_key,
        SignatureAlgorithm::RsaPkcs1Sha256,
        3,
    );
    Pki {
        dir,
        root,
        personnes,
        organisations,
    }
}

/// Issue, write, lint with pkilint and verify the chain with openssl.
fn issue_and_check(pki: &Pki, ca: &Ca, name: &str, params: &CertificateParams) -> PathBuf {
    let der = issue_certificate(params, &ca.issuer()).unwrap();
    verify_issued_by(&der, ca.key.public_key_der()).unwrap();
    let pem = write_pem(pki.dir.path(), name, &der);
    lint(&pem);
    let out = openssl(&[
        "verify",
        "-attime",
        &(NOW + 60).to_string(),
        "-CAfile",
        pki.root.pem.to_str().unwrap(),
        "-untrusted",
        ca.pem.to_str().unwrap(),
        pem.to_str().unwrap(),
    ]);
    assert!(out.contains(": OK"), "{out}");
    pem
}

fn verify_with(pki: &Pki, ca: &Ca, pem: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "verify".to_string(),
        "-attime".into(),
        (NOW + 60).to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend([
        "-CAfile".into(),
        pki.root.pem.display().to_string(),
        "-untrusted".into(),
        ca.pem.display().to_string(),
        pem.display().to_string(),
    ]);
    run(Command::new("openssl").args(&args))
}

#[test]
fn hierarchy_certificates_pass_pkilint() {
    let pki = pki();
    lint(&pki.root.pem);
    lint(&pki.personnes.pem);
    lint(&pki.organisations.pem);
    for ca in [&pki.personnes, &pki.organisations] {
        let out = openssl(&[
            "verify",
            "-attime",
            &(NOW + 60).to_string(),
            "-CAfile",
            pki.root.pem.to_str().unwrap(),
            ca.pem.to_str().unwrap(),
        ]);
        assert!(out.contains(": OK"), "{out}");
    }
    // OCSP signer of each CA, compared with the ceremony's extension set.
    for (ca, n) in [(&pki.personnes, 10u8), (&pki.organisations, 11)] {
        let key = SoftwareSigner::generate("ocsp", KeyAlgorithm::EcP256).unwrap();
        let name = DistinguishedName::parse(&format!(
            "CN=cps-trust AC {} OCSP, OU=cps-trust IGC, O=cps-trust, C=FR",
            ca.id
        ))
        .unwrap();
        let mut info = ca.info();
        info.points.ocsp.clear();
        let params = end_entity_params(
            &profile("ocsp-signer"),
            &name,
            &[],
            key.public_key_der(),
            serial(n),
            NOW,
            &info,
        )
        .unwrap();
        assert_eq!(
            params.extensions,
            hierarchy::ocsp_signer(key.public_key_der(), &info.key_id, &[], &info.points).unwrap()
        );
        let pem = issue_and_check(&pki, ca, &format!("ocsp-{}", ca.id), &params);
        let t = text_of(&pem);
        assert!(
            t.contains("OCSP Signing") && t.contains("OCSP No Check"),
            "{t}"
        );
    }
}

/// The pkilint gate itself: certificates with known defects are reported with their finding
/// codes, and a warning the interpreter writes on stderr (as `cryptography` 51 does for DSA)
/// neither fails a clean certificate nor hides a defect.
#[test]
fn pkilint_gate_reports_known_defects_and_ignores_stderr_noise() {
    let pki = pki();
    let d = pki.dir.path();
    // One of ours with a defect: the root's extensions without the key usage.
    let mut params = end_entity_params(
        &profile("root-ca"),
        &pki.root.name,
        &[],
        pki.root.key.public_key_der(),
        serial(99),
        NOW - 3600,
        &IssuerInfo::default(),
    )
    .unwrap();
    let before = params.extensions.len();
    params
        .extensions
        .retain(|e| e.extn_id.to_string() != "2.5.29.15");
    assert_eq!(
        params.extensions.len(),
        before - 1,
        "the root has a key usage"
    );
    let no_ku = write_pem(
        d,
        "root-without-ku",
        &issue_certificate(&params, &pki.root.issuer()).unwrap(),
    );
    // One made by openssl: serial 0, keyCertSign on an end entity, key usage not critical.
    let defect = d.join("defect.pem");
    let defect_key = ec_key_file(d, "defect", "P-256");
    let (key, out) = (defect_key.to_str().unwrap(), defect.to_str().unwrap());
    openssl(&[
        "req",
        "-x509",
        "-key",
        key,
        "-out",
        out,
        "-subj",
        "/CN=defect",
        "-set_serial",
        "0",
        "-addext",
        "keyUsage=digitalSignature,keyCertSign",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ]);
    let expected: [(&Path, &[&str]); 3] = [
        (&pki.root.pem, &[]),
        (&no_ku, &["pkix.ca_certificate_no_ku_extension"]),
        (
            &defect,
            &[
                "pkix.certificate_serial_number_out_of_range",
                "pkix.key_usage_extension_not_critical",
                "pkix.ee_certificate_keycertsign_keyusage_set",
            ],
        ),
    ];

    // The real program, then the same behind a wrapper that first writes a warning on stderr.
    let real = pkilint::program(Linter::Certificate);
    let noisy = d.join("lint_pkix_cert-noisy");
    std::fs::write(
        &noisy,
        format!(
            "#!/bin/sh\necho 'key.py:119: CryptographyDeprecationWarning: DSA is deprecated' >&2\nexec '{}' \"$@\"\n",
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&noisy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for program in [&real, &noisy] {
        for (pem, codes) in &expected {
            let report = pkilint::lint_with(program, Linter::Certificate, pem)
                .unwrap_or_else(|e| panic!("{e}"));
            let mut got = report.codes();
            got.sort_unstable();
            let mut want = codes.to_vec();
            want.sort_unstable();
            assert_eq!(got, want, "{} with {}", pem.display(), program.display());
            if program == &noisy {
                assert!(report.stderr.contains("DeprecationWarning"), "{report:?}");
            }
        }
    }
    // A file pkilint cannot read is no verdict at all, not a pass.
    let garbage = d.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let err = pkilint::lint_with(&real, Linter::Certificate, &garbage).unwrap_err();
    assert!(err.contains("not a pkilint JSON report"), "{err}");
}

fn person() -> PersonIdentity {
    PersonIdentity {
        idnat_ps: "810002813839".into(),
        surname: "DONNAT-GADY".into(),
        given_name: "ISABELLE".into(),
        profession_code: "10".into(),
    }
}

#[test]
fn cps_person_certificates() {
    let pki = pki();
    let ca = &pki.personnes;
    let subject = person().subject().unwrap();
    let (rsa, _) = rsa_key(pki.dir.path(), "card-sign", 2048);
    let ec = SoftwareSigner::generate("card-auth", KeyAlgorithm::EcP256).unwrap();
    for (prof, key, n, sans) in [
        (
            "cps-auth",
            &ec as &dyn Signer,
            20u8,
            vec![SubjectAltName::Email(
                "isabelle.donnat@sante.example".into(),
            )],
        ),
        ("cps-sign", &rsa as &dyn Signer, 21, vec![]),
    ] {
        let p = profile(prof);
        let params = end_entity_params(
            &p,
            &subject,
            &sans,
            key.public_key_der(),
            serial(n),
            NOW,
            &ca.info(),
        )
        .unwrap();
        let pem = issue_and_check(&pki, ca, prof, &params);

        // Subject: multi-valued first RDN, then title and C.
        let subj = openssl(&[
            "x509",
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
            "-in",
            pem.to_str().unwrap(),
        ]);
        let subj = subj.trim().trim_start_matches("subject=");
        let rdns: Vec<&str> = subj.split(',').collect();
        assert_eq!(rdns.len(), 3, "{subj}");
        let mut first: Vec<&str> = rdns[0].split('+').collect();
        first.sort();
        assert_eq!(
            first,
            ["CN=810002813839", "GN=ISABELLE", "SN=DONNAT-GADY"],
            "{subj}"
        );
        assert_eq!(rdns[2], "C=FR", "{subj}");
        assert!(
            rdns[1] == "title=Médecin" || rdns[1] == "title=M\\C3\\A9decin",
            "{subj}"
        );

        let t = text_of(&pem);
        let policy = p.policies[0].as_str();
        assert!(t.contains(policy), "{t}");
        assert!(t.contains(&format!("OCSP - URI:{BASE}/ocsp")), "{t}");
        assert!(
            t.contains(&format!("CA Issuers - URI:{BASE}/ca/personnes.der")),
            "{t}"
        );
        assert!(t.contains(&format!("URI:{BASE}/crl/personnes.crl")), "{t}");
        assert!(t.contains("X509v3 Subject Key Identifier"), "{t}");
        assert!(t.contains("X509v3 Authority Key Identifier"), "{t}");
        assert!(t.contains("X509v3 Key Usage: critical"), "{t}");
        // The chain asserts the end-entity policy (explicit policy checking).
        let (ok, out) = verify_with(
            &pki,
            ca,
            &pem,
            &["-policy_check", "-explicit_policy", "-policy", policy],
        );
        assert!(ok && out.contains(": OK"), "{out}");
        if prof == "cps-auth" {
            assert!(
                t.contains("Digital Signature") && !t.contains("Non Repudiation"),
                "{t}"
            );
            assert!(t.contains("TLS Web Client Authentication"), "{t}");
            assert!(t.contains("email:isabelle.donnat@sante.example"), "{t}");
            let (ok, out) = verify_with(&pki, ca, &pem, &["-purpose", "sslclient"]);
            assert!(ok, "{out}");
        } else {
            assert!(
                t.contains("Non Repudiation") && !t.contains("Digital Signature"),
                "{t}"
            );
            assert!(!t.contains("Extended Key Usage"), "{t}");
            assert!(!t.contains("Subject Alternative Name"), "{t}");
        }
    }
}

fn org(cn: &str) -> OrganisationIdentity {
    OrganisationIdentity {
        state: "Seine-Maritime (76)".into(),
        name: "Centre Hospitalier Exemple".into(),
        structure_id: "10B0152872".into(),
        common_name: cn.into(),
    }
}

/// A CSR made by openssl for an existing key file.
fn openssl_csr(dir: &Path, name: &str, key: &Path, subj: &str, san: Option<&str>) -> Vec<u8> {
    let out = dir.join(format!("{name}.csr.pem"));
    let mut args = vec![
        "req".to_string(),
        "-new".into(),
        "-key".into(),
        key.display().to_string(),
        "-subj".into(),
        subj.into(),
        "-out".into(),
        out.display().to_string(),
    ];
    if let Some(s) = san {
        args.push("-addext".into());
        args.push(format!("subjectAltName={s}"));
    }
    let (ok, text) = run(Command::new("openssl").args(&args));
    assert!(ok, "{text}");
    std::fs::read(out).unwrap()
}

#[test]
fn organisation_certificates_from_openssl_requests() {
    let pki = pki();
    let ca = &pki.organisations;
    let d = pki.dir.path();

    // TLS server, RSA: the CSR asks for an extra name and an IP; the CN is added to the SAN.
    let (_, rsa_pem) = rsa_key(d, "server-rsa", 2048);
    let csr = openssl_csr(
        d,
        "server-rsa",
        &rsa_pem,
        "/C=FR/O=ignored/CN=dmp-gw.chu.example",
        Some("DNS:alt.chu.example,IP:192.0.2.10"),
    );
    let req = parse_csr(&csr, &KeyPolicy::default()).unwrap();
    assert_eq!(
        req.sans,
        [
            SubjectAltName::Dns("alt.chu.example".into()),
            SubjectAltName::Ip("192.0.2.10".parse().unwrap())
        ]
    );
    let subject = org("dmp-gw.chu.example").subject().unwrap();
    let params = end_entity_params(
        &profile("org-tls-server"),
        &subject,
        &req.sans,
        &req.spki_der,
        serial(30),
        NOW,
        &ca.info(),
    )
    .unwrap();
    let pem = issue_and_check(&pki, ca, "org-tls-server-rsa", &params);
    let t = text_of(&pem);
    assert!(
        t.contains("DNS:dmp-gw.chu.example, DNS:alt.chu.example, IP Address:192.0.2.10"),
        "{t}"
    );
    assert!(t.contains("Digital Signature, Key Encipherment"), "{t}");
    assert!(t.contains("TLS Web Server Authentication"), "{t}");
    let (ok, out) = verify_with(
        &pki,
        ca,
        &pem,
        &[
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "dmp-gw.chu.example",
        ],
    );
    assert!(ok, "{out}");
    let (ok, _) = verify_with(&pki, ca, &pem, &["-verify_hostname", "other.chu.example"]);
    assert!(!ok, "host name mismatch must fail");

    // TLS server, EC P-256: no keyEncipherment; no SAN requested, the CN alone is the SAN.
    let ec_pem = ec_key_file(d, "server-ec", "P-256");
    let csr = openssl_csr(d, "server-ec", &ec_pem, "/CN=x", None);
    let req = parse_csr(&csr, &KeyPolicy::default()).unwrap();
    let params = end_entity_params(
        &profile("org-tls-server"),
        &org("atna.chu.example").subject().unwrap(),
        &req.sans,
        &req.spki_der,
        serial(31),
        NOW,
        &ca.info(),
    )
    .unwrap();
    let pem = issue_and_check(&pki, ca, "org-tls-server-ec", &params);
    let t = text_of(&pem);
    assert!(t.contains("DNS:atna.chu.example"), "{t}");
    assert!(
        t.contains("Digital Signature") && !t.contains("Key Encipherment"),
        "{t}"
    );

    // TLS client (ATNA node), P-384, application name as CN.
    let p384 = ec_key_file(d, "client", "P-384");
    let csr = openssl_csr(
        d,
        "client",
        &p384,
        "/CN=node",
        Some("DNS:node7.chu.example"),
    );
    let req = parse_csr(&csr, &KeyPolicy::default()).unwrap();
    let params = end_entity_params(
        &profile("org-tls-client"),
        &org("DPI urgences - noeud ATNA 7").subject().unwrap(),
        &req.sans,
        &req.spki_der,
        serial(32),
        NOW,
        &ca.info(),
    )
    .unwrap();
    let pem = issue_and_check(&pki, ca, "org-tls-client", &params);
    let t = text_of(&pem);
    assert!(
        t.contains("TLS Web Client Authentication") && !t.contains("Server Authentication"),
        "{t}"
    );
    assert!(
        t.contains("OU=10B0152872") || t.contains("OU = 10B0152872"),
        "{t}"
    );
    let (ok, out) = verify_with(&pki, ca, &pem, &["-purpose", "sslclient"]);
    assert!(ok, "{out}");
    let (ok, _) = verify_with(&pki, ca, &pem, &["-purpose", "sslserver"]);
    assert!(!ok, "a client certificate is not a server certificate");

    // ATNA secure node, P-256: one certificate for both ends of its mutual-TLS links.
    let node_key = ec_key_file(d, "node", "P-256");
    let csr = openssl_csr(d, "node", &node_key, "/CN=x", Some("IP:127.0.0.1"));
    let req = parse_csr(&csr, &KeyPolicy::default()).unwrap();
    let params = end_entity_params(
        &profile("node-tls"),
        &org("arr.chu.example").subject().unwrap(),
        &req.sans,
        &req.spki_der,
        serial(34),
        NOW,
        &ca.info(),
    )
    .unwrap();
    let pem = issue_and_check(&pki, ca, "node-tls", &params);
    let t = text_of(&pem);
    assert!(
        t.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{t}"
    );
    assert!(
        t.contains("DNS:arr.chu.example, IP Address:127.0.0.1"),
        "{t}"
    );
    for purpose in ["sslclient", "sslserver"] {
        let (ok, out) = verify_with(&pki, ca, &pem, &["-purpose", purpose]);
        assert!(ok, "node certificate as {purpose}: {out}");
    }

    // An organisation certificate of `profile` for a fresh P-256 software key.
    let software = |profile_name: &str, cn: &str, n: u8| {
        let key = SoftwareSigner::generate(profile_name, KeyAlgorithm::EcP256).unwrap();
        let params = end_entity_params(
            &profile(profile_name),
            &org(cn).subject().unwrap(),
            &[],
            key.public_key_der(),
            serial(n),
            NOW,
            &ca.info(),
        )
        .unwrap();
        issue_and_check(&pki, ca, profile_name, &params)
    };
    // Cachet: digitalSignature + nonRepudiation, documentSigning only.
    let pem = software("org-cachet", "cps-trust XUA assertions", 33);
    let t = text_of(&pem);
    assert!(t.contains("Digital Signature, Non Repudiation"), "{t}");
    assert!(
        t.contains("1.3.6.1.5.5.7.3.36") || t.contains("Document Signing"),
        "{t}"
    );
    for purpose in ["sslclient", "sslserver"] {
        let (ok, _) = verify_with(&pki, ca, &pem, &["-purpose", purpose]);
        assert!(!ok, "a cachet certificate must not pass as {purpose}");
    }
    // Audit checkpoint signer, P-256: digitalSignature and only its private purpose, so it
    // passes for none of openssl's purposes (TLS either way, S/MIME, code signing, time
    // stamping).
    let pem = software("audit-checkpoint", "cps-trust audit checkpoints", 34);
    let t = text_of(&pem);
    assert!(t.contains("Digital Signature"), "{t}");
    assert!(!t.contains("Non Repudiation"), "{t}");
    assert!(t.contains("1.3.6.1.4.1.32473.3.1"), "{t}");
    assert!(
        !t.contains("Document Signing") && !t.contains("1.3.6.1.5.5.7.3.36"),
        "{t}"
    );
    for purpose in [
        "sslclient",
        "sslserver",
        "smimesign",
        "codesign",
        "smimeencrypt",
        "timestampsign",
    ] {
        let (ok, _) = verify_with(&pki, ca, &pem, &["-purpose", purpose]);
        assert!(!ok, "a checkpoint certificate must not pass as {purpose}");
    }
    // Time-stamping authority: timeStamping only, critical (RFC 3161 §2.3); openssl accepts it
    // for time stamping and for no TLS or S/MIME purpose.
    let pem = software("tsa", "cps-trust TSA", 35);
    let t = text_of(&pem);
    assert!(t.contains("X509v3 Extended Key Usage: critical"), "{t}");
    assert!(t.contains("Time Stamping"), "{t}");
    assert!(t.contains("Digital Signature"), "{t}");
    let (ok, out) = verify_with(&pki, ca, &pem, &["-purpose", "timestampsign"]);
    assert!(ok, "a TSA certificate must pass as timestampsign: {out}");
    for purpose in ["sslclient", "sslserver", "smimesign", "codesign"] {
        let (ok, _) = verify_with(&pki, ca, &pem, &["-purpose", purpose]);
        assert!(!ok, "a TSA certificate must not pass as {purpose}");
    }
    for (prof, pem_name) in [
        ("tsa", "tsa"),
        ("org-tls-server", "org-tls-server-rsa"),
        ("org-tls-client", "org-tls-client"),
        ("org-cachet", "org-cachet"),
        ("node-tls", "node-tls"),
        ("audit-checkpoint", "audit-checkpoint"),
    ] {
        let policy = profile(prof).policies[0].as_str().to_owned();
        let (ok, out) = verify_with(
            &pki,
            ca,
            &d.join(format!("{pem_name}.pem")),
            &["-policy_check", "-explicit_policy", "-policy", &policy],
        );
        assert!(ok, "{prof}: {out}");
    }
}

#[test]
fn profiles_refuse_what_they_do_not_allow() {
    let pki = pki();
    let d = pki.dir.path();
    let subject = person().subject().unwrap();
    let ec = SoftwareSigner::generate("k", KeyAlgorithm::EcP256).unwrap();
    let err = |p: &str, s: &DistinguishedName, sans: &[SubjectAltName], spki: &[u8], ca: &Ca| {
        end_entity_params(&profile(p), s, sans, spki, serial(40), NOW, &ca.info())
            .unwrap_err()
            .to_string()
    };
    // Wrong CA for the profile.
    assert!(
        err(
            "cps-auth",
            &subject,
            &[],
            ec.public_key_der(),
            &pki.organisations
        )
        .contains("issued by personnes, not by 'organisations'")
    );
    // Organisation subject under a person profile, and the reverse.
    let org_dn = org("a.chu.example").subject().unwrap();
    assert!(
        err(
            "cps-auth",
            &org_dn,
            &[],
            ec.public_key_der(),
            &pki.personnes
        )
        .contains("is not a CPS person subject")
    );
    assert!(
        err(
            "org-tls-server",
            &subject,
            &[],
            ec.public_key_der(),
            &pki.organisations
        )
        .contains("is not an organisation subject")
    );
    // SAN types the profile forbids.
    assert!(
        err(
            "cps-sign",
            &subject,
            &[SubjectAltName::Dns("a.example.fr".into())],
            ec.public_key_der(),
            &pki.personnes
        )
        .contains("of type dns are not allowed")
    );
    // TLS server whose CN is not a host name.
    assert!(
        err(
            "org-tls-server",
            &org("Mon application").subject().unwrap(),
            &[],
            ec.public_key_der(),
            &pki.organisations
        )
        .contains("must be a host name")
    );
    // 1024-bit RSA (CoolKey-style card) refused by the key policy.
    let pem = d.join("small.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        pem.to_str().unwrap(),
    ]);
    let spki = d.join("small.spki.der");
    openssl(&[
        "pkey",
        "-in",
        pem.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
        "-out",
        spki.to_str().unwrap(),
    ]);
    let small = std::fs::read(&spki).unwrap();
    assert!(
        err("cps-auth", &subject, &[], &small, &pki.personnes)
            .contains("RSA modulus of 1024 bits is too small")
    );
    let csr = openssl_csr(d, "small", &pem, "/CN=x", None);
    assert_eq!(
        parse_csr(&csr, &KeyPolicy::default())
            .unwrap_err()
            .to_string(),
        "public key refused: RSA modulus of 1024 bits is too small (at least 2048)"
    );
    // A CA profile key algorithm list (no rsa2048) is enforced.
    let (rsa2048, _) = rsa_key(d, "r2048", 2048);
    assert!(
        end_entity_params(
            &profile("ca-personnes"),
            &DistinguishedName::parse("CN=x,C=FR").unwrap(),
            &[],
            rsa2048.public_key_der(),
            serial(41),
            NOW,
            &pki.root.info(),
        )
        .unwrap_err()
        .to_string()
        .contains("rsa2048 keys are not allowed")
    );
    // The certificate never outlives its CA, and an expired CA issues nothing.
    let mut info = pki.personnes.info();
    info.not_after = Some(NOW + 86_400);
    let p = end_entity_params(
        &profile("cps-auth"),
        &subject,
        &[],
        ec.public_key_der(),
        serial(42),
        NOW,
        &info,
    )
    .unwrap();
    assert_eq!(p.not_after, NOW + 86_400);
    info.not_after = Some(NOW - 1);
    assert!(
        end_entity_params(
            &profile("cps-auth"),
            &subject,
            &[],
            ec.public_key_der(),
            serial(42),
            NOW,
            &info
        )
        .unwrap_err()
        .to_string()
        .contains("has expired")
    );
    // A CA without an OCSP URL cannot issue under a profile that writes one.
    let mut info = pki.personnes.info();
    info.points.ocsp.clear();
    assert!(
        end_entity_params(
            &profile("cps-auth"),
            &subject,
            &[],
            ec.public_key_der(),
            serial(43),
            NOW,
            &info
        )
        .unwrap_err()
        .to_string()
        .contains("OCSP URL")
    );
}

#[test]
fn tampered_openssl_request_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let key = ec_key_file(d.path(), "k", "P-256");
    let pem = openssl_csr(d.path(), "k", &key, "/CN=host.chu.example", None);
    let der = {
        let text = String::from_utf8(pem).unwrap();
        let (_, der) = der::pem::decode_vec(text.as_bytes()).unwrap();
        der
    };
    parse_csr(&der, &KeyPolicy::default()).unwrap();
    let pos = der.windows(4).position(|w| w == b"host").unwrap();
    let mut bad = der.clone();
    bad[pos] = b'g';
    assert_eq!(
        parse_csr(&bad, &KeyPolicy::default()).unwrap_err(),
        cps_pki::CsrError::BadSignature
    );
}
