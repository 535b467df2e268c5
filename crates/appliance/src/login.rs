//! Card login: a single-use challenge, signed by the card's authentication key, answered with a
//! VIHF assertion signed by the appliance's seal.
//!
//! The appliance checks, in order: the challenge (known, unexpired, not used before — it is
//! consumed by the first attempt, right or wrong); the certificate (a `cps-auth` certificate
//! this appliance issued, chaining to our root through the personnes CA, valid now, clientAuth,
//! and valid in our live state: revoked or on hold fails, and so does an unreadable state); the
//! signature over the exact challenge bytes; then the card and the professional in the registry
//! (both active, the activity one of the professional's). A signature certificate, an operator
//! or node certificate cannot log in: only the `cps-auth` profile can.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use cps_hsm::{SigFormat, SignatureAlgorithm};
use cps_store::{AuditRecord, CertStatus, WriteBatch, WriteOp};
use cps_xua::{
    AUTHN_SMARTCARD_PKI, AUTHN_TLS_CLIENT, AuthenticationMode, CodedValue, IssuedAssertion,
    PatientId, PurposeOfUse, SoftwareInfo, VihfClaims,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::ca::{CaError, CaService};
use crate::xua::XuaService;

/// The profile of certificates that may log in.
pub const LOGIN_PROFILE: &str = "cps-auth";
/// TRE_G15 (profession) code system.
pub const PROFESSION_OID: &str = "1.2.250.1.71.1.2.7";
/// TRE_R02 (secteur d'activité) code system.
pub const SECTEUR_OID: &str = "1.2.250.1.71.4.2.4";
const MAX_OPEN_CHALLENGES: usize = 100_000;

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

/// A challenge handed out and not yet used.
struct Challenge {
    nonce: [u8; 32],
    audience: String,
    expires: SystemTime,
}

/// What the workstation asks for.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LoginContext {
    /// Patient INS (matricule), when the access concerns a patient.
    #[serde(default)]
    pub patient_ins: Option<String>,
    /// INS assigning authority OID (default INS-NIR `1.2.250.1.213.1.4.8`).
    #[serde(default)]
    pub ins_authority: Option<String>,
    /// `normal` (default), `bris_de_glace`, `centre_15`.
    #[serde(default)]
    pub purpose_of_use: Option<String>,
    /// Mandatory for `bris_de_glace`.
    #[serde(default)]
    pub justification: Option<String>,
    /// The activity (struct_IdNat) the professional acts in; default: the card's.
    #[serde(default)]
    pub structure_id: Option<String>,
    /// The practice software (`LPS_*`).
    #[serde(default)]
    pub software_name: Option<String>,
    #[serde(default)]
    pub software_version: Option<String>,
    #[serde(default)]
    pub software_id: Option<String>,
    #[serde(default)]
    pub software_homologation: Option<String>,
    /// Answer with the assertion inside a SOAP 1.2 envelope's `wsse:Security` header.
    #[serde(default)]
    pub soap: bool,
}

/// The answer of a successful login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResult {
    pub assertion_id: String,
    pub idnat_ps: String,
    pub name: String,
    pub not_on_or_after: i64,
    /// The assertion (or SOAP envelope), XML.
    pub assertion: String,
}

/// Challenges, checks and issuance.
pub struct LoginService {
    ca: Arc<CaService>,
    xua: Arc<XuaService>,
    directory: Arc<dyn Directory>,
    challenge_ttl: Duration,
    homologation: String,
    challenges: Mutex<HashMap<String, Challenge>>,
    rng: ring::rand::SystemRandom,
}

/// A challenge as the API returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChallengeView {
    pub challenge_id: String,
    /// Base64 of the bytes the card signs.
    pub challenge: String,
    pub audience: String,
    pub expires_at: i64,
}

impl LoginService {
    pub fn new(
        ca: Arc<CaService>,
        xua: Arc<XuaService>,
        directory: Arc<dyn Directory>,
        challenge_ttl: Duration,
        homologation: String,
    ) -> LoginService {
        LoginService {
            ca,
            xua,
            directory,
            challenge_ttl,
            homologation,
            challenges: Mutex::new(HashMap::new()),
            rng: ring::rand::SystemRandom::new(),
        }
    }

