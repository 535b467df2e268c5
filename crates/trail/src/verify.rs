//! `cps-trust audit verify`: the log against keys trusted by certificate chain and the anchors
//! the store holds.
//!
//! * **Keys**: a checkpoint is trusted only if its key holds a certificate that chains to the
//!   root given (`--root`, default `<home>/ca/root.pem`; its SHA-256 fingerprint is printed so it
//!   can be compared with the one recorded at the key ceremony), is not a CA, carries the
//!   `audit-checkpoint` extended key usage ([`CHECKPOINT_EKU`]), and was not yet expired or
//!   revoked when the checkpoint was signed. Certificates come from the log directory's
//!   [`CHECKPOINT_CERTS`] and from the store; the files are candidates, never trusted as such.
//! * **Anchors**: the store's latest and hourly checkpoints must be in `checkpoints.log`; an
//!   anchor found missing at a start is reported. The store is opened directly when the
//!   appliance is stopped, or asked through `GET /api/v1/audit/checkpoints` when it runs (sled
//!   is locked by the running process).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cps_atna::{Anchor, CheckpointPolicy, TrustedKey, VerifyOptions, VerifyReport};
use cps_store::Store;
use rustls::pki_types::{CertificateDer, UnixTime};

use crate::anchor::AnchorSet;
use crate::{CHECKPOINT_CERTS, CHECKPOINT_EKU, CHECKPOINT_EKU_DER};
use cps_ct::rfc3339;

/// Where the anchors come from.
pub trait AnchorSource {
    /// For messages: "the store", "the running appliance".
    fn name(&self) -> String;
    /// Node `node`'s anchors, every node the store knows, and the store's certificates of
    /// `key_ids`.
    fn fetch(&self, node: &str, key_ids: &[[u8; 32]]) -> Result<AnchorSet, String>;
}

/// The store, opened directly (the appliance is stopped).
pub struct StoreAnchors(pub Arc<dyn Store>);

impl AnchorSource for StoreAnchors {
    fn name(&self) -> String {
        "the store".into()
    }
    fn fetch(&self, node: &str, key_ids: &[[u8; 32]]) -> Result<AnchorSet, String> {
        crate::anchor::anchor_set(self.0.as_ref(), node, key_ids)
    }
}

/// How `audit verify` reaches the store.
pub enum StoreAccess {
    /// Opened: the appliance is not running.
    Open(StoreAnchors),
    /// Held by the running appliance: ask it.
    Running,
}

/// Open the store at `path` for reading anchors, or tell that the running appliance holds it.
pub fn open_store(path: &Path) -> Result<StoreAccess, String> {
    if !path.join("db").is_file() {
        return Err(format!(
            "no store at {}: the anchors of the audit log's checkpoints cannot be read",
            path.display()
        ));
    }
    match cps_store::SledStore::open(path) {
        Ok(s) => Ok(StoreAccess::Open(StoreAnchors(Arc::new(s)))),
        Err(cps_store::StoreError::Locked { .. }) => Ok(StoreAccess::Running),
        Err(e) => Err(e.to_string()),
    }
}

/// What was verified.
#[derive(Debug)]
pub struct Verified {
    /// The node whose log it is.
    pub node: String,
    /// Every node the store knows (each keeps its own log; see [`VerifyInput::node`]).
    pub nodes: Vec<crate::cluster::NodeRecord>,
    /// SHA-256 of the root certificate, hex.
    pub root_fingerprint: String,
    pub root_subject: String,
    /// The checkpoint certificates that signed, described.
    pub certificates: Vec<String>,
    /// Where the anchors came from.
    pub anchors_from: String,
    /// The latest anchor: (record, when anchored).
    pub latest_anchor: Option<(u64, i64)>,
    pub report: VerifyReport,
}

/// Why the log is not intact (or could not be verified).
#[derive(Debug)]
pub struct NotVerified {
    /// Known once the root was read.
    pub root_fingerprint: Option<String>,
    pub message: String,
    /// `true`: the log is not intact (exit 3); `false`: it could not be checked (exit 1).
    pub refused: bool,
}

fn failure(fp: &Option<String>, message: String) -> NotVerified {
    NotVerified {
        root_fingerprint: fp.clone(),
        message,
        refused: false,
    }
}

