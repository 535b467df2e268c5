//! Card lifecycle: suspend / resume (certificateHold / removeFromCRL), opposition, officer-
//! assisted PIN unblock, professional status changes; and the revocation outbox every
//! operation goes through.
//!
//! Revocation reasons:
//!
//! | event | reason |
//! |---|---|
//! | card suspended (by an officer or with the professional) | certificateHold, released by removeFromCRL |
//! | opposition: lost, stolen | keyCompromise (the keys left the holder's control; the CA also blocklists them) |
//! | opposition: destroyed | cessationOfOperation |
//! | professional left | cessationOfOperation |
//! | renewal, replacement card | superseded (old certificates) |
//! | enrolment rolled back or aborted | cessationOfOperation |
//!
//! Each operation writes the new card state, an outbox entry per certificate (table
//! `revocations_pending`) and its audit event in one batch, then asks the CA. A CA failure
//! leaves the entry in the outbox: it is reported, and retried by
//! [`CardService::retry_pending_revocations`] (also run by
//! [`CardService::recover_interrupted`]). Applying an entry first reads the certificate's state,
//! so a retry never revokes twice.

use cps_card::{CardError, Piv, Transport};
use cps_store::{Expect, WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};

use crate::ca::{CaError, CertState, RevocationReason};
use crate::cardops;
use crate::error::{EnrolError, Result};
use crate::model::{
    Card, CardStatus, CertRef, Enrolment, EnrolmentStatus, OppositionReason, Professional,
    ProfessionalStatus, RetirementReason, shown,
};
use crate::registry::professional_ops;
use crate::service::CardService;
use crate::tables::{
    self, CARDS, ENROLMENTS, ENROLMENTS_OPEN, ENROLMENTS_OPEN_BY_ACTIVITY, REVOCATIONS_PENDING,
};

/// What the CA must do with a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationAction {
    /// Revoke for good with this reason.
    Revoke(RevocationReason),
    /// Put on hold (certificateHold).
    Hold,
    /// Release a hold (removeFromCRL).
    Release,
}

impl RevocationAction {
    fn name(self) -> String {
        match self {
            RevocationAction::Revoke(r) => format!("revoke:{}", r.name()),
            RevocationAction::Hold => "hold".into(),
            RevocationAction::Release => "release".into(),
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "hold" => Some(RevocationAction::Hold),
            "release" => Some(RevocationAction::Release),
            r => r
                .strip_prefix("revoke:")
                .and_then(RevocationReason::from_name)
                .map(RevocationAction::Revoke),
        }
    }
}

/// An outbox entry: a certificate state change decided and recorded, not yet confirmed by
/// the CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRevocation {
    /// The certificate.
    pub cert: CertRef,
    /// `revoke:<reason>`, `hold` or `release`.
    pub action: String,
    /// The card concerned.
    pub card: Option<String>,
    /// The enrolment concerned.
    pub enrolment: Option<String>,
    /// Who decided it.
    pub actor: String,
    /// When, Unix seconds.
    pub since: i64,
    /// The last CA error, if a try failed.
    pub last_error: Option<String>,
}

/// What happened to the certificate changes an operation called for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevocationReport {
    /// Done (or found already done at the CA).
    pub done: Vec<CertRef>,
    /// Still pending, with the CA's error; retried later.
    pub pending: Vec<(CertRef, String)>,
}

impl RevocationReport {
    /// Appends another report.
    pub fn merge(&mut self, other: RevocationReport) {
        self.done.extend(other.done);
        self.pending.extend(other.pending);
    }
}

/// The result of a lifecycle operation.
#[derive(Debug, Clone)]
pub struct LifecycleOutcome {
    /// The card after the operation.
    pub card: Card,
    /// Its certificate changes.
    pub revocations: RevocationReport,
}

/// The result of a professional status change.
#[derive(Debug, Clone)]
pub struct StatusChange {
    /// The professional after the change.
    pub professional: Professional,
    /// Cards whose status changed.
    pub cards: Vec<Card>,
    /// Enrolments aborted (a professional who leaves or is suspended cannot finish one).
    pub aborted_enrolments: Vec<String>,
    /// Certificate changes.
    pub revocations: RevocationReport,
}

fn outbox_key(c: &CertRef) -> Vec<u8> {
    tables::key(&[&c.issuer, &c.serial])
}

