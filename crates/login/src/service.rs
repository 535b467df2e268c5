//! Card login: a challenge signed by the card's authentication key, answered with a VIHF
//! assertion signed by the appliance's seal.
//!
//! 1. `challenge(audience, context)`: a stateless, MAC-protected challenge
//!    ([`crate::challenge`]) bound to the login context the assertion will carry, and the exact
//!    bytes the card signs (domain-separated, bound to this appliance and to that context).
//! 2. `redeem` (constant cost, no I/O; on the runtime worker): the challenge is ours, unaltered,
//!    unexpired, not used before — consumed by the first attempt, right or wrong — and issued for
//!    the context the login carries. With the used challenges recorded in the store (shared by
//!    the nodes), `precheck` does the checks without I/O on the worker and `redeem` runs in the
//!    blocking step.
//! 3. `login` (blocking): the certificate is DER X.509 issued by one of our CAs, and the card's
//!    signature over the challenge's message verifies with its key. Up to here nothing is
//!    proved about who is asking (a certificate is public): a refusal is counted per source
//!    address through the service's [`RefusalCounter`] (the appliance's tally writes one
//!    `login.refused` audit record per source and interval) and costs no durable write.
//! 4. From here the professional holding the card is identified: the certificate is valid now,
//!    the one this appliance issued, of the `cps-auth` profile, not revoked or on hold in our live
//!    state; the card and the professional are active in the registry and the activity is theirs;
//!    the claims are made and the seal signs. A refusal is a security event about that
//!    professional: its own `login` failure record, committed durably before the answer.
//! 5. A success is answered only after its `login`, `xua.issue` (and `xua.break_glass`) records
//!    are committed durably, in one batch; if they cannot be, the answer is 503 and the assertion
//!    never leaves the appliance.
//!
//! `login_tls` (TLS client authentication with the card's certificate) has no challenge: the
//! handshake proved possession of the key, so it starts at step 4.
//!
//! A signature certificate, an operator or node certificate cannot log in: only the `cps-auth`
//! profile can.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use cps_hsm::SignatureAlgorithm;
use cps_store::{AuditRecord, CertStatus, WriteBatch, WriteOp};
use cps_xua::{
    AUTHN_SMARTCARD_PKI, AUTHN_TLS_CLIENT, AuthenticationMode, CodedValue, IssuedAssertion,
    PatientId, PurposeOfUse, SoftwareInfo, VihfClaims,
};
use serde::Serialize;

use cps_ca::{CaError, CaService};

use crate::challenge::{Challenges, LoginContext, Redeemed};
use crate::unix;
use crate::xua::XuaService;

/// The profile of certificates that may log in.
pub const LOGIN_PROFILE: &str = "cps-auth";
/// TRE_G15 (profession) code system.
pub const PROFESSION_OID: &str = "1.2.250.1.71.1.2.7";
/// TRE_R02 (secteur d'activité) code system.
pub const SECTEUR_OID: &str = "1.2.250.1.71.4.2.4";
/// The audit record kind of counted refusals of unauthenticated login attempts.
pub const REFUSED_KIND: fn(cps_audit::RefusalSummary) -> cps_audit::AuditEvent =
    cps_audit::AuditEvent::LoginsRefused;
/// Longest value of a login context field (bytes).
pub const MAX_CONTEXT_FIELD: usize = 1024;

/// Why a login failed: a stable code and a message for the workstation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoginRefusal {
    pub code: &'static str,
    pub message: String,
}

fn refuse<T>(code: &'static str, message: impl Into<String>) -> Result<T, LoginRefusal> {
    Err(LoginRefusal {
        code,
        message: message.into(),
    })
}

impl From<crate::challenge::ChallengeRefusal> for LoginRefusal {
    fn from(r: crate::challenge::ChallengeRefusal) -> Self {
        LoginRefusal {
            code: r.code(),
            message: r.message().into(),
        }
    }
}

impl From<crate::challenge::SignatureRefusal> for LoginRefusal {
    fn from(r: crate::challenge::SignatureRefusal) -> Self {
        LoginRefusal {
            code: r.code(),
            message: r.message().into(),
        }
    }
}

/// What the registry says about the holder of a login certificate.
#[derive(Debug, Clone)]
pub struct LoginSubject {
    pub idnat_ps: String,
    /// "SURNAME, Given names".
    pub display_name: String,
    pub profession_code: String,
    pub profession_label: String,
    pub structure_id: String,
    pub secteur_code: String,
}

