//! Card issuance through the running appliance (role `ra-officer`): the registry of
//! professionals (`professional import|show|search|status`) and card enrolment and lifecycle
//! (`card enroll|show|suspend|resume|oppose|renew|unblock`). The card readers are the
//! appliance's own: enrolment runs where the card is.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::client::ApiClient;
use crate::{CliResult, EXIT_REFUSED, emitln, fail};

#[derive(Subcommand)]
pub enum ProfessionalCommand {
    /// Import a registry file (CSV, see crates/enrol/IMPORT_FORMAT.md): all or nothing, with a
    /// line-by-line report; importing the same file again changes nothing.
    Import {
        file: PathBuf,
        /// Check and compare only.
        #[arg(long)]
        dry_run: bool,
    },
    /// One professional, their activities and cards.
    Show { idnat_ps: String },
    /// Search by IdNat_PS or name.
    Search { text: String },
    /// Change a professional's status: active, suspended (their cards are suspended) or left
    /// (their cards are revoked).
    Status { idnat_ps: String, status: String },
}

/// Card commands that go through the appliance.
#[derive(Subcommand)]
pub enum CardIssuanceCommand {
    /// Enrol the blank card in one of the appliance's readers for a professional's activity:
    /// keys on the card, two certificates, PIN and PUK (printed once).
    Enroll {
        /// The appliance's reader holding the blank card (or a unique part of its name);
        /// default: the only one of its readers that holds a card.
        #[arg(long)]
        reader: Option<String>,
        /// IdNat_PS of the holder.
        #[arg(long)]
        professional: String,
        /// The activity: structure identifier.
        #[arg(long)]
        activity: String,
        /// Serial of the card this one replaces (retired when this one is ready).
        #[arg(long)]
        replaces: Option<String>,
    },
    /// A registered card.
    Show { serial: String },
    /// Suspend a card (its certificates go on hold).
    Suspend { serial: String },
    /// Lift a suspension.
    Resume { serial: String },
    /// Opposition: the card is lost, stolen or destroyed; its certificates are revoked for good.
    Oppose {
        serial: String,
        #[arg(long)]
        reason: String,
    },
    /// New keys and certificates on the same card (the holder's PIN is needed).
    Renew {
        serial: String,
        #[arg(long)]
        reader: String,
        #[arg(long)]
        pin: String,
    },
    /// Unblock the PIN with the PUK, officer-assisted.
    Unblock {
        serial: String,
        #[arg(long)]
        reader: String,
        #[arg(long)]
        puk: String,
        #[arg(long)]
        new_pin: String,
    },
}

fn describe_card(c: &cps_api::Card) -> String {
    let mut s = format!(
        "card {}\ttoken {}\tholder {}\tactivity {}\tstatus {}",
        c.serial,
        c.token_id,
        c.idnat_ps,
        c.structure_id,
        c.status.name(),
    );
    for cert in &c.certificates {
        s.push_str(&format!(
            "\n  {}\t{} {}",
            cert.profile, cert.issuer, cert.serial,
        ));
    }
    s
}

/// A job's result as the type its kind produces.
fn job_result<T: serde::de::DeserializeOwned>(j: &cps_api::Job) -> Result<T, (u8, String)> {
    let v = j
        .result
        .clone()
        .ok_or_else(|| fail(format!("job {} ended without a result", j.id)))?;
    serde_json::from_value(v).map_err(|e| fail(format!("job {}: unexpected result: {e}", j.id)))
}

