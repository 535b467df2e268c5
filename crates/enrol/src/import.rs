//! CSV import of professionals (format: `IMPORT_FORMAT.md` of this crate).
//!
//! Two phases. [`parse_csv`] is pure: it reads the whole file, checks every line and merges the
//! lines of each professional, and either returns the professionals or a line-by-line report.
//! [`Registry::import_csv`] then writes, **only if the whole file is valid**, in batches of
//! professionals; each batch is atomic. A crash between batches leaves the registry with some
//! professionals written and the import marked as running in the `imports` table; because an
//! import only writes what differs from the registry, running the same file again completes
//! it (the professionals already written are reported as unchanged). Importing the same file
//! twice changes nothing the second time.

use std::collections::BTreeMap;

use cps_store::{Expect, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::codes;
use crate::error::{EnrolError, Result};
use crate::model::{Activity, Professional, ProfessionalData, ProfessionalStatus, shown};
use crate::registry::{Registry, professional_ops};
use crate::tables::{self, IMPORTS, PROFESSIONALS};

/// Column names (compared case-insensitively, surrounding spaces ignored). Other columns are
/// ignored, so a full Annuaire Santé "personne-activité" extraction is accepted as it is.
pub mod columns {
    /// IdNat_PS.
    pub const IDNAT: &str = "Identification nationale PP";
    /// Surname.
    pub const SURNAME: &str = "Nom d'exercice";
    /// Given names.
    pub const GIVEN: &str = "Prénom d'exercice";
    /// TRE_G15 code.
    pub const PROFESSION: &str = "Code profession";
    /// TRE_R01 code (optional column).
    pub const SAVOIR_FAIRE: &str = "Code savoir-faire";
    /// Structure identifier.
    pub const STRUCTURE_ID: &str = "Identifiant technique de la structure";
    /// Structure name.
    pub const STRUCTURE_NAME: &str = "Raison sociale site";
    /// TRE_R02 code.
    pub const SECTEUR: &str = "Code secteur d'activité";
    /// The required columns.
    pub const REQUIRED: [&str; 7] = [
        IDNAT,
        SURNAME,
        GIVEN,
        PROFESSION,
        STRUCTURE_ID,
        STRUCTURE_NAME,
        SECTEUR,
    ];
}

/// Longest line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Most issues listed in a report (the total is counted beyond).
pub const MAX_LISTED_ISSUES: usize = 1000;
/// Most data lines in one file.
pub const MAX_LINES: usize = 5_000_000;

/// One problem, tied to a line of the file (1-based; 0 for the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineIssue {
    /// Line number, from 1 (the header is line 1 when the file does not start with blank lines).
    pub line: usize,
    /// The column concerned, if one.
    pub column: Option<String>,
    /// What is wrong, and how to fix it.
    pub message: String,
}

impl std::fmt::Display for LineIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.column, self.line) {
            (Some(c), 0) => write!(f, "file, column '{c}': {}", self.message),
            (None, 0) => write!(f, "file: {}", self.message),
            (Some(c), l) => write!(f, "line {l}, column '{c}': {}", self.message),
            (None, l) => write!(f, "line {l}: {}", self.message),
        }
    }
}

/// How an import ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportOutcome {
    /// The file has errors: nothing was written.
    Rejected,
    /// Valid, and the registry already held exactly this: nothing was written.
    Unchanged,
    /// Written.
    Imported,
    /// Valid; nothing written because a dry run was asked.
    DryRun,
}

/// The report of an import: counts, and every problem line by line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// SHA-256 of the file (hex).
    pub file_sha256: String,
    /// Data lines read (header and blank lines excluded).
    pub lines: usize,
    /// Distinct professionals in the file.
    pub professionals: usize,
    /// Activities in the file.
    pub activities: usize,
    /// Errors (at most [`MAX_LISTED_ISSUES`]); any error rejects the whole file.
    pub errors: Vec<LineIssue>,
    /// Number of errors, including those not listed.
    pub error_count: usize,
    /// Warnings: accepted, but worth a look.
    pub warnings: Vec<LineIssue>,
    /// Professionals created.
    pub created: usize,
    /// Professionals whose data changed.
    pub updated: usize,
    /// Professionals already identical in the registry.
    pub unchanged: usize,
    /// How it ended.
    pub outcome: ImportOutcome,
}

