//! `cps-trust init`: the first-run key ceremony, and `cps-trust ca show`.
//!
//! Order of the ceremony: refuse a non-empty home → (embedded HSM) SoftHSM2 configuration, PINs
//! and token → keys generated in the HSM → certificates signed in the HSM → self-check and chain
//! check → durable store records and audit event → published files → configuration file last.
//! If any step fails, everything written into the home is removed again (keys a vendor HSM
//! already holds are listed in the error so the operator can delete them).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cps_hsm::{Hsm, HsmKey, Signer};
use cps_pki::hierarchy::{self, PublicationPoints};
use cps_pki::{
    CertificateParams, Issuer, ParsedCertificate, issue_certificate, parse_certificate, pem_encode,
    serial_from_random, verify_issued_by,
};
use cps_store::{CertStatus, CertificateRecord, WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};

use crate::config::{CONFIG_FILE, CaKeyConfig, Config};
use crate::error::ApplianceError;
use crate::home::CA_DIR;

/// Seconds certificates are back-dated, to tolerate small clock differences at relying parties.
const BACKDATE_SECS: i64 = 60;

/// The SoftHSM2 configuration written into an embedded home (`@HOME@` = the home directory).
const SOFTHSM2_CONF_TEMPLATE: &str = include_str!("../../../hsm-config/softhsm2.conf.template");

/// What `init` produced.
#[derive(Debug)]
pub struct InitReport {
    pub home: PathBuf,
    pub token_label: String,
    pub embedded_hsm: bool,
    pub certificates: Vec<HierarchyEntry>,
}

/// One certificate of the hierarchy, as recorded in the store under the meta key `hierarchy`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HierarchyEntry {
    /// `root`, `<ca>` or `<ca>-ocsp`.
    pub id: String,
    /// Identifier of the issuing CA (`root` for the root itself).
    pub issuer_id: String,
    pub role: String,
    pub key_label: String,
    pub algorithm: String,
    pub serial: String,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    pub sha256: String,
}

impl HierarchyEntry {
    /// The entry of one hierarchy certificate, from its DER and its configuration.
    fn from_certificate(
        id: &str,
        issuer_id: &str,
        role: &str,
        cfg: &CaKeyConfig,
        der: &[u8],
    ) -> Result<Self, ApplianceError> {
        let p = parse_certificate(der)?;
        Ok(HierarchyEntry {
            id: id.into(),
            issuer_id: issuer_id.into(),
            role: role.into(),
            key_label: cfg.key_label.clone(),
            algorithm: cfg.algorithm.clone(),
            serial: p.serial.to_hex(),
            subject: p.subject.to_string(),
            not_before: p.not_before,
            not_after: p.not_after,
            sha256: hex::encode(p.sha256_fingerprint),
        })
    }
}

/// Path of `SOFTHSM2_CONF` for a configuration, if it uses the embedded SoftHSM2. The binary sets
/// the variable from this before any thread starts (SoftHSM2 reads it in `C_Initialize`).
pub fn softhsm_conf_path(home: &Path, config: &Config) -> Option<PathBuf> {
    config
        .hsm
        .softhsm2_conf
        .as_ref()
        .map(|p| config.resolve(home, p))
}

fn io_err(path: &Path, e: std::io::Error) -> ApplianceError {
    ApplianceError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), ApplianceError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(path, e))
}

