//! `cps-trust audit verify|events`: the audit record repository's tamper-evident log.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use cps_appliance::audit_anchor::AnchorSet;
use cps_appliance::audit_verify::{AnchorSource, StoreAccess};
use cps_appliance::config::Config;

use crate::client::ApiClient;
use crate::{CliResult, EXIT_FAILURE, EXIT_REFUSED, emitln, fail};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the log (read-only): the hash chain; every checkpoint signed by a key whose
    /// `audit-checkpoint` certificate chains to the root; the checkpoints anchored in the store
    /// present; no records without a checkpoint or beyond what the last checkpoint allows.
    /// Names the first problem (what is missing) and exits 3; 0 only when intact. Works with the
    /// appliance stopped (reads the store) or running (asks it, as an operator).
    ///
    /// Each node of a cluster keeps its own log, anchored in the shared store under its id:
    /// this checks one node's log (this node's, or `--node <id> --dir <copy of its log>`) and
    /// lists every node the store knows, with its latest anchor; it also exits 3 if the store
    /// says any node's log was cut back.
    Verify {
        /// The node whose log to check (default: this home's `[cluster] node_id`). Another
        /// node's log is on its machine: give a copy of its `audit/log` directory with --dir.
        #[arg(long)]
        node: Option<String>,
        /// Log directory (default: <home>/audit/log), e.g. a copy of it.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The root certificate the checkpoint certificate must chain to (default:
        /// <home>/ca/root.pem). Its SHA-256 fingerprint is printed: compare it with the one
        /// recorded at the key ceremony.
        #[arg(long)]
        root: Option<PathBuf>,
        /// Operator credential used when the appliance is running (role auditor or ca-operator).
        #[arg(long = "as", default_value = "admin")]
        as_operator: String,
    },
    /// Search the repository (through the running appliance; role auditor or ca-operator).
    ///
    /// The repository is this node's log: its own records and what other ATNA nodes sent it.
    /// In a cluster each node keeps its own log; to search every node's records in one place,
    /// make the nodes send to one repository (`[[audit.destinations]]`): each node's messages
    /// name it in their AuditSourceID (`<audit.source_id>/<node id>`, `--source`).
    Events {
        /// Unix seconds, inclusive.
        #[arg(long)]
        from: Option<i64>,
        /// Unix seconds, exclusive.
        #[arg(long)]
        to: Option<i64>,
        /// DICOM EventID, e.g. 110114.
        #[arg(long)]
        event: Option<String>,
        /// EventTypeCode, e.g. 110122.
        #[arg(long)]
        event_type: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        patient: Option<String>,
        /// 0, 4, 8 or 12.
        #[arg(long)]
        outcome: Option<u8>,
        /// Sending node (certificate subject).
        #[arg(long)]
        node: Option<String>,
        /// AuditSourceID, e.g. `cps-trust/node-a` for the records of the cluster node `node-a`.
        #[arg(long)]
        source: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Operator credential.
        #[arg(long = "as", default_value = "admin")]
        as_operator: String,
    },
}

/// The anchors through the running appliance's API.
struct ApiAnchors(ApiClient);

impl AnchorSource for ApiAnchors {
    fn name(&self) -> String {
        "the store (through the running appliance)".into()
    }

    fn fetch(&self, node: &str, key_ids: &[[u8; 32]]) -> Result<AnchorSet, String> {
        let keys: Vec<String> = key_ids.iter().map(hex::encode).collect();
        // The API's wire type (`cps_api::AnchorSetView`) has the same shape as the verifier's
        // own `AnchorSet`, read directly.
        self.0.get(&format!(
            "/api/v1/audit/checkpoints?node={node}&keys={}",
            keys.join(",")
        ))
    }
}

