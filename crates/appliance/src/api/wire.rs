//! The services' records as the API's wire types ([`cps_api`]). Each conversion destructures
//! its source completely, so a field added to a record does not compile until the API says
//! whether (and how) it is shown; the tests check that every wire type serialises exactly as the
//! record it stands for (the answers stay byte-compatible).

use cps_api as w;
use cps_pki::crl::RevocationReason;
use cps_store::{CertStatus, CertificateRecord};

/// A record as the API shows it.
pub trait Wire {
    type Out;
    fn wire(&self) -> Self::Out;
}

impl<T: Wire> Wire for Vec<T> {
    type Out = Vec<T::Out>;
    fn wire(&self) -> Self::Out {
        self.iter().map(Wire::wire).collect()
    }
}

impl<T: Wire> Wire for Option<T> {
    type Out = Option<T::Out>;
    fn wire(&self) -> Self::Out {
        self.as_ref().map(Wire::wire)
    }
}

/// A certificate as the API shows it.
pub fn certificate_view(r: &CertificateRecord) -> w::CertificateView {
    let (status, time, reason) = match &r.status {
        CertStatus::Valid => ("valid".to_string(), None, None),
        CertStatus::Revoked { time, reason, .. } => {
            let name = RevocationReason::from_code(*reason).map(|x| x.name().to_string());
            let st = if *reason == 6 { "on-hold" } else { "revoked" };
            (st.to_string(), Some(*time), name)
        }
    };
    w::CertificateView {
        ca: r.issuer.clone(),
        serial: hex::encode_upper(&r.serial),
        subject: r.subject.clone(),
        profile: r.profile.clone(),
        holder: r.holder.clone(),
        not_before: r.not_before,
        not_after: r.not_after,
        status,
        revocation_time: time,
        revocation_reason: reason,
        pem: cps_pki::pem_encode("CERTIFICATE", &r.der),
    }
}

impl Wire for CertificateRecord {
    type Out = w::CertificateView;
    fn wire(&self) -> w::CertificateView {
        certificate_view(self)
    }
}

impl Wire for crate::operators::Operator {
    type Out = w::OperatorView;
    fn wire(&self) -> w::OperatorView {
        let crate::operators::Operator { name, roles } = self;
        w::OperatorView {
            name: name.clone(),
            roles: roles.clone(),
        }
    }
}

impl Wire for crate::nodes::NodeRecord {
    type Out = w::NodeView;
    fn wire(&self) -> w::NodeView {
        let crate::nodes::NodeRecord {
            name,
            structure_id,
            status,
            certificates,
            enrolled_at,
            enrolled_by,
        } = self.clone();
        w::NodeView {
            name,
            structure_id,
            status,
            certificates,
            enrolled_at,
            enrolled_by,
        }
    }
}

/// The node service's request from the API's.
pub fn node_request(r: w::NodeEnrollRequest) -> crate::nodes::NodeEnrollRequest {
    let w::NodeEnrollRequest {
        name,
        csr,
        organisation,
        dns,
        ip,
    } = r;
    crate::nodes::NodeEnrollRequest {
        name,
        csr,
        organisation: organisation_identity(organisation),
        dns,
        ip,
    }
}

fn organisation_identity(o: w::OrganisationSubject) -> cps_pki::OrganisationIdentity {
    let w::OrganisationSubject {
        state,
        name,
        structure_id,
        common_name,
    } = o;
    cps_pki::OrganisationIdentity {
        state,
        name,
        structure_id,
        common_name,
    }
}

/// The CA's subject request from the API's.
pub fn subject_request(s: w::SubjectRequest) -> crate::ca::SubjectRequest {
    match s {
        w::SubjectRequest::Person(w::PersonSubject {
            idnat_ps,
            surname,
            given_name,
            profession_code,
        }) => crate::ca::SubjectRequest::Person(cps_pki::PersonIdentity {
            idnat_ps,
            surname,
            given_name,
            profession_code,
        }),
        w::SubjectRequest::Organisation(o) => {
            crate::ca::SubjectRequest::Organisation(organisation_identity(o))
        }
    }
}

