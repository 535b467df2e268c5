//! The cps-trust composition root: it reads the home and the configuration, opens the HSM and
//! the store, and wires the library crates into the running appliance.
//!
//! **Invariant: every key the appliance signs with is opened here, from the HSM, and reaches a
//! service only behind the clock gate** ([`clock::GatedSigner`]); the protocol and certificate
//! logic lives in the library crates, which take signers, a store and their own settings.
//!
//! The modules, by concern. They import each other without a circle, and no module imports
//! `serve` or `ceremony` (the commands at the top); `tests/layout.rs` holds both.
//!
//! * base: [`config`], [`home`] (the home's layout, opening the HSM), [`error`], [`clock`]
//!   (time, the signing gate; `cps_ct::OffWorker` runs HSM signatures off the runtime's workers);
//! * services wiring: [`operators`], [`ca`], [`ocsp`], [`xua`], [`login`], [`enrolment`],
//!   [`audit`] (the trail of `cps-trail`, whose `nodes`, `refusals`, `audit_anchor` and
//!   `audit_verify` are re-exported here);
//! * background work: [`disk`] (the card and import jobs are `cps_enrol::Jobs`);
//! * HTTPS surface (TLS itself is `cps-tls`): [`conn`], [`identity`], [`caller`], [`api`], [`api_xua`],
//!   [`api_enrol`], [`console`], [`authz`] (the one route table);
//! * commands: [`ceremony`] (`init`, `ca show`), [`serve`] (`serve`).

// Base.
/// Time and the signing gate: `cps_ct::gate` (kept at this path for the appliance's modules).
pub use cps_ct::gate as clock;
pub mod config;
pub mod error;
pub mod home;

// Services wiring.
pub mod ca;
pub mod cluster;
pub mod enrolment;
pub mod login;
pub mod ocsp;
/// Operators and their credentials (`cps-https`), at their appliance path.
pub use cps_https::operators;
pub mod dsg;
pub mod tsa;
pub mod xua;

// Background work.
pub mod audit;
pub mod disk;

// HTTPS surface.
pub mod api;
pub mod api_dsg;
pub mod api_enrol;
pub mod api_xua;
pub mod authz;
/// The HTTPS layer's caller and connection modules (`cps-https`), at their appliance paths.
pub use cps_https::{caller, conn};
pub mod console;
pub mod identity;

// Commands.
pub mod ceremony;
pub mod metrics;
pub mod serve;
pub mod store;

pub use clock::{rfc3339, unix_now};
// The trail's modules, under the paths the appliance's modules and the CLI use.
pub use cps_trail::anchor as audit_anchor;
pub use cps_trail::verify as audit_verify;
pub use cps_trail::{nodes, refusals};
pub use error::ApplianceError;
