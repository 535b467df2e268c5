//! The HTTPS connection layer of cps-trust: who is at the other end of a connection, for every
//! request, and how long a connection lives.
//!
//! **Invariant: a request is answered for a client certificate only if that certificate, looked
//! up again in the live store for this very request, is known, unrevoked, unexpired and of a
//! profile the listener accepts; a certificate that fails closes its connection.**
//!
//! * [`identity`]: [`Identities`], the per-request check (remembered per store certificates
//!   version), and the operator bound to a certificate through an [`OperatorLookup`].
//! * [`conn`]: a connection's age and idle bounds, graceful close from a request,
//!   [`discard_then`] for refusals.
//! * [`caller`]: the checked client certificate of a request and the [`CertFingerprint`]
//!   extractor that binds data to it.
//!
//! The TLS handshake itself (the listeners' `ClientVerifier`, no resumption) is `cps-tls`.

#![forbid(unsafe_code)]

pub mod caller;
pub mod conn;
pub mod identity;
pub mod operators;

pub use caller::{Unauthenticated, client_certificate};
pub use conn::{Connection, Ending, Limits, PeerAddr, RequestGuard, discard_then, drive};
pub use identity::{
    CertFingerprint, Identities, Identity, IdentityRefusal, Operator, OperatorLookup,
    PeerCertificate,
};
