//! The host clock's trust: what the kernel says about its synchronisation (`adjtimex(2)`,
//! read-only), and the pure policy that turns it into "may we sign?".

use std::fmt;

/// Pending leap second, as announced by the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leap {
    /// No leap second pending.
    None,
    /// A second will be inserted at the end of the day (the last minute has 61 s).
    Insert,
    /// A second will be deleted at the end of the day (the last minute has 59 s).
    Delete,
}

/// The host clock's synchronisation state, as read from the kernel (or injected by a test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClockStatus {
    /// `false` when the kernel reports `STA_UNSYNC` or `adjtimex` returns `TIME_ERROR`.
    pub synchronized: bool,
    /// Pending leap second.
    pub leap: Leap,
    /// The kernel's maximum error bound (`timex.maxerror`), in microseconds.
    pub max_error_us: u64,
    /// The kernel's estimated error (`timex.esterror`), in microseconds.
    pub est_error_us: u64,
}

impl ClockStatus {
    /// A synchronised clock with the given error bounds (for fakes and tests).
    pub fn synchronized(max_error_us: u64, est_error_us: u64) -> Self {
        Self {
            synchronized: true,
            leap: Leap::None,
            max_error_us,
            est_error_us,
        }
    }

    /// An unsynchronised clock (what the kernel reports when no time daemon disciplines it).
    pub fn unsynchronized() -> Self {
        Self {
            synchronized: false,
            leap: Leap::None,
            // The kernel's ceiling for maxerror (NTP_PHASE_LIMIT): 16 s.
            max_error_us: 16_000_000,
            est_error_us: 16_000_000,
        }
    }
}

/// The host clock status could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    /// `adjtimex(2)` failed (errno).
    #[error("adjtimex(2) failed: {0}")]
    Adjtimex(String),
}

/// Where the clock status comes from: the kernel in production, a fake in tests.
pub trait ClockSource: Send + Sync + 'static {
    /// Reads the current status. Must not change the clock.
    fn status(&self) -> Result<ClockStatus, ClockError>;
}

/// The kernel clock (`CLOCK_REALTIME`), read with `adjtimex(2)` in read-only mode (`modes = 0`,
/// needs no privilege).
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelClock;

impl ClockSource for KernelClock {
    fn status(&self) -> Result<ClockStatus, ClockError> {
        let (state, tx) = read_adjtimex().map_err(|e| ClockError::Adjtimex(e.to_string()))?;
        let unsync = tx.status & libc::STA_UNSYNC != 0 || state == libc::TIME_ERROR;
        let leap = match state {
            libc::TIME_INS => Leap::Insert,
            libc::TIME_DEL => Leap::Delete,
            _ if tx.status & libc::STA_INS != 0 => Leap::Insert,
            _ if tx.status & libc::STA_DEL != 0 => Leap::Delete,
            _ => Leap::None,
        };
        Ok(ClockStatus {
            synchronized: !unsync,
            leap,
            max_error_us: u64::try_from(tx.maxerror).unwrap_or(u64::MAX),
            est_error_us: u64::try_from(tx.esterror).unwrap_or(u64::MAX),
        })
    }
}

/// One of the crate's two `unsafe` functions (the other is `server::sendmmsg`): a read-only
/// `adjtimex(2)` (`modes = 0` changes nothing).
#[allow(unsafe_code)]
fn read_adjtimex() -> std::io::Result<(libc::c_int, libc::timex)> {
    // SAFETY: `timex` is plain old data, all-zero is a valid value (modes = 0: read-only);
    // the pointer is valid and exclusive for the duration of the call.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((state, tx))
}

/// A fixed status, for tests and for operators who want to declare a clock trusted by
/// configuration (never the default).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub ClockStatus);

impl ClockSource for FixedClock {
    fn status(&self) -> Result<ClockStatus, ClockError> {
        Ok(self.0)
    }
}

/// How much clock error the appliance tolerates before it refuses to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustPolicy {
    /// Largest acceptable kernel maximum error, in microseconds.
    pub max_error_us: u64,
}