impl Wire for crate::audit_anchor::AnchorRecord {
    type Out = w::AnchorView;
    fn wire(&self) -> w::AnchorView {
        let crate::audit_anchor::AnchorRecord {
            seq,
            head,
            time,
            anchored_at,
            checkpoint,
        } = self.clone();
        w::AnchorView {
            seq,
            head,
            time,
            anchored_at,
            checkpoint,
        }
    }
}

impl Wire for crate::audit_anchor::AnchorSet {
    type Out = w::AnchorSetView;
    fn wire(&self) -> w::AnchorSetView {
        let crate::audit_anchor::AnchorSet {
            latest,
            history,
            lost,
            certificates,
        } = self;
        w::AnchorSetView {
            latest: latest.wire(),
            history: history.wire(),
            lost: lost
                .iter()
                .map(|l| {
                    let crate::audit_anchor::LostAnchor {
                        anchor,
                        found_at,
                        log_records,
                        log_last_checkpoint,
                    } = l;
                    w::LostAnchorView {
                        anchor: anchor.wire(),
                        found_at: *found_at,
                        log_records: *log_records,
                        log_last_checkpoint: *log_last_checkpoint,
                    }
                })
                .collect(),
            certificates: certificates
                .iter()
                .map(|c| {
                    let crate::audit_anchor::KeyCertificate {
                        key_id,
                        ca,
                        serial,
                        profile,
                        pem,
                        status,
                        revocation_time,
                    } = c.clone();
                    w::KeyCertificateView {
                        key_id,
                        ca,
                        serial,
                        profile,
                        pem,
                        status,
                        revocation_time,
                    }
                })
                .collect(),
        }
    }
}

impl Wire for cps_atna::Record {
    type Out = w::AuditEvent;
    fn wire(&self) -> w::AuditEvent {
        let r = self;
        w::AuditEvent {
            seq: r.seq,
            received: r.received / 1_000_000,
            transport: format!("{:?}", r.transport).to_lowercase(),
            node: r.node.subject.clone(),
            peer: r.peer.clone(),
            event: r.summary.event.as_ref().map(|e| w::AuditEventSummary {
                event_id: e.event_id.code.clone(),
                event_name: e.event_id.meaning.clone(),
                event_types: e.event_types.iter().map(|c| c.code.clone()).collect(),
                action: e.action.clone(),
                outcome: e.outcome,
                time: e.event_time.map(|t| t / 1_000_000),
                users: e.user_ids.clone(),
                patients: e.patient_ids.clone(),
                source: e.source_id.clone(),
            }),
            parse_error: r
                .summary
                .syslog_error
                .clone()
                .or(r.summary.xml_error.clone()),
            message: String::from_utf8_lossy(&r.raw).into_owned(),
        }
    }
}

// --- The registry and cards.

impl Wire for cps_enrol::ProfessionalStatus {
    type Out = w::ProfessionalStatus;
    fn wire(&self) -> w::ProfessionalStatus {
        match self {
            cps_enrol::ProfessionalStatus::Active => w::ProfessionalStatus::Active,
            cps_enrol::ProfessionalStatus::Suspended => w::ProfessionalStatus::Suspended,
            cps_enrol::ProfessionalStatus::Left => w::ProfessionalStatus::Left,
        }
    }
}

impl Wire for cps_enrol::Activity {
    type Out = w::Activity;
    fn wire(&self) -> w::Activity {
        let cps_enrol::Activity {
            structure_id,
            structure_name,
            secteur_activite,
        } = self.clone();
        w::Activity {
            structure_id,
            structure_name,
            secteur_activite,
        }
    }
}

impl Wire for cps_enrol::ProfessionalData {
    type Out = w::ProfessionalData;
    fn wire(&self) -> w::ProfessionalData {
        let cps_enrol::ProfessionalData {
            idnat_ps,
            surname,
            given_names,
            profession_code,
            savoir_faire,
            activities,
        } = self;
        w::ProfessionalData {
            idnat_ps: idnat_ps.clone(),
            surname: surname.clone(),
            given_names: given_names.clone(),
            profession_code: profession_code.clone(),
            savoir_faire: savoir_faire.clone(),
            activities: activities.wire(),
        }
    }
}

