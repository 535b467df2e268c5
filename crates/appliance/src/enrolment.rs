//! Enrolment in the appliance: the `cps-enrol` card service over our CA (`cps-ca`, which
//! implements `cps_enrol::CertificateAuthority`) and HSM, and the registry as card login sees it.

use std::sync::Arc;

use cps_enrol::{CardService, CardServiceConfig, CardStatus, ProfessionalStatus};
use cps_hsm::Hsm;

use crate::ApplianceError;
use crate::ca::CaService;
use crate::login::{Directory, LoginRefusal, LoginSubject};

/// HSM label of the secret key per-card management keys are derived from.
pub const CARD_MASTER_LABEL: &str = "card-master";

/// The card service of the appliance: registry and cards in our store, certificates from our
/// CA, per-card management keys derived from a non-extractable HSM secret (created on first
/// start).
pub fn card_service(
    hsm: &Hsm,
    ca: Arc<CaService>,
    node: &str,
) -> Result<Arc<CardService>, ApplianceError> {
    let master = match hsm.mac_key(CARD_MASTER_LABEL) {
        Ok(k) => k,
        Err(cps_hsm::HsmError::KeyNotFound { .. }) => {
            tracing::info!(
                label = CARD_MASTER_LABEL,
                "creating the card master key in the HSM"
            );
            hsm.generate_mac_key(CARD_MASTER_LABEL)?
        }
        Err(e) => return Err(e.into()),
    };
    let store = ca.store().clone();
    Ok(Arc::new(
        CardService::new(
            store,
            ca.core().clone(),
            cps_enrol::CardSecrets::new(Arc::new(master)),
            CardServiceConfig::default(),
        )
        .with_node(node),
    ))
}

/// Login's view of the registry: the card carrying the certificate and its professional.
pub struct EnrolDirectory(pub Arc<CardService>);

fn refuse(code: &'static str, message: impl Into<String>) -> LoginRefusal {
    LoginRefusal {
        code,
        message: message.into(),
    }
}

impl Directory for EnrolDirectory {
    fn login_subject(
        &self,
        idnat_ps: &str,
        ca: &str,
        serial: &[u8],
        structure_id: Option<&str>,
    ) -> Result<LoginSubject, LoginRefusal> {
        let unavailable = |e: cps_enrol::EnrolError| {
            refuse("registry_unavailable", format!("registry unavailable: {e}"))
        };
        let pro = self
            .0
            .registry()
            .get(idnat_ps)
            .map_err(unavailable)?
            .ok_or_else(|| {
                refuse(
                    "unknown_professional",
                    format!("{idnat_ps} is not in the registry"),
                )
            })?;
        if pro.status != ProfessionalStatus::Active {
            return Err(refuse(
                "professional_not_active",
                format!("{idnat_ps} is {}", pro.status.name()),
            ));
        }
        let serial_hex = hex::encode_upper(serial);
        let card = self
            .0
            .cards_of(idnat_ps, None)
            .map_err(unavailable)?
            .into_iter()
            .find(|c| {
                c.certificates
                    .iter()
                    .any(|x| x.cert.issuer == ca && x.cert.serial == serial_hex)
            })
            .ok_or_else(|| {
                refuse(
                    "unknown_card",
                    "no registered card carries this certificate",
                )
            })?;
        if card.status != CardStatus::Active {
            return Err(refuse(
                "card_not_active",
                format!("the card is {}", card.status),
            ));
        }
        let structure = structure_id.unwrap_or(&card.structure_id);
        let activity = pro.activity(structure).ok_or_else(|| {
            refuse(
                "unknown_activity",
                format!("{idnat_ps} has no activity at structure {structure}"),
            )
        })?;
        // Cards enrolled before enrolment refused such activities, or a structure asked for at
        // login: say why here rather than fail while building the assertion.
        if let Some(why) = cps_enrol::codes::structure_login_problem(&activity.structure_id) {
            return Err(refuse(
                "activity_not_for_login",
                format!(
                    "{idnat_ps}'s activity at structure {} cannot be used for login: not a struct_IdNat ({why})",
                    activity.structure_id
                ),
            ));
        }
        Ok(LoginSubject {
            idnat_ps: idnat_ps.to_owned(),
            display_name: format!("{}, {}", pro.data.surname, pro.data.given_names),
            profession_code: pro.data.profession_code.clone(),
            profession_label: pro.profession_label().to_owned(),
            structure_id: activity.structure_id.clone(),
            secteur_code: activity.secteur_activite.clone(),
        })
    }
}

/// The registry as the assertion validator reads it: for assertions of organisation seals, the
/// professional named, their status and activities (see `cps_xua::SealTrustPolicy`).
pub struct RegistryDirectory(pub cps_enrol::Registry);

impl cps_xua::ProfessionalDirectory for RegistryDirectory {
    fn professional(
        &self,
        idnat_ps: &cps_pki::IdNatPs,
    ) -> Result<Option<cps_xua::RegisteredProfessional>, String> {
        let pro = self
            .0
            .get(idnat_ps.as_str())
            .map_err(|e| format!("registry unavailable: {e}"))?;
        Ok(pro.map(|p| cps_xua::RegisteredProfessional {
            active: p.status == ProfessionalStatus::Active,
            status: p.status.name().to_owned(),
            profession_code: p.data.profession_code.clone(),
            activities: p
                .data
                .activities
                .iter()
                .map(|a| cps_xua::RegisteredActivity {
                    structure_id: a.structure_id.clone(),
                    secteur_code: a.secteur_activite.clone(),
                })
                .collect(),
        }))
    }
}