fn write_public(path: &Path, contents: &[u8]) -> Result<(), ApplianceError> {
    std::fs::write(path, contents).map_err(|e| io_err(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| io_err(path, e))
}

fn mkdir_private(path: &Path) -> Result<(), ApplianceError> {
    std::fs::create_dir_all(path).map_err(|e| io_err(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_err(path, e))
}

fn random_pin(hsm_free_rng: &ring::rand::SystemRandom) -> Result<String, ApplianceError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 12];
    hsm_free_rng
        .fill(&mut b)
        .map_err(|_| ApplianceError::Refused("the system random generator failed".into()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Refuse unless `home` is absent or an empty directory.
fn check_home_is_fresh(home: &Path) -> Result<bool, ApplianceError> {
    match std::fs::read_dir(home) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(home, e)),
        Ok(mut entries) => match entries.next() {
            None => Ok(true),
            Some(first) => {
                let what = if home.join(CONFIG_FILE).exists() {
                    format!("it holds {CONFIG_FILE}: an appliance is already initialised there")
                } else {
                    format!(
                        "it is not empty (found '{}')",
                        first
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .unwrap_or_default()
                    )
                };
                Err(ApplianceError::Refused(format!(
                    "refusing to initialise {}: {what}; nothing was changed (use another --home to create a new appliance)",
                    home.display()
                )))
            }
        },
    }
}

/// The key ceremony. `now` is Unix seconds. The caller has set `SOFTHSM2_CONF` to
/// [`softhsm_conf_path`] when the configuration uses the embedded SoftHSM2.
pub fn init(home: &Path, config: &Config, now: i64) -> Result<InitReport, ApplianceError> {
    let existed = check_home_is_fresh(home)?;
    let result = init_inner(home, config, now);
    if result.is_err() {
        // Leave the home as it was: absent, or empty.
        if existed {
            if let Ok(entries) = std::fs::read_dir(home) {
                for e in entries.flatten() {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(home);
        }
    }
    result
}

fn init_inner(home: &Path, config: &Config, now: i64) -> Result<InitReport, ApplianceError> {
    mkdir_private(home)?;
    let embedded = config.hsm.softhsm2_conf.is_some();
    if embedded {
        let conf = softhsm_conf_path(home, config).unwrap_or_default();
        if std::env::var_os("SOFTHSM2_CONF").as_deref() != Some(conf.as_os_str()) {
            return Err(ApplianceError::Refused(format!(
                "SOFTHSM2_CONF must be set to {} before the HSM is opened",
                conf.display()
            )));
        }
        let tokens = home.join("softhsm").join("tokens");
        mkdir_private(&tokens)?;
        let home_text = home.to_str().ok_or_else(|| {
            ApplianceError::Refused(format!("home {} is not UTF-8", home.display()))
        })?;
        write_private(
            &conf,
            SOFTHSM2_CONF_TEMPLATE
                .replace("@HOME@", home_text)
                .as_bytes(),
        )?;
        let rng = ring::rand::SystemRandom::new();
        let user_pin = random_pin(&rng)?;
        let so_pin = random_pin(&rng)?;
        let secrets = home.join("secrets");
        mkdir_private(&secrets)?;
        if let cps_hsm::PinSource::File(p) = config.pin_source(home)? {
            if let Some(parent) = p.parent() {
                mkdir_private(parent)?;
            }
            write_private(&p, format!("{user_pin}\n").as_bytes())?;
        } else {
            return Err(ApplianceError::Refused(
                "the embedded SoftHSM2 needs hsm.pin = \"file:…\" so that init can create the PIN file".into(),
            ));
        }
        write_private(
            &secrets.join("hsm-so.pin"),
            format!("{so_pin}\n").as_bytes(),
        )?;
        cps_hsm::init_token_on_free_slot(
            &config.resolve(home, &config.hsm.module),
            &config.hsm.token_label,
            &so_pin,
            &user_pin,
        )?;
    }
    config.validate(home)?;
    // The ceremony signs the whole hierarchy: with an untrusted clock, not at all.
    if let cps_ct::ClockTrust::Untrusted { reason } =
        crate::clock::SigningClock::from_config(&config.time, None).evaluate()
    {
        return Err(ApplianceError::Refused(format!(
            "{reason}; synchronise the host clock (chronyd, ntpd-rs), or declare it with `[time] source = \"declared\"` (init --time-source declared)"
        )));
    }
    let hsm = Hsm::open(&config.hsm_config(home)?)?;

    // Keys first: all of them exist, or the ceremony stops before any certificate is made.
    let mut created = Vec::new();
    let generate =
        |cfg: &CaKeyConfig, created: &mut Vec<String>| -> Result<HsmKey, ApplianceError> {
            let key = hsm
                .generate_key_pair(&cfg.key_label, cfg.key_algorithm()?)
                .map_err(|e| {
                    if created.is_empty() || embedded {
                        ApplianceError::from(e)
                    } else {
                        ApplianceError::Refused(format!(
                            "{e}; keys already created on token '{}': {}",
                            config.hsm.token_label,
                            created.join(", ")
                        ))
                    }
                })?;
            created.push(cfg.key_label.clone());
            Ok(key)
        };
    let root_key = generate(&config.ca.root, &mut created)?;
    let mut issuing_keys = Vec::new();
    for (id, ca) in &config.ca.issuing {
        let ca_key = generate(&ca.ca, &mut created)?;
        let ocsp_key = generate(&ca.ocsp, &mut created)?;
        issuing_keys.push((id.clone(), ca_key, ocsp_key));
    }

    let base = &config.appliance.public_base_url;
    let points_of = |id: &str, with_ocsp: bool| PublicationPoints {
        crl: vec![format!("{base}/crl/{id}.crl")],
        ca_issuers: vec![format!("{base}/ca/{id}.der")],
        ocsp: if with_ocsp {
            vec![format!("{base}/ocsp")]
        } else {
            vec![]
        },
    };
    let not_before = now - BACKDATE_SECS;
    let days = |d: u32| not_before + i64::from(d) * 86_400;
    let serial = || -> Result<cps_pki::Serial, ApplianceError> {
        let r = hsm.random(16)?;
        let mut b = [0u8; 16];
        b.copy_from_slice(&r);
        Ok(serial_from_random(b))
    };

    let mut out: Vec<(HierarchyEntry, Vec<u8>)> = Vec::new();
    let entry = |id: &str,
                 issuer_id: &str,
                 role: &str,
                 cfg: &CaKeyConfig,
                 der: &[u8]|
     -> Result<(HierarchyEntry, Vec<u8>), ApplianceError> {
        Ok((
            HierarchyEntry::from_certificate(id, issuer_id, role, cfg, der)?,
            der.to_vec(),
        ))
    };

    // Root.
    let root_cfg = &config.ca.root;
    let root_name = root_cfg.subject_name()?;
    let root_sig = root_cfg.signature_algorithm()?;
    let root_der = issue_certificate(
        &CertificateParams {
            serial: serial()?,
            subject: root_name.clone(),
            subject_public_key: root_key.public_key_der().to_vec(),
            not_before,
            not_after: days(root_cfg.validity_days),
            extensions: hierarchy::root_ca(root_key.public_key_der(), None)?,
        },
        &Issuer {
            name: &root_name,
            signer: &root_key,
            signature: root_sig,
        },
    )?;
    let root_kid = cps_pki::ext::key_identifier(root_key.public_key_der())?;
    out.push(entry("root", "root", "root-ca", root_cfg, &root_der)?);

    for (id, ca_key, ocsp_key) in &issuing_keys {
        let cfg = &config.ca.issuing[id];
        let ca_name = cfg.ca.subject_name()?;
        let ca_der = issue_certificate(
            &CertificateParams {
                serial: serial()?,
                subject: ca_name.clone(),
                subject_public_key: ca_key.public_key_der().to_vec(),
                not_before,
                not_after: days(cfg.ca.validity_days),
                extensions: hierarchy::issuing_ca(
                    ca_key.public_key_der(),
                    &root_kid,
                    &cfg.ca.policy_oids()?,
                    &points_of("root", false),
                )?,
            },
            &Issuer {
                name: &root_name,
                signer: &root_key,
                signature: root_sig,
            },
        )?;
        out.push(entry(id, "root", "issuing-ca", &cfg.ca, &ca_der)?);
        let ca_kid = cps_pki::ext::key_identifier(ca_key.public_key_der())?;
        let ocsp_der = issue_certificate(
            &CertificateParams {
                serial: serial()?,
                subject: cfg.ocsp.subject_name()?,
                subject_public_key: ocsp_key.public_key_der().to_vec(),
                not_before,
                not_after: days(cfg.ocsp.validity_days),
                extensions: hierarchy::ocsp_signer(
                    ocsp_key.public_key_der(),
                    &ca_kid,
                    &cfg.ocsp.policy_oids()?,
                    &points_of(id, false),
                )?,
            },
            &Issuer {
                name: &ca_name,
                signer: ca_key,
                signature: cfg.ca.signature_algorithm()?,
            },
        )?;
        out.push(entry(
            &format!("{id}-ocsp"),
            id,
            "ocsp-signer",
            &cfg.ocsp,
            &ocsp_der,
        )?);
    }

    // The appliance's TLS server key (in the HSM) and certificate, and the first operator's
    // credential (the operator's own key, in a file for the operator; not an appliance key).
    let (org_id, org_key, _) = issuing_keys
        .iter()
        .find(|(id, _, _)| id == "organisations")
        .ok_or_else(|| ApplianceError::Refused("ca.issuing.organisations is missing".into()))?;
    let org_cfg = &config.ca.issuing[org_id];
    let org_name = org_cfg.ca.subject_name()?;
    let org_kid = cps_pki::ext::key_identifier(org_key.public_key_der())?;
    let org_issuer = Issuer {
        name: &org_name,
        signer: org_key,
        signature: org_cfg.ca.signature_algorithm()?,
    };
    let tls_key = hsm.generate_key_pair(
        &config.appliance.tls_key_label,
        cps_hsm::KeyAlgorithm::EcP256,
    )?;
    let (dns, ips) = config.tls_names();
    let tls_cn = config
        .appliance
        .tls_names
        .first()
        .cloned()
        .unwrap_or_else(|| "localhost".into());
    let tls_der = issue_certificate(
        &CertificateParams {
            serial: serial()?,
            subject: cps_pki::DistinguishedName::parse(&format!(
                "CN={tls_cn}, OU=cps-trust appliance, O=cps-trust, C=FR"
            ))?,
            subject_public_key: tls_key.public_key_der().to_vec(),
            not_before,
            not_after: not_before + 397 * 86_400,
            extensions: hierarchy::tls_server(
                tls_key.public_key_der(),
                &org_kid,
                &dns,
                &ips,
                &points_of(org_id, true),
            )?,
        },
        &org_issuer,
    )?;
    let operator = crate::operators::create_operator_credential(
        "admin",
        &points_of(org_id, true),
        &org_issuer,
        &org_kid,
        serial()?,
        not_before,
    )?;

    // Every key safe, every certificate signed by its issuer's key.
    hsm.self_check(&config.key_labels()).into_result()?;
    check_chain(&out)?;

    // Durable records before anything is published.
    // The ceremony runs before any node: its audit record names none, and the first node that
    // starts forwards it into its log (`cps_trail::cluster::adopt_legacy`).
    let store = crate::store::open(home, config, None)?;
    if store.get_meta("hierarchy")?.is_some() || store.audit_len()? > 0 {
        return Err(ApplianceError::Refused(
            "the store already holds an appliance (a hierarchy or audit records): init writes into \
             an empty store only"
                .into(),
        ));
    }
    let mut batch = WriteBatch::new();
    for (e, der) in &out {
        let p = parse_certificate(der)?;
        batch.push(WriteOp::InsertCertificate(CertificateRecord {
            issuer: e.issuer_id.clone(),
            serial: p.serial.as_bytes().to_vec(),
            subject: e.subject.clone(),
            profile: e.role.clone(),
            holder: Some(format!("ca:{}", e.id)),
            spki_sha256: sha256(&p.spki),
            not_before: p.not_before,
            not_after: p.not_after,
            der: der.clone(),
            status: CertStatus::Valid,
            issued_at: now,
        }));
    }
    for (der, profile, holder) in [
        (&tls_der, "tls-server", "appliance"),
        (
            &operator.cert_der,
            crate::operators::OPERATOR_PROFILE,
            "operator:admin",
        ),
    ] {
        let p = parse_certificate(der)?;
        batch.push(WriteOp::InsertCertificate(CertificateRecord {
            issuer: org_id.clone(),
            serial: p.serial.as_bytes().to_vec(),
            subject: p.subject.to_string(),
            profile: profile.into(),
            holder: Some(holder.into()),
            spki_sha256: sha256(&p.spki),
            not_before: p.not_before,
            not_after: p.not_after,
            der: der.clone(),
            status: CertStatus::Valid,
            issued_at: now,
        }));
    }
    batch.push(crate::operators::register_op(
        &operator.cert_der,
        "admin",
        crate::operators::ALL_ROLES,
    ));
    let entries: Vec<&HierarchyEntry> = out.iter().map(|(e, _)| e).collect();
    batch.push(WriteOp::PutMeta {
        key: "hierarchy".into(),
        value: serde_json::to_vec(&entries).unwrap_or_default(),
    });
    batch.push(WriteOp::AppendAudit(
        cps_audit::AuditEvent::CaInitialised {
            token: config.hsm.token_label.clone(),
            certificates: entries
                .iter()
                .map(|e| cps_audit::CaCertificate {
                    id: e.id.clone(),
                    subject: e.subject.clone(),
                    serial: e.serial.clone(),
                    key_label: e.key_label.clone(),
                })
                .collect(),
        }
        .record(now, format!("cli:{}", whoami())),
    ));
    store.commit(batch)?;
    drop(store);

    publish(home, &out)?;
    let tls_dir = home.join("tls");
    mkdir_private(&tls_dir)?;
    let org_der = &out
        .iter()
        .find(|(e, _)| e.id == *org_id)
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    write_public(
        &tls_dir.join("server.pem"),
        format!(
            "{}{}",
            pem_encode("CERTIFICATE", &tls_der),
            pem_encode("CERTIFICATE", org_der)
        )
        .as_bytes(),
    )?;
    crate::operators::write_credential(
        &home.join("operator"),
        "admin",
        &operator,
        org_der,
        &out[0].1,
    )?;
    let cfg_path = home.join(CONFIG_FILE);
    write_private(
        &cfg_path,
        format!(
            "# cps-trust configuration (strict: unknown keys are refused). See README.md.\n{}",
            config.to_toml()
        )
        .as_bytes(),
    )?;

    Ok(InitReport {
        home: home.to_path_buf(),
        token_label: config.hsm.token_label.clone(),
        embedded_hsm: embedded,
        certificates: out.into_iter().map(|(e, _)| e).collect(),
    })
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    out
}

fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

fn check_chain(certs: &[(HierarchyEntry, Vec<u8>)]) -> Result<(), ApplianceError> {
    for (e, der) in certs {
        let issuer = certs
            .iter()
            .find(|(i, _)| i.id == e.issuer_id)
            .ok_or_else(|| {
                ApplianceError::Refused(format!(
                    "certificate '{}' has no issuer '{}' in the hierarchy",
                    e.id, e.issuer_id
                ))
            })?;
        let issuer_spki = parse_certificate(&issuer.1)?.spki;
        verify_issued_by(der, &issuer_spki).map_err(|_| {
            ApplianceError::Refused(format!(
                "certificate '{}' does not verify against '{}'",
                e.id, e.issuer_id
            ))
        })?;
    }
    Ok(())
}

/// `<home>/ca/<id>.pem|.der`, `<ca>-chain.pem` (CA + root) and `ca-bundle.pem` (all CAs).
fn publish(home: &Path, certs: &[(HierarchyEntry, Vec<u8>)]) -> Result<(), ApplianceError> {
    let dir = home.join(CA_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let pem_of = |id: &str| {
        certs
            .iter()
            .find(|(e, _)| e.id == id)
            .map(|(_, d)| pem_encode("CERTIFICATE", d))
            .unwrap_or_default()
    };
    let mut bundle = String::new();
    for (e, der) in certs {
        write_public(&dir.join(format!("{}.der", e.id)), der)?;
        write_public(
            &dir.join(format!("{}.pem", e.id)),
            pem_encode("CERTIFICATE", der).as_bytes(),
        )?;
        if e.role == "issuing-ca" {
            write_public(
                &dir.join(format!("{}-chain.pem", e.id)),
                format!("{}{}", pem_of(&e.id), pem_of("root")).as_bytes(),
            )?;
        }
        if e.role != "ocsp-signer" {
            bundle.push_str(&pem_encode("CERTIFICATE", der));
        }
    }
    write_public(&dir.join("ca-bundle.pem"), bundle.as_bytes())
}

/// `cps-trust ca show`: the hierarchy from the published certificates, each checked against its
/// issuer, and the HSM self-check over every configured key.
#[derive(Debug)]
pub struct CaShow {
    pub token: Option<cps_hsm::TokenSummary>,
    pub certificates: Vec<(HierarchyEntry, ParsedCertificate, Result<(), String>)>,
    pub self_check: Result<cps_hsm::SelfCheckReport, String>,
}

impl CaShow {
    pub fn is_healthy(&self) -> bool {
        self.first_problem().is_none()
    }

    /// The first thing wrong, as one line for the operator.
    pub fn first_problem(&self) -> Option<String> {
        match &self.self_check {
            Err(e) => return Some(format!("HSM self-check failed: {e}")),
            Ok(r) => {
                if let Some(k) = r.keys.iter().find(|k| !k.problems.is_empty()) {
                    return Some(format!(
                        "HSM self-check failed: key '{}' on token '{}': {}",
                        k.label,
                        r.token,
                        k.problems.join("; ")
                    ));
                }
            }
        }
        self.certificates.iter().find_map(|(e, _, v)| {
            v.as_ref()
                .err()
                .map(|m| format!("certificate '{}': {m}", e.id))
        })
    }
}

pub fn show(home: &Path, config: &Config) -> Result<CaShow, ApplianceError> {
    let dir = home.join(CA_DIR);
    let mut certs = Vec::new();
    let ids = std::iter::once((
        "root".to_string(),
        "root".to_string(),
        "root-ca",
        &config.ca.root,
    ))
    .chain(config.ca.issuing.iter().flat_map(|(id, c)| {
        [
            (id.clone(), "root".to_string(), "issuing-ca", &c.ca),
            (format!("{id}-ocsp"), id.clone(), "ocsp-signer", &c.ocsp),
        ]
    }));
    for (id, issuer_id, role, cfg) in ids {
        let path = dir.join(format!("{id}.der"));
        let der = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        certs.push((
            HierarchyEntry::from_certificate(&id, &issuer_id, role, cfg, &der)?,
            der,
        ));
    }
    let mut certificates = Vec::new();
    for (e, der) in &certs {
        let parsed = parse_certificate(der)?;
        let verdict = match certs.iter().find(|(i, _)| i.id == e.issuer_id) {
            Some((_, idr)) => parse_certificate(idr)
                .map_err(|e| e.to_string())
                .and_then(|i| {
                    verify_issued_by(der, &i.spki)
                        .map_err(|_| format!("signature does not verify against '{}'", e.issuer_id))
                }),
            None => Err(format!("issuer '{}' missing", e.issuer_id)),
        };
        certificates.push((e.clone(), parsed, verdict));
    }
    let (token, self_check) = match config
        .hsm_config(home)
        .map_err(ApplianceError::from)
        .and_then(|c| Ok(Hsm::open(&c)?))
    {
        Ok(hsm) => {
            let report = hsm.self_check(&config.key_labels());
            // The certificate must certify the key the HSM holds under that label.
            let mut report = report;
            for k in report.keys.iter_mut() {
                if let (Ok(key), Some((_, parsed, _))) = (
                    hsm.key(&k.label),
                    certificates.iter().find(|(e, _, _)| e.key_label == k.label),
                ) && key.public_key_der() != parsed.spki.as_slice()
                {
                    k.problems
                        .push("the public key on the token differs from the certificate's".into());
                }
            }
            (hsm.token_summary().ok(), Ok(report))
        }
        Err(e) => (None, Err(e.to_string())),
    };
    Ok(CaShow {
        token,
        certificates,
        self_check,
    })
}
