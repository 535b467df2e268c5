//! The card service: enrolment state machine (new card, replacement, renewal), with
//! persisted steps, resume, abort and recovery. Lifecycle operations are in
//! [`crate::lifecycle`].
//!
//! # Invariant
//!
//! **A certificate of a card key is valid only while it belongs to a registered card that is
//! active, or to the enrolment that a live process is driving right now.** Anything that stops
//! an enrolment (card pulled, card or CA error, professional no longer active) revokes what the
//! enrolment issued (`cessationOfOperation`) before the error is returned; a process crash is
//! repaired by [`CardService::recover_interrupted`], which the appliance calls at start: it
//! aborts every enrolment left running and revokes its certificates, including any certificate
//! the CA issued for the enrolment's keys that the enrolment had not recorded yet. Revocations
//! go through an outbox (table `revocations_pending`) written in the same batch as the state
//! change that calls for them, so a CA outage delays a revocation but never loses it.

use cps_audit::{AuditEvent, StepDetail};
use std::collections::HashSet;
use std::sync::Arc;

use cps_card::{
    CardError, CpsIdentity, KeyAlgorithm, ManagementKey, MgmtAlgorithm, Piv, Transport,
};
use cps_hsm::SignatureAlgorithm;
use cps_store::{Expect, Store, WriteBatch, WriteOp};
use parking_lot::Mutex;
use ring::rand::SecureRandom;

use crate::ca::{
    CaError, CertState, CertificateAuthority, IssueRequest, RevocationReason, SubjectRequest,
};
use crate::cardops::{self, SetKeyOutcome};
use crate::error::{EnrolError, Result};
use crate::lifecycle::{RevocationAction, RevocationReport};
use crate::model::{
    Card, CardCertificate, CardStatus, CertRef, CertSlot, Enrolment, EnrolmentKind,
    EnrolmentStatus, ManagementKeyState, Professional, ProfessionalStatus, Step, shown,
};
use crate::registry::Registry;
use crate::secrets::{CardSecrets, InitialSecrets, mgmt_alg_name};
use crate::tables::{
    self, CARDS, CARDS_BY_PROFESSIONAL, ENROLMENTS, ENROLMENTS_BY_CARD, ENROLMENTS_OPEN,
    ENROLMENTS_OPEN_BY_ACTIVITY,
};

/// How cards are personalised.
#[derive(Debug, Clone)]
pub struct CardServiceConfig {
    /// Algorithm of the card key pairs.
    pub key_algorithm: KeyAlgorithm,
    /// Profile of the authentication certificate.
    pub auth_profile: String,
    /// Profile of the signature certificate.
    pub sign_profile: String,
    /// PIN of a blank card.
    pub default_pin: String,
    /// PUK of a blank card.
    pub default_puk: String,
    /// Management key of a blank card.
    pub default_management_key: ManagementKey,
    /// Algorithm of the per-card management key.
    pub management_key_algorithm: MgmtAlgorithm,
    /// Refuse to finish an enrolment on a card that cannot change its management key. When
    /// false, such a card keeps the default key: it is recorded, audited and shown.
    pub require_management_key_change: bool,
    /// First part of token ids: `<token_issuer>/<10-digit card number>`.
    pub token_issuer: String,
    /// Card type written in the CPS identity object.
    pub card_type: String,
}

impl Default for CardServiceConfig {
    fn default() -> Self {
        CardServiceConfig {
            key_algorithm: KeyAlgorithm::EccP256,
            auth_profile: "cps-auth".into(),
            sign_profile: "cps-sign".into(),
            default_pin: "123456".into(),
            default_puk: "12345678".into(),
            default_management_key: ManagementKey::default_aes192(),
            management_key_algorithm: MgmtAlgorithm::Aes256,
            require_management_key_change: true,
            token_issuer: "8025000001".into(),
            card_type: "CPS".into(),
        }
    }
}

/// What to enrol: a professional's activity, and the card it replaces if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolRequest {
    /// The holder.
    pub idnat_ps: String,
    /// The activity (structure identifier).
    pub structure_id: String,
    /// Serial of a registered card of the same activity that the new card replaces (retired
    /// at the end, its certificates revoked as superseded).
    pub replaces: Option<String>,
}

/// State of a step, for progress displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepState {
    /// The step begins.
    Started,
    /// The step is done (and persisted).
    Done,
    /// Nothing to do for this step (done by an earlier attempt, or not part of this kind of
    /// enrolment).
    Skipped(String),
    /// The step failed; the enrolment is interrupted.
    Failed(String),
}

/// One progress event of an enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The enrolment (empty until the card is detected).
    pub enrolment: String,
    /// The step.
    pub step: Step,
    /// What happens to it.
    pub state: StepState,
}

/// A finished enrolment.
#[derive(Debug)]
pub struct EnrolmentOutcome {
    /// The enrolment record (completed).
    pub enrolment: Enrolment,
    /// The registered card.
    pub card: Card,
    /// Initial PIN and PUK, for display or a PIN mailer; shown once, stored nowhere. `None`
    /// for a renewal (the holder keeps their PIN).
    pub initial_secrets: Option<InitialSecrets>,
    /// Revocations that the end of this enrolment calls for (old certificates of a renewal or a
    /// replaced card).
    pub revocations: RevocationReport,
}

/// What [`CardService::recover_interrupted`] did.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Enrolments aborted (their ids).
    pub aborted: Vec<String>,
    /// Revocations done or still pending.
    pub revocations: RevocationReport,
    /// Open enrolments left alone because another node drives them: (id, node).
    pub other_nodes: Vec<(String, String)>,
}

/// Card enrolment and lifecycle over the registry, the CA and the HSM master key.
pub struct CardService {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Registry,
    pub(crate) ca: Arc<dyn CertificateAuthority>,
    pub(crate) secrets: CardSecrets,
    pub(crate) config: CardServiceConfig,
    pub(crate) rng: ring::rand::SystemRandom,
    /// Enrolments a call of this process is driving right now.
    running: Mutex<HashSet<String>>,
    /// The node this service runs on, when several share the store ([`CardService::with_node`]).
    node: Option<String>,
}

impl std::fmt::Debug for CardService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn key_alg_name(a: KeyAlgorithm) -> &'static str {
    match a {
        KeyAlgorithm::EccP256 => "p256",
        KeyAlgorithm::Rsa2048 => "rsa2048",
    }
}

fn key_alg_from_name(s: &str) -> Option<KeyAlgorithm> {
    match s {
        "p256" => Some(KeyAlgorithm::EccP256),
        "rsa2048" => Some(KeyAlgorithm::Rsa2048),
        _ => None,
    }
}

fn signature_for(a: KeyAlgorithm) -> SignatureAlgorithm {
    match a {
        KeyAlgorithm::EccP256 => SignatureAlgorithm::EcdsaSha256,
        KeyAlgorithm::Rsa2048 => SignatureAlgorithm::RsaPkcs1Sha256,
    }
}

pub(crate) fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    out
}

fn unhex(field: &str, v: &Option<String>) -> Result<Vec<u8>> {
    let s = v.as_ref().ok_or_else(|| EnrolError::Corrupt {
        what: "enrolment".into(),
        detail: format!("{field} missing"),
    })?;
    hex::decode(s).map_err(|e| EnrolError::Corrupt {
        what: "enrolment".into(),
        detail: format!("{field}: {e}"),
    })
}

