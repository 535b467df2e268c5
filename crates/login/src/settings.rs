//! The `[xua]` section of the appliance's configuration: the seal, assertions, login
//! challenges and the validator's replay cache. The appliance's `config.rs` uses it as its
//! section type (same TOML, unknown fields refused).

use serde::{Deserialize, Serialize};

/// Card login and XUA/VIHF assertions (`[xua]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct XuaSettings {
    /// HSM label of the organisation seal ("cachet") key that signs assertions; created with its
    /// `org-cachet` certificate at the first start if absent.
    #[serde(default = "default_cachet_label")]
    pub key_label: String,
    /// Its algorithm: `rsa2048` (default) / `rsa3072` (RSA-SHA256) or `p256` (ECDSA-SHA256).
    #[serde(default = "default_cachet_algorithm")]
    pub algorithm: String,
    /// The seal certificate's organisation: raison sociale, struct_IdNat, department.
    #[serde(default = "default_cachet_org")]
    pub organisation: String,
    #[serde(default = "default_cachet_structure")]
    pub structure_id: String,
    #[serde(default = "default_cachet_state")]
    pub state: String,
    /// Assertion lifetime (NotOnOrAfter − NotBefore), minutes. Also the longest lifetime the
    /// validator accepts (it trusts only this appliance's seals): lowering it refuses the
    /// longer-lived assertions issued before.
    #[serde(default = "default_assertion_minutes")]
    pub validity_minutes: u32,
    /// `vihf` (no AudienceRestriction) or `ihe` (AudienceRestriction to `audience`).
    #[serde(default = "default_flavour")]
    pub flavour: String,
    /// The audience of `ihe` assertions, and the audience the validator requires when set.
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew tolerated by the validator, seconds.
    #[serde(default = "default_skew")]
    pub skew_seconds: u32,
    /// Lifetime of a login challenge, seconds.
    #[serde(default = "default_challenge")]
    pub challenge_seconds: u32,
    /// Refused logins that proved nothing (no valid card signature yet) are counted per source
    /// address and written as one `login.refused` audit record per source and interval of this
    /// many seconds.
    #[serde(default = "default_refusal_audit")]
    pub refusal_audit_seconds: u32,
    /// `LPS_ID_HOMOLOGATION_DMP` written when the workstation does not send one.
    #[serde(default = "default_homologation")]
    pub homologation: String,
    /// Validated assertion IDs remembered at once against replay (about 60–100 bytes each).
    /// When full, validations are refused until IDs expire (fail closed), so size it for the
    /// sustained validation rate × (validity + 2 × skew): the default holds about 1 100
    /// validations/s with 60-minute assertions.
    #[serde(default = "default_replay_capacity")]
    pub replay_capacity: usize,
    /// Assertions signed by an organisation seal (an `org-cachet` certificate of this appliance
    /// that is not its own seal): `required` (default) — the professional named must be in this
    /// appliance's registry, active, with an activity in the seal's structure; `not_held` — the
    /// network's professionals are not in this registry, and only the structure binding and the
    /// authentication mode are checked (README, "Trust policy for assertion signers").
    #[serde(default)]
    pub org_seal_registry: OrgSealRegistryMode,
    /// Where validated assertion IDs and redeemed login challenges are recorded: `memory`
    /// (this process; assertion IDs refilled from the audit log at start) or `store` (the store,
    /// shared by every node on it, durable before each answer). Unset: `memory` on the embedded
    /// store, `store` on a store shared by several nodes, where `memory` is refused
    /// ([`XuaSettings::replay_record_for`]; ARCHITECTURE.md, "Across nodes, single use is a claim
    /// in the store").
    #[serde(default)]
    pub replay_record: Option<ReplayRecord>,
}

/// `xua.replay_record`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReplayRecord {
    /// In this process (assertion IDs refilled from the local audit log at start).
    #[default]
    Memory,
    /// In the store, shared by every node on it.
    Store,
}

impl XuaSettings {
    /// The replay record to use on a store that is (`shared_store`) or is not shared by several
    /// nodes: the configured one, else `store` on a shared store and `memory` otherwise. On a
    /// shared store `memory` is refused: an assertion ID or a challenge used on one node would
    /// be accepted again by another.
    pub fn replay_record_for(&self, shared_store: bool) -> Result<ReplayRecord, String> {
        match (self.replay_record, shared_store) {
            (Some(ReplayRecord::Memory), true) => Err(
                "xua.replay_record = \"memory\" cannot be used with a store shared by several nodes: \
                 an assertion or a login challenge used on one node would be accepted again on \
                 another; remove the setting or set it to \"store\""
                    .into(),
            ),
            (Some(r), _) => Ok(r),
            (None, true) => Ok(ReplayRecord::Store),
            (None, false) => Ok(ReplayRecord::Memory),
        }
    }

