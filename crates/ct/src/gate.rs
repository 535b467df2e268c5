//! The signing gate (IHE CT): the appliance signs certificates, CRLs, OCSP responses and
//! assertions only while its clock is trusted.
//!
//! [`SigningClock`] reads the clock status from a [`ClockSource`] (the kernel's `adjtimex`
//! by default; an operator declaration by configuration), evaluates it with the configured
//! [`TrustPolicy`], and caches the verdict for a quarter of a second. Every transition between
//! trusted and untrusted raises the operator alarm: an `error` log line and an audit record.
//! [`GatedSigner`] wraps an HSM key so that a signature cannot be made while the clock is not
//! trusted, whichever code path asks for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cps_hsm::{HsmError, KeyAlgorithm, SigFormat, SignatureAlgorithm, Signer};
use cps_store::{Store, WriteBatch, WriteOp};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::clock::{
    ClockError, ClockSource, ClockStatus, ClockTrust, FixedClock, KernelClock, TrustPolicy,
};

/// Where the clock's trust comes from (IHE CT). The appliance signs nothing while it is not
/// trusted.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimeSourceKind {
    /// The kernel's own synchronisation state (`adjtimex`): trusted when a time daemon
    /// (chronyd, ntpd-rs...) disciplines the clock and its maximum error is within tolerance.
    Kernel,
    /// The operator declares the clock synchronised, with `declared_max_error_ms`: for hosts
    /// whose clock is disciplined where the kernel cannot report it (some virtual machines and
    /// containers). Logged as a warning at every start.
    Declared,
}

/// The settings of the signing gate and the NTP server (the appliance's `[time]` section).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeSection {
    /// `kernel` (default) or `declared`.
    #[serde(default = "default_time_source")]
    pub source: TimeSourceKind,
    /// Largest clock error tolerated before signing stops, in milliseconds.
    #[serde(default = "default_max_error_ms")]
    pub max_error_ms: u64,
    /// With `source = "declared"`: the error the operator vouches for, in milliseconds.
    #[serde(default = "default_declared_max_error_ms")]
    pub declared_max_error_ms: u64,
    /// Serve NTP on `listen.ntp`.
    #[serde(default = "default_true")]
    pub serve_ntp: bool,
    /// NTP stratum advertised while the clock is trusted (16 is sent whenever it is not).
    #[serde(default = "default_ntp_stratum")]
    pub ntp_stratum: u8,
}

fn default_time_source() -> TimeSourceKind {
    TimeSourceKind::Kernel
}
fn default_max_error_ms() -> u64 {
    1000
}
fn default_declared_max_error_ms() -> u64 {
    10
}
fn default_true() -> bool {
    true
}
fn default_ntp_stratum() -> u8 {
    3
}

impl Default for TimeSection {
    fn default() -> Self {
        TimeSection {
            source: default_time_source(),
            max_error_ms: default_max_error_ms(),
            declared_max_error_ms: default_declared_max_error_ms(),
            serve_ntp: true,
            ntp_stratum: default_ntp_stratum(),
        }
    }
}

/// Runs blocking work (an HSM call, a store commit) from code that may be running on a Tokio
/// worker (a TLS handshake, a handler computing an OCSP answer, `/health` raising an alarm):
/// on a multi-threaded runtime's worker, the worker first hands its other tasks to another
/// thread (`block_in_place`), so no async task waits behind the I/O; anywhere else (a blocking
/// thread, a command without a runtime) it simply runs.
pub fn blocking_io<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A signer whose signatures run under [`blocking_io`]: for a key that is called on the runtime,
/// inside a TLS handshake (the HTTPS and syslog-TLS listeners, the audit sender's links).
pub struct OffWorker<S>(pub S);

impl<S: Signer> Signer for OffWorker<S> {
    fn label(&self) -> &str {
        self.0.label()
    }

    fn key_algorithm(&self) -> cps_hsm::KeyAlgorithm {
        self.0.key_algorithm()
    }

    fn public_key_der(&self) -> &[u8] {
        self.0.public_key_der()
    }

    fn sign(
        &self,
        alg: cps_hsm::SignatureAlgorithm,
        message: &[u8],
        format: cps_hsm::SigFormat,
    ) -> Result<Vec<u8>, cps_hsm::HsmError> {
        blocking_io(|| self.0.sign(alg, message, format))
    }
}

/// Unix seconds of a time (0 before 1970).
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The current time, Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    unix(SystemTime::now())
}

/// `2026-11-22T10:00:00Z` for Unix seconds (the number itself if out of range).
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// How long one clock reading is reused.
const MAX_AGE: Duration = Duration::from_millis(250);

