//! The service counters, counted from the audit events themselves.
//!
//! Every event the appliance audits passes through [`count`] once its record is durable (the
//! store calls it after the commit that wrote the record, see `cps_store::NodeStore`): the one
//! place per event kind, so a service cannot count an event it did not audit, nor audit one it
//! forgets to count. Adding a variant to [`AuditEvent`] does not compile until [`count`] says
//! which counter it feeds (or that it feeds none beyond `cps_audit_events_total`).
//!
//! Labels are bounded: CA ids, profiles, RFC 5280 reasons, refusal codes, steps and outcomes;
//! never a serial, an IdNat, an assertion or a document id. A label value from a stored field is
//! passed through [`bounded`] so that an unexpected text cannot grow the series.

use cps_store::AuditRecord;
use metrics::counter;

use crate::{AuditEvent, Decoded, EnrolmentPurpose};

/// Every metric this module writes, with its help text (for the exporter's `# HELP`).
pub const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "cps_audit_events_total",
        "Audit records made durable, by kind and outcome.",
    ),
    (
        "cps_certificates_issued_total",
        "Certificates issued, by CA and profile.",
    ),
    (
        "cps_certificates_revoked_total",
        "Certificates revoked or put on hold, by CA and RFC 5280 reason.",
    ),
    (
        "cps_certificates_released_total",
        "Certificates released from hold, by CA.",
    ),
    (
        "cps_logins_total",
        "Card logins, by outcome, mode and refusal code.",
    ),
    (
        "cps_assertions_issued_total",
        "XUA assertions issued (break-glass ones included).",
    ),
    (
        "cps_break_glass_total",
        "Assertions issued in break-glass mode.",
    ),
    (
        "cps_assertions_validated_total",
        "Assertion validations, by outcome and refusal code.",
    ),
    (
        "cps_enrolments_total",
        "Card enrolments, by purpose and outcome (started, enrolled, interrupted, resumed, aborted).",
    ),
    (
        "cps_card_actions_total",
        "Card lifecycle actions, by action and outcome.",
    ),
    (
        "cps_dsg_signatures_total",
        "IHE DSG document signatures made, by signer kind.",
    ),
    (
        "cps_dsg_verifications_total",
        "IHE DSG signature verifications, by outcome and refusal code.",
    ),
    (
        "cps_tsa_tokens_total",
        "RFC 3161 time-stamp tokens, by outcome.",
    ),
];

/// At most this many bytes of a label value taken from a stored field.
const MAX_LABEL: usize = 48;

/// `value` as a label value when it looks like a code (letters, digits, `_ - . :`, at most
/// [`MAX_LABEL`] bytes), `other` otherwise; an empty value is `none`.
pub fn bounded(value: &str) -> String {
    if value.is_empty() {
        "none".into()
    } else if value.len() <= MAX_LABEL
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        value.into()
    } else {
        "other".into()
    }
}

/// Counts a durable record: its kind and outcome, and its event's own counter when it decodes.
pub fn count(record: &AuditRecord) {
    counter!(
        "cps_audit_events_total",
        "kind" => bounded(&record.kind),
        "outcome" => bounded(&record.outcome),
    )
    .increment(1);
    if let Decoded::Event(event) = AuditEvent::decode(record) {
        count_event(&event);
    }
}

fn purpose(p: &EnrolmentPurpose) -> &'static str {
    match p {
        EnrolmentPurpose::New => "new",
        EnrolmentPurpose::Replacement { .. } => "replacement",
        EnrolmentPurpose::Renewal => "renewal",
    }
}

fn card(action: &'static str, outcome: &'static str) {
    counter!("cps_card_actions_total", "action" => action, "outcome" => outcome).increment(1);
}

