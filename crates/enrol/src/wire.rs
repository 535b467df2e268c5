//! The registry's and the cards' records as the API's wire types ([`cps_api`]). Each
//! conversion destructures its source completely, so a field added to a record does not compile
//! until the API says whether (and how) it is shown; the tests check that every wire type
//! serialises exactly as the record it stands for (the answers stay byte-compatible).

use cps_api as w;

impl From<&crate::ProfessionalStatus> for w::ProfessionalStatus {
    fn from(r: &crate::ProfessionalStatus) -> w::ProfessionalStatus {
        match r {
            crate::ProfessionalStatus::Active => w::ProfessionalStatus::Active,
            crate::ProfessionalStatus::Suspended => w::ProfessionalStatus::Suspended,
            crate::ProfessionalStatus::Left => w::ProfessionalStatus::Left,
        }
    }
}

impl From<&crate::Activity> for w::Activity {
    fn from(r: &crate::Activity) -> w::Activity {
        let crate::Activity {
            structure_id,
            structure_name,
            secteur_activite,
        } = r.clone();
        w::Activity {
            structure_id,
            structure_name,
            secteur_activite,
        }
    }
}

impl From<&crate::ProfessionalData> for w::ProfessionalData {
    fn from(r: &crate::ProfessionalData) -> w::ProfessionalData {
        let crate::ProfessionalData {
            idnat_ps,
            surname,
            given_names,
            profession_code,
            savoir_faire,
            activities,
        } = r;
        w::ProfessionalData {
            idnat_ps: idnat_ps.clone(),
            surname: surname.clone(),
            given_names: given_names.clone(),
            profession_code: profession_code.clone(),
            savoir_faire: savoir_faire.clone(),
            activities: activities.iter().map(Into::into).collect(),
        }
    }
}

/// The registry's data from the API's.
impl From<w::ProfessionalData> for crate::ProfessionalData {
    fn from(d: w::ProfessionalData) -> crate::ProfessionalData {
        let w::ProfessionalData {
            idnat_ps,
            surname,
            given_names,
            profession_code,
            savoir_faire,
            activities,
        } = d;
        crate::ProfessionalData {
            idnat_ps,
            surname,
            given_names,
            profession_code,
            savoir_faire,
            activities: activities
                .into_iter()
                .map(|a| crate::Activity {
                    structure_id: a.structure_id,
                    structure_name: a.structure_name,
                    secteur_activite: a.secteur_activite,
                })
                .collect(),
        }
    }
}

impl From<&crate::Professional> for w::Professional {
    fn from(r: &crate::Professional) -> w::Professional {
        let crate::Professional {
            data,
            status,
            updated_at,
            revision,
        } = r;
        w::Professional {
            data: data.into(),
            status: status.into(),
            updated_at: *updated_at,
            revision: *revision,
        }
    }
}

impl From<&crate::CardCertificate> for w::CardCertificate {
    fn from(r: &crate::CardCertificate) -> w::CardCertificate {
        let crate::CardCertificate {
            slot,
            cert,
            profile,
            not_after,
            spki_sha256,
        } = r.clone();
        w::CardCertificate {
            slot: match slot {
                crate::CertSlot::Authentication => w::CertSlot::Authentication,
                crate::CertSlot::Signature => w::CertSlot::Signature,
            },
            issuer: cert.issuer,
            serial: cert.serial,
            profile,
            not_after,
            spki_sha256,
        }
    }
}

impl From<&crate::OppositionReason> for w::OppositionReason {
    fn from(r: &crate::OppositionReason) -> w::OppositionReason {
        match r {
            crate::OppositionReason::Lost => w::OppositionReason::Lost,
            crate::OppositionReason::Stolen => w::OppositionReason::Stolen,
            crate::OppositionReason::Destroyed => w::OppositionReason::Destroyed,
        }
    }
}