/// The registry's data from the API's.
pub fn professional_data(d: w::ProfessionalData) -> cps_enrol::ProfessionalData {
    let w::ProfessionalData {
        idnat_ps,
        surname,
        given_names,
        profession_code,
        savoir_faire,
        activities,
    } = d;
    cps_enrol::ProfessionalData {
        idnat_ps,
        surname,
        given_names,
        profession_code,
        savoir_faire,
        activities: activities
            .into_iter()
            .map(|a| cps_enrol::Activity {
                structure_id: a.structure_id,
                structure_name: a.structure_name,
                secteur_activite: a.secteur_activite,
            })
            .collect(),
    }
}

impl Wire for cps_enrol::Professional {
    type Out = w::Professional;
    fn wire(&self) -> w::Professional {
        let cps_enrol::Professional {
            data,
            status,
            updated_at,
            revision,
        } = self;
        w::Professional {
            data: data.wire(),
            status: status.wire(),
            updated_at: *updated_at,
            revision: *revision,
        }
    }
}

impl Wire for cps_enrol::CardCertificate {
    type Out = w::CardCertificate;
    fn wire(&self) -> w::CardCertificate {
        let cps_enrol::CardCertificate {
            slot,
            cert,
            profile,
            not_after,
            spki_sha256,
        } = self.clone();
        w::CardCertificate {
            slot: match slot {
                cps_enrol::CertSlot::Authentication => w::CertSlot::Authentication,
                cps_enrol::CertSlot::Signature => w::CertSlot::Signature,
            },
            issuer: cert.issuer,
            serial: cert.serial,
            profile,
            not_after,
            spki_sha256,
        }
    }
}

impl Wire for cps_enrol::OppositionReason {
    type Out = w::OppositionReason;
    fn wire(&self) -> w::OppositionReason {
        match self {
            cps_enrol::OppositionReason::Lost => w::OppositionReason::Lost,
            cps_enrol::OppositionReason::Stolen => w::OppositionReason::Stolen,
            cps_enrol::OppositionReason::Destroyed => w::OppositionReason::Destroyed,
        }
    }
}

impl Wire for cps_enrol::CardStatus {
    type Out = w::CardStatus;
    fn wire(&self) -> w::CardStatus {
        use cps_enrol::{CardStatus as S, RetirementReason as R};
        match self.clone() {
            S::Active => w::CardStatus::Active,
            S::Suspended {
                by_professional,
                at,
            } => w::CardStatus::Suspended {
                by_professional,
                at,
            },
            S::Opposed { reason, at } => w::CardStatus::Opposed {
                reason: reason.wire(),
                at,
            },
            S::Retired { reason, at } => w::CardStatus::Retired {
                reason: match reason {
                    R::ProfessionalLeft => w::RetirementReason::ProfessionalLeft,
                    R::Replaced { by } => w::RetirementReason::Replaced { by },
                },
                at,
            },
        }
    }
}

