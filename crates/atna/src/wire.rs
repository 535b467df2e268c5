//! The repository's records as the API's wire type ([`cps_api::AuditEvent`]).

use crate::Record;

impl From<&Record> for cps_api::AuditEvent {
    fn from(r: &Record) -> cps_api::AuditEvent {
        cps_api::AuditEvent {
            seq: r.seq,
            received: r.received / 1_000_000,
            transport: format!("{:?}", r.transport).to_lowercase(),
            node: r.node.subject.clone(),
            peer: r.peer.clone(),
            event: r
                .summary
                .event
                .as_ref()
                .map(|e| cps_api::AuditEventSummary {
                    event_id: e.event_id.code.clone(),
                    event_name: e.event_id.meaning.clone(),
                    event_types: e.event_types.iter().map(|c| c.code.clone()).collect(),
                    action: e.action.clone(),
                    outcome: e.outcome,
                    time: e.event_time.map(|t| t / 1_000_000),
                    users: e.user_ids.clone(),
                    patients: e.patient_ids.clone(),
                    source: e.source_id.clone(),
                }),
            parse_error: r
                .summary
                .syslog_error
                .clone()
                .or(r.summary.xml_error.clone()),
            message: String::from_utf8_lossy(&r.raw).into_owned(),
        }
    }
}
