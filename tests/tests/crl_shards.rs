//! Partitioned CRLs checked by other implementations: `openssl verify -crl_check` with each shard
//! CRL, pkilint on each shard CRL and on a sharded certificate; and a CA with a million
//! revocations, whose shard CRLs (built by the CA's own code path) each stay under 10 MB while a
//! certificate's distribution point leads to the shard that lists it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cps_ca::crl::{Partition, partition_entries, shard_of, sharded_serial};
use cps_ca::{CaConfig, CaService, IssueRequest, OpenGate, RevocationReason, SubjectRequest};
use cps_hsm::{KeyAlgorithm, SigFormat, Signer, SoftwareSigner};
use cps_pki::{DistinguishedName, PersonIdentity, pem_encode};
use cps_store::{CertificateRecord, RevokedEntry, SledStore, Store};
use cps_trust_tests::pkilint::{self, Linter};

const BASE: &str = "http://127.0.0.1:8080";
const SHARDS: u16 = 16;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Fx {
    dir: tempfile::TempDir,
    ca: CaService,
    /// root then personnes, PEM.
    chain: PathBuf,
}

fn fx(shards: u16) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    let profiles = cps_pki::profile::builtin_profiles();
    let h = cps_ca::hierarchy::software(&profiles, &["personnes"], BASE, now() - 3600).unwrap();
    let chain = dir.path().join("chain.pem");
    let pems: String = ["root", "personnes"]
        .iter()
        .map(|id| pem_encode("CERTIFICATE", h.certificate(id).unwrap()))
        .collect();
    std::fs::write(&chain, pems).unwrap();
    let ca = CaService::new(
        h.authorities,
        store,
        profiles,
        Arc::new(OpenGate),
        CaConfig {
            public_base_url: BASE.into(),
            crl_validity_secs: 86_400,
            key_policy: cps_pki::KeyPolicy::default(),
            reserved_profiles: vec![],
            node_id: "node-1".into(),
            crl_lease_secs: 60,
            crl_shards: [("personnes".to_string(), shards)].into(),
        },
    );
    Fx { dir, ca, chain }
}

impl Fx {
    fn issue(&self) -> CertificateRecord {
        let k = SoftwareSigner::generate("holder", KeyAlgorithm::EcP256).unwrap();
        let alg = k.key_algorithm().default_signature();
        let csr = cps_pki::build_csr(
            &DistinguishedName::parse("CN=ignored").unwrap(),
            k.public_key_der(),
            alg,
            |tbs| k.sign(alg, tbs, SigFormat::Der),
        )
        .unwrap();
        let req = IssueRequest {
            profile: "cps-auth".into(),
            csr,
            subject: SubjectRequest::Person(PersonIdentity {
                idnat_ps: "810002813839".into(),
                surname: "Martin".into(),
                given_name: "Claire".into(),
                profession_code: "10".into(),
            }),
            sans: vec![],
            holder: "810002813839".into(),
        };
        self.ca.issue(&req, "test", now() - 60).unwrap()
    }

    fn write(&self, name: &str, label: &str, der: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, pem_encode(label, der)).unwrap();
        p
    }

    /// `openssl verify -crl_check` of `cert` with the chain and one CRL: (success, output).
    fn verify(&self, cert: &Path, crl: &Path) -> (bool, String) {
        let out = Command::new("openssl")
            .args(["verify", "-crl_check", "-CAfile"])
            .arg(&self.chain)
            .arg("-CRLfile")
            .arg(crl)
            .arg(cert)
            .output()
            .expect("openssl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

/// The URL in a certificate's CRL distribution points, as openssl prints it.
fn crl_dp(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "crlDistributionPoints", "-in"])
        .arg(cert)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("URI:"))
        .unwrap_or_else(|| panic!("no CRL DP URI in {text}"))
        .to_string()
}

