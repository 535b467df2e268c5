//! `cps-trust card readers|status`: what is in the readers, what is on a card. Read-only:
//! nothing here logs in, and the card is left as found (no reset of another session).

use std::process::ExitCode;

use clap::Subcommand;
use cps_card::{CardError, Pcsc, Piv, Slot};
use der::Decode;

#[derive(Subcommand)]
pub enum CardCommand {
    /// List the PC/SC readers and the cards in them.
    Readers,
    /// What is on a card: application, CHUID, CPS identity, certificates, PIN tries left.
    Status {
        /// Reader name (or a unique part of it); default: the only reader holding a card.
        #[arg(long)]
        reader: Option<String>,
    },
    /// Issuance and lifecycle through the running appliance (enroll, show, suspend, resume,
    /// oppose, renew, unblock).
    #[command(flatten)]
    Issuance(crate::issuance_cmd::CardIssuanceCommand),
}

type CliResult = Result<ExitCode, (u8, String)>;

fn fail(e: CardError) -> (u8, String) {
    (1, e.to_string())
}

pub fn run(cmd: CardCommand) -> CliResult {
    match cmd {
        CardCommand::Readers => readers(),
        CardCommand::Status { reader } => status(reader.as_deref()),
        CardCommand::Issuance(_) => unreachable!("dispatched by main"),
    }
}

fn hex(b: &[u8], sep: &str) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(sep)
}

fn readers() -> CliResult {
    let pcsc = Pcsc::establish().map_err(fail)?;
    let list = pcsc.readers().map_err(fail)?;
    if list.is_empty() {
        return Err(fail(CardError::NoReaders));
    }
    let mut out = String::new();
    for r in &list {
        if !r.card_present {
            out.push_str(&format!("{}\tno card\n", r.name));
            continue;
        }
        let app = match pcsc.connect(&r.name).and_then(|mut c| {
            c.leave_verified_on_drop();
            Piv::select(c)
        }) {
            Ok(piv) => format!("PIV: {}", piv.label()),
            Err(CardError::NotPiv) => "not a PIV card".to_string(),
            Err(e) => format!("unreadable: {e}"),
        };
        out.push_str(&format!(
            "{}\tcard present\tATR {}\t{app}\n",
            r.name,
            hex(&r.atr, ":")
        ));
    }
    emit(&out);
    Ok(ExitCode::SUCCESS)
}

fn status(reader: Option<&str>) -> CliResult {
    let pcsc = Pcsc::establish().map_err(fail)?;
    let name = pcsc.resolve_reader(reader).map_err(fail)?;
    let mut card = pcsc.connect(&name).map_err(fail)?;
    // Start from a reset card: a PIN verification another process left behind (OpenSC leaves
    // the card as it is when it disconnects) is cleared, and the PIN counter shown is the card's.
    card.reset().map_err(fail)?;
    card.leave_verified_on_drop();
    let atr = card.atr().unwrap_or_default();
    let mut piv = Piv::select(card).map_err(fail)?;
    let s = piv.summary().map_err(fail)?;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<13}{v}\n"));
    line("reader", name.clone());
    line("ATR", hex(&atr, ":"));
    line("application", s.application.clone());
    match &s.chuid {
        Some(c) => line(
            "card GUID",
            format!("{} (CHUID, expires {})", hex(&c.guid, ""), c.expiry),
        ),
        None => line("card GUID", "no CHUID".into()),
    }
    match &s.identity {
        Some(id) => {
            line("holder", format!("{} {}", id.family_name, id.given_names));
            line("IdNat_PS", id.idnat_ps.clone());
            let mut p = id.profession.clone();
            if let Some(sp) = &id.specialty {
                p.push_str(&format!(" (specialty {sp})"));
            }
            line("profession", p);
            if let Some(t) = &id.card_type {
                line("card type", t.clone());
            }
        }
        None => line("holder", "no CPS identity object (blank card)".into()),
    }
    line("PIN", s.pin.to_string());
    for (slot, cert) in &s.certificates {
        let v = match cert {
            None => "no certificate".to_string(),
            Some(der) => describe_cert(der),
        };
        line(
            &format!("key {:02X}", slot.key_ref()),
            format!("{} — {v}", slot_name(*slot)),
        );
    }
    emit(&out);
    Ok(ExitCode::SUCCESS)
}

fn slot_name(s: Slot) -> &'static str {
    match s {
        Slot::Authentication => "authentication",
        Slot::Signature => "signature",
        Slot::KeyManagement => "key management",
        Slot::CardAuthentication => "card authentication",
    }
}

fn describe_cert(der: &[u8]) -> String {
    match x509_cert::Certificate::from_der(der) {
        Ok(c) => {
            let tbs = c.tbs_certificate();
            let until = time::OffsetDateTime::from_unix_timestamp(
                tbs.validity().not_after.to_unix_duration().as_secs() as i64,
            )
            .ok()
            .and_then(|d| {
                d.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| "?".into());
            format!(
                "certificate {} (issuer {}), valid until {until}",
                tbs.subject(),
                tbs.issuer()
            )
        }
        Err(e) => format!(
            "certificate present ({} bytes) but not parseable: {e}",
            der.len()
        ),
    }
}

/// Write to stdout; a closed pipe is not an error worth a panic.
fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
