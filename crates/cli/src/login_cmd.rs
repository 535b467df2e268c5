//! `cps-trust login` (the workstation side of card login) and `cps-trust xua validate`.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use clap::{Args, Subcommand};
use cps_api::LoginContext;
use cps_card::{KeyAlgorithm, Pcsc, Piv, Slot};
use cps_login::challenge;

use crate::client::ApiClient;
use crate::{CliResult, EXIT_REFUSED, emitln, fail};

#[derive(Args)]
pub struct LoginArgs {
    /// Reader name (or a unique part of it); default: the only reader holding a card.
    #[arg(long)]
    reader: Option<String>,
    /// The card's PIN (prefer --pin-env on shared machines).
    #[arg(long, conflicts_with = "pin_env")]
    pin: Option<String>,
    /// Name of an environment variable holding the PIN.
    #[arg(long)]
    pin_env: Option<String>,
    /// Patient INS (matricule), when the access concerns a patient.
    #[arg(long)]
    patient_ins: Option<String>,
    /// normal, bris_de_glace or centre_15.
    #[arg(long, default_value = "normal")]
    purpose: String,
    /// Why (mandatory for bris_de_glace).
    #[arg(long)]
    justification: Option<String>,
    /// The activity (struct_IdNat) to act in; default: the card's.
    #[arg(long)]
    structure_id: Option<String>,
    /// Answer with a SOAP 1.2 envelope carrying the assertion in wsse:Security.
    #[arg(long)]
    soap: bool,
    /// Write the assertion here instead of standard output.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum XuaCommand {
    /// Validate an assertion (bare or in a SOAP envelope) with the appliance: prints its
    /// attributes, or the precise reason it is refused (exit 3).
    Validate {
        /// The XML file.
        file: PathBuf,
    },
}

fn card_error(e: cps_card::CardError) -> (u8, String) {
    (EXIT_REFUSED, format!("card: {e}"))
}

pub fn login(api: &ApiClient, args: LoginArgs) -> CliResult {
    let pin = match (&args.pin, &args.pin_env) {
        (Some(p), _) => p.clone(),
        (None, Some(var)) => std::env::var(var).map_err(|_| fail(format!("${var} is not set")))?,
        (None, None) => return Err(fail("give the PIN with --pin or --pin-env")),
    };
    let pcsc = Pcsc::establish().map_err(card_error)?;
    let reader = pcsc
        .resolve_reader(args.reader.as_deref())
        .map_err(card_error)?;
    let card = pcsc.connect(&reader).map_err(card_error)?;
    let mut piv = Piv::select(card).map_err(card_error)?;
    let cert = piv
        .read_certificate(Slot::Authentication)
        .map_err(card_error)?
        .ok_or_else(|| {
            (
                EXIT_REFUSED,
                "the card holds no authentication certificate".to_string(),
            )
        })?;
    let alg = match cps_pki::parse_certificate(&cert)
        .ok()
        .and_then(|c| cps_pki::check_public_key(&c.spki, &cps_pki::KeyPolicy::default()).ok())
        .map(|k| k.kind)
    {
        Some(cps_pki::KeyKind::EcP256) => KeyAlgorithm::EccP256,
        Some(cps_pki::KeyKind::Rsa { bits: 2048 }) => KeyAlgorithm::Rsa2048,
        _ => return Err((EXIT_REFUSED, "unsupported card key".to_string())),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    // The context goes with the challenge request (the appliance binds the challenge and the
    // bytes the card signs to it) and again with the login.
    let context = LoginContext {
        patient_ins: args.patient_ins.clone(),
        purpose_of_use: Some(args.purpose.clone()),
        justification: args.justification.clone(),
        structure_id: args.structure_id.clone(),
        software_name: Some("cps-trust login".into()),
        software_version: Some(env!("CARGO_PKG_VERSION").into()),
        soap: args.soap,
        ..LoginContext::default()
    };
    let ch: cps_api::ChallengeView = api
        .post(
            "/api/v1/login/challenge",
            &cps_api::ChallengeRequest {
                audience: None,
                context: context.clone(),
            },
        )
        .map_err(fail)?;
    let to_sign = b64
        .decode(&ch.challenge)
        .map_err(|_| fail("the appliance sent a malformed challenge"))?;
    // Sign only a login message for the context asked for, never arbitrary bytes.
    let audience = ch.audience.as_str();
    match challenge::parse_message(&to_sign) {
        Some(m) if m.context_sha256 == challenge::context_sha256(audience, &context) => {}
        Some(_) => {
            return Err(fail(
                "the appliance's challenge is bound to another login context: not signed",
            ));
        }
        None => {
            return Err(fail(format!(
                "the appliance's challenge is not a '{}' message: not signed",
                challenge::MESSAGE_FORMAT
            )));
        }
    }
    let signature = piv
        .sign_challenge(&pin, alg, &to_sign)
        .map_err(card_error)?;
    let _ = piv.logout();
    let body = cps_api::LoginRequest {
        challenge_id: ch.challenge_id,
        certificate: b64.encode(&cert),
        signature: b64.encode(&signature),
        context,
    };
    let r: cps_api::LoginResult = api
        .post("/api/v1/login", &body)
        .map_err(|e| (EXIT_REFUSED, format!("login refused: {e}")))?;
    let assertion = r.assertion.as_str();
    match args.out {
        Some(p) => {
            std::fs::write(&p, assertion).map_err(|e| fail(format!("{}: {e}", p.display())))?;
            eprintln!(
                "logged in as {} ({}); assertion {} written to {}",
                r.name,
                r.idnat_ps,
                r.assertion_id,
                p.display()
            );
        }
        None => emitln(assertion),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn xua(api: &ApiClient, cmd: XuaCommand) -> CliResult {
    match cmd {
        XuaCommand::Validate { file } => {
            let xml = std::fs::read(&file).map_err(|e| fail(format!("{}: {e}", file.display())))?;
            match api.post_raw::<cps_api::ValidationView>(
                "/api/v1/xua/validate",
                xml,
                "application/xml",
            ) {
                Ok(v) => {
                    emitln(&crate::pretty(&v));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err((EXIT_REFUSED, format!("assertion refused: {e}"))),
            }
        }
    }
}