    /// The values out of range, named as the configuration writes them (`xua.<field>`).
    pub fn check(&self) -> Result<(), String> {
        if !matches!(self.algorithm.as_str(), "p256" | "rsa2048" | "rsa3072") {
            return Err(format!(
                "xua.algorithm '{}' must be p256, rsa2048 or rsa3072",
                self.algorithm
            ));
        }
        match (self.flavour.as_str(), &self.audience) {
            ("vihf", _) | ("ihe", Some(_)) => {}
            ("ihe", None) => return Err("xua.flavour = \"ihe\" needs xua.audience".into()),
            (f, _) => return Err(format!("xua.flavour '{f}' must be \"vihf\" or \"ihe\"")),
        }
        if self.validity_minutes == 0 || self.validity_minutes > 24 * 60 {
            return Err("xua.validity_minutes must be between 1 and 1440".into());
        }
        if !(1_000..=1_000_000_000).contains(&self.replay_capacity) {
            return Err("xua.replay_capacity must be between 1000 and 1000000000".into());
        }
        if self.challenge_seconds == 0 || self.challenge_seconds > 600 {
            return Err("xua.challenge_seconds must be between 1 and 600".into());
        }
        if self.refusal_audit_seconds == 0 || self.refusal_audit_seconds > 3600 {
            return Err("xua.refusal_audit_seconds must be between 1 and 3600".into());
        }
        cps_pki::idnat::parse_structure_id(&self.structure_id)
            .map_err(|e| format!("xua.structure_id: {e}"))?;
        Ok(())
    }
}

/// `xua.org_seal_registry`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OrgSealRegistryMode {
    /// Professionals named by organisation seals must be in the registry, active, with an
    /// activity in the seal's structure.
    #[default]
    Required,
    /// The registry of the network is not held here: structure binding and mode only.
    NotHeld,
}

fn default_replay_capacity() -> usize {
    4_000_000
}

fn default_cachet_label() -> String {
    "xua-cachet".into()
}
/// RSA-2048: the services verify every assertion, and an RSA verification costs a fraction of a
/// P-256 one (BENCHMARKS.md, XUA), while the seal signs once per login.
fn default_cachet_algorithm() -> String {
    "rsa2048".into()
}
fn default_cachet_org() -> String {
    "cps-trust".into()
}
fn default_cachet_structure() -> String {
    "10B0000001".into()
}
fn default_cachet_state() -> String {
    "Paris (75)".into()
}
fn default_assertion_minutes() -> u32 {
    60
}
fn default_flavour() -> String {
    "vihf".into()
}
fn default_skew() -> u32 {
    60
}
fn default_challenge() -> u32 {
    120
}
fn default_refusal_audit() -> u32 {
    60
}
fn default_homologation() -> String {
    "cps-trust".into()
}

impl Default for XuaSettings {
    fn default() -> Self {
        XuaSettings {
            key_label: default_cachet_label(),
            algorithm: default_cachet_algorithm(),
            organisation: default_cachet_org(),
            structure_id: default_cachet_structure(),
            state: default_cachet_state(),
            validity_minutes: default_assertion_minutes(),
            flavour: default_flavour(),
            audience: None,
            skew_seconds: default_skew(),
            challenge_seconds: default_challenge(),
            refusal_audit_seconds: default_refusal_audit(),
            homologation: default_homologation(),
            replay_capacity: default_replay_capacity(),
            replay_record: None,
            org_seal_registry: OrgSealRegistryMode::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_hold_and_each_value_out_of_range_is_named() {
        assert_eq!(XuaSettings::default().check(), Ok(()));
        type Change = Box<dyn Fn(&mut XuaSettings)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|x| x.algorithm = "ed25519".into()),
                "xua.algorithm",
            ),
            (Box::new(|x| x.flavour = "ihe".into()), "xua.audience"),
            (Box::new(|x| x.flavour = "saml".into()), "xua.flavour"),
            (Box::new(|x| x.validity_minutes = 0), "xua.validity_minutes"),
            (
                Box::new(|x| x.validity_minutes = 1441),
                "xua.validity_minutes",
            ),
            (Box::new(|x| x.replay_capacity = 999), "xua.replay_capacity"),
            (
                Box::new(|x| x.challenge_seconds = 601),
                "xua.challenge_seconds",
            ),
            (
                Box::new(|x| x.refusal_audit_seconds = 0),
                "xua.refusal_audit_seconds",
            ),
            (
                Box::new(|x| x.structure_id = "nope".into()),
                "xua.structure_id",
            ),
        ];
        for (change, named) in cases {
            let mut x = XuaSettings::default();
            change(&mut x);
            let e = x.check().unwrap_err();
            assert!(e.contains(named), "{e} should name {named}");
        }
        let ihe = XuaSettings {
            flavour: "ihe".into(),
            audience: Some("urn:dmp".into()),
            ..XuaSettings::default()
        };
        assert_eq!(ihe.check(), Ok(()));
    }

    #[test]
    fn the_replay_record_follows_the_store_and_memory_is_refused_on_a_shared_one() {
        use ReplayRecord::{Memory, Store};
        let with = |r| XuaSettings {
            replay_record: r,
            ..XuaSettings::default()
        };
        assert_eq!(with(None).replay_record_for(false), Ok(Memory));
        assert_eq!(with(None).replay_record_for(true), Ok(Store));
        assert_eq!(with(Some(Store)).replay_record_for(false), Ok(Store));
        assert_eq!(with(Some(Store)).replay_record_for(true), Ok(Store));
        assert_eq!(with(Some(Memory)).replay_record_for(false), Ok(Memory));
        let e = with(Some(Memory)).replay_record_for(true).unwrap_err();
        assert!(e.contains("xua.replay_record"), "{e}");
    }
}
