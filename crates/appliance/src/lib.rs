//! The cps-trust composition root: configuration, the key ceremony, and (as the services land)
//! the wiring of HSM, store, PKI and protocol cores into the running appliance.

pub mod api;
pub mod ca;
pub mod ceremony;
pub mod config;
mod error;
pub mod ocsp;
pub mod operators;
pub mod serve;
pub mod tls;

pub use error::ApplianceError;
