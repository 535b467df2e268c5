//! Every DICOM audit message of a run checked against the DICOM PS3.15 A.5.1 schema (vendored at
//! `crates/atna/tests/schema/dicom-audit-message.rnc`) with `jing -c`: the messages rsyslog
//! received, and the records of the appliance's own audit log.
//!
//! One jing run checks a whole batch (one file per message); a failure names each offending
//! message with jing's complaint and the message itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Home, peer, repo_root};

/// The DICOM audit message schema (RELAX NG compact syntax).
pub fn schema() -> PathBuf {
    repo_root().join("crates/atna/tests/schema/dicom-audit-message.rnc")
}

/// The XML of a syslog line or stored record: from its `<AuditMessage` on; `None` when it
/// carries none.
pub fn audit_xml(message: &str) -> Option<&str> {
    message
        .find("<AuditMessage")
        .map(|at| message[at..].trim_end())
}

/// Checks every message with jing against [`schema`]. `Ok(n)`: all `n` are valid. `Err`: each
/// offending message (or one that carries no DICOM audit XML at all) with jing's complaint.
pub fn schema_check(messages: &[String]) -> Result<usize, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let mut files = Vec::with_capacity(messages.len());
    let mut failures = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let Some(xml) = audit_xml(m) else {
            failures.push(format!("message {i} carries no <AuditMessage>:\n{m}"));
            continue;
        };
        let file = dir.path().join(format!("m{i}.xml"));
        std::fs::write(&file, xml).map_err(|e| format!("{}: {e}", file.display()))?;
        files.push((i, file));
    }
    if !files.is_empty() {
        let out = Command::new(peer("jing"))
            .arg("-c")
            .arg(schema())
            .args(files.iter().map(|(_, f)| f))
            .output()
            .map_err(|e| format!("jing (apt-get install jing): {e}"))?;
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut named = false;
        for (i, file) in &files {
            let prefix = format!("{}:", file.display());
            let complaints: Vec<&str> = report
                .lines()
                .filter(|l| l.starts_with(&prefix))
                .map(|l| &l[prefix.len()..])
                .collect();
            if !complaints.is_empty() {
                named = true;
                failures.push(format!(
                    "message {i}: {}\n{}",
                    complaints.join("\n  "),
                    messages[*i]
                ));
            }
        }
        if !out.status.success() && !named {
            failures.push(format!("jing failed ({}): {report}", out.status));
        }
    }
    if failures.is_empty() {
        Ok(messages.len())
    } else {
        Err(format!(
            "{} of {} DICOM audit messages fail the schema {}:\n\n{}",
            failures.len(),
            messages.len(),
            schema().display(),
            failures.join("\n\n")
        ))
    }
}

/// [`schema_check`] that panics with the offending messages; `what` names where they come from.
/// An empty list fails too: a check of nothing proves nothing.
pub fn assert_schema_valid(what: &str, messages: &[String]) {
    assert!(
        !messages.is_empty(),
        "{what}: no DICOM audit message to check"
    );
    if let Err(why) = schema_check(messages) {
        panic!("{what}: {why}");
    }
    eprintln!(
        "{what}: {} DICOM audit messages valid against the schema",
        messages.len()
    );
}

/// The lines of an rsyslog output file (one message each).
pub fn rsyslog_lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every record of the home's audit log (`audit/log`: the repository, with the appliance's own
/// events and what registered nodes sent), oldest first, as received. Read while the appliance
/// is stopped.
pub fn audit_log_messages(home: &Home) -> Vec<String> {
    let log = cps_atna::AuditLog::open(&home.join("audit/log"), None, Default::default())
        .expect("the appliance's audit log");
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = log
            .search(&cps_atna::SearchFilter::default(), 10_000, cursor)
            .expect("audit log search");
        all.extend(
            page.records
                .iter()
                .map(|r| String::from_utf8_lossy(&r.raw).into_owned()),
        );
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    all.reverse();
    all
}

/// [`assert_schema_valid`] on every record of the home's audit log (appliance stopped).
pub fn assert_audit_log_schema_valid(home: &Home) {
    assert_schema_valid("the appliance's audit log", &audit_log_messages(home));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A card suspension as the appliance sends it (RFC 5424 header, then the DICOM XML).
    const SUSPENDED: &str = concat!(
        "<85>1 2026-11-22T10:00:00Z cps-trust.localhost cps-trust - IHE+RFC-3881 - ",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
        "<AuditMessage><EventIdentification EventActionCode=\"U\" ",
        "EventDateTime=\"2026-11-22T10:00:00Z\" EventOutcomeIndicator=\"0\">",
        "<EventID csd-code=\"110113\" codeSystemName=\"DCM\" originalText=\"Security Alert\"/>",
        "<EventTypeCode csd-code=\"110137\" codeSystemName=\"DCM\" ",
        "originalText=\"User Security Attributes Changed\"/>",
        "<EventTypeCode csd-code=\"card-suspended\" codeSystemName=\"cps-trust\" ",
        "originalText=\"Card suspended\"/></EventIdentification>",
        "<ActiveParticipant UserID=\"officer\" UserIsRequestor=\"true\"/>",
        "<AuditSourceIdentification AuditSourceID=\"cps-trust\"/>",
        "<ParticipantObjectIdentification ParticipantObjectID=\"C0001\" ",
        "ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"13\">",
        "<ParticipantObjectIDTypeCode csd-code=\"card-serial\" codeSystemName=\"cps-trust\" ",
        "originalText=\"CPS card serial number\"/>",
        "<ParticipantObjectName>CPS card C0001</ParticipantObjectName>",
        "</ParticipantObjectIdentification></AuditMessage>"
    );

    /// The check is real: the message above passes, and the same message without its
    /// `ParticipantObjectName` (what 9 of 46 messages of a run used to carry) fails, the
    /// failure naming the offending message; so does a line without any audit XML.
    #[test]
    fn the_schema_check_refuses_an_object_without_a_name() {
        assert_eq!(schema_check(&[SUSPENDED.to_owned()]), Ok(1));
        let unnamed = SUSPENDED.replace(
            "<ParticipantObjectName>CPS card C0001</ParticipantObjectName>",
            "",
        );
        assert_ne!(unnamed, SUSPENDED);
        let why = schema_check(&[SUSPENDED.to_owned(), unnamed.clone()]).unwrap_err();
        assert!(why.starts_with("1 of 2 DICOM audit messages"), "{why}");
        assert!(why.contains("message 1:"), "{why}");
        assert!(why.contains(&unnamed), "{why}");
        assert!(!why.contains("message 0:"), "{why}");
        let why = schema_check(&["<85>1 - - - - - not audit".to_owned()]).unwrap_err();
        assert!(why.contains("carries no <AuditMessage>"), "{why}");
        let panicked = std::panic::catch_unwind(|| assert_schema_valid("unnamed", &[unnamed]));
        assert!(panicked.is_err());
        let panicked = std::panic::catch_unwind(|| assert_schema_valid("nothing", &[]));
        assert!(panicked.is_err());
    }
}
