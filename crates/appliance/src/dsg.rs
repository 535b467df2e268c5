//! Document signatures (IHE DSG): the structure seals of `[[dsg.seals]]` (HSM keys certified by
//! our organisations CA with the seal profile, behind the clock gate) and who may use each.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cps_hsm::{Hsm, Signer};

use crate::ca::CaService;
use crate::clock::{GatedSigner, SigningClock};
use crate::config::{Config, DsgSeal};
use crate::error::ApplianceError;
use crate::xua::SEAL_PROFILE;

/// One structure's seal, ready to sign.
pub struct StructureSeal {
    pub structure_id: String,
    /// The HSM key behind the clock gate.
    pub signer: Arc<dyn Signer>,
    /// Seal certificate, then its issuing CA (DER).
    pub chain: Vec<Vec<u8>>,
    /// The seal certificate's subject (RFC 4514).
    pub subject: String,
    /// The `signer` operators it signs for.
    signers: Vec<String>,
}

/// Why a caller may not have a structure's seal sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealRefusal {
    #[error("structure {0} has no seal on this appliance")]
    NoSeal(String),
    #[error("operator {operator} is not a signer of structure {structure}")]
    NotBound { operator: String, structure: String },
}

/// The seals of every structure configured.
#[derive(Default)]
pub struct Seals {
    by_structure: HashMap<String, Arc<StructureSeal>>,
}

impl Seals {
    /// Each configured seal: its key (made in the HSM at the first start) and its certificate
    /// (`dsg/<structure>.pem`, made through the issuance path and renewed like the XUA seal).
    pub fn open(
        home: &Path,
        config: &Config,
        hsm: &Hsm,
        ca: &CaService,
        clock: Arc<SigningClock>,
    ) -> Result<Seals, ApplianceError> {
        let mut by_structure = HashMap::new();
        for seal in &config.dsg.seals {
            let s = open_seal(home, seal, hsm, ca, clock.clone())?;
            by_structure.insert(seal.structure_id.clone(), Arc::new(s));
        }
        Ok(Seals { by_structure })
    }

    /// The seal `operator` may have sign for `structure_id`: the structure's own, and only for
    /// the operators its configuration lists.
    pub fn for_caller(
        &self,
        structure_id: &str,
        operator: &str,
    ) -> Result<Arc<StructureSeal>, SealRefusal> {
        let seal = self
            .by_structure
            .get(structure_id)
            .ok_or_else(|| SealRefusal::NoSeal(structure_id.to_owned()))?;
        if !seal.signers.iter().any(|s| s == operator) {
            return Err(SealRefusal::NotBound {
                operator: operator.to_owned(),
                structure: structure_id.to_owned(),
            });
        }
        Ok(seal.clone())
    }

    pub fn len(&self) -> usize {
        self.by_structure.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_structure.is_empty()
    }
}

fn open_seal(
    home: &Path,
    seal: &DsgSeal,
    hsm: &Hsm,
    ca: &CaService,
    clock: Arc<SigningClock>,
) -> Result<StructureSeal, ApplianceError> {
    let label = seal.label();
    let file = format!("dsg/{}.pem", seal.structure_id);
    let (key, chain) = crate::ca::ApplianceCredential {
        label: &label,
        algorithm: crate::xua::key_algorithm(&seal.algorithm),
        profile: SEAL_PROFILE,
        subject: cps_pki::OrganisationIdentity {
            state: seal.state.clone(),
            name: seal.organisation.clone(),
            structure_id: seal.structure_id.clone(),
            common_name: format!("{} cachet", seal.organisation),
        },
        holder: format!("appliance:{label}"),
        file: &file,
    }
    .ensure(home, hsm, ca)?;
    let subject = chain
        .first()
        .and_then(|d| cps_pki::parse_certificate(d).ok())
        .map(|c| c.subject.to_string())
        .unwrap_or_default();
    Ok(StructureSeal {
        structure_id: seal.structure_id.clone(),
        signer: Arc::new(GatedSigner::new(Arc::new(key), clock)),
        chain,
        subject,
        signers: seal.signers.clone(),
    })
}