fn refusal(fp: &Option<String>, message: String) -> NotVerified {
    NotVerified {
        root_fingerprint: fp.clone(),
        message,
        refused: true,
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    out
}

fn read_pem_certs(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(cps_pki::pem_certificates(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// A candidate checkpoint certificate, judged.
struct Judged {
    key_id: [u8; 32],
    /// The trusted key, or why the certificate is refused.
    verdict: Result<TrustedKey, String>,
}

/// Check one candidate: chain to `root`, not a CA, the checkpoint EKU, its validity and status.
fn judge(
    der: &[u8],
    root: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
    revoked_at: Option<i64>,
) -> Judged {
    let parsed = x509_parser::parse_x509_certificate(der);
    let Ok((_, cert)) = parsed else {
        return Judged {
            key_id: sha256(b""),
            verdict: Err("a certificate that does not parse".into()),
        };
    };
    let key_id = sha256(cert.public_key().raw);
    // As the API and the CLI write serials: the magnitude, without leading zero bytes.
    let raw = cert.raw_serial();
    let serial = hex::encode_upper(&raw[raw.iter().position(|b| *b != 0).unwrap_or(0)..]);
    let name = format!("certificate {serial} ({})", cert.subject());
    let verdict = (|| {
        if cert.is_ca() {
            return Err(format!("{name} is a CA certificate"));
        }
        let eku_ok = match cert.extended_key_usage() {
            Ok(Some(e)) => e
                .value
                .other
                .iter()
                .any(|o| o.to_id_string() == CHECKPOINT_EKU),
            _ => false,
        };
        if !eku_ok {
            return Err(format!(
                "{name} does not carry the audit checkpoint extended key usage ({CHECKPOINT_EKU})"
            ));
        }
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        let anchor = webpki::anchor_from_trusted_cert(root)
            .map_err(|e| format!("the root certificate: {e}"))?;
        let leaf = CertificateDer::from(der.to_vec());
        let ee = webpki::EndEntityCert::try_from(&leaf).map_err(|e| format!("{name}: {e}"))?;
        // The path as it was when the certificate was issued (it may have expired since; the
        // checkpoints' times are checked against its end below).
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(not_before.max(0)).unwrap_or(0) + 1,
        ));
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            intermediates,
            at,
            webpki::KeyUsage::required_if_present(CHECKPOINT_EKU_DER),
            None,
            None,
        )
        .map_err(|e| format!("{name} does not chain to the root: {e}"))?;
        let mut limit = not_after.saturating_mul(1_000_000);
        let mut name = name.clone();
        if let Some(r) = revoked_at {
            limit = limit.min(r.saturating_mul(1_000_000));
            name = format!("{name}, revoked at {}", rfc3339(r));
        }
        Ok(TrustedKey {
            spki: cert.public_key().raw.to_vec(),
            not_after: Some(limit),
            name,
        })
    })();
    Judged { key_id, verdict }
}

/// What `audit verify` reads.
#[derive(Debug, Clone)]
pub struct VerifyInput {
    /// The node whose log `log_dir` is: its anchors are the ones checked. The log of this
    /// machine's node is in its home; another node's log is on its machine, and is verified
    /// from a copy of its directory with that node's id.
    pub node: String,
    /// The log directory.
    pub log_dir: PathBuf,
    /// The root certificate (PEM) checkpoint keys must chain to.
    pub root: PathBuf,
    /// The CA certificates (PEM), candidates for intermediates.
    pub ca_bundle: PathBuf,
    /// The checkpoint policy of checkpoints that carry none.
    pub policy: CheckpointPolicy,
}

/// Verify the log of `input` against its root and the anchors of `source`.
pub fn verify(input: &VerifyInput, source: &dyn AnchorSource) -> Result<Verified, NotVerified> {
    let dir = input.log_dir.clone();
    let root_path = input.root.clone();
    let none = None;
    let root_der = read_pem_certs(&root_path)
        .map_err(|e| failure(&none, e))?
        .into_iter()
        .next()
        .ok_or_else(|| failure(&none, format!("{}: no certificate", root_path.display())))?;
    let root_fingerprint = hex::encode(sha256(&root_der));
    let fp = Some(root_fingerprint.clone());
    let root_subject = x509_parser::parse_x509_certificate(&root_der)
        .map(|(_, c)| c.subject().to_string())
        .map_err(|e| failure(&fp, format!("{}: {e}", root_path.display())))?;
    let root = CertificateDer::from(root_der.clone());

    // Candidate certificates: the log directory's bundle, the home's CA certificates as
    // intermediates, and (below) what the store holds for the keys that signed.
    let bundle = read_pem_certs(&dir.join(CHECKPOINT_CERTS)).map_err(|e| failure(&fp, e))?;
    let mut intermediates: Vec<CertificateDer<'static>> = bundle
        .iter()
        .chain(read_pem_certs(&input.ca_bundle).unwrap_or_default().iter())
        .map(|d| CertificateDer::from(d.clone()))
        .collect();
    intermediates.dedup();
    let mut key_ids: Vec<[u8; 32]> = cps_atna::checkpoint_key_ids(&dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|id| <[u8; 32]>::try_from(id.as_slice()).ok())
        .collect();
    for d in &bundle {
        if let Ok((_, c)) = x509_parser::parse_x509_certificate(d)
            && !c.is_ca()
        {
            key_ids.push(sha256(c.public_key().raw));
        }
    }
    key_ids.sort();
    key_ids.dedup();

    // The anchors first, then the files: a checkpoint is in checkpoints.log before it is
    // anchored, so a log being written cannot look cut back.
    let anchors = source.fetch(&input.node, &key_ids).map_err(|e| {
        failure(
            &fp,
            format!(
                "cannot read the anchors of the log's checkpoints from {}: {e}",
                source.name()
            ),
        )
    })?;
    if let Some(l) = anchors.lost.first() {
        let last = l
            .log_last_checkpoint
            .map_or("no checkpoint".to_owned(), |s| {
                format!("its last checkpoint covered record {s}")
            });
        return Err(refusal(
            &fp,
            format!(
                "the audit log was cut back, deleted or replaced while the appliance was stopped: at its start at {} the log did not hold the checkpoint of record {} (anchored in {} at {}); it had {} records and {last}: records {} to {} are unaccounted for",
                rfc3339(l.found_at),
                l.anchor.seq,
                source.name(),
                rfc3339(l.anchor.anchored_at),
                l.log_records,
                l.log_last_checkpoint
                    .map_or(1, |s| s + 1)
                    .min(l.log_records + 1),
                l.anchor.seq
            ),
        ));
    }
    let mut candidates: Vec<(Vec<u8>, Option<i64>)> =
        bundle.iter().map(|d| (d.clone(), None)).collect();
    for c in &anchors.certificates {
        let Some(der) = cps_pki::pem_certificates(&c.pem).into_iter().next() else {
            continue;
        };
        let revoked = (c.status != "valid").then_some(c.revocation_time).flatten();
        match candidates.iter_mut().find(|(d, _)| *d == der) {
            Some(entry) => entry.1 = revoked,
            None => candidates.push((der, revoked)),
        }
    }
    let mut keys: Vec<TrustedKey> = Vec::new();
    let mut refused: Vec<([u8; 32], String)> = Vec::new();
    // A key may hold several certificates (it was certified again): it is trusted until the
    // last of them ends, but no longer than the first revocation of any of them (a revoked
    // certificate says the key must not be trusted from then on).
    let mut revoked_keys: Vec<(Vec<u8>, i64, String)> = Vec::new();
    for (der, revoked) in &candidates {
        let j = judge(der, &root, &intermediates, *revoked);
        match j.verdict {
            Ok(k) => {
                if let Some(r) = revoked {
                    revoked_keys.push((
                        k.spki.clone(),
                        r.saturating_mul(1_000_000),
                        k.name.clone(),
                    ));
                }
                match keys.iter_mut().find(|x| x.spki == k.spki) {
                    Some(x) => {
                        if k.not_after > x.not_after {
                            x.not_after = k.not_after;
                            x.name = k.name;
                        }
                    }
                    None => keys.push(k),
                }
            }
            Err(why) => refused.push((j.key_id, why)),
        }
    }
    for (spki, at, name) in revoked_keys {
        if let Some(k) = keys.iter_mut().find(|k| k.spki == spki)
            && k.not_after.is_none_or(|n| at < n)
        {
            k.not_after = Some(at);
            k.name = name;
        }
    }
    let mut anchor_list: Vec<Anchor> = Vec::new();
    for a in anchors.latest.iter().chain(anchors.history.iter()) {
        let head = a.head_bytes().map_err(|e| failure(&fp, e))?;
        if anchor_list.iter().any(|x| x.seq == a.seq && x.head == head) {
            continue;
        }
        anchor_list.push(Anchor {
            seq: a.seq,
            head,
            place: format!(
                "anchored in {} at {}",
                source.name(),
                rfc3339(a.anchored_at)
            ),
        });
    }
    let opts = VerifyOptions {
        keys,
        default_policy: input.policy,
        grace: cps_atna::DEFAULT_GRACE,
        anchors: anchor_list,
    };
    match cps_atna::verify(&dir, &opts) {
        Ok(report) => {
            let used: Vec<String> = report.keys_used.clone();
            Ok(Verified {
                node: input.node.clone(),
                nodes: anchors.nodes.clone(),
                root_fingerprint,
                root_subject,
                certificates: used,
                anchors_from: source.name(),
                latest_anchor: anchors.latest.as_ref().map(|a| (a.seq, a.anchored_at)),
                report,
            })
        }
        Err(cps_atna::VerifyError::Io { op, path, source }) => {
            Err(failure(&fp, format!("{op} {}: {source}", path.display())))
        }
        Err(e) => {
            let mut message = e.to_string();
            // A checkpoint whose key holds no accepted certificate: say why the candidates
            // were refused.
            for (id, why) in &refused {
                if message.contains(&hex::encode(id)) {
                    message.push_str(&format!(" ({why})"));
                }
            }
            if message.contains("which no trusted certificate holds")
                && !refused
                    .iter()
                    .any(|(id, _)| message.contains(&hex::encode(id)))
            {
                message.push_str(&format!(
                    " (no certificate for it in {} or the store)",
                    dir.join(CHECKPOINT_CERTS).display()
                ));
            }
            Err(refusal(&fp, message))
        }
    }
}