impl CardService {
    pub(crate) fn outbox_op(
        &self,
        cert: &CertRef,
        action: RevocationAction,
        card: Option<&str>,
        enrolment: Option<&str>,
        actor: &str,
        now: i64,
    ) -> Result<WriteOp> {
        tables::put(
            REVOCATIONS_PENDING,
            &outbox_key(cert),
            &PendingRevocation {
                cert: cert.clone(),
                action: action.name(),
                card: card.map(str::to_owned),
                enrolment: enrolment.map(str::to_owned),
                actor: actor.into(),
                since: now,
                last_error: None,
            },
            Expect::Any,
        )
    }

    fn apply(&self, p: &PendingRevocation, now: i64) -> std::result::Result<(), CaError> {
        let action = RevocationAction::parse(&p.action)
            .ok_or_else(|| CaError::Invalid(format!("unknown outbox action '{}'", p.action)))?;
        let state = self.ca.state(&p.cert)?;
        let reason = match (action, state) {
            (_, None) => return Ok(()),
            (RevocationAction::Revoke(r), Some(CertState::Valid | CertState::OnHold)) => r,
            (RevocationAction::Revoke(_), Some(CertState::Revoked(_))) => return Ok(()),
            (RevocationAction::Hold, Some(CertState::Valid)) => RevocationReason::CertificateHold,
            (RevocationAction::Hold, _) => return Ok(()),
            (RevocationAction::Release, Some(CertState::OnHold)) => RevocationReason::RemoveFromCrl,
            (RevocationAction::Release, Some(CertState::Valid)) => return Ok(()),
            (RevocationAction::Release, Some(CertState::Revoked(r))) => {
                return Err(CaError::Conflict(format!(
                    "certificate {} is revoked for good ({}): it cannot be released",
                    p.cert,
                    r.name()
                )));
            }
        };
        self.ca.revoke(&p.cert, reason, &p.actor, now)
    }

    /// Applies the outbox entries of `certs` (those written by the caller's last commit).
    pub(crate) fn process_outbox(
        &self,
        certs: &[CertRef],
        _actor: &str,
        now: i64,
    ) -> RevocationReport {
        let mut report = RevocationReport::default();
        for c in certs {
            let key = outbox_key(c);
            let (p, raw): (PendingRevocation, Vec<u8>) =
                match tables::get(self.store.as_ref(), REVOCATIONS_PENDING, &key) {
                    Ok(Some(x)) => x,
                    Ok(None) => {
                        report.done.push(c.clone());
                        continue;
                    }
                    Err(e) => {
                        report.pending.push((c.clone(), e.to_string()));
                        continue;
                    }
                };
            let res = self.apply(&p, now);
            let settled = match &res {
                Ok(()) => true,
                Err(CaError::Conflict(_)) => matches!(self.apply_settled(&p), Ok(true)),
                Err(_) => false,
            };
            if settled {
                let _ = self.store.commit(WriteBatch::new().with(tables::delete(
                    REVOCATIONS_PENDING,
                    &key,
                    Expect::Value(raw),
                )));
                report.done.push(c.clone());
            } else {
                let e = res.err().map(|e| e.to_string()).unwrap_or_default();
                let mut p2 = p.clone();
                p2.last_error = Some(e.clone());
                if let Ok(op) = tables::put(REVOCATIONS_PENDING, &key, &p2, Expect::Value(raw)) {
                    let _ = self.store.commit(WriteBatch::new().with(op));
                }
                report.pending.push((c.clone(), e));
            }
        }
        report
    }

    /// Whether the CA state already matches what the entry asks.
    fn apply_settled(&self, p: &PendingRevocation) -> std::result::Result<bool, CaError> {
        let state = self.ca.state(&p.cert)?;
        Ok(matches!(
            (RevocationAction::parse(&p.action), state),
            (_, None)
                | (
                    Some(RevocationAction::Revoke(_)),
                    Some(CertState::Revoked(_))
                )
                | (
                    Some(RevocationAction::Hold),
                    Some(CertState::OnHold | CertState::Revoked(_))
                )
                | (Some(RevocationAction::Release), Some(CertState::Valid))
        ))
    }

    /// Certificate changes recorded but not confirmed by the CA yet.
    pub fn pending_revocations(&self) -> Result<Vec<PendingRevocation>> {
        tables::scan_all(self.store.as_ref(), REVOCATIONS_PENDING, b"")?
            .into_iter()
            .map(|(k, v)| tables::decode(REVOCATIONS_PENDING, &k, &v))
            .collect()
    }