/// The registry of professionals and cards, as login needs it.
pub trait Directory: Send + Sync {
    /// The active professional holding the active card that carries certificate `(ca, serial)`,
    /// for the activity at `structure_id` (or the card's own activity when `None`).
    fn login_subject(
        &self,
        idnat_ps: &str,
        ca: &str,
        serial: &[u8],
        structure_id: Option<&str>,
    ) -> Result<LoginSubject, LoginRefusal>;
}

// The wire types of the login routes, shared with the API's clients.
pub use cps_api::{ChallengeView, LoginResult};

/// The purpose of use and the patient of a context, or why they are not acceptable.
fn purpose_and_patient(
    ctx: &LoginContext,
) -> Result<(PurposeOfUse, Option<PatientId>), LoginRefusal> {
    for (name, v) in [
        ("patient_ins", &ctx.patient_ins),
        ("ins_authority", &ctx.ins_authority),
        ("purpose_of_use", &ctx.purpose_of_use),
        ("justification", &ctx.justification),
        ("structure_id", &ctx.structure_id),
        ("software_name", &ctx.software_name),
        ("software_version", &ctx.software_version),
        ("software_id", &ctx.software_id),
        ("software_homologation", &ctx.software_homologation),
    ] {
        if v.as_ref().is_some_and(|v| v.len() > MAX_CONTEXT_FIELD) {
            return refuse(
                "bad_context",
                format!("{name} is longer than {MAX_CONTEXT_FIELD} bytes"),
            );
        }
    }
    let purpose = match ctx.purpose_of_use.as_deref().unwrap_or("normal") {
        "normal" => PurposeOfUse::Normal,
        "centre_15" => PurposeOfUse::Centre15,
        "bris_de_glace" => match ctx.justification.as_deref().map(str::trim) {
            Some(j) if !j.is_empty() => PurposeOfUse::BreakGlass {
                justification: j.to_owned(),
            },
            _ => {
                return refuse(
                    "break_glass_without_justification",
                    "bris_de_glace requires a justification",
                );
            }
        },
        other => {
            return refuse(
                "bad_context",
                format!("purpose_of_use '{other}' must be normal, bris_de_glace or centre_15"),
            );
        }
    };
    let patient = match &ctx.patient_ins {
        None => None,
        Some(ins) => {
            let p = PatientId {
                ins: ins.clone(),
                authority: ctx
                    .ins_authority
                    .clone()
                    .unwrap_or_else(|| cps_xua::INS_AUTHORITIES[0].to_owned()),
            };
            PatientId::parse_cx(&p.to_cx()).map_err(|e| LoginRefusal {
                code: "bad_context",
                message: e,
            })?;
            Some(p)
        }
    };
    Ok((purpose, patient))
}

/// Who a login is about once the card's key is proved (or the TLS handshake proved it).
struct Identified {
    ca: String,
    parsed: cps_pki::ParsedCertificate,
    idnat_ps: String,
}

/// Counts a refused attempt of a peer that proved nothing: its source address, the refusal's
/// code and the time (Unix seconds). Constant cost and no I/O: it is called on the runtime
/// worker; the appliance's tally turns the counts into one audit record per source and interval.
pub type RefusalCounter = Arc<dyn Fn(IpAddr, &str, i64) + Send + Sync>;

/// Challenges, checks, issuance and their audit.
pub struct LoginService {
    ca: Arc<CaService>,
    xua: Arc<XuaService>,
    directory: Arc<dyn Directory>,
    homologation: String,
    challenges: Challenges,
    refused: RefusalCounter,
    rng: ring::rand::SystemRandom,
}

impl LoginService {
    pub fn new(
        ca: Arc<CaService>,
        xua: Arc<XuaService>,
        directory: Arc<dyn Directory>,
        challenges: Challenges,
        homologation: String,
        refused: RefusalCounter,
    ) -> LoginService {
        LoginService {
            ca,
            xua,
            directory,
            homologation,
            challenges,
            refused,
            rng: ring::rand::SystemRandom::new(),
        }
    }