    /// A fresh single-use challenge bound to `audience`.
    pub fn challenge(&self, audience: &str, now: SystemTime) -> Result<ChallengeView, CaError> {
        use ring::rand::SecureRandom;
        if audience.len() > 256 || audience.chars().any(char::is_control) {
            return Err(CaError::Invalid(
                "audience must be at most 256 printable characters".into(),
            ));
        }
        let mut nonce = [0u8; 32];
        let mut id = [0u8; 16];
        self.rng
            .fill(&mut nonce)
            .and_then(|()| self.rng.fill(&mut id))
            .map_err(|_| CaError::Invalid("no randomness".into()))?;
        let id = hex::encode(id);
        let expires = now + self.challenge_ttl;
        let mut map = self.challenges.lock();
        map.retain(|_, c| c.expires > now);
        if map.len() >= MAX_OPEN_CHALLENGES {
            return Err(CaError::Unavailable(
                "too many open login challenges; retry shortly".into(),
            ));
        }
        map.insert(
            id.clone(),
            Challenge {
                nonce,
                audience: audience.to_owned(),
                expires,
            },
        );
        Ok(ChallengeView {
            challenge_id: id,
            challenge: base64::engine::general_purpose::STANDARD.encode(nonce),
            audience: audience.to_owned(),
            expires_at: crate::xua::unix(expires),
        })
    }

