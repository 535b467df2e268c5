//! `cps-trust dsg`: document signatures (IHE DSG) — a structure seal signs through the appliance,
//! and signatures are verified by it.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use clap::Subcommand;
use cps_api::{DsgDocument, DsgSignRequest, DsgSignature, DsgVerification, DsgVerifyRequest};

use crate::client::ApiClient;
use crate::dsg_files::{parse_document, read, ring_sha256, write_out};
use crate::{CliResult, EXIT_REFUSED, emitln, fail, pretty};

#[derive(Subcommand)]
pub enum DsgCommand {
    /// Sign documents: a detached manifest over them, or an enveloping signature over one;
    /// with the appliance's timestamp, the certificates and their OCSP answers (XAdES-X-L).
    /// With `--structure`: the structure's seal signs in the appliance (role `signer`, bound to
    /// the structure). With `--pin`/`--pin-env` (and `--reader`): the professional's card
    /// signs here with its `cps-sign` key (slot 9C), the PIN verified for the signature.
    Sign {
        /// The structure whose seal signs (struct_IdNat).
        #[arg(long, required_unless_present_any = ["pin", "pin_env"], conflicts_with_all = ["pin", "pin_env", "reader"])]
        structure: Option<String>,
        /// Card signature: the reader (or a unique part of its name); default the only reader
        /// holding a card.
        #[arg(long)]
        reader: Option<String>,
        /// Card signature: the card's PIN (prefer --pin-env on shared machines).
        #[arg(long, conflicts_with = "pin_env")]
        pin: Option<String>,
        /// Card signature: the name of an environment variable holding the PIN.
        #[arg(long)]
        pin_env: Option<String>,
        /// The commitment type: author, co-author, review, verification, validation, consent,
        /// source, addendum, modification, administrative… (ASTM E1762), or its OID.
        #[arg(long, default_value = "author")]
        purpose: String,
        /// One enveloping signature over the only document (default: a detached manifest).
        #[arg(long)]
        enveloping: bool,
        /// The submission set's uniqueId, signed with the documents (detached only).
        #[arg(long)]
        submission_set: Option<String>,
        /// A document: `UNIQUE_ID=FILE` (its MIME type with `UNIQUE_ID=FILE;MIME`, default
        /// text/xml). Repeat for each document.
        #[arg(long = "document", required = true)]
        documents: Vec<String>,
        /// Send only each document's SHA-256, not the document (detached only).
        #[arg(long, conflicts_with_all = ["pin", "pin_env"])]
        digests_only: bool,
        /// Write the signature here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Verify a signature with the appliance: prints the signer, the proven signing time, the
    /// purpose and each document's result, or the precise reason it is refused (exit 3).
    Verify {
        /// The signature (XML).
        #[arg(long)]
        signature: PathBuf,
        /// A signed document: `UNIQUE_ID=FILE`. Repeat for each document of a detached signature.
        #[arg(long = "document")]
        documents: Vec<String>,
        /// Also check the signer certificate's status now (a revocation dated before the signing
        /// time refuses the signature).
        #[arg(long)]
        live: bool,
    },
}

fn wire_documents(args: &[String], digests_only: bool) -> Result<Vec<DsgDocument>, (u8, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    args.iter()
        .map(|a| {
            let d = parse_document(a)?;
            let bytes = read(&d.path)?;
            Ok(DsgDocument {
                unique_id: d.unique_id,
                mime_type: d.mime_type,
                content: (!digests_only).then(|| b64.encode(&bytes)),
                sha256: digests_only.then(|| hex::encode(ring_sha256(&bytes))),
            })
        })
        .collect()
}

/// Run a `dsg` command: `api` is made on demand (a card signature needs no operator).
pub fn run(
    config: &cps_appliance::config::Config,
    api: impl FnOnce() -> Result<ApiClient, (u8, String)>,
    cmd: DsgCommand,
) -> CliResult {
    match cmd {
        DsgCommand::Sign {
            structure: None,
            reader,
            pin,
            pin_env,
            purpose,
            enveloping,
            submission_set,
            documents,
            out,
            ..
        } => {
            let pin = match (pin, pin_env) {
                (Some(p), _) => p,
                (None, Some(var)) => {
                    std::env::var(&var).map_err(|_| fail(format!("${var} is not set")))?
                }
                (None, None) => return Err(fail("give the PIN with --pin or --pin-env")),
            };
            crate::dsg_card::sign(
                config,
                crate::dsg_card::CardSignArgs {
                    reader,
                    pin: zeroize::Zeroizing::new(pin),
                    purpose,
                    enveloping,
                    submission_set,
                    documents,
                    out,
                },
            )
        }
        DsgCommand::Sign {
            structure: Some(structure),
            purpose,
            enveloping,
            submission_set,
            documents,
            digests_only,
            out,
            ..
        } => {
            let api = api()?;
            let body = DsgSignRequest {
                structure_id: structure,
                policy: Some(if enveloping { "enveloping" } else { "detached" }.into()),
                purpose,
                submission_set,
                documents: wire_documents(&documents, digests_only)?,
            };
            let s: DsgSignature = api
                .post("/api/v1/dsg/sign", &body)
                .map_err(|e| (EXIT_REFUSED, format!("signature refused: {e}")))?;
            write_out(out, &s.signature)?;
            eprintln!(
                "signed by {} at {} ({}, purpose {})",
                s.signer,
                cps_appliance::rfc3339(s.signing_time),
                s.policy,
                s.purpose
            );
            Ok(ExitCode::SUCCESS)
        }
        DsgCommand::Verify {
            signature,
            documents,
            live,
        } => {
            let api = api()?;
            let xml = String::from_utf8(read(&signature)?)
                .map_err(|_| fail(format!("{}: not UTF-8", signature.display())))?;
            let body = DsgVerifyRequest {
                signature: xml,
                documents: wire_documents(&documents, false)?,
                live_status: live,
            };
            let (status, v): (u16, DsgVerification) = api
                .post_verdict("/api/v1/dsg/verify", &body)
                .map_err(fail)?;
            emitln(&pretty(&v));
            if v.valid && status == 200 {
                Ok(ExitCode::SUCCESS)
            } else {
                Err((
                    EXIT_REFUSED,
                    format!(
                        "signature refused: {} [{}]",
                        v.error.unwrap_or_default(),
                        v.code.unwrap_or_default()
                    ),
                ))
            }
        }
    }
}