#[test]
fn each_shard_crl_passes_openssl_and_pkilint() {
    let f = fx(4);
    // Certificates until every shard has one (4 shards: a few dozen at most).
    let mut by_shard: Vec<Option<CertificateRecord>> = vec![None; 4];
    for _ in 0..200 {
        let c = f.issue();
        let k = usize::from(shard_of(&c.serial).expect("a sharded serial"));
        by_shard[k].get_or_insert(c);
        if by_shard.iter().all(Option::is_some) {
            break;
        }
    }
    let certs: Vec<CertificateRecord> = by_shard.into_iter().map(Option::unwrap).collect();
    // Shards 0 and 2 have their certificate revoked.
    for c in [&certs[0], &certs[2]] {
        f.ca.revoke(
            "personnes",
            &c.serial,
            RevocationReason::KeyCompromise,
            None,
            "test",
            now(),
        )
        .unwrap();
    }
    let cert_files: Vec<PathBuf> = certs
        .iter()
        .enumerate()
        .map(|(k, c)| f.write(&format!("cert-{k}.pem"), "CERTIFICATE", &c.der))
        .collect();
    pkilint::assert_clean(Linter::Certificate, &cert_files[1]);
    let mut crl_files = Vec::new();
    for k in 0..4u16 {
        let part: Partition = Some(k);
        let der = f.ca.crl_partition("personnes", part, now()).unwrap();
        let crl = f.write(&format!("shard-{k}.crl.pem"), "X509 CRL", &der);
        pkilint::assert_clean(Linter::Crl, &crl);
        // The certificate names this shard's URL.
        assert_eq!(
            crl_dp(&cert_files[usize::from(k)]),
            f.ca.crl_url("personnes", part)
        );
        let (ok, text) = f.verify(&cert_files[usize::from(k)], &crl);
        if k % 2 == 0 {
            assert!(
                !ok && text.contains("certificate revoked"),
                "shard {k}: {text}"
            );
        } else {
            assert!(ok, "shard {k}: {text}");
        }
        crl_files.push(crl);
    }
    // A shard's CRL does not cover another shard's certificate: openssl refuses it as a CRL of
    // a different scope (its issuingDistributionPoint is not the certificate's distribution
    // point).
    let (ok, text) = f.verify(&cert_files[0], &crl_files[1]);
    assert!(!ok && text.contains("different CRL scope"), "{text}");
    let (ok, text) = f.verify(&cert_files[1], &crl_files[2]);
    assert!(!ok && text.contains("different CRL scope"), "{text}");
    // The CA's own URL keeps serving a CRL (for certificates issued before sharding), which
    // names itself and is clean too.
    let own = f.ca.crl("personnes", now()).unwrap();
    let own = f.write("own.crl.pem", "X509 CRL", &own);
    pkilint::assert_clean(Linter::Crl, &own);
}

/// A deterministic stream of random bytes (xorshift64*), for a million serials quickly.
struct Xs(u64);

impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes16(&mut self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next().to_be_bytes());
        b[8..].copy_from_slice(&self.next().to_be_bytes());
        b
    }
}

#[test]
fn a_million_revocations_stay_under_10_mb_per_shard() {
    const REVOKED: usize = 1_000_000;
    const LIMIT: usize = 10 * 1024 * 1024;
    let f = fx(SHARDS);
    let t = now();
    // One real certificate, revoked through the CA.
    let cert = f.issue();
    f.ca.revoke(
        "personnes",
        &cert.serial,
        RevocationReason::KeyCompromise,
        Some(t - 86_400),
        "test",
        t,
    )
    .unwrap();
    let mut revoked = f.ca.store().revoked_certificates("personnes").unwrap();
    assert_eq!(revoked.len(), 1);
    // 999 999 more, as the CA gives serials (each with a shard drawn at random), every entry
    // with a reason and an invalidity date (the largest entries there are).
    let mut rng = Xs(0x9E37_79B9_7F4A_7C15);
    for _ in 1..REVOKED {
        let shard = (rng.next() % u64::from(SHARDS)) as u16;
        revoked.push(RevokedEntry {
            serial: sharded_serial(rng.bytes16(), shard).as_bytes().to_vec(),
            time: t - (rng.next() % 86_400) as i64,
            reason: 1,
            invalidity_date: Some(t - 2 * 86_400),
            not_after: t + 365 * 86_400,
        });
    }
    // The CA's selection and signing, one shard at a time.
    let mut groups: Vec<Vec<RevokedEntry>> = vec![Vec::new(); usize::from(SHARDS)];
    for r in revoked {
        let k = shard_of(&r.serial).expect("sharded");
        groups[usize::from(k)].push(r);
    }
    let cert_shard = shard_of(&cert.serial).unwrap();
    let mut total = 0;
    let mut largest = 0;
    let mut listing = None;
    for (k, group) in groups.into_iter().enumerate() {
        let part = Some(k as u16);
        let entries = partition_entries(group, part, SHARDS, t, 86_400);
        total += entries.len();
        let der =
            f.ca.sign_crl("personnes", part, 100 + k as u64, t, &entries)
                .unwrap();
        assert!(der.len() < LIMIT, "shard {k}: {} bytes", der.len());
        largest = largest.max(der.len());
        if k == usize::from(cert_shard) {
            listing = Some(der);
        }
    }
    assert_eq!(total, REVOKED);
    eprintln!("{REVOKED} revocations in {SHARDS} shards: largest CRL {largest} bytes");
    // The certificate's distribution point is its shard's URL, and that CRL lists it: openssl,
    // given that CRL, says revoked.
    let cert_file = f.write("cert.pem", "CERTIFICATE", &cert.der);
    assert_eq!(
        crl_dp(&cert_file),
        f.ca.crl_url("personnes", Some(cert_shard))
    );
    let crl = f.write("listing.crl.pem", "X509 CRL", &listing.unwrap());
    let (ok, text) = f.verify(&cert_file, &crl);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
}

