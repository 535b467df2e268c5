//! The time-stamping authority of the appliance (RFC 3161): the sans-IO core of `cps-tsa` over
//! an HSM key certified by our organisations CA (`tsa` profile), behind the clock gate, every
//! token audited before it leaves.
//!
//! * `POST /tsa` (public listener, [`crate::serve`]) answers with [`TsaService::respond`].
//! * In-process callers (the document signing service) use [`TsaService::stamp`].
//!
//! While the clock is untrusted nothing is stamped: the answer is a rejection with
//! `systemFailure` (HTTP 503). A token whose audit record cannot be made durable is not
//! returned (the same rule as assertion validations: durable before acknowledged, through the
//! batching [`AuditWriter`], so a token does not pay a commit alone).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use cps_hsm::{Hsm, Signer};
use cps_tsa::{Accuracy, Authority, FailInfo, HashAlg, Outcome, Refusal, StampContext};
use ring::rand::SecureRandom;

use crate::audit::AuditWriter;
use crate::ca::CaService;
use crate::clock::{GatedSigner, SigningClock};
use crate::config::Config;
use crate::error::ApplianceError;

/// The certificate profile of the TSA key.
pub use crate::ca::TSA_PROFILE;
/// Where the TSA certificate is kept (PEM: TSA certificate, then its issuing CA).
pub const TSA_FILE: &str = "tsa/tsa.pem";

/// Why no token was made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StampError {
    /// The clock is not trusted: nothing is signed.
    #[error("the clock is not trusted: {0}")]
    ClockUntrusted(String),
    /// The request itself is refused (hash, imprint length...).
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The token could not be signed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// Its audit record could not be made durable: the token is dropped.
    #[error("the token could not be audited: {0}")]
    Audit(String),
}

impl StampError {
    /// The failure bit a `TimeStampResp` carries for this error.
    pub fn fail_info(&self) -> FailInfo {
        match self {
            StampError::Refused(r) => r.fail,
            _ => FailInfo::SystemFailure,
        }
    }
}

/// The answer to a `POST /tsa`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsaAnswer {
    /// 200 (granted), 400 (refused query), 503 (untrusted clock, HSM or audit failure).
    pub http_status: u16,
    /// The DER `TimeStampResp`.
    pub der: Vec<u8>,
}

/// The TSA: its certificate chain, its key behind the clock gate, the audit trail.
pub struct TsaService {
    authority: Authority,
    signer: Arc<dyn Signer>,
    clock: Arc<SigningClock>,
    chain: Vec<Vec<u8>>,
    min_accuracy_us: u64,
    audit: OnceLock<AuditWriter>,
    rng: ring::rand::SystemRandom,
}

impl TsaService {
    /// The TSA of `config` (`None` when `[tsa] enabled = false`): the key is made in the HSM
    /// and certified at the first start, then checked by the HSM self-check.
    pub fn open(
        home: &Path,
        config: &Config,
        hsm: &Hsm,
        ca: &CaService,
        clock: Arc<SigningClock>,
    ) -> Result<Option<Arc<TsaService>>, ApplianceError> {
        let t = &config.tsa;
        if !t.enabled {
            return Ok(None);
        }
        let x = &config.xua;
        let (key, chain) = crate::ca::ApplianceCredential {
            label: &t.key_label,
            algorithm: t
                .key_algorithm()
                .map_err(|e| ApplianceError::Refused(e.to_string()))?,
            profile: TSA_PROFILE,
            subject: cps_pki::OrganisationIdentity {
                state: x.state.clone(),
                name: x.organisation.clone(),
                structure_id: x.structure_id.clone(),
                common_name: format!("{} TSA", x.organisation),
            },
            holder: format!("appliance:{}", t.key_label),
            file: TSA_FILE,
        }
        .ensure(home, hsm, ca)?;
        // The key exists now: the start-up self-check covers it too (sensitive, never
        // extractable).
        hsm.self_check(&[t.key_label.as_str()]).into_result()?;
        let cert = chain
            .first()
            .cloned()
            .ok_or_else(|| ApplianceError::Refused("tsa: empty certificate chain".into()))?;
        let authority = Authority::new(&t.policy, cert, &key, t.include_name)
            .map_err(|e| ApplianceError::Refused(format!("tsa: {e}")))?;
        let signer: Arc<dyn Signer> = Arc::new(GatedSigner::new(Arc::new(key), clock.clone()));
        Ok(Some(Arc::new(TsaService {
            authority,
            signer,
            clock,
            chain,
            min_accuracy_us: u64::from(t.min_accuracy_ms) * 1000,
            audit: OnceLock::new(),
            rng: ring::rand::SystemRandom::new(),
        })))
    }

    /// Where token records go. Until it is attached, nothing is stamped (no token without
    /// its audit record).
    pub fn attach_audit(&self, writer: AuditWriter) {
        let _ = self.audit.set(writer);
    }

