//! Several nodes on one store: what a node must re-check because another node may have changed
//! the state under its caches.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cps_store::FreshVersion;
use parking_lot::Mutex;

/// Keeps the OCSP responder's pre-signed answers no older than the store: before an answer is
/// served, the store's certificates version is read (a read that starts after the request
/// arrived, shared by every request waiting); if any node changed a certificate since the cache
/// was last checked, the whole cache is dropped first. A revocation acknowledged by any node is
/// therefore in every node's next answer. (Issuance moves the version too: in a cluster the
/// cache is rebuilt after each change; one node alone keeps its per-serial invalidation.)
pub struct OcspFreshness {
    fresh: Arc<FreshVersion>,
    /// The last version the cache was checked against, plus one (0: never).
    applied: AtomicU64,
    clearing: Mutex<()>,
}

impl OcspFreshness {
    pub fn new(fresh: Arc<FreshVersion>) -> OcspFreshness {
        OcspFreshness {
            fresh,
            applied: AtomicU64::new(0),
            clearing: Mutex::new(()),
        }
    }

    /// Ready to answer from `ocsp`'s cache; `Err` when the store cannot tell its version (the
    /// answer is then `tryLater`: a cached "good" could be stale).
    pub async fn ready(&self, ocsp: &cps_ocsp::Responder) -> Result<(), &'static str> {
        let Some(v) = self.fresh.current().await else {
            return Err("the store did not give its certificates version");
        };
        let mark = v.saturating_add(1);
        if self.applied.load(Ordering::Acquire) >= mark {
            return Ok(());
        }
        let _g = self.clearing.lock();
        if self.applied.load(Ordering::Acquire) < mark {
            ocsp.invalidate_all();
            // Published only once the cache is empty: a request that sees it may use the cache.
            self.applied.store(mark, Ordering::Release);
        }
        Ok(())
    }
}

/// What `cluster join` needs: the home of a node of the cluster, the new node's id and its own
/// listening addresses.
#[derive(Debug, Clone)]
pub struct JoinRequest<'a> {
    pub from: &'a std::path::Path,
    pub to: &'a std::path::Path,
    pub node_id: &'a str,
    /// `listen.http`, `listen.https`, `listen.syslog_tls`, `listen.ntp` of the new node.
    pub listen: [(&'static str, Option<String>); 4],
}

/// Files of a home that every node of a cluster shares (relative to the home): the HSM access
/// (with SoftHSM2, the token directory named in `softhsm2.conf` is the shared one; with a
/// network HSM, its client configuration), the HSM PINs, the published CA certificates, the
/// HTTPS server certificate and the seal's certificate. Audit logs, queues, CRL files, card
/// readers and operator credentials stay with their node.
const SHARED_FILES: &[&str] = &["softhsm2.conf", "secrets", "ca", "tls", "xua"];

/// Makes the home of a new node from the home of an existing node of a cluster that keeps its
/// state in PostgreSQL: the shared files copied (permissions kept), the configuration copied
/// with the new node's id, its own audit key labels (each node signs its own audit chain) and
/// its listening addresses. Refuses a non-empty target and a source whose store is not shared.
pub fn join(req: &JoinRequest<'_>) -> Result<Vec<std::path::PathBuf>, String> {
    use crate::config::CONFIG_FILE;
    if !cps_store::valid_node_id(req.node_id) {
        return Err(format!(
            "node id '{}' must be 1 to {} letters, digits, '.', '-' or '_', starting with a \
             letter or a digit",
            req.node_id,
            cps_store::MAX_NODE_ID_LEN
        ));
    }
    let src_cfg = req.from.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&src_cfg).map_err(|e| format!("{}: {e}", src_cfg.display()))?;
    let mut doc: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", src_cfg.display()))?;
    let backend = doc
        .get("store")
        .and_then(|s| s.get("backend"))
        .and_then(|b| b.as_str())
        .unwrap_or("sled");
    if backend != "postgres" {
        return Err(format!(
            "{} keeps its state in {backend}, which one machine owns: a cluster needs \
             [store] backend = \"postgres\"",
            req.from.display()
        ));
    }
    if std::fs::read_dir(req.to).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!(
            "{} is not empty: a new node needs an empty home",
            req.to.display()
        ));
    }
    let section = |doc: &mut toml::Table, name: &str| -> Result<toml::Table, String> {
        match doc.remove(name) {
            None => Ok(toml::Table::new()),
            Some(toml::Value::Table(t)) => Ok(t),
            Some(_) => Err(format!("[{name}] is not a table")),
        }
    };
    let mut cluster = section(&mut doc, "cluster")?;
    cluster.insert("node_id".into(), req.node_id.into());
    doc.insert("cluster".into(), cluster.into());
    let mut audit = section(&mut doc, "audit")?;
    for (key, default) in [
        ("checkpoint_key_label", "audit-checkpoint"),
        ("node_key_label", "audit-node"),
    ] {
        let base = audit
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or(default)
            .to_owned();
        // One suffix, whatever the source node's own label was.
        let base = base.split("@").next().unwrap_or(default).to_owned();
        audit.insert(key.into(), format!("{base}@{}", req.node_id).into());
    }
    doc.insert("audit".into(), audit.into());
    let mut listen = section(&mut doc, "listen")?;
    for (key, value) in &req.listen {
        if let Some(v) = value {
            listen.insert((*key).into(), v.clone().into());
        }
    }
    doc.insert("listen".into(), listen.into());
    let out = toml::to_string(&doc).map_err(|e| e.to_string())?;
    let config: crate::config::Config =
        toml::from_str(&out).map_err(|e| format!("the new configuration: {e}"))?;
    config
        .validate(req.from)
        .map_err(|e| format!("the new node's configuration: {e}"))?;
    std::fs::create_dir_all(req.to).map_err(|e| format!("{}: {e}", req.to.display()))?;
    let mut written = Vec::new();
    for name in SHARED_FILES {
        let src = req.from.join(name);
        if src.exists() {
            copy_tree(&src, &req.to.join(name))?;
            written.push(req.to.join(name));
        }
    }
    let dst_cfg = req.to.join(CONFIG_FILE);
    std::fs::write(
        &dst_cfg,
        format!(
            "# cps-trust configuration of node {} (made by `cluster join` from {}).\n{out}",
            req.node_id,
            req.from.display()
        ),
    )
    .map_err(|e| format!("{}: {e}", dst_cfg.display()))?;
    written.push(dst_cfg);
    config
        .validate(req.to)
        .map_err(|e| format!("the new node's configuration: {e}"))?;
    Ok(written)
}