/// The appliance with a sharded `organisations` CA: a new certificate names its shard's URL,
/// that URL serves the shard CRL that revokes it (openssl agrees), the CA's own URL keeps
/// serving, and a shard the CA does not have is 404.
#[test]
fn a_sharded_appliance_serves_each_shard_at_its_url() {
    use cps_trust_tests::*;
    let (home, app) = Appliance::fresh_configured(Home::new(), |h| {
        let cfg = h.config_text().replace(
            "[ca.issuing.organisations]\n",
            "[ca.issuing.organisations]\ncrl_shards = 4\n",
        );
        assert!(cfg.contains("crl_shards = 4"));
        h.set_config_text(&cfg);
    });
    let dir = tempfile::tempdir().unwrap();
    let csr = openssl_csr(dir.path(), "org", "p256");
    let cert = dir.path().join("org.pem");
    assert_success(
        &issue_org(
            &home,
            &csr,
            &cert,
            "org-tls-client",
            "318751275100020",
            "dmp-connector",
            &[],
        ),
        "issue",
    );
    let url = crl_dp(&cert);
    let prefix = format!("http://{}/crl/organisations/", app.http);
    let shard: u16 = url
        .strip_prefix(&prefix)
        .and_then(|s| s.strip_suffix(".crl"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{url} is not a shard URL under {prefix}"));
    assert!(shard < 4);
    assert_success(
        &home.revoke("organisations", &serial_of(&cert), "keyCompromise"),
        "revoke",
    );
    let (code, der) = curl(&[&url]);
    assert_eq!(code, 200, "{}", text(&der));
    let crl = dir.path().join("shard.crl.pem");
    std::fs::write(&crl, pem_encode("X509 CRL", &der)).unwrap();
    pkilint::assert_clean(Linter::Crl, &crl);
    let chain = dir.path().join("chain.pem");
    let ca = home.join("ca");
    std::fs::write(
        &chain,
        ["root.pem", "organisations.pem"]
            .iter()
            .map(|p| std::fs::read_to_string(ca.join(p)).unwrap())
            .collect::<String>(),
    )
    .unwrap();
    let out = Command::new(peer("openssl"))
        .args(["verify", "-crl_check", "-CAfile"])
        .arg(&chain)
        .arg("-CRLfile")
        .arg(&crl)
        .arg(&cert)
        .output()
        .unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !out.status.success() && said.contains("certificate revoked"),
        "{said}"
    );
    // Every shard and the CA's own URL answer; no other.
    for k in 0..4 {
        let (code, _) = curl(&[&format!("{prefix}{k}.crl")]);
        assert_eq!(code, 200, "shard {k}");
    }
    let (code, _) = curl(&[&format!("http://{}/crl/organisations.crl", app.http)]);
    assert_eq!(code, 200);
    for bad in ["4.crl", "x.crl", "1", "99999999.crl", "..%2f..%2froot.crl"] {
        let (code, _) = curl(&[&format!("{prefix}{bad}")]);
        assert_eq!(code, 404, "{bad}");
    }
    let (code, _) = curl(&[&format!("http://{}/crl/nowhere/0.crl", app.http)]);
    assert_eq!(code, 404);
}
