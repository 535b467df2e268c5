//! The appliance's metrics registry: the `metrics` facade's recorder, rendered by `GET /metrics`
//! on the public listener in the Prometheus text format.
//!
//! Services count through the `metrics` facade (`metrics::counter!`...) without knowing the
//! appliance; without a recorder (unit tests, CLI commands) their counts go nowhere. The event
//! counters are counted from the audit records themselves ([`cps_audit::metrics`], called by the
//! store after each commit: [`audit_observer`]). Rendering reads in-memory atomics only: a
//! scrape does not touch the store.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds) of every histogram: from 1 ms to 10 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// HTTPS request latency, by method and route pattern (`authz::ROUTES`).
pub const HTTP_REQUEST_SECONDS: &str = "cps_http_request_duration_seconds";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use; `None` when another recorder was installed
/// first (the counts then go to that one).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?;
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    return None;
                }
            };
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    for (name, help) in cps_audit::metrics::DESCRIPTIONS {
        metrics::describe_counter!(*name, *help);
    }
    metrics::describe_histogram!(
        HTTP_REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "HTTPS request latency, by method and route pattern."
    );
    metrics::describe_histogram!(
        cps_hsm::metrics::SIGN_SECONDS,
        metrics::Unit::Seconds,
        "HSM signature latency, by key label."
    );
    metrics::describe_counter!(
        cps_hsm::metrics::SIGN_ERRORS,
        "HSM signatures that failed, by key label."
    );
    metrics::describe_counter!(
        crate::ocsp::RESPONSES,
        "OCSP responses, by certificate status and cache (hit, miss, none for errors)."
    );
    metrics::describe_counter!(cps_ca::CRL_GENERATIONS, "CRLs generated, by CA.");
    for (name, help) in [
        (
            AUDIT_RECEIVED,
            "Audit messages the repository stored, by transport.",
        ),
        (
            AUDIT_RECEIVED_UNPARSED,
            "Audit messages the repository stored unparsed.",
        ),
        (
            AUDIT_CONNECTIONS_REFUSED,
            "syslog-TLS connections the repository refused.",
        ),
        (
            AUDIT_UDP_DROPPED,
            "UDP audit messages dropped while the log could not take them.",
        ),
        (AUDIT_SENT, "Audit messages delivered, by destination."),
    ] {
        metrics::describe_counter!(name, help);
    }
    metrics::describe_gauge!(
        AUDIT_QUEUE_DEPTH,
        "Durable audit messages not yet delivered, by destination."
    );
    metrics::describe_gauge!(
        AUDIT_DESTINATION_CONNECTED,
        "1 while the sender is connected to the destination."
    );
}

/// The store's audit observer: each durable audit record counted once.
pub fn audit_observer() -> cps_store::AuditObserver {
    Arc::new(cps_audit::metrics::count)
}

/// Runs the recorder's upkeep (histogram buckets drained between scrapes) until dropped.
pub fn spawn_upkeep() -> Option<tokio::task::JoinHandle<()>> {
    let handle = handle()?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    }))
}

/// Seconds from `now` until each certificate's notAfter, by its name.
#[derive(Debug, Clone, Default)]
pub struct Expiries(pub Vec<(String, i64)>);

impl Expiries {
    /// Adds `der`'s notAfter under `name` (a certificate that does not parse is skipped with a
    /// warning: it cannot be served either).
    pub fn add(&mut self, name: &str, der: &[u8]) {
        use x509_parser::prelude::FromDer;
        match x509_parser::certificate::X509Certificate::from_der(der) {
            Ok((_, c)) => self
                .0
                .push((name.to_owned(), c.validity().not_after.timestamp())),
            Err(e) => tracing::warn!(certificate = name, error = %e, "no expiry metric"),
        }
    }

    /// The `cps_certificate_expiry_seconds` family.
    pub fn render(&self, now: i64, out: &mut String) {
        use std::fmt::Write;
        let name = "cps_certificate_expiry_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Seconds until notAfter of the appliance's own certificates, by certificate.\n# TYPE {name} gauge"
        );
        for (cert, not_after) in &self.0 {
            let _ = writeln!(out, "{name}{{certificate=\"{cert}\"}} {}", not_after - now);
        }
    }
}

/// The audit trail's own counters as metrics (called every few seconds by `serve`): messages the
/// repository stored and refused, and per destination what the sender delivered, how many
/// durable messages still wait, and whether it is connected. Destination names come from the
/// configuration (bounded).
pub fn export_trail(atna: &crate::audit::Atna) {
    if let Some(r) = &atna.repository {
        let s = r.stats();
        metrics::counter!(AUDIT_RECEIVED, "transport" => "tls")
            .absolute(s.messages.saturating_sub(s.udp_messages));
        metrics::counter!(AUDIT_RECEIVED, "transport" => "udp").absolute(s.udp_messages);
        metrics::counter!(AUDIT_RECEIVED_UNPARSED).absolute(s.parse_errors);
        metrics::counter!(AUDIT_CONNECTIONS_REFUSED).absolute(s.refused);
        metrics::counter!(AUDIT_UDP_DROPPED).absolute(s.udp_dropped);
    }
    if let Some(sender) = &atna.sender {
        let last = sender.queue().last_seq();
        for (destination, st) in sender.status() {
            metrics::counter!(AUDIT_SENT, "destination" => destination.clone())
                .absolute(st.delivered);
            metrics::gauge!(AUDIT_QUEUE_DEPTH, "destination" => destination.clone())
                .set(last.saturating_sub(st.delivered) as f64);
            metrics::gauge!(AUDIT_DESTINATION_CONNECTED, "destination" => destination)
                .set(if st.connected { 1.0 } else { 0.0 });
        }
    }
}

pub const AUDIT_RECEIVED: &str = "cps_audit_messages_received_total";
pub const AUDIT_RECEIVED_UNPARSED: &str = "cps_audit_messages_received_unparsed_total";
pub const AUDIT_CONNECTIONS_REFUSED: &str = "cps_audit_connections_refused_total";
pub const AUDIT_UDP_DROPPED: &str = "cps_audit_udp_messages_dropped_total";
pub const AUDIT_SENT: &str = "cps_audit_messages_sent_total";
pub const AUDIT_QUEUE_DEPTH: &str = "cps_audit_queue_depth";
pub const AUDIT_DESTINATION_CONNECTED: &str = "cps_audit_destination_connected";