/// An enrolment being driven: the record and its stored bytes.
pub(crate) struct Live {
    pub(crate) rec: Enrolment,
    pub(crate) raw: Vec<u8>,
    /// Certificates issued in this session (DER), by slot.
    ders: Vec<(CertSlot, Vec<u8>)>,
    /// The holder's PIN (renewal).
    holder_pin: Option<zeroize::Zeroizing<String>>,
    secrets: Option<InitialSecrets>,
}

impl CardService {
    /// A card service over `store` (registry and cards), `ca` and the HSM master key of the
    /// per-card secrets.
    pub fn new(
        store: Arc<dyn Store>,
        ca: Arc<dyn CertificateAuthority>,
        secrets: CardSecrets,
        config: CardServiceConfig,
    ) -> CardService {
        CardService {
            registry: Registry::new(store.clone()),
            store,
            ca,
            secrets,
            config,
            rng: ring::rand::SystemRandom::new(),
            running: Mutex::new(HashSet::new()),
            node: None,
        }
    }

    /// The same service on node `node` of a cluster: its enrolments are recorded as this
    /// node's, and it resumes, aborts and recovers no other node's (the card is in that
    /// node's reader, and that node may be driving the enrolment right now).
    #[must_use]
    pub fn with_node(mut self, node: &str) -> CardService {
        self.node = Some(node.to_owned());
        self
    }

