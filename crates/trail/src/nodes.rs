//! Secure nodes (IHE ATNA ITI-19): the registry of the network's nodes and their certificates.
//!
//! `cps-trust node enroll` issues a `node-tls` certificate (client and server) from the node's
//! CSR and registers the node. Only a registered, active node whose certificate is valid may
//! talk to the appliance's audit record repository: this is an allowlist, not "any certificate
//! from our CA".
//!
//! Tables (named tables of the store, JSON values):
//! * `nodes`: node name → [`NodeRecord`];
//! * `node_certs`: `<ca>:<serial hex>` → node name (the allowlist lookup by certificate).

use cps_audit::AuditEvent;
use std::sync::Arc;

use cps_store::{CertStatus, Expect, Store, WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};

use cps_ca::{CaError, CaService, IssueRequest, SubjectRequest};

const NODES: &str = "nodes";
const NODE_CERTS: &str = "node_certs";

/// The certificate profile of nodes.
pub const NODE_PROFILE: &str = "node-tls";

/// A registered node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node name: its FQDN or IP address (the certificate's CN).
    pub name: String,
    /// Structure (struct_IdNat) operating the node.
    pub structure_id: String,
    /// `active` or `removed`.
    pub status: String,
    /// Its certificates, `<ca>:<serial hex>`, oldest first.
    pub certificates: Vec<String>,
    /// Unix seconds.
    pub enrolled_at: i64,
    /// Who enrolled it.
    pub enrolled_by: String,
}

/// What `node enroll` sends.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEnrollRequest {
    /// FQDN or IP address of the node.
    pub name: String,
    /// PKCS#10, PEM or DER.
    pub csr: String,
    /// The structure operating the node.
    pub organisation: cps_pki::OrganisationIdentity,
    /// Further DNS names.
    #[serde(default)]
    pub dns: Vec<String>,
    /// IP addresses.
    #[serde(default)]
    pub ip: Vec<std::net::IpAddr>,
}

fn cert_key(ca: &str, serial: &[u8]) -> String {
    format!("{ca}:{}", hex::encode_upper(serial))
}

fn check_name(name: &str) -> Result<(), CaError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if ok {
        Ok(())
    } else {
        Err(CaError::Invalid(format!(
            "node name {name:?} must be a host name or an IP address (letters, digits, '.', '-', ':')"
        )))
    }
}

