//! Operators: people who reach the API and console with a TLS client certificate, and the roles
//! bound to that certificate in the store.
//!
//! An operator's key is the operator's, not the appliance's: it is generated for them and handed
//! over as PEM and PKCS#12 files (owner-only) for import into a browser or a CLI.

use std::path::Path;

use cps_pki::hierarchy::{self, PublicationPoints};
use cps_pki::{
    CertificateParams, DistinguishedName, Issuer, Serial, issue_certificate, pem_encode,
};
use cps_store::{Store, WriteOp};

use std::path::PathBuf;

/// Why an operator credential could not be made, written or read.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("certificate: {0}")]
    Pki(#[from] cps_pki::PkiError),
    #[error("store: {0}")]
    Store(#[from] cps_store::StoreError),
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{0}")]
    Refused(String),
}

/// A role an operator certificate can be bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs the CA: raw issuance (seals, TLS, nodes), revocation, operators, nodes.
    CaOperator,
    /// Card-issuing staff: the registry, card enrolment and the card lifecycle.
    RaOfficer,
    /// Reads: certificates, registry, cards, nodes, the audit trail.
    Auditor,
    /// A network service: validates assertions (each ID once) and document signatures.
    Service,
    /// A document source (software feeding the record): has documents signed by the seals of the
    /// structures it is bound to (`[[dsg.seals]]`), and verifies signatures.
    Signer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::CaOperator,
        Role::RaOfficer,
        Role::Auditor,
        Role::Service,
        Role::Signer,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::CaOperator => "ca-operator",
            Role::RaOfficer => "ra-officer",
            Role::Auditor => "auditor",
            Role::Service => "service",
            Role::Signer => "signer",
        }
    }

    pub fn from_name(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The certificate profile of operator credentials (as recorded in the store).
pub const OPERATOR_PROFILE: &str = "operator";

/// Roles an operator certificate can be bound to.
pub const ROLES: &[&str] = &[
    Role::CaOperator.as_str(),
    Role::RaOfficer.as_str(),
    Role::Auditor.as_str(),
    Role::Service.as_str(),
    Role::Signer.as_str(),
];
/// The roles of the first operator created by `init`.
pub const ALL_ROLES: &[&str] = &[
    Role::CaOperator.as_str(),
    Role::RaOfficer.as_str(),
    Role::Auditor.as_str(),
];

/// How long an operator certificate lasts.
const OPERATOR_VALIDITY_DAYS: i64 = 397;

/// A freshly made operator credential.
pub struct OperatorCredential {
    pub cert_der: Vec<u8>,
    pub key_pem: Vec<u8>,
    pkey: openssl::pkey::PKey<openssl::pkey::Private>,
}

impl OperatorCredential {
    /// A credential from a certificate and the operator's own key (PKCS#8 PEM).
    pub fn from_parts(cert_der: Vec<u8>, key_pem: Vec<u8>) -> Result<Self, OperatorError> {
        let pkey = openssl::pkey::PKey::private_key_from_pem(&key_pem).map_err(ssl)?;
        Ok(OperatorCredential {
            cert_der,
            key_pem,
            pkey,
        })
    }

    /// A fresh P-256 key and a CSR for it (the CLI side of `operator add`).
    pub fn new_key_and_csr(name: &str) -> Result<(Vec<u8>, String), OperatorError> {
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
            .map_err(ssl)?;
        let pkey =
            openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).map_err(ssl)?)
                .map_err(ssl)?;
        let mut req = openssl::x509::X509ReqBuilder::new().map_err(ssl)?;
        let mut n = openssl::x509::X509NameBuilder::new().map_err(ssl)?;
        n.append_entry_by_text("CN", name).map_err(ssl)?;
        req.set_subject_name(&n.build()).map_err(ssl)?;
        req.set_pubkey(&pkey).map_err(ssl)?;
        req.sign(&pkey, openssl::hash::MessageDigest::sha256())
            .map_err(ssl)?;
        let csr = String::from_utf8_lossy(&req.build().to_pem().map_err(ssl)?).into_owned();
        Ok((pkey.private_key_to_pem_pkcs8().map_err(ssl)?, csr))
    }
}

/// An operator known to the appliance (the HTTPS layer binds it to its certificate).
pub use crate::identity::Operator;

fn ssl(e: openssl::error::ErrorStack) -> OperatorError {
    OperatorError::Refused(format!("operator credential: {e}"))
}

fn meta_key(cert_der: &[u8]) -> String {
    format!(
        "operator:{}",
        hex::encode(ring::digest::digest(&ring::digest::SHA256, cert_der))
    )
}