/// Phase of an import, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportPhase {
    /// Reading and checking lines (`done`/`total` in lines).
    Validating,
    /// Comparing with the registry (`done`/`total` in professionals).
    Comparing,
    /// Writing (`done`/`total` in professionals to write).
    Writing,
}

/// Progress of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportProgress {
    /// Phase.
    pub phase: ImportPhase,
    /// Units done.
    pub done: usize,
    /// Units in the phase.
    pub total: usize,
}

/// Options of [`Registry::import_csv`].
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    /// Check and compare, write nothing.
    pub dry_run: bool,
    /// Professionals per atomic write batch.
    pub batch_size: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            dry_run: false,
            batch_size: 1000,
        }
    }
}

/// A bookkeeping record per import run (table `imports`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRecord {
    /// Import id: `<start time>-<first 16 hex digits of the file hash>`.
    pub id: String,
    /// SHA-256 of the file.
    pub file_sha256: String,
    /// Who ran it.
    pub actor: String,
    /// When it started, Unix seconds.
    pub started_at: i64,
    /// `running` until its last batch is written, then `complete`. A `running` import whose
    /// process is gone was interrupted: run the same file again to complete it.
    pub state: String,
    /// Professionals to create.
    pub created: usize,
    /// Professionals to update.
    pub updated: usize,
    /// Professionals unchanged.
    pub unchanged: usize,
}

/// A professional to write: the stored record (with its bytes) it replaces, if any, and the new one.
type Change = (Option<(Professional, Vec<u8>)>, Professional);

/// A valid file: the professionals it describes, with the line each first appears on.
#[derive(Debug, Clone)]
pub struct ParsedImport {
    /// Professionals by IdNat_PS.
    pub professionals: BTreeMap<String, (usize, ProfessionalData)>,
    /// The report so far (counts, warnings; no errors).
    pub report: ImportReport,
}

struct Issues {
    errors: Vec<LineIssue>,
    error_count: usize,
    warnings: Vec<LineIssue>,
}

impl Issues {
    fn error(&mut self, line: usize, column: Option<&str>, message: String) {
        self.error_count += 1;
        if self.errors.len() < MAX_LISTED_ISSUES {
            self.errors.push(LineIssue {
                line,
                column: column.map(str::to_owned),
                message,
            });
        }
    }

    fn warning(&mut self, line: usize, column: Option<&str>, message: String) {
        if self.warnings.len() < MAX_LISTED_ISSUES {
            self.warnings.push(LineIssue {
                line,
                column: column.map(str::to_owned),
                message,
            });
        }
    }
}

/// Splits one line into fields: `sep`-separated; a field may be enclosed in double quotes
/// (`""` inside stands for `"`), which allows the separator inside it.
fn split_fields(line: &str, sep: char) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        // Skip leading spaces before a possible quote.
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("a quoted field is not closed on this line".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(c) if c == sep => fields.push(field),
                Some(_) => return Err("text after the closing quote of a field".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim().to_owned());
                        return Ok(fields);
                    }
                    Some(c) if c == sep => {
                        fields.push(field.trim().to_owned());
                        break;
                    }
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

/// Describes an invalid UTF-8 line for the officer.
fn encoding_message(bytes: &[u8], e: std::str::Utf8Error) -> String {
    let at = e.valid_up_to();
    let b = bytes[at];
    let latin = match b {
        0xE9 => " (0xE9 is 'é' in Latin-1)",
        0xE8 => " (0xE8 is 'è' in Latin-1)",
        0xE7 => " (0xE7 is 'ç' in Latin-1)",
        0xC9 => " (0xC9 is 'É' in Latin-1)",
        _ => "",
    };
    format!(
        "not valid UTF-8: byte 0x{b:02X} at position {}{latin}; the file looks like Latin-1 or \
         Windows-1252: convert it to UTF-8 (e.g. iconv -f WINDOWS-1252 -t UTF-8)",
        at + 1
    )
}

