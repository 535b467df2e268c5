//! pkilint, read through its findings.
//!
//! Every linter runs with `-s WARNING -f JSON`: the verdict is the list of findings pkilint prints
//! on stdout (`{"results": [{"node_path", "validator", "finding_descriptions": [{"severity",
//! "code", "message"}]}]}`), cross-checked with its exit status (the number of findings, capped at
//! 255). Whatever the interpreter or a library writes on stderr (deprecation warnings, for
//! instance) is kept for the failure message but neither passes nor fails a lint by itself; output
//! that is not a findings document (a crash, a file pkilint cannot load) is an error.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pkilint entry points the suite uses, each with the arguments its documents need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linter {
    /// `lint_pkix_cert lint` (RFC 5280 certificate profile).
    Certificate,
    /// `lint_crl lint -t CRL -p PKIX`.
    Crl,
    /// `lint_ocsp_response lint`.
    OcspResponse,
}

impl Linter {
    pub fn program(self) -> &'static str {
        match self {
            Linter::Certificate => "lint_pkix_cert",
            Linter::Crl => "lint_crl",
            Linter::OcspResponse => "lint_ocsp_response",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Linter::Certificate | Linter::OcspResponse => &["lint"],
            Linter::Crl => &["lint", "-t", "CRL", "-p", "PKIX"],
        }
    }
}

/// One finding pkilint reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub node_path: String,
    pub validator: String,
    pub severity: String,
    pub code: String,
    pub message: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} @ {}: {} ({})",
            self.validator, self.node_path, self.code, self.severity
        )?;
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
}

/// What one lint run produced.
#[derive(Debug)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// pkilint's stderr, for diagnostics only.
    pub stderr: String,
}

impl Report {
    pub fn codes(&self) -> Vec<&str> {
        self.findings.iter().map(|f| f.code.as_str()).collect()
    }
}

/// The program of `linter`: `$CPS_TRUST_PEERS_VENV/bin` (default `<repo>/.peers/venv/bin`), else
/// PATH.
pub fn program(linter: Linter) -> PathBuf {
    crate::peer(linter.program())
}

/// Lint `file` with the installed pkilint.
pub fn lint(linter: Linter, file: &Path) -> Result<Report, String> {
    lint_with(&program(linter), linter, file)
}

/// Lint `file` with `program` (a pkilint entry point of the kind `linter`).
pub fn lint_with(program: &Path, linter: Linter, file: &Path) -> Result<Report, String> {
    let out = Command::new(program)
        .args(linter.args())
        .args(["-s", "WARNING", "-f", "JSON"])
        .arg(file)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let findings = parse_findings(&stdout).map_err(|e| {
        format!(
            "{} {}: {e} (exit status {:?})\nstdout: {stdout}\nstderr: {stderr}",
            program.display(),
            file.display(),
            out.status.code()
        )
    })?;
    check_status(out.status.code(), findings.len()).map_err(|e| {
        format!(
            "{} {}: {e}\nstdout: {stdout}\nstderr: {stderr}",
            program.display(),
            file.display()
        )
    })?;
    Ok(Report { findings, stderr })
}

/// pkilint exits with the number of findings it reported, capped at 255.
pub fn check_status(code: Option<i32>, findings: usize) -> Result<(), String> {
    let expected = findings.min(255) as i32;
    match code {
        Some(c) if c == expected => Ok(()),
        other => Err(format!(
            "exit status {other:?} does not match the {findings} findings printed"
        )),
    }
}

/// The findings of one JSON report (`-f JSON`).
pub fn parse_findings(stdout: &str) -> Result<Vec<Finding>, String> {
    let doc: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("not a pkilint JSON report ({e})"))?;
    let results = doc
        .get("results")
        .and_then(|r| r.as_array())
        .ok_or("no \"results\" array in the report")?;
    let str_field = |v: &serde_json::Value, k: &str| -> Result<String, String> {
        v.get(k)
            .and_then(|s| s.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("a result without a string \"{k}\""))
    };
    let mut findings = Vec::new();
    for r in results {
        let node_path = str_field(r, "node_path")?;
        let validator = str_field(r, "validator")?;
        let descriptions = r
            .get("finding_descriptions")
            .and_then(|d| d.as_array())
            .ok_or("a result without \"finding_descriptions\"")?;
        for d in descriptions {
            findings.push(Finding {
                node_path: node_path.clone(),
                validator: validator.clone(),
                severity: str_field(d, "severity")?,
                code: str_field(d, "code")?,
                message: d
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string),
            });
        }
    }
    Ok(findings)
}

/// Panics unless pkilint reports nothing at WARNING or above for `file`.
pub fn assert_clean(linter: Linter, file: &Path) {
    match lint(linter, file) {
        Ok(r) if r.findings.is_empty() => {}
        Ok(r) => panic!(
            "pkilint findings for {}:\n{}\nstderr: {}",
            file.display(),
            r.findings
                .iter()
                .map(|f| format!("  {f}"))
                .collect::<Vec<_>>()
                .join("\n"),
            r.stderr
        ),
        Err(e) => panic!("pkilint did not give a verdict: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_read_from_the_json_report() {
        let out = r#"{"results": [{"node_path": "certificate.tbsCertificate.serialNumber", "validator": "CertificateSerialNumberValidator", "finding_descriptions": [{"severity": "ERROR", "code": "pkix.certificate_serial_number_out_of_range", "message": "on content \"0\""}]}, {"node_path": "x", "validator": "V", "finding_descriptions": [{"severity": "WARNING", "code": "a", "message": null}, {"severity": "ERROR", "code": "b", "message": null}]}]}"#;
        let f = parse_findings(out).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].code, "pkix.certificate_serial_number_out_of_range");
        assert_eq!(f[0].message.as_deref(), Some("on content \"0\""));
        assert_eq!((f[2].validator.as_str(), f[2].code.as_str()), ("V", "b"));
        assert!(check_status(Some(3), 3).is_ok());
        assert_eq!(parse_findings("{\"results\": []}\n").unwrap(), vec![]);
    }

    #[test]
    fn anything_but_a_findings_report_is_an_error() {
        for out in [
            "",
            "Failed to load certificate",
            "{}",
            "{\"results\": [{\"node_path\": \"x\"}]}",
        ] {
            assert!(parse_findings(out).is_err(), "{out:?}");
        }
        // A crash after an empty report, or findings the exit status does not count.
        assert!(check_status(Some(1), 0).is_err());
        assert!(check_status(Some(0), 2).is_err());
        assert!(check_status(None, 0).is_err());
        assert!(check_status(Some(255), 300).is_ok());
    }
}
