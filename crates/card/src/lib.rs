//! `cps-card`: the appliance's side of professional smartcards.
//!
//! * [`pcsc_transport`]: PC/SC through the `pcsc` crate (list readers, wait for a card,
//!   connect, transmit). The only FFI edge here, behind the [`Transport`] trait.
//! * [`piv`]: the PIV card-edge client (select, objects, certificates, the CPS identity
//!   object, PIN/PUK, management key, key generation, signatures), with command and response
//!   chaining and status words mapped to actionable [`CardError`]s.
//! * [`keys`]: card public keys (SPKI DER/PEM, signature verification with ring).
//! * [`signer`]: [`CardSigner`], the professional's `cps-sign` key (slot 9C) as a
//!   `cps_hsm::Signer`, with the PIN verified before each signature.
//!
//! Works with any PIV card: the project's simulator (`firmware-sim`) behind pcscd + vpcd, or a
//! physical card in a physical reader.
#![forbid(unsafe_code)]

pub mod error;
pub mod identity;
pub mod keys;
pub mod pcsc_transport;
pub mod piv;
pub mod signer;
pub use cps_iso7816::tlv;

pub use error::{CardError, Result};
pub use identity::CpsIdentity;
pub use keys::{KeyAlgorithm, PublicKey};
pub use pcsc_transport::{Pcsc, PcscCard, ReaderInfo};
pub use piv::{CardSummary, ManagementKey, MgmtAlgorithm, PinStatus, Piv, Slot};
pub use signer::{CardSigner, CardSignerError, SignCertificateRule};
/// The PIN holder [`CardSigner::open`] takes (zeroed when dropped).
pub use zeroize::Zeroizing;

/// Sends a raw command APDU, returns the raw response APDU (data ‖ SW1 SW2).
pub trait Transport {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>>;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>> {
        (**self).transmit(apdu)
    }
}