const STATE_UNKNOWN: u8 = 0;
const STATE_TRUSTED: u8 = 1;
const STATE_UNTRUSTED: u8 = 2;

/// A clock source shared between the signing gate and the NTP server.
#[derive(Clone)]
pub struct SharedClock(pub Arc<dyn ClockSource>);

impl ClockSource for SharedClock {
    fn status(&self) -> Result<ClockStatus, ClockError> {
        self.0.status()
    }
}

/// What `/health` and the metrics show about the clock.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClockReport {
    /// `true` when the appliance may sign.
    pub trusted: bool,
    /// Where the status comes from: `kernel` or `declared`.
    pub source: &'static str,
    /// What the source says (absent when it could not be read).
    pub synchronized: Option<bool>,
    /// Maximum error bound, µs.
    pub max_error_us: Option<u64>,
    /// Estimated error, µs.
    pub est_error_us: Option<u64>,
    /// The tolerance, µs.
    pub tolerance_us: u64,
    /// Why the clock is not trusted (the operator alarm), when it is not.
    pub alarm: Option<String>,
}

/// The signing gate.
pub struct SigningClock {
    source: SharedClock,
    source_name: &'static str,
    policy: TrustPolicy,
    cached: Mutex<Option<(Instant, Result<ClockStatus, ClockError>)>>,
    state: AtomicU8,
    store: Option<Arc<dyn Store>>,
}

impl SigningClock {
    /// The gate the configuration asks for; transitions are audited in `store`.
    pub fn from_config(time: &TimeSection, store: Option<Arc<dyn Store>>) -> Arc<SigningClock> {
        let (source, name): (Arc<dyn ClockSource>, &'static str) = match time.source {
            TimeSourceKind::Kernel => (Arc::new(KernelClock), "kernel"),
            TimeSourceKind::Declared => {
                let err = time.declared_max_error_ms.saturating_mul(1000);
                (
                    Arc::new(FixedClock(ClockStatus::synchronized(err, err))),
                    "declared",
                )
            }
        };
        Arc::new(SigningClock::new(
            SharedClock(source),
            name,
            TrustPolicy {
                max_error_us: time.max_error_ms.saturating_mul(1000),
            },
            store,
        ))
    }

    /// A gate over any source (tests inject fakes here).
    pub fn new(
        source: SharedClock,
        source_name: &'static str,
        policy: TrustPolicy,
        store: Option<Arc<dyn Store>>,
    ) -> SigningClock {
        SigningClock {
            source,
            source_name,
            policy,
            cached: Mutex::new(None),
            state: AtomicU8::new(STATE_UNKNOWN),
            store,
        }
    }

    /// The source, to share with the NTP server.
    pub fn source(&self) -> SharedClock {
        self.source.clone()
    }

    fn read(&self) -> Result<ClockStatus, ClockError> {
        let mut cached = self.cached.lock();
        if let Some((at, status)) = cached.as_ref()
            && at.elapsed() < MAX_AGE
        {
            return status.clone();
        }
        let status = self.source.status();
        *cached = Some((Instant::now(), status.clone()));
        status
    }

    /// The current verdict, without raising the alarm (one-shot commands such as `init`).
    pub fn evaluate(&self) -> ClockTrust {
        self.policy.evaluate_read(&self.read())
    }

    /// The current verdict; raises the alarm on a transition.
    pub fn trust(&self) -> ClockTrust {
        let status = self.read();
        let trust = self.policy.evaluate_read(&status);
        let new = if trust.is_trusted() {
            STATE_TRUSTED
        } else {
            STATE_UNTRUSTED
        };
        let old = self.state.swap(new, Ordering::AcqRel);
        if old != new {
            self.alarm(&trust, old == STATE_UNKNOWN);
        }
        trust
    }

    /// `Ok` when the appliance may sign now; otherwise the operator message.
    pub fn check(&self) -> Result<(), String> {
        match self.trust() {
            ClockTrust::Trusted => Ok(()),
            ClockTrust::Untrusted { reason } => Err(reason.to_string()),
        }
    }

    /// The state for `/health` and the metrics.
    pub fn report(&self) -> ClockReport {
        let status = self.read();
        let trust = self.trust();
        let s = status.as_ref().ok();
        ClockReport {
            trusted: trust.is_trusted(),
            source: self.source_name,
            synchronized: s.map(|s| s.synchronized),
            max_error_us: s.map(|s| s.max_error_us),
            est_error_us: s.map(|s| s.est_error_us),
            tolerance_us: self.policy.max_error_us,
            alarm: match trust {
                ClockTrust::Trusted => None,
                ClockTrust::Untrusted { reason } => Some(reason.to_string()),
            },
        }
    }