/// Reads and checks a whole file (pure: no store, no clock). `progress` is called every few
/// thousand lines.
pub fn parse_csv(
    bytes: &[u8],
    progress: &mut dyn FnMut(ImportProgress),
) -> std::result::Result<ParsedImport, Box<ImportReport>> {
    let file_sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes));
    let mut issues = Issues {
        errors: Vec::new(),
        error_count: 0,
        warnings: Vec::new(),
    };
    let rejected = |issues: Issues, lines: usize| -> Box<ImportReport> {
        Box::new(ImportReport {
            file_sha256: file_sha256.clone(),
            lines,
            professionals: 0,
            activities: 0,
            errors: issues.errors,
            error_count: issues.error_count,
            warnings: issues.warnings,
            created: 0,
            updated: 0,
            unchanged: 0,
            outcome: ImportOutcome::Rejected,
        })
    };
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        issues.error(0, None, "the file is UTF-16: convert it to UTF-8".into());
        return Err(rejected(issues, 0));
    }
    let body = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(bytes);
    let total_lines = body.iter().filter(|b| **b == b'\n').count() + 1;

    // Header.
    let mut lines = body
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)));
    let (header_no, header_bytes) = loop {
        match lines.next() {
            None => {
                issues.error(0, None, "the file is empty: expected a header line".into());
                return Err(rejected(issues, 0));
            }
            Some((_, l)) if l.iter().all(u8::is_ascii_whitespace) => continue,
            Some(x) => break x,
        }
    };
    let header = match std::str::from_utf8(header_bytes) {
        Ok(h) => h,
        Err(e) => {
            issues.error(header_no, None, encoding_message(header_bytes, e));
            return Err(rejected(issues, 0));
        }
    };
    let sep = if header.contains('|') {
        '|'
    } else if header.contains(';') {
        ';'
    } else {
        issues.error(
            header_no,
            None,
            "the header has no '|' or ';' separator: expected the column names of the format"
                .into(),
        );
        return Err(rejected(issues, 0));
    };
    let names = match split_fields(header, sep) {
        Ok(n) => n,
        Err(m) => {
            issues.error(header_no, None, m);
            return Err(rejected(issues, 0));
        }
    };
    let find = |want: &str| -> Vec<usize> {
        names
            .iter()
            .enumerate()
            .filter(|(_, n)| n.trim().to_lowercase() == want.to_lowercase())
            .map(|(i, _)| i)
            .collect()
    };
    let mut col = BTreeMap::new();
    for want in columns::REQUIRED.iter().chain([&columns::SAVOIR_FAIRE]) {
        match find(want).as_slice() {
            [i] => {
                col.insert(*want, *i);
            }
            [] if *want == columns::SAVOIR_FAIRE => {}
            [] => issues.error(
                header_no,
                Some(want),
                "required column missing from the header".into(),
            ),
            _ => issues.error(
                header_no,
                Some(want),
                "column appears twice in the header".into(),
            ),
        }
    }
    if issues.error_count > 0 {
        return Err(rejected(issues, 0));
    }
    let width = names.len();

    // Lines.
    struct Seen {
        line: usize,
        data: ProfessionalData,
        activity_lines: BTreeMap<String, usize>,
    }
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut data_lines = 0usize;
    let mut activities = 0usize;
    for (no, raw) in lines {
        if no % 4096 == 0 {
            progress(ImportProgress {
                phase: ImportPhase::Validating,
                done: no,
                total: total_lines,
            });
        }
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        data_lines += 1;
        if data_lines > MAX_LINES {
            issues.error(
                no,
                None,
                format!("more than {MAX_LINES} lines: split the file"),
            );
            break;
        }
        if raw.len() > MAX_LINE_BYTES {
            issues.error(no, None, format!("line longer than {MAX_LINE_BYTES} bytes"));
            continue;
        }
        let line = match std::str::from_utf8(raw) {
            Ok(l) => l,
            Err(e) => {
                issues.error(no, None, encoding_message(raw, e));
                continue;
            }
        };
        let fields = match split_fields(line, sep) {
            Ok(f) => f,
            Err(m) => {
                issues.error(no, None, m);
                continue;
            }
        };
        if fields.len() != width {
            issues.error(
                no,
                None,
                format!(
                    "{} columns, the header has {width} (a '{sep}' too many or missing?)",
                    fields.len()
                ),
            );
            continue;
        }
        let get = |c: &str| col.get(c).map(|i| fields[*i].clone()).unwrap_or_default();
        let mut savoir_faire = Some(get(columns::SAVOIR_FAIRE)).filter(|s| !s.is_empty());
        let profession = get(columns::PROFESSION);
        if savoir_faire.is_some() && !codes::profession_has_savoir_faire(&profession) {
            issues.warning(
                no,
                Some(columns::SAVOIR_FAIRE),
                format!(
                    "savoir-faire '{}' ignored: only médecins (10) and pharmaciens (21) keep one",
                    shown(savoir_faire.as_deref().unwrap_or(""))
                ),
            );
            savoir_faire = None;
        }
        let mut data = ProfessionalData {
            idnat_ps: get(columns::IDNAT),
            surname: get(columns::SURNAME),
            given_names: get(columns::GIVEN),
            profession_code: profession,
            savoir_faire,
            activities: vec![Activity {
                structure_id: get(columns::STRUCTURE_ID),
                structure_name: get(columns::STRUCTURE_NAME),
                secteur_activite: get(columns::SECTEUR),
            }],
        };
        let problems = data.normalise();
        if !problems.is_empty() {
            for p in problems {
                let column = match p.field.as_str() {
                    "idnat_ps" => Some(columns::IDNAT),
                    "surname" => Some(columns::SURNAME),
                    "given_names" => Some(columns::GIVEN),
                    "profession_code" => Some(columns::PROFESSION),
                    "savoir_faire" => Some(columns::SAVOIR_FAIRE),
                    f if f.ends_with("structure_id") => Some(columns::STRUCTURE_ID),
                    f if f.ends_with("structure_name") => Some(columns::STRUCTURE_NAME),
                    f if f.ends_with("secteur_activite") => Some(columns::SECTEUR),
                    _ => None,
                };
                let message = match column {
                    Some(columns::IDNAT) => {
                        format!("IdNat_PS '{}': {}", shown(&data.idnat_ps), p.reason)
                    }
                    _ => p.reason,
                };
                issues.error(no, column, message);
            }
            continue;
        }
        let activity = data.activities[0].clone();
        if let Some(why) = codes::structure_login_problem(&activity.structure_id) {
            issues.warning(
                no,
                Some(columns::STRUCTURE_ID),
                format!(
                    "'{}' cannot be used for login: it is not a struct_IdNat ({why}); the \
                     activity is imported, but no card can be enrolled for it until it is \
                     registered under the structure's struct_IdNat (e.g. 1 + FINESS)",
                    shown(&activity.structure_id)
                ),
            );
        }
        match seen.get_mut(&data.idnat_ps) {
            None => {
                activities += 1;
                seen.insert(
                    data.idnat_ps.clone(),
                    Seen {
                        line: no,
                        activity_lines: BTreeMap::from([(activity.structure_id.clone(), no)]),
                        data,
                    },
                );
            }
            Some(s) => {
                let mut consistent = true;
                for (column, mine, theirs) in [
                    (columns::SURNAME, &data.surname, &s.data.surname),
                    (columns::GIVEN, &data.given_names, &s.data.given_names),
                    (
                        columns::PROFESSION,
                        &data.profession_code,
                        &s.data.profession_code,
                    ),
                ] {
                    if mine != theirs {
                        consistent = false;
                        issues.error(
                            no,
                            Some(column),
                            format!(
                                "'{}' differs from line {} ('{}') for the same IdNat_PS {}",
                                shown(mine),
                                s.line,
                                shown(theirs),
                                data.idnat_ps
                            ),
                        );
                    }
                }
                if data.savoir_faire != s.data.savoir_faire {
                    consistent = false;
                    issues.error(
                        no,
                        Some(columns::SAVOIR_FAIRE),
                        format!(
                            "'{}' differs from line {} ('{}') for the same IdNat_PS {}",
                            data.savoir_faire.as_deref().unwrap_or(""),
                            s.line,
                            s.data.savoir_faire.as_deref().unwrap_or(""),
                            data.idnat_ps
                        ),
                    );
                }
                if !consistent {
                    continue;
                }
                if let Some(first) = s.activity_lines.get(&activity.structure_id) {
                    let same = s.data.activities.contains(&activity);
                    issues.error(
                        no,
                        Some(columns::STRUCTURE_ID),
                        if same {
                            format!("duplicate line: same professional and activity as line {first}")
                        } else {
                            format!(
                                "structure '{}' is already given for {} on line {first}, with other data",
                                activity.structure_id, data.idnat_ps
                            )
                        },
                    );
                    continue;
                }
                if s.data.activities.len() >= crate::model::MAX_ACTIVITIES {
                    issues.error(
                        no,
                        Some(columns::STRUCTURE_ID),
                        format!(
                            "more than {} activities for {}",
                            crate::model::MAX_ACTIVITIES,
                            data.idnat_ps
                        ),
                    );
                    continue;
                }
                s.activity_lines.insert(activity.structure_id.clone(), no);
                s.data.activities.push(activity);
                activities += 1;
            }
        }
    }
    progress(ImportProgress {
        phase: ImportPhase::Validating,
        done: total_lines,
        total: total_lines,
    });
    if data_lines == 0 && issues.error_count == 0 {
        issues.error(0, None, "no data line after the header".into());
    }
    if issues.error_count > 0 {
        return Err(rejected(issues, data_lines));
    }
    let professionals: BTreeMap<String, (usize, ProfessionalData)> = seen
        .into_iter()
        .map(|(k, mut s)| {
            s.data
                .activities
                .sort_by(|a, b| a.structure_id.cmp(&b.structure_id));
            (k, (s.line, s.data))
        })
        .collect();
    Ok(ParsedImport {
        report: ImportReport {
            file_sha256,
            lines: data_lines,
            professionals: professionals.len(),
            activities,
            errors: Vec::new(),
            error_count: 0,
            warnings: issues.warnings,
            created: 0,
            updated: 0,
            unchanged: 0,
            outcome: ImportOutcome::DryRun,
        },
        professionals,
    })
}

