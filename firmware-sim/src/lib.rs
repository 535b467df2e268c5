//! Simulated professional smartcard: a PIV applet (`applet`) as a pure state machine with
//! atomically persisted state (`state`), and the vpcd transport that plugs it into pcscd.
#![forbid(unsafe_code)]

pub mod apdu;
pub mod applet;
pub mod crypto;
pub mod state;
pub use cps_iso7816::tlv;
pub mod vpcd;
