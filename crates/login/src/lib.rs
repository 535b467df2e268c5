//! Card login for cps-trust: the challenge a workstation asks for, the exact message its card
//! signs, the login that answers it with a VIHF assertion, and the XUA service that signs and
//! validates assertions.
//!
//! **Invariant: a card signature logs in once, here, for the context it was asked for, and its
//! assertion leaves only once the records of that login are durable.** The message the card
//! signs is domain-separated and bound to this appliance's seal, to a nonce that is consumed by
//! its first redemption, right or wrong, to an expiry, and to the hash of the login context the
//! assertion will carry; a challenge is a MAC-protected token, so nothing is stored per
//! challenge and no number of requests can fill anything.
//!
//! * [`challenge`] (pure): time (Unix seconds) and nonces are parameters; the only key
//!   operation, deriving the MAC key, goes through [`cps_hsm::MacKey`].
//! * [`service`]: [`LoginService`], over the CA service ([`cps_ca::CaService`]: our CAs and
//!   the live certificate state), a [`Directory`] of professionals and cards, and a
//!   [`RefusalCounter`] for attempts that proved nothing.
//! * [`xua`]: [`XuaService`], built from the seal's signer (behind the signing gate), the CA
//!   service and the registry; its settings are [`XuaSettings`] (the `[xua]` section).
//!
//! Opening keys (the seal, the challenge secret) is the appliance's wiring.

#![forbid(unsafe_code)]

pub mod challenge;
pub mod service;
pub mod settings;
pub mod single_use;
pub mod xua;

pub use challenge::{
    ChallengeRefusal, Challenges, LoginContext, NonceRecord, Redeemed, SignatureRefusal,
    UsedNonces, context_sha256, signed_message, verify_card_signature,
};
pub use service::{
    ChallengeView, Directory, LOGIN_PROFILE, LoginRefusal, LoginResult, LoginService, LoginSubject,
    MAX_CONTEXT_FIELD, PROFESSION_OID, REFUSED_KIND, RefusalCounter, SECTEUR_OID,
};
pub use settings::{OrgSealRegistryMode, ReplayRecord, XuaSettings};
pub use single_use::{ClaimBatcher, StoreNonces, StoreReplayCache};
pub use xua::{SEAL_PROFILE, Seal, XuaError, XuaService, at_store_version};

/// Unix seconds of a time: the project's one time helper (`cps-ct`).
pub(crate) use cps_ct::unix;
