//! Card login for cps-trust: the challenge a workstation asks for and the exact message its card
//! signs.
//!
//! **Invariant: a card signature logs in once, here, for the context it was asked for.** The
//! message the card signs is domain-separated and bound to this appliance's seal, to a nonce
//! that is consumed by its first redemption, right or wrong, to an expiry, and to the hash of
//! the login context the assertion will carry; a challenge is a MAC-protected token, so nothing
//! is stored per challenge and no number of requests can fill anything.
//!
//! Pure: time (Unix seconds) and nonces are parameters; the only key operation, deriving the
//! MAC key, goes through [`cps_hsm::MacKey`].

#![forbid(unsafe_code)]

pub mod challenge;

pub use challenge::{
    ChallengeRefusal, Challenges, LoginContext, Redeemed, SignatureRefusal, UsedNonces,
    context_sha256, signed_message, verify_card_signature,
};