/// The event's own counter. Exhaustive on purpose: a new event must be given its place here.
pub fn count_event(event: &AuditEvent) {
    use AuditEvent::*;
    match event {
        CertificateIssued { ca, profile, .. } => {
            counter!("cps_certificates_issued_total", "ca" => bounded(ca), "profile" => bounded(profile))
                .increment(1)
        }
        CertificateRevoked { ca, reason, .. } | CertificateHeld { ca, reason, .. } => {
            counter!("cps_certificates_revoked_total", "ca" => bounded(ca), "reason" => bounded(reason))
                .increment(1)
        }
        CertificateReleased { ca, .. } => {
            counter!("cps_certificates_released_total", "ca" => bounded(ca)).increment(1)
        }
        EnrolmentStarted { kind, .. } => {
            counter!("cps_enrolments_total", "purpose" => purpose(kind), "outcome" => "started")
                .increment(1)
        }
        CardEnrolled { kind, .. } => {
            counter!("cps_enrolments_total", "purpose" => purpose(kind), "outcome" => "enrolled")
                .increment(1)
        }
        EnrolmentInterrupted { .. } => {
            counter!("cps_enrolments_total", "purpose" => "any", "outcome" => "interrupted")
                .increment(1)
        }
        EnrolmentResumed { .. } => {
            counter!("cps_enrolments_total", "purpose" => "any", "outcome" => "resumed")
                .increment(1)
        }
        EnrolmentAborted { .. } => {
            counter!("cps_enrolments_total", "purpose" => "any", "outcome" => "aborted")
                .increment(1)
        }
        CardSuspended(_) => card("suspend", "success"),
        CardResumed(_) => card("resume", "success"),
        CardOpposed { .. } => card("oppose", "success"),
        CardPinUnblocked { .. } => card("unblock_pin", "success"),
        CardPinUnblockFailed { .. } => card("unblock_pin", "failure"),
        CardSecretsDelivered { .. } => card("secrets_delivered", "success"),
        LoginSucceeded { mode, .. } => counter!(
            "cps_logins_total",
            "outcome" => "success", "mode" => bounded(mode), "code" => "none"
        )
        .increment(1),
        LoginRefused { mode, code, .. } => counter!(
            "cps_logins_total",
            "outcome" => "failure", "mode" => bounded(mode), "code" => bounded(code)
        )
        .increment(1),
        // A summary of unauthenticated attempts: each refusal counts, by its reason.
        LoginsRefused(summary) => {
            for (reason, n) in &summary.reasons {
                counter!(
                    "cps_logins_total",
                    "outcome" => "failure", "mode" => "unauthenticated", "code" => bounded(reason)
                )
                .increment(*n);
            }
        }
        AssertionIssued { .. } => counter!("cps_assertions_issued_total").increment(1),
        BreakGlass { .. } => {
            counter!("cps_assertions_issued_total").increment(1);
            counter!("cps_break_glass_total").increment(1);
        }
        AssertionValidated { .. } => counter!(
            "cps_assertions_validated_total", "outcome" => "success", "code" => "none"
        )
        .increment(1),
        AssertionRefused { code, .. } => counter!(
            "cps_assertions_validated_total", "outcome" => "failure", "code" => bounded(code)
        )
        .increment(1),
        DocumentsSigned { signer_kind, .. } => {
            counter!("cps_dsg_signatures_total", "signer_kind" => bounded(signer_kind))
                .increment(1)
        }
        SignatureVerified { .. } => counter!(
            "cps_dsg_verifications_total", "outcome" => "success", "code" => "none"
        )
        .increment(1),
        SignatureRefused { code, .. } => counter!(
            "cps_dsg_verifications_total", "outcome" => "failure", "code" => bounded(code)
        )
        .increment(1),
        TimestampIssued { .. } => {
            counter!("cps_tsa_tokens_total", "outcome" => "success").increment(1)
        }
        // Rare administrative events: `cps_audit_events_total` by kind is their count.
        OperatorCreated { .. }
        | CaInitialised { .. }
        | EnrolmentStepDone { .. }
        | ProfessionalCreated { .. }
        | ProfessionalUpdated { .. }
        | ProfessionalStatusChanged { .. }
        | RegistryImported(_)
        | RegistryImportUnchanged(_)
        | RegistryImportRejected { .. }
        | NodeEnrolled { .. }
        | NodeRemoved { .. }
        | SyslogPeersRefused(_)
        | AnchorMissing { .. }
        | ClockTrusted { .. }
        | ClockUntrusted { .. }
        | DiskFull { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::bounded;

    #[test]
    fn label_values_stay_bounded() {
        assert_eq!(bounded("keyCompromise"), "keyCompromise");
        assert_eq!(bounded("xua.signature-invalid"), "xua.signature-invalid");
        assert_eq!(bounded(""), "none");
        assert_eq!(bounded("a reason with spaces"), "other");
        assert_eq!(bounded(&"x".repeat(49)), "other");
        assert_eq!(bounded("caf\u{e9}"), "other");
    }
}