pub fn verify(
    home: &Path,
    config: &Config,
    node: Option<String>,
    dir: Option<PathBuf>,
    root: Option<PathBuf>,
    as_operator: &str,
) -> CliResult {
    let access = cps_appliance::audit::open_store(home, config).map_err(fail)?;
    let api;
    let source: &dyn AnchorSource = match &access {
        StoreAccess::Open(store) => store,
        StoreAccess::Running => {
            api = ApiAnchors(ApiClient::new(home, config, as_operator).map_err(fail)?);
            &api
        }
    };
    let root_line = |fp: &str| {
        format!(
            "root certificate SHA-256 {fp} (compare it with the fingerprint recorded at the key ceremony)"
        )
    };
    match cps_appliance::audit::verify(home, config, node, dir, root, source) {
        Ok(v) => {
            let r = &v.report;
            emitln(&root_line(&v.root_fingerprint));
            emitln(&format!("node {}", v.node));
            emitln(&format!("root subject {}", v.root_subject));
            for c in &v.certificates {
                emitln(&format!("checkpoints signed by {c}"));
            }
            match v.latest_anchor {
                Some((seq, at)) => emitln(&format!(
                    "latest anchor: checkpoint of record {seq}, anchored at {} (read from {})",
                    cps_appliance::rfc3339(at),
                    v.anchors_from
                )),
                None => emitln(&format!("no anchor in {} yet", v.anchors_from)),
            }
            let mut tail = format!("{} records after it", r.unsigned_tail);
            if r.unsigned_tail > 0 {
                tail.push_str(" (within its policy: not yet signed)");
            }
            if r.torn_tail_bytes > 0 {
                tail.push_str(&format!(
                    "; a torn last record of {} bytes (a crash during an unacknowledged append) is ignored",
                    r.torn_tail_bytes
                ));
            }
            if r.torn_checkpoint_bytes > 0 {
                tail.push_str(&format!(
                    "; a torn last checkpoint of {} bytes is ignored",
                    r.torn_checkpoint_bytes
                ));
            }
            emitln(&format!(
                "audit log intact: {} records, head {}, {} signed checkpoints (last at record {}), {} anchors found, {tail}",
                r.records,
                hex::encode(r.head),
                r.checkpoints,
                r.last_checkpoint_seq,
                r.anchors,
            ));
            other_nodes(&v, source)
        }
        Err(e) => {
            if let Some(fp) = &e.root_fingerprint {
                emitln(&root_line(fp));
            }
            let code = if e.refused {
                EXIT_REFUSED
            } else {
                EXIT_FAILURE
            };
            Err((
                code,
                format!("audit log verification failed: {}", e.message),
            ))
        }
    }
}

/// After one node's log verified: every other node the store knows, with its latest anchor and
/// how to verify its log (on its machine). Exits 3 if the store holds a lost anchor of any.
fn other_nodes(v: &cps_appliance::audit_verify::Verified, source: &dyn AnchorSource) -> CliResult {
    let mut cut_back = Vec::new();
    for n in v.nodes.iter().filter(|n| n.node != v.node) {
        let set = source.fetch(&n.node, &[]).map_err(|e| {
            (
                EXIT_FAILURE,
                format!("cannot read the anchors of node {}: {e}", n.node),
            )
        })?;
        let latest = match &set.latest {
            Some(a) => format!(
                "latest anchor: checkpoint of record {}, anchored at {}",
                a.seq,
                cps_appliance::rfc3339(a.anchored_at)
            ),
            None => "no anchor yet".into(),
        };
        emitln(&format!(
            "node {} (host {}, started {}): {latest}; its log is on its machine, not checked here: verify a copy with `cps-trust audit verify --node {} --dir <copy of its audit/log>`",
            n.node,
            n.host,
            cps_appliance::rfc3339(n.started_at),
            n.node
        ));
        if let Some(l) = set.lost.first() {
            cut_back.push(format!(
                "node {}: at its start at {} its log did not hold the checkpoint of record {} (anchored at {})",
                n.node,
                cps_appliance::rfc3339(l.found_at),
                l.anchor.seq,
                cps_appliance::rfc3339(l.anchor.anchored_at)
            ));
        }
    }
    if cut_back.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err((
            EXIT_REFUSED,
            format!(
                "the audit log of another node was cut back, deleted or replaced while it was stopped: {}",
                cut_back.join("; ")
            ),
        ))
    }
}

pub fn events(api: &ApiClient, cmd: AuditCommand) -> CliResult {
    let AuditCommand::Events {
        from,
        to,
        event,
        event_type,
        user,
        patient,
        outcome,
        node,
        source,
        limit,
        ..
    } = cmd
    else {
        return Err(fail("not a search"));
    };
    let mut url =
        reqwest::Url::parse("https://x/api/v1/audit/events").map_err(|e| fail(e.to_string()))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("limit", &limit.to_string());
        for (k, v) in [
            ("from", from.map(|v| v.to_string())),
            ("to", to.map(|v| v.to_string())),
            ("event", event),
            ("event_type", event_type),
            ("user", user),
            ("patient", patient),
            ("outcome", outcome.map(|v| v.to_string())),
            ("node", node),
            ("source", source),
        ] {
            if let Some(v) = v {
                q.append_pair(k, &v);
            }
        }
    }
    let r: cps_api::AuditEvents = api
        .get(&format!(
            "/api/v1/audit/events?{}",
            url.query().unwrap_or("")
        ))
        .map_err(fail)?;
    // Absent values print as JSON does (`null`), as this listing always has.
    let json = |v: Option<String>| v.unwrap_or_else(|| "null".into());
    for e in &r.events {
        let ev = e.event.as_ref();
        emitln(&format!(
            "{}\t{}\t{}\t{}\toutcome {}\tusers {}\tnode {}",
            e.seq,
            json(ev.and_then(|v| v.time).map(|t| t.to_string())),
            ev.map_or("-", |v| v.event_id.as_str()),
            json(ev.map(|v| serde_json::to_string(&v.event_types).unwrap_or_default())),
            json(ev.and_then(|v| v.outcome).map(|o| o.to_string())),
            json(ev.map(|v| serde_json::to_string(&v.users).unwrap_or_default())),
            e.node,
        ));
    }
    Ok(ExitCode::SUCCESS)
}