/// The node registry. Clones share one change signal ([`Nodes::subscribe`]).
#[derive(Clone)]
pub struct Nodes {
    store: Arc<dyn Store>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Nodes {
    pub fn new(store: Arc<dyn Store>) -> Nodes {
        Nodes {
            store,
            changes: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    /// Changes whenever a node is enrolled or removed through this registry (or a clone of it),
    /// after the change is durable: open connections of the node re-check their authorization.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    fn decode(bytes: &[u8]) -> Result<NodeRecord, CaError> {
        serde_json::from_slice(bytes)
            .map_err(|e| CaError::Internal(format!("node record is corrupt: {e}").into()))
    }

    /// A node by name.
    pub fn get(&self, name: &str) -> Result<Option<NodeRecord>, CaError> {
        match self.store.get_record(NODES, name.as_bytes())? {
            Some(v) => Ok(Some(Self::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Every node, by name.
    pub fn list(&self) -> Result<Vec<NodeRecord>, CaError> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.store.scan_records(NODES, b"", after.as_deref(), 500)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (_, v) in &page {
                out.push(Self::decode(v)?);
            }
        }
        Ok(out)
    }

    /// Issue a node certificate and register (or re-certify) the node. The certificate and its
    /// audit record are durable when this returns, then the registration is.
    pub fn enroll(
        &self,
        ca: &CaService,
        req: NodeEnrollRequest,
        actor: &str,
        now: i64,
    ) -> Result<(NodeRecord, cps_store::CertificateRecord), CaError> {
        check_name(&req.name)?;
        let existing = self.get(&req.name)?;
        if let Some(n) = &existing {
            if n.status != "active" {
                return Err(CaError::Conflict(format!(
                    "node '{}' was removed; enrol it under a new name",
                    req.name
                )));
            }
            if n.structure_id != req.organisation.structure_id {
                return Err(CaError::Conflict(format!(
                    "node '{}' belongs to structure {}",
                    req.name, n.structure_id
                )));
            }
        }
        let mut org = req.organisation.clone();
        org.common_name = req.name.clone();
        let mut sans: Vec<cps_pki::SubjectAltName> = req
            .dns
            .iter()
            .cloned()
            .map(cps_pki::SubjectAltName::Dns)
            .collect();
        sans.extend(req.ip.iter().copied().map(cps_pki::SubjectAltName::Ip));
        let cert = ca.issue(
            &IssueRequest {
                profile: NODE_PROFILE.into(),
                csr: req.csr.into_bytes(),
                subject: SubjectRequest::Organisation(org),
                sans,
                holder: format!("node:{}", req.name),
            },
            actor,
            now,
        )?;
        let key = cert_key(&cert.issuer, &cert.serial);
        let (record, expect) = match existing {
            Some(mut n) => {
                let old = serde_json::to_vec(&n).map_err(|e| CaError::Invalid(e.to_string()))?;
                n.certificates.push(key.clone());
                (n, Expect::Value(old))
            }
            None => (
                NodeRecord {
                    name: req.name.clone(),
                    structure_id: req.organisation.structure_id.clone(),
                    status: "active".into(),
                    certificates: vec![key.clone()],
                    enrolled_at: now,
                    enrolled_by: actor.into(),
                },
                Expect::Absent,
            ),
        };
        let value = serde_json::to_vec(&record).map_err(|e| CaError::Invalid(e.to_string()))?;
        let batch = WriteBatch::new()
            .with(WriteOp::PutRecord {
                table: NODES.into(),
                key: req.name.as_bytes().to_vec(),
                value,
                expect,
            })
            .with(WriteOp::PutRecord {
                table: NODE_CERTS.into(),
                key: key.as_bytes().to_vec(),
                value: req.name.as_bytes().to_vec(),
                expect: Expect::Absent,
            })
            .with(WriteOp::AppendAudit(
                AuditEvent::NodeEnrolled {
                    node: req.name.clone(),
                    certificate: key.clone(),
                }
                .record(now, actor),
            ));
        self.store.commit(batch)?;
        self.changed();
        Ok((record, cert))
    }

    /// Remove a node: its certificates are revoked (cessationOfOperation) and it leaves the
    /// allowlist for good.
    pub fn remove(
        &self,
        ca: &CaService,
        name: &str,
        actor: &str,
        now: i64,
    ) -> Result<NodeRecord, CaError> {
        let mut node = self
            .get(name)?
            .ok_or_else(|| CaError::Invalid(format!("no node named '{name}'")))?;
        let old = serde_json::to_vec(&node).map_err(|e| CaError::Invalid(e.to_string()))?;
        node.status = "removed".into();
        let value = serde_json::to_vec(&node).map_err(|e| CaError::Invalid(e.to_string()))?;
        // Leave the allowlist first: from here on the node cannot deliver, whatever happens next.
        self.store.commit(
            WriteBatch::new()
                .with(WriteOp::PutRecord {
                    table: NODES.into(),
                    key: name.as_bytes().to_vec(),
                    value,
                    expect: Expect::Value(old),
                })
                .with(WriteOp::AppendAudit(
                    AuditEvent::NodeRemoved { node: name.into() }.record(now, actor),
                )),
        )?;
        self.changed();
        for c in &node.certificates {
            let Some((ca_id, serial)) = c.split_once(':') else {
                continue;
            };
            let serial = hex::decode(serial).unwrap_or_default();
            match self.store.get_certificate(ca_id, &serial)? {
                Some(rec) if rec.status == CertStatus::Valid => {
                    ca.revoke(
                        ca_id,
                        &serial,
                        cps_pki::crl::RevocationReason::CessationOfOperation,
                        None,
                        actor,
                        now,
                    )?;
                }
                _ => {}
            }
        }
        Ok(node)
    }

    /// The allowlist decision for a TLS client certificate at `now` (Unix seconds): the
    /// registered, active node it belongs to, if that certificate is unrevoked and within its
    /// validity period. Complete on its own (it does not rely on the TLS verifier having run),
    /// so it also holds for connections re-checked long after their handshake. Fails closed on
    /// store errors.
    pub fn authorize(&self, cert_der: &[u8], now: i64) -> Result<Option<NodeRecord>, CaError> {
        let Ok(parsed) = cps_pki::parse_certificate(cert_der) else {
            return Ok(None);
        };
        let serial = parsed.serial.as_bytes().to_vec();
        for ca in ["organisations"] {
            let key = cert_key(ca, &serial);
            let Some(name) = self.store.get_record(NODE_CERTS, key.as_bytes())? else {
                continue;
            };
            let Some(rec) = self.store.get_certificate(ca, &serial)? else {
                continue;
            };
            // The same serial from another CA is another certificate: compare the bytes.
            if rec.der != cert_der
                || rec.status != CertStatus::Valid
                || now < rec.not_before
                || now > rec.not_after
            {
                continue;
            }
            let name = String::from_utf8_lossy(&name).into_owned();
            if let Some(node) = self.get(&name)?
                && node.status == "active"
            {
                return Ok(Some(node));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate (openssl) with serial `serial`: only its bytes and serial
    /// matter to the allowlist, which compares them with the store.
    fn certificate(serial: u32) -> Vec<u8> {
        use openssl::{asn1, bn, ec, nid, pkey, x509};
        let group = ec::EcGroup::from_curve_name(nid::Nid::X9_62_PRIME256V1).unwrap();
        let key = pkey::PKey::from_ec_key(ec::EcKey::generate(&group).unwrap()).unwrap();
        let mut name = x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "node-a.example").unwrap();
        let name = name.build();
        let mut b = x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let sn = bn::BigNum::from_u32(serial)
            .unwrap()
            .to_asn1_integer()
            .unwrap();
        b.set_serial_number(&sn).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        b.build().to_der().unwrap()
    }

    /// The allowlist answers from the store alone: registered, active node and a certificate
    /// that is the stored one, unrevoked and within its validity at `now` (a check that does
    /// not lean on the handshake's verifier, so it holds for re-checked open connections).
    #[test]
    fn authorize_needs_an_active_node_and_a_live_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(cps_store::SledStore::open(dir.path()).unwrap());
        let nodes = Nodes::new(store.clone());
        let der = certificate(0x4242);
        let serial = vec![0x42, 0x42];
        let (nb, na) = (1_000, 2_000);
        let node = NodeRecord {
            name: "node-a.example".into(),
            structure_id: "10B0152872".into(),
            status: "active".into(),
            certificates: vec![cert_key("organisations", &serial)],
            enrolled_at: nb,
            enrolled_by: "test".into(),
        };
        store
            .commit(
                WriteBatch::new()
                    .with(WriteOp::InsertCertificate(cps_store::CertificateRecord {
                        issuer: "organisations".into(),
                        serial: serial.clone(),
                        subject: "CN=node-a.example".into(),
                        profile: NODE_PROFILE.into(),
                        holder: Some("node:node-a.example".into()),
                        spki_sha256: [1; 32],
                        not_before: nb,
                        not_after: na,
                        der: der.clone(),
                        status: CertStatus::Valid,
                        issued_at: nb,
                    }))
                    .with(WriteOp::PutRecord {
                        table: NODES.into(),
                        key: b"node-a.example".to_vec(),
                        value: serde_json::to_vec(&node).unwrap(),
                        expect: Expect::Absent,
                    })
                    .with(WriteOp::PutRecord {
                        table: NODE_CERTS.into(),
                        key: cert_key("organisations", &serial).into_bytes(),
                        value: b"node-a.example".to_vec(),
                        expect: Expect::Absent,
                    }),
            )
            .unwrap();
        assert!(nodes.authorize(&der, 1_500).unwrap().is_some());
        assert!(
            nodes.authorize(&der, 999).unwrap().is_none(),
            "not yet valid"
        );
        assert!(nodes.authorize(&der, 2_001).unwrap().is_none(), "expired");
        assert!(
            nodes
                .authorize(&certificate(0x4242), 1_500)
                .unwrap()
                .is_none(),
            "same serial, other bytes"
        );
        assert!(
            nodes
                .authorize(b"not a certificate", 1_500)
                .unwrap()
                .is_none()
        );
        let set_status = |status: &str| {
            let mut n = node.clone();
            n.status = status.into();
            WriteOp::PutRecord {
                table: NODES.into(),
                key: b"node-a.example".to_vec(),
                value: serde_json::to_vec(&n).unwrap(),
                expect: Expect::Any,
            }
        };
        // Removed: no longer allowed, whatever the certificate.
        store
            .commit(WriteBatch::new().with(set_status("removed")))
            .unwrap();
        assert!(nodes.authorize(&der, 1_500).unwrap().is_none());
        // Active again but the certificate revoked: refused.
        let revoked = CertStatus::Revoked {
            time: 1_400,
            reason: 1,
            invalidity_date: None,
        };
        store
            .commit(WriteBatch::new().with(set_status("active")).with(
                WriteOp::SetCertificateStatus {
                    issuer: "organisations".into(),
                    serial: serial.clone(),
                    status: revoked,
                },
            ))
            .unwrap();
        assert!(nodes.authorize(&der, 1_500).unwrap().is_none());
    }
}
