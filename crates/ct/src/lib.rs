//! IHE Consistent Time for the appliance.
//!
//! **Invariant: no key wrapped in a [`GatedSigner`] signs while the clock is not trusted, and
//! every change of that verdict raises the operator alarm and is audited.**
//!
//! * [`clock`]: the host clock's trust — [`ClockStatus`] read from the kernel with a read-only
//!   `adjtimex(2)` behind the [`ClockSource`] trait, and the pure [`TrustPolicy`] that gates
//!   every signature ([`ClockTrust`], with the operator message).
//! * [`responder`]: the sans-IO NTP server core, built on ntpd-rs's `ntp-proto` (pinned
//!   `=1.9.0`): it answers NTPv3/v4 client requests from the host clock, advertises LI 3 /
//!   stratum 16 when the host clock is not trusted, and answers abusive sources with a
//!   Kiss-o'-Death RATE ([`ratelimit`]).
//! * [`server`]: the thin tokio UDP loop around the responder.
//! * [`gate`]: the signing gate — [`SigningClock`] (source, tolerance, alarm and audit record on
//!   every transition) and [`GatedSigner`], a key that signs only while the clock is trusted;
//!   the time helpers [`unix`], [`unix_now`], [`rfc3339`].
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod gate;
pub mod ratelimit;
pub mod responder;
pub mod server;

pub use clock::{
    ClockError, ClockSource, ClockStatus, ClockTrust, FixedClock, KernelClock, Leap, TrustPolicy,
    UntrustedReason,
};
pub use gate::{
    ClockReport, GatedSigner, OffWorker, SharedClock, SigningClock, TimeSection, TimeSourceKind,
    blocking_io, rfc3339, unix, unix_now,
};
pub use ratelimit::{RateDecision, RateLimitConfig, RateLimiter};
pub use responder::{
    NtpResponder, ResponderConfig, ResponderStats, SystemTimeSource, TimeSource, restamp_transmit,
};
pub use server::{NtpServer, StatsHandle};
