//! The cps-trust composition root: configuration, the key ceremony, and (as the services land)
//! the wiring of HSM, store, PKI and protocol cores into the running appliance.

pub mod api;
pub mod api_enrol;
pub mod api_xua;
pub mod audit;
pub mod audit_anchor;
pub mod audit_verify;
pub mod authz;
pub mod blocking;
pub mod ca;
pub mod caller;
pub mod cards;
pub mod ceremony;
pub mod clock;
pub mod config;
pub mod conn;
pub mod console;
pub mod disk;
pub mod enrolment;
pub mod error;
pub mod home;
pub mod identity;
pub mod login;
pub mod nodes;
pub mod ocsp;
pub mod operators;
pub mod refusals;
pub mod serve;
pub mod tls;
pub mod xua;

pub use clock::{rfc3339, unix_now};
pub use error::ApplianceError;