    /// Retries every pending certificate change.
    pub fn retry_pending_revocations(&self, actor: &str, now: i64) -> Result<RevocationReport> {
        let certs: Vec<CertRef> = self
            .pending_revocations()?
            .into_iter()
            .map(|p| p.cert)
            .collect();
        Ok(self.process_outbox(&certs, actor, now))
    }

    fn change_card(
        &self,
        serial: &str,
        event: impl FnOnce(cps_audit::CardChange) -> cps_audit::AuditEvent,
        actor: &str,
        now: i64,
        f: impl FnOnce(&Card) -> Result<(CardStatus, Option<RevocationAction>)>,
    ) -> Result<LifecycleOutcome> {
        let (card, raw) = self.card_raw(serial)?;
        let (status, action) = f(&card)?;
        let mut new = card.clone();
        new.status = status;
        new.updated_at = now;
        let mut batch = WriteBatch::new().with(tables::put(
            CARDS,
            serial.as_bytes(),
            &new,
            Expect::Value(raw),
        )?);
        let mut certs = Vec::new();
        if let Some(a) = action {
            for c in &card.certificates {
                batch.push(self.outbox_op(&c.cert, a, Some(serial), None, actor, now)?);
                certs.push(c.cert.clone());
            }
        }
        let mut aborted = None;
        if new.status.is_terminal() {
            // An open renewal of this card cannot finish any more.
            if let Some(id) = self.store.get_record(ENROLMENTS_OPEN, serial.as_bytes())? {
                let id = String::from_utf8_lossy(&id).into_owned();
                if let Some((ops, c)) =
                    self.abort_in_batch(&id, &format!("card {}", new.status), actor, now)?
                {
                    for op in ops {
                        batch.push(op);
                    }
                    certs.extend(c);
                    aborted = Some(id);
                }
            }
        }
        let change = cps_audit::CardChange {
            card: serial.into(),
            idnat_ps: card.idnat_ps.clone(),
            structure_id: card.structure_id.clone(),
            from: card.status.name().into(),
            to: new.status.name().into(),
            certificates: card
                .certificates
                .iter()
                .map(|c| c.cert.to_string())
                .collect(),
            aborted_enrolment: aborted,
        };
        batch.push(tables::audit(now, actor, event(change)));
        self.store
            .commit(batch)
            .map_err(|e| EnrolError::stale_on_conflict(e, format!("card {serial}")))?;
        let revocations = self.process_outbox(&certs, actor, now);
        Ok(LifecycleOutcome {
            card: new,
            revocations,
        })
    }

    /// Abort operations for an open enrolment not being driven, to join another batch.
    fn abort_in_batch(
        &self,
        id: &str,
        reason: &str,
        actor: &str,
        now: i64,
    ) -> Result<Option<(Vec<WriteOp>, Vec<CertRef>)>> {
        let Some((mut rec, raw)) =
            tables::get::<Enrolment>(self.store.as_ref(), ENROLMENTS, id.as_bytes())?
        else {
            return Ok(None);
        };
        if rec.status.is_terminal() {
            return Ok(None);
        }
        let mut certs: Vec<CertRef> = rec.certificates.iter().map(|c| c.cert.clone()).collect();
        let mut ops = Vec::new();
        for c in &certs {
            ops.push(self.outbox_op(
                c,
                RevocationAction::Revoke(RevocationReason::CessationOfOperation),
                Some(&rec.card_serial),
                Some(id),
                actor,
                now,
            )?);
        }
        rec.rolled_back.append(&mut certs.clone());
        rec.certificates.clear();
        rec.status = EnrolmentStatus::Aborted {
            reason: reason.into(),
            at: now,
        };
        rec.secret_nonce = None;
        rec.updated_at = now;
        ops.push(tables::put(
            ENROLMENTS,
            id.as_bytes(),
            &rec,
            Expect::Value(raw),
        )?);
        ops.push(tables::delete(
            ENROLMENTS_OPEN,
            rec.card_serial.as_bytes(),
            Expect::Any,
        ));
        ops.push(tables::delete(
            ENROLMENTS_OPEN_BY_ACTIVITY,
            &tables::key(&[&rec.idnat_ps, &rec.structure_id]),
            Expect::Any,
        ));
        ops.push(tables::audit(
            now,
            actor,
            cps_audit::AuditEvent::EnrolmentAborted {
                enrolment: id.into(),
                reason: reason.into(),
                card: Some(rec.card_serial.clone()),
                revoking: rec.rolled_back.iter().map(|c| c.to_string()).collect(),
            },
        ));
        certs = rec.rolled_back.clone();
        Ok(Some((ops, certs)))
    }