impl Registry {
    /// Imports a CSV file (see the module docs for the guarantees). Returns the report; a
    /// rejected file is `Ok` with [`ImportOutcome::Rejected`] and nothing written (one audit
    /// event records the rejection). New professionals are active; an existing professional
    /// keeps their status. The import never removes anyone.
    pub fn import_csv(
        &self,
        bytes: &[u8],
        options: ImportOptions,
        actor: &str,
        now: i64,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportReport> {
        let parsed = match parse_csv(bytes, progress) {
            Ok(p) => p,
            Err(report) => {
                if !options.dry_run {
                    self.store.commit(WriteBatch::new().with(tables::audit(
                        now,
                        actor,
                        cps_audit::AuditEvent::RegistryImportRejected {
                            file_sha256: report.file_sha256.clone(),
                            errors: report.error_count as u64,
                        },
                    )))?;
                }
                return Ok(*report);
            }
        };
        let mut report = parsed.report;
        let total = parsed.professionals.len();
        let mut changes: Vec<Change> = Vec::new();
        for (i, (idnat, (line, data))) in parsed.professionals.into_iter().enumerate() {
            if i % 4096 == 0 {
                progress(ImportProgress {
                    phase: ImportPhase::Comparing,
                    done: i,
                    total,
                });
            }
            match self.get_raw(&idnat)? {
                None => {
                    report.created += 1;
                    changes.push((
                        None,
                        Professional {
                            data,
                            status: ProfessionalStatus::Active,
                            updated_at: now,
                            revision: 1,
                        },
                    ));
                }
                Some((old, _)) if old.data == data => report.unchanged += 1,
                Some((old, raw)) => {
                    report.updated += 1;
                    if old.status == ProfessionalStatus::Left {
                        report.warnings.push(LineIssue {
                            line,
                            column: None,
                            message: format!(
                                "{idnat} has left the profession in the registry: data updated, status kept"
                            ),
                        });
                    }
                    let new = Professional {
                        data,
                        status: old.status,
                        updated_at: now,
                        revision: old.revision + 1,
                    };
                    changes.push((Some((old, raw)), new));
                }
            }
        }
        progress(ImportProgress {
            phase: ImportPhase::Comparing,
            done: total,
            total,
        });
        if options.dry_run {
            report.outcome = ImportOutcome::DryRun;
            return Ok(report);
        }
        let id = format!("{now}-{}", &report.file_sha256[..16]);
        let mut record = ImportRecord {
            id: id.clone(),
            file_sha256: report.file_sha256.clone(),
            actor: actor.into(),
            started_at: now,
            state: "running".into(),
            created: report.created,
            updated: report.updated,
            unchanged: report.unchanged,
        };
        let summary = |r: &ImportReport| cps_audit::ImportSummary {
            import: id.clone(),
            file_sha256: r.file_sha256.clone(),
            created: r.created as u64,
            updated: r.updated as u64,
            unchanged: r.unchanged as u64,
            professionals: r.professionals as u64,
            activities: r.activities as u64,
        };
        if changes.is_empty() {
            record.state = "complete".into();
            self.store.commit(
                WriteBatch::new()
                    .with(tables::put(IMPORTS, id.as_bytes(), &record, Expect::Any)?)
                    .with(tables::audit(
                        now,
                        actor,
                        cps_audit::AuditEvent::RegistryImportUnchanged(summary(&report)),
                    )),
            )?;
            report.outcome = ImportOutcome::Unchanged;
            return Ok(report);
        }
        let to_write = changes.len();
        let batch_size = options.batch_size.max(1);
        let chunks: Vec<_> = changes.chunks(batch_size).collect();
        let last = chunks.len() - 1;
        let mut written = 0;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut batch = WriteBatch::new();
            if i == 0 {
                batch.push(tables::put(IMPORTS, id.as_bytes(), &record, Expect::Any)?);
            }
            for (old, new) in chunk {
                for op in professional_ops(old.as_ref().map(|(p, raw)| (p, raw.as_slice())), new)? {
                    batch.push(op);
                }
            }
            if i == last {
                record.state = "complete".into();
                batch.push(tables::put(IMPORTS, id.as_bytes(), &record, Expect::Any)?);
                batch.push(tables::audit(
                    now,
                    actor,
                    cps_audit::AuditEvent::RegistryImported(summary(&report)),
                ));
            }
            self.store.commit(batch).map_err(|e| match e {
                cps_store::StoreError::Conflict(m) => EnrolError::Stale(format!(
                    "a professional of import {id} ({m}); {written} of {to_write} professionals were written: run the same file again to complete the import"
                )),
                other => other.into(),
            })?;
            written += chunk.len();
            progress(ImportProgress {
                phase: ImportPhase::Writing,
                done: written,
                total: to_write,
            });
        }
        report.outcome = ImportOutcome::Imported;
        Ok(report)
    }

