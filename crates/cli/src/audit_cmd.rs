//! `cps-trust audit verify|events`: the audit record repository's tamper-evident log.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::client::ApiClient;
use crate::{CliResult, EXIT_REFUSED, emitln, fail};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and the signed checkpoints of the log (offline, read-only): names
    /// the first deleted, changed, reordered or truncated record and exits 3.
    Verify {
        /// Log directory (default: <home>/audit/log).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Search the repository (through the running appliance; role auditor or ca-operator).
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
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Operator credential.
        #[arg(long = "as", default_value = "admin")]
        as_operator: String,
    },
}

pub fn verify(home: &Path, dir: Option<PathBuf>) -> CliResult {
    match cps_appliance::audit::verify(home, dir) {
        Ok(report) => {
            emitln(&format!(
                "audit log intact: {} records, head {}, {} signed checkpoints (last at record {}), {} records after it",
                report.records,
                hex::encode(report.head),
                report.checkpoints,
                report.last_checkpoint_seq,
                report.unsigned_tail
            ));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err((EXIT_REFUSED, format!("audit log verification failed: {e}"))),
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
        ] {
            if let Some(v) = v {
                q.append_pair(k, &v);
            }
        }
    }
    let r = api
        .get(&format!(
            "/api/v1/audit/events?{}",
            url.query().unwrap_or("")
        ))
        .map_err(fail)?;
    for e in r["events"].as_array().into_iter().flatten() {
        let ev = &e["event"];
        emitln(&format!(
            "{}\t{}\t{}\t{}\toutcome {}\tusers {}\tnode {}",
            e["seq"],
            ev["time"],
            ev["event_id"].as_str().unwrap_or("-"),
            ev["event_types"],
            ev["outcome"],
            ev["users"],
            e["node"].as_str().unwrap_or("-"),
        ));
    }
    Ok(ExitCode::SUCCESS)
}