    /// Suspends an active card: its certificates go on hold.
    pub fn suspend_card(&self, serial: &str, actor: &str, now: i64) -> Result<LifecycleOutcome> {
        self.change_card(
            serial,
            cps_audit::AuditEvent::CardSuspended,
            actor,
            now,
            |c| match c.status {
                CardStatus::Active => Ok((
                    CardStatus::Suspended {
                        by_professional: false,
                        at: now,
                    },
                    Some(RevocationAction::Hold),
                )),
                ref s => Err(EnrolError::CardStatus {
                    serial: c.serial.clone(),
                    status: s.clone(),
                    what: "suspend it (only an active card can be suspended)",
                }),
            },
        )
    }

    /// Resumes a suspended card: its certificates are released from hold. The professional
    /// must be active.
    pub fn resume_card(&self, serial: &str, actor: &str, now: i64) -> Result<LifecycleOutcome> {
        let (card, _) = self.card_raw(serial)?;
        if let CardStatus::Suspended { .. } = card.status {
            let p = self.registry.require(&card.idnat_ps)?;
            if p.status != ProfessionalStatus::Active {
                return Err(EnrolError::ProfessionalNotActive {
                    idnat_ps: card.idnat_ps,
                    status: p.status,
                    what: "resuming a card",
                });
            }
        }
        self.change_card(serial, cps_audit::AuditEvent::CardResumed, actor, now, |c| {
            match c.status {
                CardStatus::Suspended { .. } => Ok((CardStatus::Active, Some(RevocationAction::Release))),
                ref s => Err(EnrolError::CardStatus {
                    serial: c.serial.clone(),
                    status: s.clone(),
                    what: "resume it (only a suspended card can be resumed; an opposed card never comes back)",
                }),
            }
        })
    }

    /// Opposes a card (lost, stolen, destroyed): all its certificates are revoked (see the
    /// module docs for the reasons); the card never comes back.
    pub fn oppose_card(
        &self,
        serial: &str,
        reason: OppositionReason,
        actor: &str,
        now: i64,
    ) -> Result<LifecycleOutcome> {
        self.change_card(
            serial,
            |change| cps_audit::AuditEvent::CardOpposed {
                change,
                reason: reason.name().into(),
                revocation_reason: reason.revocation_reason().name().into(),
            },
            actor,
            now,
            |c| {
                if c.status.is_terminal() {
                    return Err(EnrolError::CardStatus {
                        serial: c.serial.clone(),
                        status: c.status.clone(),
                        what: "oppose it again",
                    });
                }
                Ok((
                    CardStatus::Opposed { reason, at: now },
                    Some(RevocationAction::Revoke(reason.revocation_reason())),
                ))
            },
        )
    }

    /// Officer-assisted PIN unblock: with the card present, the holder's PUK resets the PIN
    /// to `new_pin`. Every attempt is audited; a wrong PUK says how many tries are left.
    pub fn unblock_pin<T: Transport>(
        &self,
        serial: &str,
        piv: &mut Piv<T>,
        puk: &str,
        new_pin: &str,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let (card, _) = self.card_raw(serial)?;
        if card.status.is_terminal() {
            return Err(EnrolError::CardStatus {
                serial: serial.into(),
                status: card.status,
                what: "unblock its PIN",
            });
        }
        let found = cardops::card_serial(piv)?;
        if found != card.serial {
            return Err(EnrolError::WrongCard {
                expected: card.serial,
                found,
            });
        }
        let result = piv.unblock_pin(puk, new_pin);
        let failed = |error: String| cps_audit::AuditEvent::CardPinUnblockFailed {
            card: serial.into(),
            idnat_ps: card.idnat_ps.clone(),
            error,
        };
        let event = match &result {
            Ok(()) => cps_audit::AuditEvent::CardPinUnblocked {
                card: serial.into(),
                idnat_ps: card.idnat_ps.clone(),
            },
            Err(CardError::WrongPuk { tries_left }) => {
                failed(format!("wrong PUK, {tries_left} tries left"))
            }
            Err(CardError::PukBlocked) => failed("PUK blocked".into()),
            Err(e) => failed(e.to_string()),
        };
        // Input refused before reaching the card (malformed PIN/PUK) is not an attempt.
        if !matches!(result, Err(CardError::InvalidPin { .. })) {
            self.store
                .commit(WriteBatch::new().with(tables::audit(now, actor, event)))?;
        }
        result.map_err(EnrolError::from)
    }