    /// Imports that started and never completed (their process stopped between batches):
    /// run the same file again to complete them.
    pub fn interrupted_imports(&self) -> Result<Vec<ImportRecord>> {
        let mut out = Vec::new();
        for (k, v) in tables::scan_all(self.store.as_ref(), IMPORTS, b"")? {
            let r: ImportRecord = tables::decode(IMPORTS, &k, &v)?;
            if r.state != "complete" {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Number of professionals in the registry (a full scan; for tools and tests).
    pub fn count(&self) -> Result<usize> {
        let mut n = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .store
                .scan_records(PROFESSIONALS, b"", after.as_deref(), 4096)?;
            n += page.len();
            if page.len() < 4096 {
                return Ok(n);
            }
            after = page.last().map(|(k, _)| k.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        assert_eq!(split_fields("a|b|c", '|').unwrap(), ["a", "b", "c"]);
        assert_eq!(
            split_fields(" a ;\"b;c\"; \"d\"\"e\" ", ';').unwrap(),
            ["a", "b;c", "d\"e"]
        );
        assert_eq!(split_fields("a|", '|').unwrap(), ["a", ""]);
        assert_eq!(split_fields("", '|').unwrap(), [""]);
        assert!(split_fields("\"a", '|').is_err());
        assert!(split_fields("\"a\"x|b", '|').is_err());
    }
}