/// Generate an operator key (P-256) and certify it for TLS client authentication.
pub fn create_operator_credential(
    name: &str,
    points: &PublicationPoints,
    issuer: &Issuer<'_>,
    issuer_key_id: &[u8],
    serial: Serial,
    not_before: i64,
) -> Result<OperatorCredential, OperatorError> {
    let group =
        openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).map_err(ssl)?;
    let pkey = openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).map_err(ssl)?)
        .map_err(ssl)?;
    let spki = pkey.public_key_to_der().map_err(ssl)?;
    let subject = DistinguishedName::parse(&format!(
        "CN={name}, OU=cps-trust operators, O=cps-trust, C=FR"
    ))?;
    let cert_der = issue_certificate(
        &CertificateParams {
            serial,
            subject,
            subject_public_key: spki.clone(),
            not_before,
            not_after: not_before + OPERATOR_VALIDITY_DAYS * 86_400,
            extensions: hierarchy::operator_client(&spki, issuer_key_id, points)?,
        },
        issuer,
    )?;
    let key_pem = pkey.private_key_to_pem_pkcs8().map_err(ssl)?;
    Ok(OperatorCredential {
        cert_der,
        key_pem,
        pkey,
    })
}

/// The store operation binding a certificate to an operator and roles.
pub fn register_op(cert_der: &[u8], name: &str, roles: &[&str]) -> WriteOp {
    let op = Operator {
        name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    };
    WriteOp::PutMeta {
        key: meta_key(cert_der),
        value: serde_json::to_vec(&op).unwrap_or_default(),
    }
}

/// The operator a client certificate belongs to, if any.
pub fn lookup(store: &dyn Store, cert_der: &[u8]) -> Result<Option<Operator>, OperatorError> {
    match store.get_meta(&meta_key(cert_der))? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| OperatorError::Refused(format!("operator record is corrupt: {e}"))),
    }
}

/// Write `<dir>/<name>-cert.pem` (certificate + CA chain), `<name>-key.pem`, `<name>.p12` and
/// `<name>.p12.pass`, all owner-only.
pub fn write_credential(
    dir: &Path,
    name: &str,
    cred: &OperatorCredential,
    ca_der: &[u8],
    root_der: &[u8],
) -> Result<(), OperatorError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::create_dir_all(dir).map_err(|e| OperatorError::Io {
        path: dir.into(),
        reason: e.to_string(),
    })?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let write = |file: &str, bytes: &[u8]| -> Result<(), OperatorError> {
        let p = dir.join(file);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| OperatorError::Io {
                path: p.clone(),
                reason: e.to_string(),
            })?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| OperatorError::Io {
                path: p,
                reason: e.to_string(),
            })
    };
    let chain = format!(
        "{}{}{}",
        pem_encode("CERTIFICATE", &cred.cert_der),
        pem_encode("CERTIFICATE", ca_der),
        pem_encode("CERTIFICATE", root_der)
    );
    write(&format!("{name}-cert.pem"), chain.as_bytes())?;
    write(&format!("{name}-key.pem"), &cred.key_pem)?;
    let mut pass = [0u8; 12];
    openssl::rand::rand_bytes(&mut pass).map_err(ssl)?;
    let pass = hex::encode(pass);
    let x509 = openssl::x509::X509::from_der(&cred.cert_der).map_err(ssl)?;
    let mut cas = openssl::stack::Stack::new().map_err(ssl)?;
    for d in [ca_der, root_der] {
        cas.push(openssl::x509::X509::from_der(d).map_err(ssl)?)
            .map_err(ssl)?;
    }
    let p12 = openssl::pkcs12::Pkcs12::builder()
        .name(&format!("cps-trust operator {name}"))
        .pkey(&cred.pkey)
        .cert(&x509)
        .ca(cas)
        .build2(&pass)
        .map_err(ssl)?;
    write(&format!("{name}.p12"), &p12.to_der().map_err(ssl)?)?;
    write(&format!("{name}.p12.pass"), format!("{pass}\n").as_bytes())
}

/// The appliance's operator table: operator certificates bind the operator registered with
/// them; other profiles bind none.
pub struct OperatorTable;

impl crate::identity::OperatorLookup for OperatorTable {
    fn operator(
        &self,
        store: &dyn Store,
        profile: &str,
        cert_der: &[u8],
    ) -> Result<Option<Operator>, String> {
        if profile == OPERATOR_PROFILE {
            lookup(store, cert_der).map_err(|e| e.to_string())
        } else {
            Ok(None)
        }
    }
}