    fn alarm(&self, trust: &ClockTrust, first: bool) {
        let event = match trust {
            ClockTrust::Trusted => {
                if first {
                    tracing::info!(source = self.source_name, "clock trusted: signing enabled");
                } else {
                    tracing::warn!(
                        source = self.source_name,
                        "clock trusted again: signing resumed"
                    );
                }
                cps_audit::AuditEvent::ClockTrusted {
                    source: self.source_name.to_string(),
                    message: "clock trusted: signing enabled".to_owned(),
                }
            }
            ClockTrust::Untrusted { reason } => {
                tracing::error!(source = self.source_name, alarm = %reason, "CLOCK ALARM");
                // Not eprintln!: it panics when stderr cannot be written (a full disk).
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!("cps-trust: CLOCK ALARM: {reason}\n").as_bytes(),
                );
                cps_audit::AuditEvent::ClockUntrusted {
                    source: self.source_name.to_string(),
                    message: reason.to_string(),
                }
            }
        };
        if let Some(store) = &self.store {
            let record = event.record(unix_now(), "appliance");
            // A transition may be noticed on the runtime (`/health`, an OCSP answer).
            let committed =
                blocking_io(|| store.commit(WriteBatch::new().with(WriteOp::AppendAudit(record))));
            if let Err(e) = committed {
                tracing::error!(error = %e, "cannot audit the clock transition");
            }
        }
    }
}

/// An HSM key that signs only while the clock is trusted.
pub struct GatedSigner {
    inner: Arc<dyn Signer>,
    clock: Arc<SigningClock>,
}

impl GatedSigner {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Signer>, clock: Arc<SigningClock>) -> GatedSigner {
        GatedSigner { inner, clock }
    }
}

impl Signer for GatedSigner {
    fn label(&self) -> &str {
        self.inner.label()
    }

    fn key_algorithm(&self) -> KeyAlgorithm {
        self.inner.key_algorithm()
    }

    fn public_key_der(&self) -> &[u8] {
        self.inner.public_key_der()
    }

    fn sign(
        &self,
        alg: SignatureAlgorithm,
        message: &[u8],
        format: SigFormat,
    ) -> Result<Vec<u8>, HsmError> {
        self.clock.check().map_err(HsmError::SigningRefused)?;
        // OCSP answers are signed (on a cache miss) inside their HTTP handler, on the runtime.
        blocking_io(|| self.inner.sign(alg, message, format))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A clock whose synchronisation a test flips.
    struct Toggle(AtomicBool);

    impl ClockSource for Toggle {
        fn status(&self) -> Result<ClockStatus, ClockError> {
            if self.0.load(Ordering::SeqCst) {
                Ok(ClockStatus::synchronized(2_000, 500))
            } else {
                Ok(ClockStatus::unsynchronized())
            }
        }
    }

    #[test]
    fn the_gate_follows_the_clock_and_audits_each_transition() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(cps_store::SledStore::open(dir.path()).unwrap());
        let toggle = Arc::new(Toggle(AtomicBool::new(true)));
        let gate = Arc::new(SigningClock::new(
            SharedClock(toggle.clone()),
            "test",
            TrustPolicy::default(),
            Some(store.clone()),
        ));
        let key: Arc<dyn Signer> =
            Arc::new(cps_hsm::SoftwareSigner::generate("k", KeyAlgorithm::EcP256).unwrap());
        let gated = GatedSigner::new(key, gate.clone());
        assert!(
            gated
                .sign(SignatureAlgorithm::EcdsaSha256, b"m", SigFormat::Der)
                .is_ok()
        );

        toggle.0.store(false, Ordering::SeqCst);
        *gate.cached.lock() = None;
        let err = gated
            .sign(SignatureAlgorithm::EcdsaSha256, b"m", SigFormat::Der)
            .unwrap_err();
        assert!(
            matches!(&err, HsmError::SigningRefused(m) if m.contains("not synchronised")),
            "{err}"
        );
        let report = gate.report();
        assert!(!report.trusted && report.alarm.is_some());

        toggle.0.store(true, Ordering::SeqCst);
        *gate.cached.lock() = None;
        assert!(gate.check().is_ok());
        let kinds: Vec<String> = store
            .audit_range(1, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.record.kind)
            .collect();
        assert_eq!(kinds, ["time.trusted", "time.untrusted", "time.trusted"]);
    }

    #[test]
    fn an_error_bound_above_the_tolerance_is_untrusted() {
        let gate = SigningClock::new(
            SharedClock(Arc::new(FixedClock(ClockStatus::synchronized(
                5_000_000, 10,
            )))),
            "test",
            TrustPolicy::default(),
            None,
        );
        let msg = gate.check().unwrap_err();
        assert!(msg.contains("exceeds the tolerance"), "{msg}");
    }
}