impl From<&crate::CardStatus> for w::CardStatus {
    fn from(r: &crate::CardStatus) -> w::CardStatus {
        use crate::{CardStatus as S, RetirementReason as R};
        match r.clone() {
            S::Active => w::CardStatus::Active,
            S::Suspended {
                by_professional,
                at,
            } => w::CardStatus::Suspended {
                by_professional,
                at,
            },
            S::Opposed { reason, at } => w::CardStatus::Opposed {
                reason: (&reason).into(),
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

impl From<&crate::Card> for w::Card {
    fn from(r: &crate::Card) -> w::Card {
        let crate::Card {
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
        } = r;
        w::Card {
            serial: serial.clone(),
            token_id: token_id.clone(),
            idnat_ps: idnat_ps.clone(),
            structure_id: structure_id.clone(),
            status: status.into(),
            key_algorithm: key_algorithm.clone(),
            certificates: certificates.iter().map(Into::into).collect(),
            previous_certificates: previous_certificates.iter().map(Into::into).collect(),
            management_key: match management_key.clone() {
                crate::ManagementKeyState::Default => w::ManagementKeyState::Default,
                crate::ManagementKeyState::PerCard {
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

    fn card(status: crate::CardStatus, mk: crate::ManagementKeyState) -> crate::Card {
        crate::Card {
            serial: "0A1B".into(),
            token_id: "80250/0000000001".into(),
            idnat_ps: "810002813839".into(),
            structure_id: "S1".into(),
            status,
            key_algorithm: "p256".into(),
            certificates: vec![crate::CardCertificate {
                slot: crate::CertSlot::Authentication,
                cert: crate::CertRef {
                    issuer: "personnes".into(),
                    serial: "01AB".into(),
                },
                profile: "cps-auth".into(),
                not_after: 2,
                spki_sha256: "ff".into(),
            }],
            previous_certificates: vec![crate::CardCertificate {
                slot: crate::CertSlot::Signature,
                cert: crate::CertRef {
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
        use crate::{CardStatus as S, ManagementKeyState as M, RetirementReason as R};
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
                    reason: crate::OppositionReason::Stolen,
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
            same_json(&c, &w::Card::from(&c));
            // And the wire form reads back as the same value (the CLI's side).
            let back: w::Card = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back, w::Card::from(&c));
        }
    }

    #[test]
    fn professionals_keep_their_wire_shape() {
        for status in [
            crate::ProfessionalStatus::Active,
            crate::ProfessionalStatus::Suspended,
            crate::ProfessionalStatus::Left,
        ] {
            let p = crate::Professional {
                data: crate::ProfessionalData {
                    idnat_ps: "810002813839".into(),
                    surname: "Dupont".into(),
                    given_names: "Jeanne".into(),
                    profession_code: "10".into(),
                    savoir_faire: Some("SM26".into()),
                    activities: vec![crate::Activity {
                        structure_id: "S1".into(),
                        structure_name: "Cabinet".into(),
                        secteur_activite: "SA07".into(),
                    }],
                },
                status,
                updated_at: 1,
                revision: 2,
            };
            same_json(&p, &w::Professional::from(&p));
            assert_eq!(
                crate::ProfessionalData::from(w::ProfessionalData::from(&p.data)),
                p.data
            );
        }
    }

    /// A job answer (built by hand around the PIN and PUK) reads as the API's `Job`, with the
    /// secrets once and `null` otherwise; its result reads as the card it holds.
    #[test]
    fn job_answers_read_as_the_api_job() {
        let c = card(
            crate::CardStatus::Active,
            crate::ManagementKeyState::Default,
        );
        let view = crate::jobs::JobView {
            id: "j1".into(),
            kind: "enrolment".into(),
            actor: "operator:ra".into(),
            status: "done".into(),
            events: vec![crate::jobs::JobEvent {
                step: "detect_card".into(),
                label: "Card detected".into(),
                state: "done".into(),
                detail: None,
            }],
            progress: Some(("validating".into(), 1, 2)),
            error: None,
            result: Some(serde_json::to_value(&c).unwrap()),
            owner: [0; 32],
            secrets_held: true,
        };
        let secrets = crate::InitialSecrets {
            pin: zeroize::Zeroizing::new("123456".into()),
            puk: zeroize::Zeroizing::new("12345678".into()),
        };
        for s in [None, Some(&secrets)] {
            let bytes = crate::jobs::job_json(&view, s).unwrap();
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
            assert_eq!(result, w::Card::from(&c));
        }
    }
}