    /// A fresh challenge bound to `audience` and `ctx` (checked first). Constant cost: a random
    /// draw, a hash and an HMAC; nothing is stored.
    pub fn challenge(
        &self,
        audience: &str,
        ctx: &LoginContext,
        now: SystemTime,
    ) -> Result<ChallengeView, CaError> {
        use base64::Engine;
        use ring::rand::SecureRandom;
        purpose_and_patient(ctx)
            .map_err(|r| CaError::Invalid(format!("context: {} ({})", r.message, r.code)))?;
        let mut nonce = [0u8; 32];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| CaError::Unavailable("no randomness".into()))?;
        let context = crate::challenge::context_sha256(audience, ctx);
        let issued = self
            .challenges
            .issue(audience, &context, &nonce, unix(now))
            .map_err(|e| CaError::Invalid(e.to_string()))?;
        Ok(ChallengeView {
            challenge_id: issued.token,
            challenge: base64::engine::general_purpose::STANDARD.encode(&issued.message),
            audience: audience.to_owned(),
            expires_at: issued.expires,
            appliance: hex::encode(self.challenges.appliance()),
            context_sha256: hex::encode(context),
            format: crate::challenge::MESSAGE_FORMAT.into(),
        })
    }

    /// Counts a refused attempt of a peer that proved nothing (no durable write here: the
    /// tally becomes one `login.refused` record per source and interval).
    pub fn refused(&self, source: IpAddr, refusal: &LoginRefusal, now: SystemTime) {
        tracing::debug!(%source, code = refusal.code, "login refused (unauthenticated)");
        (self.refused)(source, refusal.code, unix(now));
    }

    /// The checks of step 2 that consume nothing and need no I/O (encoding, issuer, MAC,
    /// expiry): meant for the runtime worker, so floods of made-up challenges never reach the
    /// blocking pool. A refusal is counted for `source`.
    pub fn precheck(
        &self,
        token: &str,
        source: IpAddr,
        now: SystemTime,
    ) -> Result<(), LoginRefusal> {
        self.challenges.precheck(token, unix(now)).map_err(|r| {
            let r = LoginRefusal::from(r);
            self.refused(source, &r, now);
            r
        })
    }

    /// Whether [`redeem`](LoginService::redeem) waits for a shared record (the store): then
    /// call it off the runtime's workers, after [`precheck`](LoginService::precheck).
    pub fn redeem_blocks(&self) -> bool {
        self.challenges.has_shared_record()
    }

    /// Step 2: the challenge of a login with context `ctx`, accepted and consumed. Constant
    /// cost, and no I/O unless the challenges have a shared record
    /// ([`redeem_blocks`](LoginService::redeem_blocks)). A refusal is counted for `source`.
    pub fn redeem(
        &self,
        token: &str,
        ctx: &LoginContext,
        source: IpAddr,
        now: SystemTime,
    ) -> Result<Redeemed, LoginRefusal> {
        // The audience travels in the token (MAC-protected); the context hash covers it.
        self.challenges
            .redeem(
                token,
                |audience| crate::challenge::context_sha256(audience, ctx),
                unix(now),
            )
            .map_err(|r| {
                let r = LoginRefusal::from(r);
                self.refused(source, &r, now);
                r
            })
    }

    /// Step 3: the certificate is ours and the card's signature over the challenge's message
    /// verifies with its key. Nothing here reads the store.
    fn authenticate(
        &self,
        redeemed: &Redeemed,
        der: &[u8],
        signature: &[u8],
    ) -> Result<Identified, LoginRefusal> {
        let who = self.issuer_of(der)?;
        let alg = match cps_pki::check_public_key(&who.parsed.spki, &cps_pki::KeyPolicy::default())
            .map(|k| k.kind)
        {
            Ok(cps_pki::KeyKind::EcP256) => SignatureAlgorithm::EcdsaSha256,
            Ok(cps_pki::KeyKind::EcP384) => SignatureAlgorithm::EcdsaSha384,
            _ => SignatureAlgorithm::RsaPkcs1Sha256,
        };
        crate::challenge::verify_card_signature(&who.parsed.spki, alg, redeemed, signature)?;
        Ok(who)
    }

    /// The certificate parsed and the id of our CA that signed it.
    fn issuer_of(&self, der: &[u8]) -> Result<Identified, LoginRefusal> {
        let Ok(parsed) = cps_pki::parse_certificate(der) else {
            return refuse("bad_certificate", "the certificate is not valid DER X.509");
        };
        let issuer_der = parsed.issuer.to_der().unwrap_or_default();
        let Some(ca) = self.ca.authorities().find(|a| {
            a.id != "root"
                && a.name.to_der().ok().as_deref() == Some(issuer_der.as_slice())
                && cps_pki::verify_issued_by(der, a.key.public_key_der()).is_ok()
        }) else {
            return refuse(
                "untrusted_certificate",
                format!(
                    "certificate issuer '{}' is not a CPS CA of this appliance, or its signature does not verify",
                    parsed.issuer
                ),
            );
        };
        let idnat_ps = parsed
            .subject
            .get(&cps_pki::NameAttribute::CommonName)
            .unwrap_or_default()
            .to_owned();
        Ok(Identified {
            ca: ca.id.clone(),
            parsed,
            idnat_ps,
        })
    }

    /// Step 4, first half: the certificate is valid now, the one we issued, a `cps-auth`
    /// certificate, and neither revoked nor on hold in our live state.
    fn check_status(
        &self,
        who: &Identified,
        der: &[u8],
        now: SystemTime,
    ) -> Result<(), LoginRefusal> {
        let parsed = &who.parsed;
        let t = unix(now);
        if t < parsed.not_before || t >= parsed.not_after {
            return refuse(
                "expired_certificate",
                "the certificate is not valid at this time",
            );
        }
        let rec = match self
            .ca
            .store()
            .get_certificate(&who.ca, parsed.serial.as_bytes())
        {
            Ok(Some(rec)) if rec.der == der => rec,
            Ok(_) => {
                return refuse(
                    "unregistered_certificate",
                    "this certificate was not issued by this appliance",
                );
            }
            Err(e) => {
                return refuse(
                    "revocation_unavailable",
                    format!("revocation state unavailable: {e}"),
                );
            }
        };
        if rec.profile != LOGIN_PROFILE {
            return refuse(
                "wrong_certificate_profile",
                format!(
                    "a '{}' certificate cannot log in: use the card's authentication certificate ({LOGIN_PROFILE})",
                    rec.profile
                ),
            );
        }
        if let CertStatus::Revoked { reason, .. } = rec.status {
            let what = if reason == 6 {
                "on hold (suspended)"
            } else {
                "revoked"
            };
            return refuse("revoked_certificate", format!("the certificate is {what}"));
        }
        Ok(())
    }

    fn claims(
        &self,
        subject: &LoginSubject,
        ctx: &LoginContext,
        mode: &str,
        now: SystemTime,
    ) -> Result<VihfClaims, LoginRefusal> {
        let (purpose, patient) = purpose_and_patient(ctx)?;
        let name_id = cps_pki::IdNatPs::parse(&subject.idnat_ps).map_err(|e| LoginRefusal {
            code: "bad_certificate",
            message: e.to_string(),
        })?;
        let mut role = CodedValue::new(subject.profession_code.clone(), PROFESSION_OID);
        role.display_name = Some(subject.profession_label.clone());
        Ok(VihfClaims {
            vihf_version: "3.0".into(),
            name_id,
            subject_id: subject.display_name.clone(),
            roles: vec![role],
            secteur_activite: format!("{}^{SECTEUR_OID}", subject.secteur_code),
            structure_id: subject.structure_id.clone(),
            authentication_mode: AuthenticationMode::Direct,
            patient,
            resource_urn: "urn:dmp".into(),
            purpose_of_use: purpose,
            confidentiality_code: None,
            software: SoftwareInfo {
                name: ctx
                    .software_name
                    .clone()
                    .unwrap_or_else(|| "cps-trust login".into()),
                version: ctx.software_version.clone(),
                id: ctx.software_id.clone(),
                homologation: ctx
                    .software_homologation
                    .clone()
                    .unwrap_or_else(|| self.homologation.clone()),
            },
            authn_instant: now,
            authn_context_class_ref: mode.into(),
        })
    }

    /// Step 4, second half: registry, claims, seal signature. Returns the answer and the
    /// records that must be durable before it leaves.
    fn issue(
        &self,
        who: &Identified,
        ctx: &LoginContext,
        mode: &str,
        now: SystemTime,
    ) -> Result<(LoginResult, Vec<AuditRecord>), Result<LoginRefusal, CaError>> {
        let subject = self
            .directory
            .login_subject(
                &who.idnat_ps,
                &who.ca,
                who.parsed.serial.as_bytes(),
                ctx.structure_id.as_deref(),
            )
            .map_err(Ok)?;
        let claims = self.claims(&subject, ctx, mode, now).map_err(Ok)?;
        let issued: IssuedAssertion = self.xua.issue(&claims, now).map_err(Err)?;
        let assertion = if ctx.soap {
            issued.soap_envelope()
        } else {
            issued.xml.clone()
        };
        let record = |event: cps_audit::AuditEvent| {
            event.record(unix(now), format!("professional:{}", subject.idnat_ps))
        };
        let mut records = vec![record(cps_audit::AuditEvent::AssertionIssued {
            idnat_ps: subject.idnat_ps.to_string(),
            assertion_id: issued.id.to_string(),
            structure_id: subject.structure_id.to_string(),
            patient_ins: ctx.patient_ins.as_ref().map(|p| p.to_string()),
            purpose_of_use: claims.purpose_of_use.code().to_owned(),
        })];
        if issued.break_glass {
            records.push(record(cps_audit::AuditEvent::BreakGlass {
                idnat_ps: subject.idnat_ps.to_string(),
                assertion_id: issued.id.to_string(),
                patient_ins: ctx.patient_ins.as_ref().map(|p| p.to_string()),
                purpose_of_use: "bris_de_glace".into(),
                justification: ctx.justification.as_ref().map(|j| j.to_string()),
            }));
        }
        Ok((
            LoginResult {
                assertion_id: issued.id.clone(),
                idnat_ps: subject.idnat_ps,
                name: subject.display_name,
                not_on_or_after: unix(issued.not_on_or_after),
                assertion,
            },
            records,
        ))
    }

    /// Commits `records` durably in one batch; an error is a 503 for the caller (nothing that
    /// needed them may leave).
    fn commit(&self, records: Vec<AuditRecord>) -> Result<(), CaError> {
        let mut batch = WriteBatch::new();
        for r in records {
            batch.push(WriteOp::AppendAudit(r));
        }
        self.ca.store().commit(batch).map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, "cannot audit a login: refused with 503, no assertion");
            CaError::Unavailable(
                "the login could not be audited, so no assertion was issued; try again later"
                    .into(),
            )
        })
    }

    /// Steps 4 and 5 for an identified professional: a durable `login` record in every case
    /// (with the assertion's records on success), committed before anything is answered.
    fn identified(
        &self,
        who: &Identified,
        der: &[u8],
        ctx: &LoginContext,
        mode: &str,
        source: IpAddr,
        now: SystemTime,
    ) -> Result<Result<LoginResult, LoginRefusal>, CaError> {
        let r = self
            .check_status(who, der, now)
            .map_err(Ok)
            .and_then(|()| self.issue(who, ctx, mode, now));
        let login_record = |event: cps_audit::AuditEvent| {
            event.record(unix(now), format!("professional:{}", who.idnat_ps))
        };
        match r {
            Ok((ok, records)) => {
                let mut all = vec![login_record(cps_audit::AuditEvent::LoginSucceeded {
                    idnat_ps: ok.idnat_ps.to_string(),
                    mode: mode.into(),
                    assertion_id: ok.assertion_id.to_string(),
                    source: source.to_string(),
                })];
                all.extend(records);
                self.commit(all)?;
                Ok(Ok(ok))
            }
            Err(Ok(refusal)) => {
                self.commit(vec![login_record(cps_audit::AuditEvent::LoginRefused {
                    idnat_ps: who.idnat_ps.to_string(),
                    mode: mode.into(),
                    certificate: who.parsed.subject.to_string(),
                    code: refusal.code.into(),
                    reason: refusal.message.clone(),
                    source: source.to_string(),
                })])?;
                Ok(Err(refusal))
            }
            Err(Err(e)) => Err(e),
        }
    }

    /// Step 3 onwards of a card login, after [`redeem`](LoginService::redeem) (blocking: store
    /// reads and writes, the seal signature).
    pub fn login(
        &self,
        redeemed: &Redeemed,
        certificate_der: &[u8],
        signature: &[u8],
        ctx: &LoginContext,
        source: IpAddr,
        now: SystemTime,
    ) -> Result<Result<LoginResult, LoginRefusal>, CaError> {
        let who = match self.authenticate(redeemed, certificate_der, signature) {
            Ok(who) => who,
            Err(refusal) => {
                self.refused(source, &refusal, now);
                return Ok(Err(refusal));
            }
        };
        self.identified(&who, certificate_der, ctx, AUTHN_SMARTCARD_PKI, source, now)
    }

    /// Login by TLS client authentication with the card's certificate (verified in the
    /// handshake, which proved possession of its key; checked again here for its profile and
    /// live status).
    pub fn login_tls(
        &self,
        certificate_der: &[u8],
        ctx: &LoginContext,
        source: IpAddr,
        now: SystemTime,
    ) -> Result<Result<LoginResult, LoginRefusal>, CaError> {
        let who = match self.issuer_of(certificate_der) {
            Ok(who) => who,
            // The handshake accepted it, so this is not expected: refused, and counted.
            Err(refusal) => {
                self.refused(source, &refusal, now);
                return Ok(Err(refusal));
            }
        };
        self.identified(&who, certificate_der, ctx, AUTHN_TLS_CLIENT, source, now)
    }
}