/// Polls a job until it ends, showing its progress.
fn follow(api: &ApiClient, job: &str) -> Result<cps_api::Job, (u8, String)> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut shown = 0;
    loop {
        let j: cps_api::Job = api.get(&format!("/api/v1/jobs/{job}")).map_err(fail)?;
        if let Some((phase, done, total)) = &j.progress {
            bar.set_message(phase.clone());
            bar.set_length(*total as u64);
            bar.set_position(*done as u64);
        }
        for e in j.events.iter().skip(shown) {
            bar.suspend(|| {
                eprintln!(
                    "  {:<8} {}{}",
                    e.state,
                    e.label,
                    e.detail
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                )
            });
        }
        shown = j.events.len();
        if j.status != "running" {
            bar.finish_and_clear();
            return Ok(j);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn professional(api: &ApiClient, cmd: ProfessionalCommand) -> CliResult {
    match cmd {
        ProfessionalCommand::Import { file, dry_run } => {
            let csv = std::fs::read(&file).map_err(|e| fail(format!("{}: {e}", file.display())))?;
            let r: cps_api::JobStarted = api
                .post_raw(
                    &format!("/api/v1/professionals/import?dry_run={dry_run}"),
                    csv,
                    "text/csv",
                )
                .map_err(fail)?;
            let j = follow(api, &r.job)?;
            // A failed import may end without a report (the error says why).
            if let Ok(report) = job_result::<cps_api::ImportReport>(&j) {
                for e in &report.errors {
                    eprintln!("{}", line_issue(e));
                }
                for w in &report.warnings {
                    eprintln!("warning: {}", line_issue(w));
                }
                emitln(&format!(
                    "{}: {} lines, {} professionals, {} activities; outcome {}",
                    file.display(),
                    report.lines,
                    report.professionals,
                    report.activities,
                    report.outcome.name(),
                ));
            }
            if j.status != "done" {
                return Err((
                    EXIT_REFUSED,
                    j.error.unwrap_or_else(|| "import failed".to_owned()),
                ));
            }
        }
        ProfessionalCommand::Show { idnat_ps } => {
            let r: cps_api::ProfessionalCards = api
                .get(&format!("/api/v1/professionals/{idnat_ps}"))
                .map_err(fail)?;
            emitln(&crate::pretty(&r));
        }
        ProfessionalCommand::Search { text } => {
            let mut url = reqwest::Url::parse("https://x/api/v1/professionals")
                .map_err(|e| fail(e.to_string()))?;
            url.query_pairs_mut().append_pair("q", &text);
            let r: cps_api::ProfessionalPage = api
                .get(&format!(
                    "/api/v1/professionals?{}",
                    url.query().unwrap_or("")
                ))
                .map_err(fail)?;
            for p in &r.professionals {
                let d = &p.data;
                emitln(&format!(
                    "{}\t{} {}\t{}\t{}",
                    d.idnat_ps,
                    d.surname,
                    d.given_names,
                    d.profession_code,
                    p.status.name(),
                ));
            }
        }
        ProfessionalCommand::Status { idnat_ps, status } => {
            let r: cps_api::StatusChangeView = api
                .post(
                    &format!("/api/v1/professionals/{idnat_ps}/status"),
                    &cps_api::StatusRequest { status },
                )
                .map_err(fail)?;
            emitln(&format!(
                "{}: {}; {} card(s) changed",
                idnat_ps,
                r.professional.status.name(),
                r.cards.len()
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The only one of the appliance's readers that holds a card.
fn the_reader_with_a_card(api: &ApiClient) -> Result<String, (u8, String)> {
    let list: Vec<cps_api::Reader> = api.get("/api/v1/readers").map_err(fail)?;
    let all: Vec<(&str, bool)> = list
        .iter()
        .map(|r| (r.name.as_str(), r.card_present))
        .collect();
    let with_card: Vec<&str> = all.iter().filter(|r| r.1).map(|r| r.0).collect();
    match with_card.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] if all.is_empty() => Err(fail("the appliance has no card reader")),
        [] => Err(fail(format!(
            "no reader of the appliance holds a card (readers: {})",
            all.iter().map(|r| r.0).collect::<Vec<_>>().join(", ")
        ))),
        many => Err(fail(format!(
            "several readers hold a card ({}): choose one with --reader",
            many.join(", ")
        ))),
    }
}

fn line_issue(e: &cps_api::LineIssue) -> String {
    let col = e
        .column
        .as_deref()
        .map(|c| format!(", column '{c}'"))
        .unwrap_or_default();
    format!("line {}{col}: {}", e.line, e.message)
}

pub fn card(api: &ApiClient, cmd: CardIssuanceCommand) -> CliResult {
    let action = |serial: &str, action: &str, body: cps_api::CardActionRequest| {
        api.post::<_, cps_api::Card>(&format!("/api/v1/cards/{serial}/{action}"), &body)
            .map_err(|e| (EXIT_REFUSED, e))
    };
    let none = cps_api::CardActionRequest::default;
    let card = match cmd {
        CardIssuanceCommand::Enroll {
            reader,
            professional,
            activity,
            replaces,
        } => {
            let reader = match reader {
                Some(r) => r,
                None => the_reader_with_a_card(api)?,
            };
            let r: cps_api::JobStarted = api
                .post(
                    "/api/v1/cards/enrol",
                    &cps_api::EnrolRequest {
                        reader,
                        idnat_ps: professional,
                        structure_id: activity,
                        replaces,
                    },
                )
                .map_err(fail)?;
            let j = follow(api, &r.job)?;
            if j.status != "done" {
                return Err((
                    EXIT_REFUSED,
                    format!(
                        "enrolment failed: {}",
                        j.error.as_deref().unwrap_or("unknown error")
                    ),
                ));
            }
            if let Some(s) = &j.secrets {
                emitln(&format!(
                    "initial PIN {}\tPUK {}\t(shown once: hand them to the holder)",
                    s.pin, s.puk
                ));
            }
            job_result(&j)?
        }
        CardIssuanceCommand::Show { serial } => {
            api.get(&format!("/api/v1/cards/{serial}")).map_err(fail)?
        }
        CardIssuanceCommand::Suspend { serial } => action(&serial, "suspend", none())?,
        CardIssuanceCommand::Resume { serial } => action(&serial, "resume", none())?,
        CardIssuanceCommand::Oppose { serial, reason } => action(
            &serial,
            "oppose",
            cps_api::CardActionRequest {
                reason: Some(reason),
                ..none()
            },
        )?,
        CardIssuanceCommand::Renew {
            serial,
            reader,
            pin,
        } => action(
            &serial,
            "renew",
            cps_api::CardActionRequest {
                reader: Some(reader),
                pin: Some(pin),
                ..none()
            },
        )?,
        CardIssuanceCommand::Unblock {
            serial,
            reader,
            puk,
            new_pin,
        } => action(
            &serial,
            "unblock",
            cps_api::CardActionRequest {
                reader: Some(reader),
                puk: Some(puk),
                new_pin: Some(new_pin),
                ..none()
            },
        )?,
    };
    emitln(&describe_card(&card));
    Ok(ExitCode::SUCCESS)
}