    /// The TSA certificate, then its issuing CA (DER).
    pub fn certificate_chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The TSA policy (dotted OID).
    pub fn policy(&self) -> String {
        self.authority.policy().to_string()
    }

    /// The time, a fresh serial and the accuracy for one token; refused while the clock is
    /// not trusted.
    fn context(&self) -> Result<StampContext, StampError> {
        let report = self.clock.report();
        if !report.trusted {
            return Err(StampError::ClockUntrusted(
                report.alarm.unwrap_or_else(|| "untrusted".into()),
            ));
        }
        let mut serial = [0u8; 16];
        self.rng
            .fill(&mut serial)
            .map_err(|_| StampError::Signing("no randomness for the serial".into()))?;
        let micros = report.max_error_us.unwrap_or(0).max(self.min_accuracy_us);
        Ok(StampContext {
            now: crate::clock::unix_now(),
            serial,
            accuracy: Some(Accuracy::from_micros(micros)),
        })
    }

    fn record(g: &cps_tsa::Granted, policy: String, requester: &str) -> cps_store::AuditRecord {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        cps_audit::AuditEvent::TimestampIssued {
            serial: hex(&g.serial),
            policy,
            hash: g.hash.name().to_owned(),
            imprint: hex(&g.imprint),
            gen_time: g.gen_time,
        }
        .record(g.gen_time, requester.to_owned())
    }

    fn writer(&self) -> Result<&AuditWriter, StampError> {
        self.audit
            .get()
            .ok_or_else(|| StampError::Audit("the audit trail is not running".into()))
    }

    /// Answer a DER `TimeStampReq` from `requester` (e.g. `tsa:192.0.2.7`). Signing runs
    /// under the clock gate's blocking section (off the runtime's workers).
    pub async fn respond(&self, query: &[u8], requester: &str) -> TsaAnswer {
        let refuse = |status: u16, fail: FailInfo, text: &str| TsaAnswer {
            http_status: status,
            der: cps_tsa::rejection(fail, text),
        };
        let ctx = match self.context() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "time-stamp refused");
                return refuse(503, FailInfo::SystemFailure, "the clock is not trusted");
            }
        };
        let writer = match self.writer() {
            Ok(w) => w,
            Err(e) => return refuse(503, FailInfo::SystemFailure, &e.to_string()),
        };
        let r = self.authority.respond(&*self.signer, query, &ctx);
        match r.outcome {
            Outcome::Granted(g) => {
                let rec = Self::record(&g, self.policy(), requester);
                if let Err(e) = writer.record(rec).await {
                    tracing::error!(error = %e, "cannot audit a time-stamp token");
                    return refuse(
                        503,
                        FailInfo::SystemFailure,
                        "the token could not be audited",
                    );
                }
                TsaAnswer {
                    http_status: 200,
                    der: r.der,
                }
            }
            Outcome::Rejected(refusal) if refusal.fail == FailInfo::SystemFailure => {
                tracing::error!(reason = %refusal.reason, "time-stamp signing failed");
                refuse(
                    503,
                    FailInfo::SystemFailure,
                    "the token could not be signed",
                )
            }
            Outcome::Rejected(refusal) => {
                tracing::debug!(refusal = %refusal, "time-stamp query refused");
                TsaAnswer {
                    http_status: 400,
                    der: r.der,
                }
            }
        }
    }

    /// A token (DER `TimeStampToken`, with the TSA certificate) over `digest`, for in-process
    /// callers: behind the clock gate and audited like `POST /tsa` (actor `requester`, e.g.
    /// `service:dsg`). Blocking: call it from a blocking thread (`spawn_blocking`), never
    /// from an async task.
    pub fn stamp(
        &self,
        hash: HashAlg,
        digest: &[u8],
        requester: &str,
    ) -> Result<Vec<u8>, StampError> {
        let ctx = self.context()?;
        let writer = self.writer()?.clone();
        let g = self
            .authority
            .stamp(&*self.signer, hash, digest, None, &ctx)
            .map_err(|e| match e {
                cps_tsa::TsaError::Hash(_) => {
                    StampError::Refused(Refusal::new(FailInfo::BadAlg, e.to_string()))
                }
                cps_tsa::TsaError::ImprintLength { .. } => {
                    StampError::Refused(Refusal::new(FailInfo::BadDataFormat, e.to_string()))
                }
                e => StampError::Signing(e.to_string()),
            })?;
        let rec = Self::record(&g, self.policy(), requester);
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| StampError::Audit("no runtime for the audit trail".into()))?;
        crate::clock::blocking_io(|| handle.block_on(writer.record(rec)))
            .map_err(StampError::Audit)?;
        Ok(g.token)
    }
}