impl Default for TrustPolicy {
    /// 1 s: the IHE CT alarm threshold.
    fn default() -> Self {
        Self {
            max_error_us: 1_000_000,
        }
    }
}

/// Whether the clock may be used to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockTrust {
    /// Synchronised, within tolerance.
    Trusted,
    /// Not usable; `reason` says why, for the operator.
    Untrusted {
        /// Why the clock is not trusted.
        reason: UntrustedReason,
    },
}

impl ClockTrust {
    /// `true` for [`ClockTrust::Trusted`].
    pub fn is_trusted(&self) -> bool {
        matches!(self, Self::Trusted)
    }
}

/// Why the clock is not trusted. `Display` is the operator message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UntrustedReason {
    /// The kernel says the clock is not synchronised.
    NotSynchronized,
    /// Synchronised, but the kernel's maximum error exceeds the tolerance.
    ErrorTooLarge {
        /// The kernel's maximum error, µs.
        max_error_us: u64,
        /// The configured tolerance, µs.
        tolerance_us: u64,
    },
    /// The status could not be read at all.
    Unreadable(ClockError),
}

impl fmt::Display for UntrustedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotSynchronized => {
                f.write_str("host clock not synchronised (adjtimex STA_UNSYNC): signing refused")
            }
            Self::ErrorTooLarge {
                max_error_us,
                tolerance_us,
            } => write!(
                f,
                "host clock maximum error {max_error_us} µs exceeds the tolerance of \
                 {tolerance_us} µs: signing refused"
            ),
            Self::Unreadable(e) => {
                write!(f, "host clock status unreadable ({e}): signing refused")
            }
        }
    }
}

impl TrustPolicy {
    /// Pure decision on a status.
    pub fn evaluate(&self, status: &ClockStatus) -> ClockTrust {
        if !status.synchronized {
            return ClockTrust::Untrusted {
                reason: UntrustedReason::NotSynchronized,
            };
        }
        if status.max_error_us > self.max_error_us {
            return ClockTrust::Untrusted {
                reason: UntrustedReason::ErrorTooLarge {
                    max_error_us: status.max_error_us,
                    tolerance_us: self.max_error_us,
                },
            };
        }
        ClockTrust::Trusted
    }

    /// Decision on a read attempt: an unreadable status is untrusted (fail closed).
    pub fn evaluate_read(&self, status: &Result<ClockStatus, ClockError>) -> ClockTrust {
        match status {
            Ok(s) => self.evaluate(s),
            Err(e) => ClockTrust::Untrusted {
                reason: UntrustedReason::Unreadable(e.clone()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        let p = TrustPolicy { max_error_us: 500 };
        assert!(p.evaluate(&ClockStatus::synchronized(100, 10)).is_trusted());
        assert_eq!(
            p.evaluate(&ClockStatus::unsynchronized()),
            ClockTrust::Untrusted {
                reason: UntrustedReason::NotSynchronized
            }
        );
        let ClockTrust::Untrusted { reason } = p.evaluate(&ClockStatus::synchronized(501, 10))
        else {
            panic!("expected untrusted")
        };
        assert!(
            reason
                .to_string()
                .contains("501 µs exceeds the tolerance of 500 µs")
        );
        let t = p.evaluate_read(&Err(ClockError::Adjtimex("EPERM".into())));
        assert!(!t.is_trusted());
    }

    #[test]
    fn operator_message() {
        assert_eq!(
            UntrustedReason::NotSynchronized.to_string(),
            "host clock not synchronised (adjtimex STA_UNSYNC): signing refused"
        );
    }

    #[test]
    fn kernel_clock_reads_without_privilege() {
        // Whatever the host's state (a container is often unsynchronised), reading must work
        // and be consistent with the policy.
        let s = KernelClock.status().expect("adjtimex read-only");
        let t = TrustPolicy::default().evaluate(&s);
        if !s.synchronized {
            assert!(!t.is_trusted());
        }
        eprintln!("host clock: {s:?} -> {t:?}");
    }
}
