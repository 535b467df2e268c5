//! A CA hierarchy certified from given signers, without a key ceremony: the root (self-signed,
//! profile `root-ca`) and issuing CAs `<id>` under it (profile `ca-<id>`), valid from `now - 1 h`.
//! For tests and benchmarks (the appliance's hierarchy comes from `cps-trust init`).

use std::sync::Arc;

use cps_hsm::Signer;
use cps_pki::hierarchy::PublicationPoints;
use cps_pki::profile::{IssuerInfo, ProfileSet, end_entity_params};
use cps_pki::{DistinguishedName, Issuer, issue_certificate};
use ring::rand::SecureRandom;

use crate::error::RngFailed;
use crate::{CaAuthority, CaError};

/// The authorities of a generated hierarchy (the root first).
pub struct Hierarchy {
    /// `root`, then each issuing CA in the order given.
    pub authorities: Vec<CaAuthority>,
}

impl Hierarchy {
    /// The certificate of CA `id` (DER).
    pub fn certificate(&self, id: &str) -> Option<&[u8]> {
        self.authorities
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.cert_der.as_slice())
    }
}

fn serial(rng: &ring::rand::SystemRandom) -> Result<cps_pki::Serial, CaError> {
    let mut r = [0u8; 16];
    rng.fill(&mut r).map_err(|_| CaError::internal(RngFailed))?;
    Ok(cps_pki::serial_from_random(r))
}

fn profile<'a>(
    profiles: &'a ProfileSet,
    name: &str,
) -> Result<&'a cps_pki::profile::Profile, CaError> {
    profiles
        .get(name)
        .ok_or_else(|| CaError::Invalid(format!("no profile '{name}'")))
}

/// Certify `root` (self-signed) and each `(id, key)` of `issuing` under it, with the profiles
/// `root-ca` and `ca-<id>` of `profiles`; CRL and CA-certificate URLs under `base_url`.
pub fn build(
    profiles: &ProfileSet,
    root: Arc<dyn Signer>,
    issuing: Vec<(String, Arc<dyn Signer>)>,
    base_url: &str,
    now: i64,
) -> Result<Hierarchy, CaError> {
    let rng = ring::rand::SystemRandom::new();
    let base = base_url.trim_end_matches('/');
    let root_sig = root.key_algorithm().default_signature();
    let root_name = DistinguishedName::parse("CN=cps-trust Test Root CA, O=cps-trust, C=FR")
        .map_err(|e| CaError::Invalid(e.to_string()))?;
    let root_params = end_entity_params(
        profile(profiles, "root-ca")?,
        &root_name,
        &[],
        root.public_key_der(),
        serial(&rng)?,
        now - 3600,
        &IssuerInfo::default(),
    )?;
    let root_der = issue_certificate(
        &root_params,
        &Issuer {
            name: &root_name,
            signer: root.as_ref(),
            signature: root_sig,
        },
    )?;
    let root_info = IssuerInfo {
        ca_id: "root".into(),
        key_id: cps_pki::ext::key_identifier(root.public_key_der())?,
        not_after: Some(root_params.not_after),
        points: PublicationPoints {
            crl: vec![format!("{base}/crl/root.crl")],
            ca_issuers: vec![format!("{base}/ca/root.der")],
            ocsp: vec![],
        },
    };
    let mut authorities = Vec::new();
    for (id, key) in issuing {
        let name =
            DistinguishedName::parse(&format!("CN=cps-trust Test AC {id}, O=cps-trust, C=FR"))
                .map_err(|e| CaError::Invalid(e.to_string()))?;
        let params = end_entity_params(
            profile(profiles, &format!("ca-{id}"))?,
            &name,
            &[],
            key.public_key_der(),
            serial(&rng)?,
            now - 3600,
            &root_info,
        )?;
        let der = issue_certificate(
            &params,
            &Issuer {
                name: &root_name,
                signer: root.as_ref(),
                signature: root_sig,
            },
        )?;
        let sig = key.key_algorithm().default_signature();
        authorities.push(CaAuthority::new(&id, der, key, sig)?);
    }
    authorities.insert(0, CaAuthority::new("root", root_der, root, root_sig)?);
    Ok(Hierarchy { authorities })
}

/// [`build`] with software keys: a P-384 root and a P-256 key per issuing CA.
#[cfg(any(test, feature = "software"))]
pub fn software(
    profiles: &ProfileSet,
    issuing: &[&str],
    base_url: &str,
    now: i64,
) -> Result<Hierarchy, CaError> {
    use cps_hsm::{KeyAlgorithm, SoftwareSigner};
    let gen_key = |label: &str, alg| -> Result<Arc<dyn Signer>, CaError> {
        Ok(Arc::new(
            SoftwareSigner::generate(label, alg).map_err(CaError::internal)?,
        ))
    };
    let root = gen_key("root", KeyAlgorithm::EcP384)?;
    let issuing = issuing
        .iter()
        .map(|id| Ok((id.to_string(), gen_key(id, KeyAlgorithm::EcP256)?)))
        .collect::<Result<Vec<_>, CaError>>()?;
    build(profiles, root, issuing, base_url, now)
}

/// A CA service over a [`software`] hierarchy with the CAs `personnes` and `organisations`, the
/// built-in profiles, an open gate, a one-day CRL validity and `http://127.0.0.1:8080` as the
/// publication base, recording in `store`.
#[cfg(any(test, feature = "software"))]
pub fn software_ca(
    store: Arc<dyn cps_store::Store>,
    now: i64,
) -> Result<crate::CaService, CaError> {
    let profiles = cps_pki::profile::builtin_profiles();
    let base = "http://127.0.0.1:8080";
    let h = software(&profiles, &["personnes", "organisations"], base, now)?;
    Ok(crate::CaService::new(
        h.authorities,
        store,
        profiles,
        Arc::new(crate::OpenGate),
        crate::CaConfig {
            public_base_url: base.into(),
            crl_validity_secs: 86_400,
            key_policy: cps_pki::KeyPolicy::default(),
            reserved_profiles: vec!["audit-checkpoint".into()],
            node_id: "node-1".into(),
            crl_lease_secs: crate::crl::DEFAULT_LEASE_SECS,
            crl_shards: Default::default(),
        },
    ))
}