impl Wire for cps_enrol::Card {
    type Out = w::Card;
    fn wire(&self) -> w::Card {
        let cps_enrol::Card {
            serial,
            token_id,
            idnat_ps,
            structure_id,
            status,
            key_algorithm,
            certificates,
            previous_certificates,
            management_key,
            enrolment,
            enrolled_at,
            enrolled_by,
            updated_at,
        } = self;
        w::Card {
            serial: serial.clone(),
            token_id: token_id.clone(),
            idnat_ps: idnat_ps.clone(),
            structure_id: structure_id.clone(),
            status: status.wire(),
            key_algorithm: key_algorithm.clone(),
            certificates: certificates.wire(),
            previous_certificates: previous_certificates.wire(),
            management_key: match management_key.clone() {
                cps_enrol::ManagementKeyState::Default => w::ManagementKeyState::Default,
                cps_enrol::ManagementKeyState::PerCard {
                    master_key,
                    algorithm,
                } => w::ManagementKeyState::PerCard {
                    master_key,
                    algorithm,
                },
            },
            enrolment: enrolment.clone(),
            enrolled_at: *enrolled_at,
            enrolled_by: enrolled_by.clone(),
            updated_at: *updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    /// The wire type serialises exactly as the record it stands for.
    fn same_json<A: Serialize, B: Serialize>(record: &A, wire: &B) {
        assert_eq!(
            serde_json::to_string(record).unwrap(),
            serde_json::to_string(wire).unwrap()
        );
    }

    fn card(status: cps_enrol::CardStatus, mk: cps_enrol::ManagementKeyState) -> cps_enrol::Card {
        cps_enrol::Card {
            serial: "0A1B".into(),
            token_id: "80250/0000000001".into(),
            idnat_ps: "810002813839".into(),
            structure_id: "S1".into(),
            status,
            key_algorithm: "p256".into(),
            certificates: vec![cps_enrol::CardCertificate {
                slot: cps_enrol::CertSlot::Authentication,
                cert: cps_enrol::CertRef {
                    issuer: "personnes".into(),
                    serial: "01AB".into(),
                },
                profile: "cps-auth".into(),
                not_after: 2,
                spki_sha256: "ff".into(),
            }],
            previous_certificates: vec![cps_enrol::CardCertificate {
                slot: cps_enrol::CertSlot::Signature,
                cert: cps_enrol::CertRef {
                    issuer: "personnes".into(),
                    serial: "02".into(),
                },
                profile: "cps-sign".into(),
                not_after: 3,
                spki_sha256: "ee".into(),
            }],
            management_key: mk,
            enrolment: "e1".into(),
            enrolled_at: 4,
            enrolled_by: "operator:ra".into(),
            updated_at: 5,
        }
    }

    #[test]
    fn cards_in_every_status_keep_their_wire_shape() {
        use cps_enrol::{CardStatus as S, ManagementKeyState as M, RetirementReason as R};
        let per_card = M::PerCard {
            master_key: "k".into(),
            algorithm: "aes128".into(),
        };
        for (status, mk) in [
            (S::Active, M::Default),
            (
                S::Suspended {
                    by_professional: true,
                    at: 9,
                },
                per_card.clone(),
            ),
            (
                S::Opposed {
                    reason: cps_enrol::OppositionReason::Stolen,
                    at: 9,
                },
                per_card.clone(),
            ),
            (
                S::Retired {
                    reason: R::Replaced { by: "X".into() },
                    at: 9,
                },
                per_card.clone(),
            ),
            (
                S::Retired {
                    reason: R::ProfessionalLeft,
                    at: 9,
                },
                per_card.clone(),
            ),
        ] {
            let c = card(status, mk);
            same_json(&c, &c.wire());
            // And the wire form reads back as the same value (the CLI's side).
            let back: w::Card = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back, c.wire());
        }
    }

    #[test]
    fn professionals_keep_their_wire_shape() {
        for status in [
            cps_enrol::ProfessionalStatus::Active,
            cps_enrol::ProfessionalStatus::Suspended,
            cps_enrol::ProfessionalStatus::Left,
        ] {
            let p = cps_enrol::Professional {
                data: cps_enrol::ProfessionalData {
                    idnat_ps: "810002813839".into(),
                    surname: "Dupont".into(),
                    given_names: "Jeanne".into(),
                    profession_code: "10".into(),
                    savoir_faire: Some("SM26".into()),
                    activities: vec![cps_enrol::Activity {
                        structure_id: "S1".into(),
                        structure_name: "Cabinet".into(),
                        secteur_activite: "SA07".into(),
                    }],
                },
                status,
                updated_at: 1,
                revision: 2,
            };
            same_json(&p, &p.wire());
            assert_eq!(professional_data(p.data.wire()), p.data);
        }
    }

    #[test]
    fn nodes_operators_anchors_keep_their_wire_shape() {
        let n = crate::nodes::NodeRecord {
            name: "n.example".into(),
            structure_id: "S".into(),
            status: "active".into(),
            certificates: vec!["c:01".into()],
            enrolled_at: 1,
            enrolled_by: "operator:x".into(),
        };
        same_json(&n, &n.wire());
        let o = crate::operators::Operator {
            name: "x".into(),
            roles: vec!["auditor".into()],
        };
        same_json(&o, &o.wire());
        let a = crate::audit_anchor::AnchorRecord {
            seq: 1,
            head: "00".into(),
            time: 2,
            anchored_at: 3,
            checkpoint: "AA==".into(),
        };
        let set = crate::audit_anchor::AnchorSet {
            latest: Some(a.clone()),
            history: vec![a.clone()],
            lost: vec![crate::audit_anchor::LostAnchor {
                anchor: a,
                found_at: 4,
                log_records: 5,
                log_last_checkpoint: Some(6),
            }],
            certificates: vec![crate::audit_anchor::KeyCertificate {
                key_id: "ab".into(),
                ca: "c".into(),
                serial: "01".into(),
                profile: "p".into(),
                pem: "x".into(),
                status: "valid".into(),
                revocation_time: None,
            }],
        };
        same_json(&set, &set.wire());
        same_json(
            &crate::audit_anchor::AnchorSet::default(),
            &crate::audit_anchor::AnchorSet::default().wire(),
        );
    }

    /// A job answer (built by hand around the PIN and PUK) reads as the API's `Job`, with the
    /// secrets once and `null` otherwise; its result reads as the card it holds.
    #[tokio::test]
    async fn job_answers_read_as_the_api_job() {
        let c = card(
            cps_enrol::CardStatus::Active,
            cps_enrol::ManagementKeyState::Default,
        );
        let view = crate::cards::JobView {
            id: "j1".into(),
            kind: "enrolment".into(),
            actor: "operator:ra".into(),
            status: "done".into(),
            events: vec![crate::cards::JobEvent {
                step: "detect_card".into(),
                label: "Card detected".into(),
                state: "done".into(),
                detail: None,
            }],
            progress: Some(("validating".into(), 1, 2)),
            error: None,
            result: Some(serde_json::to_value(&c).unwrap()),
            owner: crate::caller::CertFingerprint([0; 32]),
            secrets_held: true,
        };
        let secrets = cps_enrol::InitialSecrets {
            pin: zeroize::Zeroizing::new("123456".into()),
            puk: zeroize::Zeroizing::new("12345678".into()),
        };
        for s in [None, Some(&secrets)] {
            let body = crate::cards::job_json(&view, s).unwrap();
            let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let job: w::Job = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(job.id, "j1");
            assert_eq!(job.progress, Some(("validating".into(), 1, 2)));
            assert_eq!(job.events[0].step, "detect_card");
            assert_eq!(
                job.secrets,
                s.map(|_| w::InitialSecrets {
                    pin: "123456".into(),
                    puk: "12345678".into()
                })
            );
            let result: w::Card = serde_json::from_value(job.result.unwrap()).unwrap();
            assert_eq!(result, c.wire());
        }
    }

    /// Request bodies the services took before read the same through the API's types.
    #[test]
    fn requests_convert_to_the_services_types() {
        let org = r#"{"state":"s","name":"n","structure_id":"1","common_name":"c"}"#;
        let body = format!(r#"{{"name":"n1","csr":"x","organisation":{org},"ip":["10.0.0.1"]}}"#);
        let direct: crate::nodes::NodeEnrollRequest = serde_json::from_str(&body).unwrap();
        let via: w::NodeEnrollRequest = serde_json::from_str(&body).unwrap();
        assert_eq!(
            serde_json::to_string(&direct).unwrap(),
            serde_json::to_string(&node_request(via)).unwrap()
        );
        for subject in [
            format!(r#"{{"organisation":{org}}}"#),
            r#"{"person":{"idnat_ps":"8","surname":"a","given_name":"b","profession_code":"10"}}"#
                .into(),
        ] {
            let direct: crate::ca::SubjectRequest = serde_json::from_str(&subject).unwrap();
            let via: w::SubjectRequest = serde_json::from_str(&subject).unwrap();
            assert_eq!(
                serde_json::to_string(&direct).unwrap(),
                serde_json::to_string(&subject_request(via)).unwrap()
            );
        }
    }
}
