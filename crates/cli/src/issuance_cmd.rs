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

fn describe_card(c: &serde_json::Value) -> String {
    let mut s = format!(
        "card {}\ttoken {}\tholder {}\tactivity {}\tstatus {}",
        c["serial"].as_str().unwrap_or("?"),
        c["token_id"].as_str().unwrap_or("?"),
        c["idnat_ps"].as_str().unwrap_or("?"),
        c["structure_id"].as_str().unwrap_or("?"),
        c["status"]["state"].as_str().unwrap_or("?"),
    );
    for cert in c["certificates"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "\n  {}\t{} {}",
            cert["profile"].as_str().unwrap_or("?"),
            cert["issuer"].as_str().unwrap_or("?"),
            cert["serial"].as_str().unwrap_or("?"),
        ));
    }
    s
}

/// Polls a job until it ends, showing its progress.
fn follow(api: &ApiClient, job: &str) -> Result<serde_json::Value, (u8, String)> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut shown = 0;
    loop {
        let j = api.get(&format!("/api/v1/jobs/{job}")).map_err(fail)?;
        if let Some([phase, done, total]) = j["progress"].as_array().map(|a| a.as_slice()) {
            bar.set_message(phase.as_str().unwrap_or("").to_owned());
            bar.set_length(total.as_u64().unwrap_or(0));
            bar.set_position(done.as_u64().unwrap_or(0));
        }
        let events = j["events"].as_array().cloned().unwrap_or_default();
        for e in events.iter().skip(shown) {
            bar.suspend(|| {
                eprintln!(
                    "  {:<8} {}{}",
                    e["state"].as_str().unwrap_or(""),
                    e["label"].as_str().unwrap_or(""),
                    e["detail"]
                        .as_str()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                )
            });
        }
        shown = events.len();
        if j["status"] != "running" {
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
            let r = api
                .post_raw(
                    &format!("/api/v1/professionals/import?dry_run={dry_run}"),
                    csv,
                    "text/csv",
                )
                .map_err(fail)?;
            let j = follow(api, r["job"].as_str().unwrap_or_default())?;
            let report = &j["result"];
            for e in report["errors"].as_array().into_iter().flatten() {
                eprintln!("{}", line_issue(e));
            }
            for w in report["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {}", line_issue(w));
            }
            emitln(&format!(
                "{}: {} lines, {} professionals, {} activities; outcome {}",
                file.display(),
                report["lines"],
                report["professionals"],
                report["activities"],
                report["outcome"].as_str().unwrap_or("?"),
            ));
            if j["status"] != "done" {
                return Err((
                    EXIT_REFUSED,
                    j["error"].as_str().unwrap_or("import failed").to_owned(),
                ));
            }
        }
        ProfessionalCommand::Show { idnat_ps } => {
            let r = api
                .get(&format!("/api/v1/professionals/{idnat_ps}"))
                .map_err(fail)?;
            emitln(&serde_json::to_string_pretty(&r).unwrap_or_default());
        }
        ProfessionalCommand::Search { text } => {
            let mut url = reqwest::Url::parse("https://x/api/v1/professionals")
                .map_err(|e| fail(e.to_string()))?;
            url.query_pairs_mut().append_pair("q", &text);
            let r = api
                .get(&format!(
                    "/api/v1/professionals?{}",
                    url.query().unwrap_or("")
                ))
                .map_err(fail)?;
            for p in r["professionals"].as_array().into_iter().flatten() {
                let d = &p["data"];
                emitln(&format!(
                    "{}\t{} {}\t{}\t{}",
                    d["idnat_ps"].as_str().unwrap_or("?"),
                    d["surname"].as_str().unwrap_or("?"),
                    d["given_names"].as_str().unwrap_or("?"),
                    d["profession_code"].as_str().unwrap_or("?"),
                    p["status"].as_str().unwrap_or("?"),
                ));
            }
        }
        ProfessionalCommand::Status { idnat_ps, status } => {
            let r = api
                .post(
                    &format!("/api/v1/professionals/{idnat_ps}/status"),
                    &serde_json::json!({ "status": status }),
                )
                .map_err(fail)?;
            emitln(&format!(
                "{}: {}; {} card(s) changed",
                idnat_ps,
                r["professional"]["status"].as_str().unwrap_or("?"),
                r["cards"].as_array().map_or(0, Vec::len)
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The only one of the appliance's readers that holds a card.
fn the_reader_with_a_card(api: &ApiClient) -> Result<String, (u8, String)> {
    let list = api.get("/api/v1/readers").map_err(fail)?;
    let all: Vec<(&str, bool)> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["name"].as_str()?, r["card_present"].as_bool()?)))
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

fn line_issue(e: &serde_json::Value) -> String {
    let line = e["line"].as_u64().unwrap_or(0);
    let col = e["column"]
        .as_str()
        .map(|c| format!(", column '{c}'"))
        .unwrap_or_default();
    format!("line {line}{col}: {}", e["message"].as_str().unwrap_or(""))
}

pub fn card(api: &ApiClient, cmd: CardIssuanceCommand) -> CliResult {
    let action = |serial: &str, action: &str, body: serde_json::Value| {
        api.post(&format!("/api/v1/cards/{serial}/{action}"), &body)
            .map_err(|e| (EXIT_REFUSED, e))
    };
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
            let r = api
                .post(
                    "/api/v1/cards/enrol",
                    &serde_json::json!({
                        "reader": reader, "idnat_ps": professional,
                        "structure_id": activity, "replaces": replaces,
                    }),
                )
                .map_err(fail)?;
            let j = follow(api, r["job"].as_str().unwrap_or_default())?;
            if j["status"] != "done" {
                return Err((
                    EXIT_REFUSED,
                    format!(
                        "enrolment failed: {}",
                        j["error"].as_str().unwrap_or("unknown error")
                    ),
                ));
            }
            if let Some(s) = j["secrets"].as_object() {
                emitln(&format!(
                    "initial PIN {}\tPUK {}\t(shown once: hand them to the holder)",
                    s["pin"].as_str().unwrap_or("?"),
                    s["puk"].as_str().unwrap_or("?")
                ));
            }
            j["result"].clone()
        }
        CardIssuanceCommand::Show { serial } => {
            api.get(&format!("/api/v1/cards/{serial}")).map_err(fail)?
        }
        CardIssuanceCommand::Suspend { serial } => {
            action(&serial, "suspend", serde_json::json!({}))?
        }
        CardIssuanceCommand::Resume { serial } => action(&serial, "resume", serde_json::json!({}))?,
        CardIssuanceCommand::Oppose { serial, reason } => {
            action(&serial, "oppose", serde_json::json!({ "reason": reason }))?
        }
        CardIssuanceCommand::Renew {
            serial,
            reader,
            pin,
        } => action(
            &serial,
            "renew",
            serde_json::json!({ "reader": reader, "pin": pin }),
        )?,
        CardIssuanceCommand::Unblock {
            serial,
            reader,
            puk,
            new_pin,
        } => action(
            &serial,
            "unblock",
            serde_json::json!({ "reader": reader, "puk": puk, "new_pin": new_pin }),
        )?,
    };
    emitln(&describe_card(&card));
    Ok(ExitCode::SUCCESS)
}