    /// The node this service runs on, if it was given one.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Whether `rec` belongs to another node than this one. Enrolments written before nodes
    /// existed, and services without a node, belong to everyone (a single node).
    fn foreign<'a>(&self, rec: &'a Enrolment) -> Option<&'a str> {
        match (&rec.node, &self.node) {
            (Some(theirs), Some(mine)) if theirs != mine => Some(theirs),
            _ => None,
        }
    }

    /// The registry this service works on.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The configuration.
    pub fn config(&self) -> &CardServiceConfig {
        &self.config
    }

    pub(crate) fn random(&self, n: usize) -> Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.rng.fill(&mut b).map_err(|_| EnrolError::Random)?;
        Ok(b)
    }

    /// An enrolment by id.
    pub fn enrolment(&self, id: &str) -> Result<Option<Enrolment>> {
        if id.is_empty() || id.len() > 64 {
            return Ok(None);
        }
        Ok(tables::get(self.store.as_ref(), ENROLMENTS, id.as_bytes())?.map(|(e, _)| e))
    }

    /// Enrolments not completed nor aborted (running or interrupted).
    pub fn open_enrolments(&self) -> Result<Vec<Enrolment>> {
        let mut out = Vec::new();
        for (_, v) in tables::scan_all(self.store.as_ref(), ENROLMENTS_OPEN, b"")? {
            let id = String::from_utf8_lossy(&v).into_owned();
            if let Some(e) = self.enrolment(&id)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// A registered card by serial.
    pub fn card(&self, serial: &str) -> Result<Option<Card>> {
        if serial.is_empty() || serial.len() > 64 {
            return Ok(None);
        }
        Ok(tables::get(self.store.as_ref(), CARDS, serial.as_bytes())?.map(|(c, _)| c))
    }

    pub(crate) fn card_raw(&self, serial: &str) -> Result<(Card, Vec<u8>)> {
        if serial.is_empty() || serial.len() > 64 {
            return Err(EnrolError::UnknownCard(shown(serial)));
        }
        tables::get(self.store.as_ref(), CARDS, serial.as_bytes())?
            .ok_or_else(|| EnrolError::UnknownCard(shown(serial)))
    }

    /// The cards of a professional (every status), optionally of one activity.
    pub fn cards_of(&self, idnat_ps: &str, structure_id: Option<&str>) -> Result<Vec<Card>> {
        let prefix = match structure_id {
            Some(s) => tables::key(&[idnat_ps, s, ""]),
            None => tables::key(&[idnat_ps, ""]),
        };
        let mut out = Vec::new();
        for (k, _) in tables::scan_all(self.store.as_ref(), CARDS_BY_PROFESSIONAL, &prefix)? {
            let serial = k
                .iter()
                .rposition(|b| *b == 0)
                .map(|i| String::from_utf8_lossy(&k[i + 1..]).into_owned())
                .unwrap_or_default();
            if let Some(c) = self.card(&serial)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    fn check_professional(
        &self,
        idnat: &str,
        structure: &str,
        what: &'static str,
    ) -> Result<Professional> {
        let p = self.registry.require(idnat)?;
        if p.status != ProfessionalStatus::Active {
            return Err(EnrolError::ProfessionalNotActive {
                idnat_ps: idnat.into(),
                status: p.status,
                what,
            });
        }
        if p.activity(structure).is_none() {
            return Err(EnrolError::UnknownActivity {
                idnat_ps: idnat.into(),
                structure_id: shown(structure),
            });
        }
        // A card is for logging in: its activity must be one a login assertion can name.
        if let Some(reason) = crate::codes::structure_login_problem(structure) {
            return Err(EnrolError::ActivityNotForLogin {
                idnat_ps: idnat.into(),
                structure_id: shown(structure),
                reason,
            });
        }
        Ok(p)
    }

    /// Every enrolment of a card serial, oldest first by id order.
    pub fn enrolments_of_card(&self, serial: &str) -> Result<Vec<Enrolment>> {
        let mut out = Vec::new();
        for (k, _) in tables::scan_all(
            self.store.as_ref(),
            ENROLMENTS_BY_CARD,
            &tables::key(&[serial, ""]),
        )? {
            let id = k
                .iter()
                .rposition(|b| *b == 0)
                .map(|i| String::from_utf8_lossy(&k[i + 1..]).into_owned())
                .unwrap_or_default();
            if let Some(e) = self.enrolment(&id)? {
                out.push(e);
            }
        }
        out.sort_by_key(|e| e.started_at);
        Ok(out)
    }

    // ---- start ------------------------------------------------------------------------------

    /// Enrols the blank card in `piv` for `req`, from card detection to registration. On
    /// success the card is registered and the initial PIN and PUK are returned (once). On
    /// failure the enrolment is interrupted and what it issued revoked
    /// ([`EnrolError::Interrupted`]); [`CardService::resume`] continues it with the same card.
    pub fn enrol<T: Transport>(
        &self,
        piv: &mut Piv<T>,
        req: &EnrolRequest,
        actor: &str,
        now: i64,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<EnrolmentOutcome> {
        progress(&Progress {
            enrolment: String::new(),
            step: Step::DetectCard,
            state: StepState::Started,
        });
        let started = self.start_new(piv, req, actor, now);
        let live = match started {
            Ok(l) => l,
            Err(e) => {
                progress(&Progress {
                    enrolment: String::new(),
                    step: Step::DetectCard,
                    state: StepState::Failed(e.to_string()),
                });
                return Err(e);
            }
        };
        self.drive(live, piv, actor, now, progress)
    }

    fn start_new<T: Transport>(
        &self,
        piv: &mut Piv<T>,
        req: &EnrolRequest,
        actor: &str,
        now: i64,
    ) -> Result<Live> {
        let p = self.check_professional(&req.idnat_ps, &req.structure_id, "enrolling a card")?;
        let serial = cardops::card_serial(piv)?;
        if let Some(c) = self.card(&serial)? {
            return Err(EnrolError::CardNotBlank(format!(
                "card {serial} is already registered ({}) for {}",
                c.status, c.idnat_ps
            )));
        }
        if let Some(id) = self.store.get_record(ENROLMENTS_OPEN, serial.as_bytes())? {
            return Err(EnrolError::EnrolmentState {
                id: String::from_utf8_lossy(&id).into_owned(),
                reason: format!(
                    "card {serial} already has this enrolment in progress: resume or abort it"
                ),
            });
        }
        let previous = self.enrolments_of_card(&serial)?;
        if let Some(e) = previous.iter().find(|e| e.pin_set) {
            return Err(EnrolError::CardNotBlank(format!(
                "enrolment {} (aborted) changed its PIN, which is now unknown: the card cannot be reused",
                e.id
            )));
        }
        // Objects written by an aborted enrolment of this very card are overwritten.
        if previous.is_empty()
            && let Some(why) = cardops::non_blank_reason(piv)?
        {
            return Err(EnrolError::CardNotBlank(why));
        }
        let kind = match &req.replaces {
            None => EnrolmentKind::New,
            Some(old) => {
                let (oc, _) = self.card_raw(old)?;
                if oc.idnat_ps != req.idnat_ps || oc.structure_id != req.structure_id {
                    return Err(EnrolError::Invalid(format!(
                        "card {old} belongs to {} at {}, not to this activity",
                        oc.idnat_ps, oc.structure_id
                    )));
                }
                EnrolmentKind::Replacement {
                    old_card: old.clone(),
                }
            }
        };
        for c in self.cards_of(&req.idnat_ps, Some(&req.structure_id))? {
            if !c.status.is_terminal() && req.replaces.as_deref() != Some(c.serial.as_str()) {
                return Err(EnrolError::ActivityHasCard(format!(
                    "{} already has card {} ({}) for activity {}: oppose it, or enrol the new card as its replacement",
                    req.idnat_ps, c.serial, c.status, req.structure_id
                )));
            }
        }
        let number = self
            .store
            .commit(WriteBatch::new().with(WriteOp::BumpCounter {
                name: "enrol.card-number".into(),
                min_next: None,
            }))?
            .counter_values
            .first()
            .copied()
            .unwrap_or(0);
        let id = hex::encode_upper(self.random(8)?);
        let rec = Enrolment {
            id: id.clone(),
            node: self.node.clone(),
            kind,
            card_serial: serial.clone(),
            token_id: format!(
                "{}/{:010}",
                self.config.token_issuer,
                number % 10_000_000_000
            ),
            idnat_ps: req.idnat_ps.clone(),
            structure_id: req.structure_id.clone(),
            key_algorithm: key_alg_name(self.config.key_algorithm).into(),
            started_by: actor.into(),
            started_at: now,
            updated_at: now,
            done: Some(Step::DetectCard),
            status: EnrolmentStatus::Running,
            auth_spki: None,
            sign_spki: None,
            auth_csr: None,
            sign_csr: None,
            certificates: Vec::new(),
            rolled_back: Vec::new(),
            management_key: ManagementKeyState::Default,
            secret_nonce: Some(hex::encode(self.random(32)?)),
            pin_set: false,
        };
        let _ = p;
        self.open(rec, actor, now)
    }

    /// Records a new enrolment with its locks (one open enrolment per card and per activity).
    pub(crate) fn open(&self, rec: Enrolment, actor: &str, now: i64) -> Result<Live> {
        let raw = tables::encode(&rec)?;
        let id = rec.id.clone();
        let batch = WriteBatch::new()
            .with(tables::put_raw(
                ENROLMENTS,
                id.as_bytes(),
                raw.clone(),
                Expect::Absent,
            ))
            .with(tables::put_raw(
                ENROLMENTS_OPEN,
                rec.card_serial.as_bytes(),
                id.as_bytes().to_vec(),
                Expect::Absent,
            ))
            .with(tables::put_raw(
                ENROLMENTS_BY_CARD,
                &tables::key(&[&rec.card_serial, &rec.id]),
                Vec::new(),
                Expect::Any,
            ))
            .with(tables::put_raw(
                ENROLMENTS_OPEN_BY_ACTIVITY,
                &tables::key(&[&rec.idnat_ps, &rec.structure_id]),
                id.as_bytes().to_vec(),
                Expect::Absent,
            ))
            .with(tables::audit(
                now,
                actor,
                AuditEvent::EnrolmentStarted {
                    enrolment: id.clone(),
                    kind: audit_purpose(&rec.kind),
                    card: rec.card_serial.clone(),
                    token_id: rec.token_id.clone(),
                    idnat_ps: rec.idnat_ps.clone(),
                    structure_id: rec.structure_id.clone(),
                },
            ));
        match self.store.commit(batch) {
            Ok(_) => {}
            Err(cps_store::StoreError::Conflict(_)) => {
                return Err(EnrolError::ActivityHasCard(format!(
                    "an enrolment is already in progress for card {} or for activity {} of {}: resume or abort it",
                    rec.card_serial, rec.structure_id, rec.idnat_ps
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.running.lock().insert(id);
        Ok(Live {
            rec,
            raw,
            ders: Vec::new(),
            holder_pin: None,
            secrets: None,
        })
    }

    // ---- driving ----------------------------------------------------------------------------

    pub(crate) fn drive<T: Transport>(
        &self,
        mut live: Live,
        piv: &mut Piv<T>,
        actor: &str,
        now: i64,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<EnrolmentOutcome> {
        let id = live.rec.id.clone();
        let mut step = Step::DetectCard;
        let result = (|| -> Result<EnrolmentOutcome> {
            let ev = |progress: &mut dyn FnMut(&Progress), s: Step, st: StepState| {
                progress(&Progress {
                    enrolment: id.clone(),
                    step: s,
                    state: st,
                })
            };
            ev(progress, Step::DetectCard, StepState::Done);
            for s in Step::ALL.into_iter().skip(1) {
                step = s;
                if let Some(why) = self.skip_reason(&live, s) {
                    ev(progress, s, StepState::Skipped(why));
                    continue;
                }
                ev(progress, s, StepState::Started);
                if s == Step::Register {
                    let out = self.register(&mut live, actor, now)?;
                    ev(progress, s, StepState::Done);
                    return Ok(out);
                }
                match self.run_step(&mut live, s, piv, actor, now)? {
                    None => ev(progress, s, StepState::Done),
                    Some(note) => ev(progress, s, StepState::Skipped(note)),
                }
            }
            Err(EnrolError::EnrolmentState {
                id: id.clone(),
                reason: "ended without registering the card".into(),
            })
        })();
        self.running.lock().remove(&id);
        match result {
            Ok(o) => Ok(o),
            Err(e) => {
                progress(&Progress {
                    enrolment: id.clone(),
                    step,
                    state: StepState::Failed(e.to_string()),
                });
                Err(self.interrupt(&id, step, e, actor, now))
            }
        }
    }

    fn skip_reason(&self, live: &Live, s: Step) -> Option<String> {
        let r = &live.rec;
        let renewal = r.kind == EnrolmentKind::Renewal;
        match s {
            Step::Authenticate => None,
            Step::GenerateKeys | Step::ProvePossession if r.has_done(s) => {
                Some("done by an earlier attempt".into())
            }
            Step::IssueAuthentication if r.certificate(CertSlot::Authentication).is_some() => {
                Some("issued by an earlier attempt".into())
            }
            Step::IssueSignature if r.certificate(CertSlot::Signature).is_some() => {
                Some("issued by an earlier attempt".into())
            }
            Step::WriteCard if r.has_done(Step::WriteCard) => {
                Some("done by an earlier attempt".into())
            }
            Step::SetPinPuk if renewal => {
                Some("renewal: the holder keeps their PIN and PUK".into())
            }
            Step::SetPinPuk if r.pin_set => Some("done by an earlier attempt".into()),
            Step::ReplaceManagementKey if r.management_key != ManagementKeyState::Default => {
                Some("the card already has its own management key".into())
            }
            _ => None,
        }
    }

    /// Persists the record after `step` with `extra` operations, and an audit event.
    fn persist(
        &self,
        live: &mut Live,
        step: Step,
        actor: &str,
        now: i64,
        extra: Vec<WriteOp>,
        detail: StepDetail,
    ) -> Result<()> {
        let mut rec = live.rec.clone();
        if rec.done.is_none_or(|d| d < step) {
            rec.done = Some(step);
        }
        rec.updated_at = now;
        let raw = tables::encode(&rec)?;
        let mut batch = WriteBatch::new().with(tables::put_raw(
            ENROLMENTS,
            rec.id.as_bytes(),
            raw.clone(),
            Expect::Value(live.raw.clone()),
        ));
        for op in extra {
            batch.push(op);
        }
        batch.push(tables::audit(
            now,
            actor,
            AuditEvent::EnrolmentStepDone {
                enrolment: rec.id.clone(),
                step: audit_step(step),
                card: rec.card_serial.clone(),
                idnat_ps: rec.idnat_ps.clone(),
                structure_id: rec.structure_id.clone(),
                detail,
            },
        ));
        self.store
            .commit(batch)
            .map_err(|e| EnrolError::stale_on_conflict(e, format!("enrolment {}", rec.id)))?;
        live.rec = rec;
        live.raw = raw;
        Ok(())
    }

    fn key_algorithm(&self, rec: &Enrolment) -> Result<KeyAlgorithm> {
        key_alg_from_name(&rec.key_algorithm).ok_or_else(|| EnrolError::Corrupt {
            what: format!("enrolment {}", rec.id),
            detail: format!("key algorithm '{}'", rec.key_algorithm),
        })
    }

    fn initial_secrets(&self, rec: &Enrolment) -> Result<InitialSecrets> {
        let nonce = unhex("secret_nonce", &rec.secret_nonce)?;
        self.secrets.initial_secrets(
            &rec.card_serial,
            &nonce,
            &[&self.config.default_pin, &self.config.default_puk],
        )
    }

    /// Verifies the PIN the card should have now; after an interruption in the middle of
    /// setting it, the other candidate is tried once (a success resets the retry counter).
    fn verify_current_pin<T: Transport>(&self, live: &mut Live, piv: &mut Piv<T>) -> Result<()> {
        if live.rec.kind == EnrolmentKind::Renewal {
            let pin = live
                .holder_pin
                .as_ref()
                .ok_or_else(|| EnrolError::Invalid("a renewal needs the holder's PIN".into()))?;
            piv.verify_pin(pin)?;
            return Ok(());
        }
        let derived = self.initial_secrets(&live.rec)?.pin;
        let (first, second) = if live.rec.pin_set {
            (derived.to_string(), self.config.default_pin.clone())
        } else {
            (self.config.default_pin.clone(), derived.to_string())
        };
        match piv.verify_pin(&first) {
            Ok(()) => Ok(()),
            Err(CardError::WrongPin { .. }) => {
                piv.verify_pin(&second)?;
                live.rec.pin_set = second != self.config.default_pin;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs a step; `Some(note)` when the step could not do its job but the policy lets the
    /// enrolment go on.
    fn run_step<T: Transport>(
        &self,
        live: &mut Live,
        s: Step,
        piv: &mut Piv<T>,
        actor: &str,
        now: i64,
    ) -> Result<Option<String>> {
        if s == Step::ReplaceManagementKey {
            return self.step_mgmt_key(live, piv, actor, now);
        }
        match s {
            Step::Authenticate => self.step_authenticate(live, piv, actor, now),
            Step::GenerateKeys => self.step_generate(live, piv, actor, now),
            Step::ProvePossession => self.step_prove(live, piv, actor, now),
            Step::IssueAuthentication => {
                self.step_issue(live, CertSlot::Authentication, actor, now)
            }
            Step::IssueSignature => self.step_issue(live, CertSlot::Signature, actor, now),
            Step::WriteCard => self.step_write(live, piv, actor, now),
            Step::SetPinPuk => self.step_pin(live, piv, actor, now),
            Step::ReplaceManagementKey | Step::DetectCard | Step::Register => Ok(()),
        }
        .map(|()| None)
    }

    fn step_authenticate<T: Transport>(
        &self,
        live: &mut Live,
        piv: &mut Piv<T>,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let serial = cardops::card_serial(piv)?;
        if serial != live.rec.card_serial {
            return Err(EnrolError::WrongCard {
                expected: live.rec.card_serial.clone(),
                found: serial,
            });
        }
        let alg = self.config.management_key_algorithm;
        let derived = self.secrets.management_key(&serial, alg)?;
        let default = self.config.default_management_key.clone();
        let per_card = ManagementKeyState::PerCard {
            master_key: self.secrets.master_label().into(),
            algorithm: mgmt_alg_name(alg).into(),
        };
        let (first, second, second_state) = match live.rec.management_key {
            ManagementKeyState::Default => (default, derived, per_card),
            ManagementKeyState::PerCard { .. } => (derived, default, ManagementKeyState::Default),
        };
        match piv.authenticate(&first) {
            Ok(()) => {}
            Err(CardError::ManagementKeyRejected) => {
                // An earlier attempt may have changed the key just before stopping.
                piv.authenticate(&second)?;
                live.rec.management_key = second_state;
            }
            Err(e) => return Err(e.into()),
        }
        if !live.rec.has_done(Step::Authenticate)
            || live.rec.management_key != self.stored_mgmt(live)
        {
            self.persist(
                live,
                Step::Authenticate,
                actor,
                now,
                vec![],
                StepDetail::default(),
            )?;
        }
        Ok(())
    }

    fn stored_mgmt(&self, live: &Live) -> ManagementKeyState {
        serde_json::from_slice::<Enrolment>(&live.raw)
            .map(|e| e.management_key)
            .unwrap_or(ManagementKeyState::Default)
    }

    fn step_generate<T: Transport>(
        &self,
        live: &mut Live,
        piv: &mut Piv<T>,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        if live.rec.kind == EnrolmentKind::Renewal {
            // Check the holder's PIN before the old keys are replaced.
            self.verify_current_pin(live, piv)?;
        }
        let alg = self.key_algorithm(&live.rec)?;
        let auth = piv.generate_key(cps_card::Slot::Authentication, alg)?;
        let sign = piv.generate_key(cps_card::Slot::Signature, alg)?;
        if auth.spki_der() == sign.spki_der() {
            return Err(EnrolError::DuplicateKey(
                "the card returned the same key pair for authentication and signature".into(),
            ));
        }
        live.rec.auth_spki = Some(hex::encode(auth.spki_der()));
        live.rec.sign_spki = Some(hex::encode(sign.spki_der()));
        live.rec.auth_csr = None;
        live.rec.sign_csr = None;
        self.persist(
            live,
            Step::GenerateKeys,
            actor,
            now,
            vec![],
            StepDetail {
                algorithm: Some(live.rec.key_algorithm.clone()),
                auth_spki_sha256: Some(hex::encode(sha256(auth.spki_der().as_slice()))),
                sign_spki_sha256: Some(hex::encode(sha256(sign.spki_der().as_slice()))),
                ..StepDetail::default()
            },
        )
    }

    /// Certificates the CA holds for `spki` that this enrolment does not know.
    fn foreign_certificates(&self, rec: &Enrolment, spki: &[u8]) -> Result<Vec<CertRef>> {
        let known: HashSet<&CertRef> = rec
            .rolled_back
            .iter()
            .chain(rec.certificates.iter().map(|c| &c.cert))
            .collect();
        Ok(self
            .ca
            .certificates_for_key(&sha256(spki))?
            .into_iter()
            .map(|c| c.cert)
            .filter(|c| !known.contains(c))
            .collect())
    }

    fn step_prove<T: Transport>(
        &self,
        live: &mut Live,
        piv: &mut Piv<T>,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let p = self.registry.require(&live.rec.idnat_ps)?;
        let subject = p
            .data
            .person_identity()
            .subject()
            .map_err(|e| EnrolError::Invalid(e.to_string()))?;
        let alg = self.key_algorithm(&live.rec)?;
        let sig = signature_for(alg);
        let mut csrs = Vec::new();
        for (slot, spki_field) in [
            (cps_card::Slot::Authentication, live.rec.auth_spki.clone()),
            (cps_card::Slot::Signature, live.rec.sign_spki.clone()),
        ] {
            let spki = unhex("card public key", &spki_field)?;
            let others = self.foreign_certificates(&live.rec, &spki)?;
            if let Some(c) = others.first() {
                return Err(EnrolError::DuplicateKey(format!("certificate {c}")));
            }
            self.verify_current_pin(live, piv)?;
            let csr = cps_pki::build_csr(&subject, &spki, sig, |tbs| piv.sign(slot, alg, tbs))
                .map_err(|e| match e {
                    cps_pki::CsrBuildError::Sign(c) => EnrolError::Card(c),
                    other => EnrolError::Invalid(other.to_string()),
                })?;
            // The card's signature must verify before anything is sent to the CA.
            let info = cps_pki::parse_csr(&csr, &cps_pki::KeyPolicy::default()).map_err(|e| {
                EnrolError::Card(CardError::Malformed {
                    what: "certificate request signed by the card",
                    detail: e.to_string(),
                })
            })?;
            if info.spki_der != spki {
                return Err(EnrolError::Card(CardError::BadSignature));
            }
            csrs.push(hex::encode(csr));
        }
        live.rec.sign_csr = csrs.pop();
        live.rec.auth_csr = csrs.pop();
        self.persist(
            live,
            Step::ProvePossession,
            actor,
            now,
            vec![],
            StepDetail::default(),
        )
    }

    fn step_issue(&self, live: &mut Live, slot: CertSlot, actor: &str, now: i64) -> Result<()> {
        // The professional's status is read again right before each issuance.
        let p = self.check_professional(
            &live.rec.idnat_ps,
            &live.rec.structure_id,
            "issuing a card certificate",
        )?;
        let (profile, csr, spki) = match slot {
            CertSlot::Authentication => (
                &self.config.auth_profile,
                &live.rec.auth_csr,
                &live.rec.auth_spki,
            ),
            CertSlot::Signature => (
                &self.config.sign_profile,
                &live.rec.sign_csr,
                &live.rec.sign_spki,
            ),
        };
        let csr_der = unhex("certificate request", csr)?;
        let spki = unhex("card public key", spki)?;
        let issued = self.ca.issue(
            &IssueRequest {
                profile: profile.clone(),
                csr: csr_der,
                subject: SubjectRequest::Person(p.data.person_identity()),
                sans: vec![],
                holder: p.data.idnat_ps.clone(),
            },
            actor,
            now,
        )?;
        let cc = CardCertificate {
            slot,
            cert: issued.cert.clone(),
            profile: issued.profile.clone(),
            not_after: issued.not_after,
            spki_sha256: hex::encode(issued.spki_sha256),
        };
        live.rec.certificates.retain(|c| c.slot != slot);
        live.rec.certificates.push(cc);
        live.ders.retain(|(s, _)| *s != slot);
        live.ders.push((slot, issued.der.clone()));
        if issued.spki_sha256 != sha256(&spki) {
            return Err(EnrolError::Ca(CaError::Invalid(format!(
                "certificate {} does not certify the card's key",
                issued.cert
            ))));
        }
        let step = match slot {
            CertSlot::Authentication => Step::IssueAuthentication,
            CertSlot::Signature => Step::IssueSignature,
        };
        self.persist(
            live,
            step,
            actor,
            now,
            vec![],
            StepDetail {
                certificate: Some(cps_audit::CertificateId {
                    issuer: issued.cert.issuer.clone(),
                    serial: issued.cert.serial.clone(),
                }),
                profile: Some(issued.profile.clone()),
                ..StepDetail::default()
            },
        )
    }

    fn der_of(&self, live: &Live, slot: CertSlot) -> Result<Vec<u8>> {
        if let Some((_, d)) = live.ders.iter().find(|(s, _)| *s == slot) {
            return Ok(d.clone());
        }
        let c = live
            .rec
            .certificate(slot)
            .ok_or_else(|| EnrolError::EnrolmentState {
                id: live.rec.id.clone(),
                reason: format!("no {slot:?} certificate to write"),
            })?;
        let spki = match slot {
            CertSlot::Authentication => unhex("card public key", &live.rec.auth_spki)?,
            CertSlot::Signature => unhex("card public key", &live.rec.sign_spki)?,
        };
        self.ca
            .certificates_for_key(&sha256(&spki))?
            .into_iter()
            .find(|i| i.cert == c.cert)
            .map(|i| i.der)
            .ok_or_else(|| {
                EnrolError::Ca(CaError::NotFound {
                    ca: c.cert.issuer.clone(),
                    serial: c.cert.serial.clone(),
                })
            })
    }

    fn step_write<T: Transport>(
        &self,
        live: &mut Live,
        piv: &mut Piv<T>,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let p = self.registry.require(&live.rec.idnat_ps)?;
        for slot in CertSlot::BOTH {
            let der = self.der_of(live, slot)?;
            piv.write_certificate(slot.piv_slot(), &der)?;
        }
        piv.write_identity(&CpsIdentity {
            idnat_ps: p.data.idnat_ps.clone(),
            family_name: p.data.surname.clone(),
            given_names: p.data.given_names.clone(),
            profession: p.data.profession_code.clone(),
            specialty: p.data.savoir_faire.clone(),
            card_type: Some(self.config.card_type.clone()),
        })?;
        self.persist(
            live,
            Step::WriteCard,
            actor,
            now,
            vec![],
            StepDetail::default(),
        )
    }

    fn step_pin<T: Transport>(
        &self,
        live: &mut Live,
        piv: &mut Piv<T>,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let s = self.initial_secrets(&live.rec)?;
        match piv.change_pin(&self.config.default_pin, &s.pin) {
            Ok(()) => {}
            // Set by an earlier attempt that stopped before recording it.
            Err(CardError::WrongPin { .. }) => piv.verify_pin(&s.pin)?,
            Err(e) => return Err(e.into()),
        }
        match piv.change_puk(&self.config.default_puk, &s.puk) {
            Ok(()) => {}
            Err(CardError::WrongPuk { .. }) => piv.change_puk(&s.puk, &s.puk)?,
            Err(e) => return Err(e.into()),
        }
        live.rec.pin_set = true;
        live.secrets = Some(s);
        self.persist(
            live,
            Step::SetPinPuk,
            actor,
            now,
            vec![],
            StepDetail::default(),
        )
    }

    fn step_mgmt_key<T: Transport>(
        &self,
        live: &mut Live,
        piv: &mut Piv<T>,
        actor: &str,
        now: i64,
    ) -> Result<Option<String>> {
        let alg = self.config.management_key_algorithm;
        let key = self
            .secrets
            .management_key_bytes(&live.rec.card_serial, alg)?;
        let outcome = cardops::set_management_key(piv, alg, &key)?;
        let mut note = None;
        let detail = match outcome {
            SetKeyOutcome::Changed => {
                live.rec.management_key = ManagementKeyState::PerCard {
                    master_key: self.secrets.master_label().into(),
                    algorithm: mgmt_alg_name(alg).into(),
                };
                StepDetail {
                    management_key: Some("per_card".into()),
                    algorithm: Some(mgmt_alg_name(alg).into()),
                    ..StepDetail::default()
                }
            }
            SetKeyOutcome::Unsupported if self.config.require_management_key_change => {
                return Err(EnrolError::Card(CardError::Invalid(
                    "this card cannot change its management key (SET MANAGEMENT KEY not supported); \
                     the policy requires a per-card key: use another card"
                        .into(),
                )));
            }
            SetKeyOutcome::Unsupported => {
                let w = "the card does not support SET MANAGEMENT KEY: it keeps the default management key";
                note = Some(w.to_string());
                StepDetail {
                    management_key: Some("default".into()),
                    warning: Some(w.into()),
                    ..StepDetail::default()
                }
            }
        };
        self.persist(live, Step::ReplaceManagementKey, actor, now, vec![], detail)?;
        Ok(note)
    }

    fn register(&self, live: &mut Live, actor: &str, now: i64) -> Result<EnrolmentOutcome> {
        let rec = &live.rec;
        if rec.certificates.len() != 2 {
            return Err(EnrolError::EnrolmentState {
                id: rec.id.clone(),
                reason: "cannot register a card without both certificates".into(),
            });
        }
        let secrets = match rec.kind {
            EnrolmentKind::Renewal => None,
            _ => Some(match live.secrets.take() {
                Some(s) => s,
                None => self.initial_secrets(rec)?,
            }),
        };
        let mut batch = WriteBatch::new();
        let mut to_revoke: Vec<(CertRef, RevocationAction)> = Vec::new();
        let card = match &rec.kind {
            EnrolmentKind::Renewal => {
                let (old, raw) = self.card_raw(&rec.card_serial)?;
                let mut c = old.clone();
                for oc in &old.certificates {
                    to_revoke.push((
                        oc.cert.clone(),
                        RevocationAction::Revoke(RevocationReason::Superseded),
                    ));
                }
                c.previous_certificates
                    .extend(old.certificates.iter().cloned());
                c.certificates = rec.certificates.clone();
                c.management_key = rec.management_key.clone();
                c.key_algorithm = rec.key_algorithm.clone();
                c.enrolment = rec.id.clone();
                c.updated_at = now;
                batch.push(tables::put(
                    CARDS,
                    c.serial.as_bytes(),
                    &c,
                    Expect::Value(raw),
                )?);
                c
            }
            kind => {
                if let EnrolmentKind::Replacement { old_card } = kind {
                    let (mut old, raw) = self.card_raw(old_card)?;
                    if !old.status.is_terminal() {
                        for oc in &old.certificates {
                            to_revoke.push((
                                oc.cert.clone(),
                                RevocationAction::Revoke(RevocationReason::Superseded),
                            ));
                        }
                        old.status = CardStatus::Retired {
                            reason: crate::model::RetirementReason::Replaced {
                                by: rec.card_serial.clone(),
                            },
                            at: now,
                        };
                        old.updated_at = now;
                        batch.push(tables::put(
                            CARDS,
                            old.serial.as_bytes(),
                            &old,
                            Expect::Value(raw),
                        )?);
                    }
                }
                let c = Card {
                    serial: rec.card_serial.clone(),
                    token_id: rec.token_id.clone(),
                    idnat_ps: rec.idnat_ps.clone(),
                    structure_id: rec.structure_id.clone(),
                    status: CardStatus::Active,
                    key_algorithm: rec.key_algorithm.clone(),
                    certificates: rec.certificates.clone(),
                    previous_certificates: Vec::new(),
                    management_key: rec.management_key.clone(),
                    enrolment: rec.id.clone(),
                    enrolled_at: now,
                    enrolled_by: actor.into(),
                    updated_at: now,
                };
                batch.push(tables::put(CARDS, c.serial.as_bytes(), &c, Expect::Absent)?);
                batch.push(tables::put_raw(
                    CARDS_BY_PROFESSIONAL,
                    &tables::key(&[&c.idnat_ps, &c.structure_id, &c.serial]),
                    Vec::new(),
                    Expect::Any,
                ));
                c
            }
        };
        for (cert, action) in &to_revoke {
            batch.push(self.outbox_op(
                cert,
                *action,
                Some(&rec.card_serial),
                Some(&rec.id),
                actor,
                now,
            )?);
        }
        let mut done = rec.clone();
        done.done = Some(Step::Register);
        done.status = EnrolmentStatus::Completed { at: now };
        done.secret_nonce = None;
        done.updated_at = now;
        batch.push(tables::put(
            ENROLMENTS,
            done.id.as_bytes(),
            &done,
            Expect::Value(live.raw.clone()),
        )?);
        batch.extend_ops(self.close_ops(&done));
        batch.push(tables::audit(
            now,
            actor,
            AuditEvent::CardEnrolled {
                enrolment: done.id.clone(),
                kind: audit_purpose(&done.kind),
                card: card.serial.clone(),
                token_id: card.token_id.clone(),
                idnat_ps: card.idnat_ps.clone(),
                structure_id: card.structure_id.clone(),
                certificates: card
                    .certificates
                    .iter()
                    .map(|c| c.cert.to_string())
                    .collect(),
                management_key: serde_json::to_value(&card.management_key)
                    .unwrap_or(serde_json::Value::Null),
            },
        ));
        self.store
            .commit(batch)
            .map_err(|e| EnrolError::stale_on_conflict(e, format!("card {}", card.serial)))?;
        let refs: Vec<CertRef> = to_revoke.into_iter().map(|(c, _)| c).collect();
        let revocations = self.process_outbox(&refs, actor, now);
        Ok(EnrolmentOutcome {
            enrolment: done,
            card,
            initial_secrets: secrets,
            revocations,
        })
    }

    /// Deletes the open-enrolment locks of `rec`.
    pub(crate) fn close_ops(&self, rec: &Enrolment) -> Vec<WriteOp> {
        vec![
            tables::delete(
                ENROLMENTS_OPEN,
                rec.card_serial.as_bytes(),
                Expect::Value(rec.id.as_bytes().to_vec()),
            ),
            tables::delete(
                ENROLMENTS_OPEN_BY_ACTIVITY,
                &tables::key(&[&rec.idnat_ps, &rec.structure_id]),
                Expect::Value(rec.id.as_bytes().to_vec()),
            ),
        ]
    }

    // ---- interruption, resume, abort, recovery ------------------------------------------------

    /// Everything this enrolment issued, plus any certificate the CA holds for its keys that it
    /// did not record (a crash between the CA's write and ours).
    fn certificates_to_roll_back(&self, rec: &Enrolment) -> Vec<CertRef> {
        let mut out: Vec<CertRef> = rec.certificates.iter().map(|c| c.cert.clone()).collect();
        // Before the duplicate-key check passed, certificates of these keys may belong to
        // someone else: only sweep once the check passed for this enrolment.
        if rec.has_done(Step::ProvePossession) {
            for spki in [&rec.auth_spki, &rec.sign_spki].into_iter().flatten() {
                if let Ok(b) = hex::decode(spki)
                    && let Ok(found) = self.ca.certificates_for_key(&sha256(&b))
                {
                    for c in found {
                        if !matches!(c.state, CertState::Revoked(_)) && !out.contains(&c.cert) {
                            out.push(c.cert);
                        }
                    }
                }
            }
        }
        out
    }

    /// Moves the enrolment's certificates to the rollback list and queues their revocation.
    fn rollback_ops(
        &self,
        rec: &mut Enrolment,
        actor: &str,
        now: i64,
    ) -> Result<(Vec<WriteOp>, Vec<CertRef>)> {
        let certs = self.certificates_to_roll_back(rec);
        let mut ops = Vec::new();
        for c in &certs {
            ops.push(self.outbox_op(
                c,
                RevocationAction::Revoke(RevocationReason::CessationOfOperation),
                None,
                Some(&rec.id),
                actor,
                now,
            )?);
            if !rec.rolled_back.contains(c) {
                rec.rolled_back.push(c.clone());
            }
        }
        rec.certificates.clear();
        if rec.done.is_some_and(|d| d > Step::ProvePossession) {
            rec.done = Some(Step::ProvePossession);
        }
        Ok((ops, certs))
    }

    fn rollback_text(report: &RevocationReport, n: usize) -> String {
        if n == 0 {
            "no certificate had been issued.".into()
        } else if report.pending.is_empty() {
            format!("the {n} certificate(s) it had issued were revoked.")
        } else {
            format!(
                "{} certificate(s) revoked; {} revocation(s) pending ({}) and retried at the next start or by retry_pending_revocations.",
                report.done.len(),
                report.pending.len(),
                report
                    .pending
                    .iter()
                    .map(|(c, e)| format!("{c}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    }

    fn interrupt(
        &self,
        id: &str,
        step: Step,
        cause: EnrolError,
        actor: &str,
        now: i64,
    ) -> EnrolError {
        let attempt = (|| -> Result<String> {
            let (mut rec, raw): (Enrolment, Vec<u8>) =
                tables::get(self.store.as_ref(), ENROLMENTS, id.as_bytes())?
                    .ok_or_else(|| EnrolError::UnknownEnrolment(id.into()))?;
            if rec.status.is_terminal() {
                return Ok("it was closed meanwhile (its certificates were handled then).".into());
            }
            let (mut ops, certs) = self.rollback_ops(&mut rec, actor, now)?;
            rec.status = EnrolmentStatus::Interrupted {
                step,
                error: cause.to_string(),
                at: now,
            };
            rec.updated_at = now;
            ops.insert(
                0,
                tables::put(ENROLMENTS, id.as_bytes(), &rec, Expect::Value(raw))?,
            );
            ops.push(tables::audit(
                now,
                actor,
                AuditEvent::EnrolmentInterrupted {
                    enrolment: id.into(),
                    step: audit_step(step),
                    card: Some(rec.card_serial.clone()),
                    error: cause.to_string(),
                    revoking: certs.iter().map(|c| c.to_string()).collect(),
                },
            ));
            self.store.commit(ops.into())?;
            let report = self.process_outbox(&certs, actor, now);
            Ok(Self::rollback_text(&report, certs.len()))
        })();
        let rollback = match attempt {
            Ok(t) => t,
            Err(e) => format!(
                "recording the interruption failed ({e}): the enrolment will be rolled back by recover_interrupted at the next start."
            ),
        };
        EnrolError::Interrupted {
            enrolment: id.into(),
            step,
            cause: Box::new(cause),
            rollback,
        }
    }

    fn load_open(&self, id: &str) -> Result<(Enrolment, Vec<u8>)> {
        let (rec, raw): (Enrolment, Vec<u8>) =
            tables::get(self.store.as_ref(), ENROLMENTS, id.as_bytes())?
                .ok_or_else(|| EnrolError::UnknownEnrolment(shown(id)))?;
        if rec.status.is_terminal() {
            return Err(EnrolError::EnrolmentState {
                id: id.into(),
                reason: format!(
                    "it is already {}",
                    match rec.status {
                        EnrolmentStatus::Completed { .. } => "completed",
                        _ => "aborted",
                    }
                ),
            });
        }
        if let Some(node) = self.foreign(&rec) {
            return Err(EnrolError::EnrolmentState {
                id: id.into(),
                reason: format!(
                    "it belongs to node '{node}', whose reader holds the card: resume or abort it there (a node that is gone for good rolls it back when a node started with its node_id starts)"
                ),
            });
        }
        if self.running.lock().contains(id) {
            return Err(EnrolError::EnrolmentState {
                id: id.into(),
                reason: "it is being driven right now".into(),
            });
        }
        Ok((rec, raw))
    }

    /// Continues an interrupted enrolment with its card in `piv` (the same card: checked by
    /// serial). Anything it had issued was revoked when it stopped; the certificates are issued
    /// again for the keys on the card. A renewal needs the holder's PIN again.
    pub fn resume<T: Transport>(
        &self,
        id: &str,
        piv: &mut Piv<T>,
        holder_pin: Option<&str>,
        actor: &str,
        now: i64,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<EnrolmentOutcome> {
        let (mut rec, raw) = self.load_open(id)?;
        let serial = cardops::card_serial(piv)?;
        if serial != rec.card_serial {
            return Err(EnrolError::WrongCard {
                expected: rec.card_serial,
                found: serial,
            });
        }
        if rec.kind == EnrolmentKind::Renewal && holder_pin.is_none() {
            return Err(EnrolError::Invalid(
                "resuming a renewal needs the holder's PIN".into(),
            ));
        }
        if !self.running.lock().insert(id.into()) {
            return Err(EnrolError::EnrolmentState {
                id: id.into(),
                reason: "it is being driven right now".into(),
            });
        }
        // A crashed run still holds valid certificates: roll them back like an interruption.
        let (mut ops, certs) = match self.rollback_ops(&mut rec, actor, now) {
            Ok(x) => x,
            Err(e) => {
                self.running.lock().remove(id);
                return Err(e);
            }
        };
        rec.status = EnrolmentStatus::Running;
        rec.updated_at = now;
        let new_raw = match tables::encode(&rec) {
            Ok(r) => r,
            Err(e) => {
                self.running.lock().remove(id);
                return Err(e);
            }
        };
        ops.insert(
            0,
            tables::put_raw(
                ENROLMENTS,
                id.as_bytes(),
                new_raw.clone(),
                Expect::Value(raw),
            ),
        );
        ops.push(tables::audit(
            now,
            actor,
            AuditEvent::EnrolmentResumed {
                enrolment: id.into(),
                card: rec.card_serial.clone(),
            },
        ));
        if let Err(e) = self.store.commit(ops.into()) {
            self.running.lock().remove(id);
            return Err(EnrolError::stale_on_conflict(e, format!("enrolment {id}")));
        }
        let report = self.process_outbox(&certs, actor, now);
        if !report.pending.is_empty() {
            self.running.lock().remove(id);
            return Err(self.interrupt(
                id,
                Step::DetectCard,
                EnrolError::Ca(CaError::Unavailable(
                    "earlier certificates of this enrolment could not be revoked yet".into(),
                )),
                actor,
                now,
            ));
        }
        let live = Live {
            rec,
            raw: new_raw,
            ders: Vec::new(),
            holder_pin: holder_pin.map(|p| zeroize::Zeroizing::new(p.to_owned())),
            secrets: None,
        };
        progress(&Progress {
            enrolment: id.into(),
            step: Step::DetectCard,
            state: StepState::Started,
        });
        self.drive(live, piv, actor, now, progress)
    }

    /// Gives up an enrolment that is not being driven: revokes what it issued and releases the
    /// card and the activity. The card itself is left as it is (if its PIN was set, it is
    /// unknown from now on).
    pub fn abort(
        &self,
        id: &str,
        reason: &str,
        actor: &str,
        now: i64,
    ) -> Result<(Enrolment, RevocationReport)> {
        let (rec, raw) = self.load_open(id)?;
        self.abort_loaded(rec, raw, reason, actor, now)
    }

    fn abort_loaded(
        &self,
        mut rec: Enrolment,
        raw: Vec<u8>,
        reason: &str,
        actor: &str,
        now: i64,
    ) -> Result<(Enrolment, RevocationReport)> {
        let id = rec.id.clone();
        let (mut ops, certs) = self.rollback_ops(&mut rec, actor, now)?;
        rec.status = EnrolmentStatus::Aborted {
            reason: reason.into(),
            at: now,
        };
        rec.secret_nonce = None;
        rec.updated_at = now;
        ops.insert(
            0,
            tables::put(ENROLMENTS, id.as_bytes(), &rec, Expect::Value(raw))?,
        );
        ops.extend(self.close_ops(&rec));
        ops.push(tables::audit(
            now,
            actor,
            AuditEvent::EnrolmentAborted {
                enrolment: id.clone(),
                reason: reason.into(),
                card: Some(rec.card_serial.clone()),
                revoking: certs.iter().map(|c| c.to_string()).collect(),
            },
        ));
        self.store
            .commit(ops.into())
            .map_err(|e| EnrolError::stale_on_conflict(e, format!("enrolment {id}")))?;
        let report = self.process_outbox(&certs, actor, now);
        Ok((rec, report))
    }

    /// At appliance start: aborts every enrolment of this node left open by a previous process
    /// (none can be running yet), revoking what they issued, and retries pending revocations.
    /// Other nodes' enrolments are left alone: they may be driving them right now. An
    /// enrolment another node aborts meanwhile (one from before nodes existed) is skipped.
    pub fn recover_interrupted(&self, actor: &str, now: i64) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        for rec in self.open_enrolments()? {
            if self.running.lock().contains(&rec.id) {
                continue;
            }
            if let Some(node) = self.foreign(&rec) {
                report.other_nodes.push((rec.id.clone(), node.to_owned()));
                continue;
            }
            let (rec, raw): (Enrolment, Vec<u8>) =
                match tables::get(self.store.as_ref(), ENROLMENTS, rec.id.as_bytes())? {
                    Some(x) => x,
                    None => continue,
                };
            let reason = match &rec.status {
                EnrolmentStatus::Running => {
                    "the process driving it stopped (recovered at start)".to_string()
                }
                EnrolmentStatus::Interrupted { error, .. } => {
                    format!("interrupted ({error}); recovered at start")
                }
                _ => continue,
            };
            let id = rec.id.clone();
            let (_, r) = match self.abort_loaded(rec, raw, &reason, actor, now) {
                Ok(x) => x,
                Err(EnrolError::Stale(_)) => continue,
                Err(e) => return Err(e),
            };
            report.aborted.push(id);
            report.revocations.merge(r);
        }
        report
            .revocations
            .merge(self.retry_pending_revocations(actor, now)?);
        Ok(report)
    }

    // ---- renewal ----------------------------------------------------------------------------

    /// Renews a registered, active card in `piv`: new key pairs on the card, new certificates
    /// (the holder's PIN signs the requests), the old certificates revoked as superseded once
    /// the new ones are written. PIN and PUK do not change.
    pub fn renew<T: Transport>(
        &self,
        serial: &str,
        piv: &mut Piv<T>,
        holder_pin: &str,
        actor: &str,
        now: i64,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<EnrolmentOutcome> {
        let (card, _) = self.card_raw(serial)?;
        if card.status != CardStatus::Active {
            return Err(EnrolError::CardStatus {
                serial: serial.into(),
                status: card.status,
                what: "renew",
            });
        }
        self.check_professional(&card.idnat_ps, &card.structure_id, "renewing a card")?;
        let found = cardops::card_serial(piv)?;
        if found != card.serial {
            return Err(EnrolError::WrongCard {
                expected: card.serial,
                found,
            });
        }
        // A mistyped PIN is caught before anything is recorded or any key is replaced.
        piv.verify_pin(holder_pin)?;
        let rec = Enrolment {
            id: hex::encode_upper(self.random(8)?),
            node: self.node.clone(),
            kind: EnrolmentKind::Renewal,
            card_serial: card.serial.clone(),
            token_id: card.token_id.clone(),
            idnat_ps: card.idnat_ps.clone(),
            structure_id: card.structure_id.clone(),
            key_algorithm: key_alg_name(self.config.key_algorithm).into(),
            started_by: actor.into(),
            started_at: now,
            updated_at: now,
            done: Some(Step::DetectCard),
            status: EnrolmentStatus::Running,
            auth_spki: None,
            sign_spki: None,
            auth_csr: None,
            sign_csr: None,
            certificates: Vec::new(),
            rolled_back: Vec::new(),
            management_key: card.management_key.clone(),
            secret_nonce: None,
            pin_set: true,
        };
        progress(&Progress {
            enrolment: rec.id.clone(),
            step: Step::DetectCard,
            state: StepState::Started,
        });
        let mut live = self.open(rec, actor, now)?;
        live.holder_pin = Some(zeroize::Zeroizing::new(holder_pin.to_owned()));
        self.drive(live, piv, actor, now, progress)
    }

    /// The state of a certificate at the CA (for displays).
    pub fn certificate_state(&self, cert: &CertRef) -> Result<Option<CertState>> {
        Ok(self.ca.state(cert)?)
    }
}

trait ExtendOps {
    fn extend_ops(&mut self, ops: Vec<WriteOp>);
}

impl ExtendOps for WriteBatch {
    fn extend_ops(&mut self, ops: Vec<WriteOp>) {
        for op in ops {
            self.push(op);
        }
    }
}

/// The audit vocabulary's name of an enrolment step.
fn audit_step(step: Step) -> cps_audit::EnrolmentStep {
    use cps_audit::EnrolmentStep as A;
    match step {
        Step::DetectCard => A::DetectCard,
        Step::Authenticate => A::Authenticate,
        Step::GenerateKeys => A::GenerateKeys,
        Step::ProvePossession => A::ProvePossession,
        Step::IssueAuthentication => A::IssueAuthentication,
        Step::IssueSignature => A::IssueSignature,
        Step::WriteCard => A::WriteCard,
        Step::SetPinPuk => A::SetPinPuk,
        Step::ReplaceManagementKey => A::ReplaceManagementKey,
        Step::Register => A::Register,
    }
}

/// The audit vocabulary's form of what an enrolment does.
fn audit_purpose(kind: &EnrolmentKind) -> cps_audit::EnrolmentPurpose {
    match kind {
        EnrolmentKind::New => cps_audit::EnrolmentPurpose::New,
        EnrolmentKind::Replacement { old_card } => cps_audit::EnrolmentPurpose::Replacement {
            old_card: old_card.clone(),
        },
        EnrolmentKind::Renewal => cps_audit::EnrolmentPurpose::Renewal,
    }
}