    /// Changes a professional's status, with its consequences for their cards, in one batch:
    ///
    /// * `suspended`: active cards are suspended with the professional (certificates on hold);
    /// * back to `active`: cards suspended with the professional are resumed (cards an officer
    ///   suspended stay suspended);
    /// * `left`: every card not already opposed or retired is retired and its certificates
    ///   revoked (cessationOfOperation).
    ///
    /// Open enrolments of the professional are aborted unless the new status is `active`.
    pub fn set_professional_status(
        &self,
        idnat_ps: &str,
        status: ProfessionalStatus,
        actor: &str,
        now: i64,
    ) -> Result<StatusChange> {
        let (old, raw) = self
            .registry
            .get_raw(idnat_ps)?
            .ok_or_else(|| EnrolError::UnknownProfessional(shown(idnat_ps)))?;
        let mut p = old.clone();
        p.status = status;
        p.updated_at = now;
        p.revision += 1;
        let mut batch: WriteBatch = professional_ops(Some((&old, &raw)), &p)?.into();
        let mut certs = Vec::new();
        let mut cards = Vec::new();
        for card in self.cards_of(idnat_ps, None)? {
            let (card, craw) = self.card_raw(&card.serial)?;
            let change = match (&card.status, status) {
                (CardStatus::Active, ProfessionalStatus::Suspended) => Some((
                    CardStatus::Suspended {
                        by_professional: true,
                        at: now,
                    },
                    RevocationAction::Hold,
                )),
                (
                    CardStatus::Suspended {
                        by_professional: true,
                        ..
                    },
                    ProfessionalStatus::Active,
                ) => Some((CardStatus::Active, RevocationAction::Release)),
                (s, ProfessionalStatus::Left) if !s.is_terminal() => Some((
                    CardStatus::Retired {
                        reason: RetirementReason::ProfessionalLeft,
                        at: now,
                    },
                    RevocationAction::Revoke(RevocationReason::CessationOfOperation),
                )),
                _ => None,
            };
            if let Some((st, action)) = change {
                let mut c = card.clone();
                c.status = st;
                c.updated_at = now;
                batch.push(tables::put(
                    CARDS,
                    c.serial.as_bytes(),
                    &c,
                    Expect::Value(craw),
                )?);
                for cc in &card.certificates {
                    batch.push(self.outbox_op(
                        &cc.cert,
                        action,
                        Some(&c.serial),
                        None,
                        actor,
                        now,
                    )?);
                    certs.push(cc.cert.clone());
                }
                cards.push(c);
            }
        }
        let mut aborted = Vec::new();
        if status != ProfessionalStatus::Active {
            for (_, v) in tables::scan_all(
                self.store.as_ref(),
                ENROLMENTS_OPEN_BY_ACTIVITY,
                &tables::key(&[idnat_ps, ""]),
            )? {
                let id = String::from_utf8_lossy(&v).into_owned();
                if let Some((ops, c)) = self.abort_in_batch(
                    &id,
                    &format!("the professional is now {status}"),
                    actor,
                    now,
                )? {
                    for op in ops {
                        batch.push(op);
                    }
                    certs.extend(c);
                    aborted.push(id);
                }
            }
        }
        batch.push(tables::audit(
            now,
            actor,
            cps_audit::AuditEvent::ProfessionalStatusChanged {
                idnat_ps: idnat_ps.to_string(),
                from: old.status.name().into(),
                to: status.name().into(),
                cards: cards
                    .iter()
                    .map(|c| cps_audit::CardStatus {
                        card: c.serial.clone(),
                        status: c.status.name().into(),
                    })
                    .collect(),
                aborted_enrolments: aborted.clone(),
            },
        ));
        self.store.commit(batch).map_err(|e| {
            EnrolError::stale_on_conflict(
                e,
                format!("professional {idnat_ps} or one of their cards"),
            )
        })?;
        let revocations = self.process_outbox(&certs, actor, now);
        Ok(StatusChange {
            professional: p,
            cards,
            aborted_enrolments: aborted,
            revocations,
        })
    }
}