    /// Checks a login certificate: ours, `cps-auth`, valid now and in our live state.
    fn check_certificate(
        &self,
        der: &[u8],
        now: SystemTime,
    ) -> Result<(String, cps_pki::ParsedCertificate), LoginRefusal> {
        let Ok(parsed) = cps_pki::parse_certificate(der) else {
            return refuse("bad_certificate", "the certificate is not valid DER X.509");
        };
        let issuer_der = parsed.issuer.to_der().unwrap_or_default();
        let Some(ca) = self.ca.authorities().find(|a| {
            a.id != "root"
                && a.name.to_der().ok().as_deref() == Some(issuer_der.as_slice())
                && cps_pki::verify_issued_by(der, cps_hsm::Signer::public_key_der(&a.key)).is_ok()
        }) else {
            return refuse(
                "untrusted_certificate",
                format!(
                    "certificate issuer '{}' is not a CPS CA of this appliance, or its signature does not verify",
                    parsed.issuer
                ),
            );
        };
        let t = crate::xua::unix(now);
        if t < parsed.not_before || t >= parsed.not_after {
            return refuse(
                "expired_certificate",
                "the certificate is not valid at this time",
            );
        }
        let rec = match self
            .ca
            .store()
            .get_certificate(&ca.id, parsed.serial.as_bytes())
        {
            Ok(Some(rec)) if rec.der == der => rec,
            Ok(_) => {
                return refuse(
                    "untrusted_certificate",
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
        Ok((ca.id.clone(), parsed))
    }

    fn claims(
        &self,
        subject: &LoginSubject,
        ctx: &LoginContext,
        mode: &str,
        now: SystemTime,
    ) -> Result<VihfClaims, LoginRefusal> {
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

    fn audit(&self, kind: &str, outcome: &str, detail: serde_json::Value, now: SystemTime) {
        let rec = AuditRecord {
            time: crate::xua::unix(now),
            kind: kind.into(),
            actor: detail["idnat_ps"]
                .as_str()
                .map(|i| format!("professional:{i}"))
                .unwrap_or_else(|| "anonymous".into()),
            outcome: outcome.into(),
            detail,
        };
        if let Err(e) = self
            .ca
            .store()
            .commit(WriteBatch::new().with(WriteOp::AppendAudit(rec)))
        {
            tracing::error!(error = %e, "cannot audit a login event");
        }
    }

    fn finish(
        &self,
        ca: &str,
        parsed: &cps_pki::ParsedCertificate,
        ctx: &LoginContext,
        mode: &str,
        now: SystemTime,
    ) -> Result<LoginResult, Result<LoginRefusal, CaError>> {
        let idnat = parsed
            .subject
            .get(&cps_pki::NameAttribute::CommonName)
            .unwrap_or_default()
            .to_owned();
        let subject = self
            .directory
            .login_subject(
                &idnat,
                ca,
                parsed.serial.as_bytes(),
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
        self.audit(
            "xua.issue",
            "success",
            serde_json::json!({
                "idnat_ps": subject.idnat_ps,
                "assertion_id": issued.id,
                "structure_id": subject.structure_id,
                "patient_ins": ctx.patient_ins,
                "purpose_of_use": claims.purpose_of_use.code(),
            }),
            now,
        );
        if issued.break_glass {
            self.audit(
                "xua.break_glass",
                "success",
                serde_json::json!({
                    "idnat_ps": subject.idnat_ps,
                    "assertion_id": issued.id,
                    "patient_ins": ctx.patient_ins,
                    "purpose_of_use": "bris_de_glace",
                    "justification": ctx.justification,
                }),
                now,
            );
        }
        Ok(LoginResult {
            assertion_id: issued.id.clone(),
            idnat_ps: subject.idnat_ps,
            name: subject.display_name,
            not_on_or_after: crate::xua::unix(issued.not_on_or_after),
            assertion,
        })
    }

    fn outcome(
        &self,
        r: Result<LoginResult, Result<LoginRefusal, CaError>>,
        mode: &str,
        cert_subject: Option<String>,
        now: SystemTime,
    ) -> Result<Result<LoginResult, LoginRefusal>, CaError> {
        match r {
            Ok(ok) => {
                self.audit(
                    "login",
                    "success",
                    serde_json::json!({ "idnat_ps": ok.idnat_ps, "mode": mode }),
                    now,
                );
                Ok(Ok(ok))
            }
            Err(Ok(refusal)) => {
                self.audit(
                    "login",
                    "failure",
                    serde_json::json!({ "mode": mode, "certificate": cert_subject, "code": refusal.code, "reason": refusal.message }),
                    now,
                );
                Ok(Err(refusal))
            }
            Err(Err(e)) => Err(e),
        }
    }

    /// Card login: the challenge signed by the card.
    pub fn login(
        &self,
        challenge_id: &str,
        certificate_der: &[u8],
        signature: &[u8],
        ctx: &LoginContext,
        now: SystemTime,
    ) -> Result<Result<LoginResult, LoginRefusal>, CaError> {
        let mut subject_name = None;
        let r = (|| {
            // Consumed by the first attempt, whatever its outcome.
            let challenge = self.challenges.lock().remove(challenge_id);
            let Some(challenge) = challenge else {
                return Err(Ok(LoginRefusal {
                    code: "unknown_challenge",
                    message: "unknown or already used challenge: ask for a new one".into(),
                }));
            };
            if challenge.expires <= now {
                return Err(Ok(LoginRefusal {
                    code: "expired_challenge",
                    message: "the challenge has expired: ask for a new one".into(),
                }));
            }
            let _ = &challenge.audience;
            let (ca, parsed) = self.check_certificate(certificate_der, now).map_err(Ok)?;
            subject_name = Some(parsed.subject.to_string());
            let alg = match cps_pki::check_public_key(&parsed.spki, &cps_pki::KeyPolicy::default())
                .map(|k| k.kind)
            {
                Ok(cps_pki::KeyKind::EcP256) => SignatureAlgorithm::EcdsaSha256,
                Ok(cps_pki::KeyKind::EcP384) => SignatureAlgorithm::EcdsaSha384,
                _ => SignatureAlgorithm::RsaPkcs1Sha256,
            };
            if cps_hsm::verify_signature(
                &parsed.spki,
                alg,
                &challenge.nonce,
                signature,
                SigFormat::Der,
            )
            .is_err()
            {
                return Err(Ok(LoginRefusal {
                    code: "bad_signature",
                    message: "the signature does not verify over the challenge with this certificate's key".into(),
                }));
            }
            self.finish(&ca, &parsed, ctx, AUTHN_SMARTCARD_PKI, now)
        })();
        self.outcome(r, "card", subject_name, now)
    }

    /// Login by TLS client authentication with the card's certificate (already verified in the
    /// handshake; checked again here for its profile and live status).
    pub fn login_tls(
        &self,
        certificate_der: &[u8],
        ctx: &LoginContext,
        now: SystemTime,
    ) -> Result<Result<LoginResult, LoginRefusal>, CaError> {
        let mut subject_name = None;
        let r = (|| {
            let (ca, parsed) = self.check_certificate(certificate_der, now).map_err(Ok)?;
            subject_name = Some(parsed.subject.to_string());
            self.finish(&ca, &parsed, ctx, AUTHN_TLS_CLIENT, now)
        })();
        self.outcome(r, "tls", subject_name, now)
    }
}