fn copy_tree(src: &std::path::Path, dst: &std::path::Path) -> Result<(), String> {
    let meta = std::fs::metadata(src).map_err(|e| format!("{}: {e}", src.display()))?;
    if meta.is_dir() {
        std::fs::create_dir_all(dst).map_err(|e| format!("{}: {e}", dst.display()))?;
        for entry in std::fs::read_dir(src).map_err(|e| format!("{}: {e}", src.display()))? {
            let entry = entry.map_err(|e| format!("{}: {e}", src.display()))?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else {
        std::fs::copy(src, dst).map_err(|e| format!("{}: {e}", dst.display()))?;
    }
    std::fs::set_permissions(dst, meta.permissions()).map_err(|e| format!("{}: {e}", dst.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(
        from: &'a std::path::Path,
        to: &'a std::path::Path,
        id: &'a str,
    ) -> JoinRequest<'a> {
        JoinRequest {
            from,
            to,
            node_id: id,
            listen: [
                ("http", None),
                ("https", None),
                ("syslog_tls", None),
                ("ntp", None),
            ],
        }
    }

    #[test]
    fn join_refuses_bad_input_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&from).unwrap();
        // No configuration at the source.
        assert!(join(&request(&from, &to, "b")).is_err());
        // A bad node id.
        let e = join(&request(&from, &to, "../b")).unwrap_err();
        assert!(e.contains("node id"), "{e}");
        // A home on the embedded store is one machine's.
        let mut cfg = crate::config::Config::embedded_default();
        std::fs::write(from.join(crate::config::CONFIG_FILE), cfg.to_toml()).unwrap();
        let e = join(&request(&from, &to, "b")).unwrap_err();
        assert!(e.contains("backend = \"postgres\""), "{e}");
        // Malformed TOML.
        std::fs::write(from.join(crate::config::CONFIG_FILE), "[store\nbackend=").unwrap();
        assert!(join(&request(&from, &to, "b")).is_err());
        // A non-empty target.
        cfg.store.backend = crate::config::StoreBackend::Postgres;
        cfg.store.url = Some("postgresql://cps@db/cps".into());
        std::fs::write(from.join(crate::config::CONFIG_FILE), cfg.to_toml()).unwrap();
        std::fs::create_dir_all(&to).unwrap();
        std::fs::write(to.join("x"), "x").unwrap();
        let e = join(&request(&from, &to, "b")).unwrap_err();
        assert!(e.contains("not empty"), "{e}");
        assert_eq!(
            std::fs::read_dir(&to).unwrap().count(),
            1,
            "nothing written"
        );
    }
}
