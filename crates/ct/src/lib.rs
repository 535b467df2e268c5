//! IHE Consistent Time for the appliance.
//!
//! * [`clock`]: the host clock's trust — [`ClockStatus`] read from the kernel with a read-only
//!   `adjtimex(2)` behind the [`ClockSource`] trait, and the pure [`TrustPolicy`] that gates
//!   every signature ([`ClockTrust`], with the operator message).
//! * [`responder`]: the sans-IO NTP server core, built on ntpd-rs's `ntp-proto` (pinned
//!   `=1.9.0`): it answers NTPv3/v4 client requests from the host clock, advertises LI 3 /
//!   stratum 16 when the host clock is not trusted, and answers abusive sources with a
//!   Kiss-o'-Death RATE ([`ratelimit`]).
//! * [`server`]: the thin tokio UDP loop around the responder.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod ratelimit;
pub mod responder;
pub mod server;

pub use clock::{
    ClockError, ClockSource, ClockStatus, ClockTrust, FixedClock, KernelClock, Leap, TrustPolicy,
    UntrustedReason,
};
pub use ratelimit::{RateDecision, RateLimitConfig, RateLimiter};
pub use responder::{
    NtpResponder, ResponderConfig, ResponderStats, SystemTimeSource, TimeSource, restamp_transmit,
};
pub use server::{NtpServer, StatsHandle};
