//! The sans-IO NTP server core: bytes, source address, receive time, `now` and the clock
//! status in; response bytes (or nothing) out.
//!
//! Built on ntpd-rs's `ntp-proto`: packet parsing and serialisation (`NtpPacket`), the answer to
//! a client request (`Server::handle`, which builds `NtpPacket::timestamp_response` from a
//! `SystemSnapshot`) and the Kiss-o'-Death packet (`NtpPacket::rate_limit_response`) are
//! ntp-proto's. What is ours: mapping the host clock status to the advertised stratum / leap
//! indicator / root dispersion, and the per-source token-bucket rate limiter that decides when
//! to answer with a KoD RATE (ntp-proto's own limiter reads `Instant::now()` itself and only
//! drops; it is disabled here).

use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ntp_proto::{
    FilterAction, FilterList, KeySetProvider, NoCipher, NtpAssociationMode, NtpClock, NtpDuration,
    NtpLeapIndicator, NtpPacket, NtpTimestamp, NtpVersion, ReferenceId, Server, ServerAction,
    ServerConfig, ServerReason, ServerResponse, ServerStatHandler, SystemSnapshot, TimeSnapshot,
};

use crate::clock::{ClockStatus, Leap, TrustPolicy};
use crate::ratelimit::{RateDecision, RateLimitConfig, RateLimiter};

/// Seconds between the NTP era 0 epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Largest datagram we answer (an NTPv4 header with extension fields / MAC fits easily).
pub const MAX_PACKET: usize = 1024;

/// Converts wall-clock time to ntp-proto's NTP timestamp (era-relative, as on the wire).
fn ntp_timestamp(t: SystemTime) -> NtpTimestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = (d.as_secs() + NTP_UNIX_OFFSET) as u32; // wraps at the era boundary, as NTP does
    NtpTimestamp::from_seconds_nanos_since_ntp_era(secs, d.subsec_nanos())
}

/// Where transmit timestamps come from. The real one reads `CLOCK_REALTIME`; tests inject
/// a fixed or stepping clock.
pub trait TimeSource: Clone + Send + Sync + 'static {
    /// Current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// `SystemTime::now()` (`CLOCK_REALTIME`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemTimeSource;

impl TimeSource for SystemTimeSource {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Adapter: ntp-proto's server takes its transmit time from an `NtpClock`; it only ever calls
/// `now` (the other methods discipline a clock, which a server never does: they fail).
#[derive(Clone)]
struct TransmitClock<T>(T);

#[derive(Debug, thiserror::Error)]
#[error("the NTP server never adjusts the clock")]
struct ReadOnlyClock;

impl<T: TimeSource> NtpClock for TransmitClock<T> {
    type Error = ReadOnlyClock;
    fn now(&self) -> Result<NtpTimestamp, Self::Error> {
        Ok(ntp_timestamp(self.0.now()))
    }
    fn set_frequency(&self, _: f64) -> Result<NtpTimestamp, Self::Error> {
        Err(ReadOnlyClock)
    }
    fn get_frequency(&self) -> Result<f64, Self::Error> {
        Err(ReadOnlyClock)
    }
    fn step_clock(&self, _: NtpDuration) -> Result<NtpTimestamp, Self::Error> {
        Err(ReadOnlyClock)
    }
    fn disable_ntp_algorithm(&self) -> Result<(), Self::Error> {
        Err(ReadOnlyClock)
    }
    fn error_estimate_update(&self, _: NtpDuration, _: NtpDuration) -> Result<(), Self::Error> {
        Err(ReadOnlyClock)
    }
    fn status_update(&self, _: NtpLeapIndicator) -> Result<(), Self::Error> {
        Err(ReadOnlyClock)
    }
}

/// What the server advertises and how it limits clients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResponderConfig {
    /// Stratum advertised while the host clock is trusted (like chrony's `local stratum 8`).
    pub local_stratum: u8,
    /// Reference ID advertised while trusted (default 127.127.1.1, chrony's local reference).
    pub reference_id: [u8; 4],
    /// Beyond this error the host clock is advertised as unsynchronised (LI 3, stratum 16) —
    /// the same policy that refuses signatures.
    pub trust: TrustPolicy,
    /// Per-source rate limiting (Kiss-o'-Death RATE).
    pub rate_limit: RateLimitConfig,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        Self {
            local_stratum: 8,
            reference_id: [127, 127, 1, 1],
            trust: TrustPolicy::default(),
            rate_limit: RateLimitConfig::default(),
        }
    }
}

/// Counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponderStats {
    /// Time answers sent.
    pub answered: u64,
    /// Of which advertised as unsynchronised (LI 3, stratum 16).
    pub answered_unsynchronized: u64,
    /// Kiss-o'-Death RATE answers sent.
    pub kiss_rate: u64,
    /// Requests dropped by the rate limiter without an answer.
    pub rate_dropped: u64,
    /// Malformed, non-client-mode, unsupported-version or otherwise ignored packets.
    pub ignored: u64,
}

#[derive(Default)]
struct Outcome {
    responded: bool,
}

impl ServerStatHandler for Outcome {
    fn register(
        &mut self,
        _version: u8,
        _nts: bool,
        _reason: ServerReason,
        response: ServerResponse,
    ) {
        self.responded = response != ServerResponse::Ignore;
    }
}

/// The sans-IO NTP responder.
pub struct NtpResponder<T: TimeSource> {
    config: ResponderConfig,
    server: Server<TransmitClock<T>>,
    limiter: RateLimiter,
    advertised: Option<(bool, Leap, u64)>,
    stats: ResponderStats,
}

impl<T: TimeSource> std::fmt::Debug for NtpResponder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtpResponder")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn server_config() -> ServerConfig {
    ServerConfig {
        denylist: FilterList {
            filter: vec![],
            action: FilterAction::Ignore,
        },
        allowlist: FilterList {
            filter: vec![
                "0.0.0.0/0".parse().expect("literal"),
                "::/0".parse().expect("literal"),
            ],
            action: FilterAction::Ignore,
        },
        // ntp-proto's limiter reads Instant::now() and silently drops: ours replaces it.
        rate_limiting_cache_size: 0,
        rate_limiting_cutoff: std::time::Duration::ZERO,
        require_nts: None,
        accepted_versions: vec![NtpVersion::V3, NtpVersion::V4],
    }
}

impl<T: TimeSource> NtpResponder<T> {
    /// A responder taking transmit timestamps from `time`.
    pub fn new(config: ResponderConfig, time: T) -> Self {
        // No NTS here: the key set only exists because ntp-proto's server wants one; NTS
        // requests (cookies we never issued) fail to decrypt and get an NTS NAK.
        let keyset = KeySetProvider::new(0).get();
        let server = Server::new(
            server_config(),
            TransmitClock(time),
            SystemSnapshot::default(),
            Arc::clone(&keyset),
        );
        Self {
            config,
            server,
            limiter: RateLimiter::new(config.rate_limit),
            advertised: None,
            stats: ResponderStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ResponderConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> ResponderStats {
        self.stats
    }

    /// The rate limiter (for inspection).
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    fn advertise(&mut self, status: &ClockStatus) -> bool {
        let trusted = self.config.trust.evaluate(status).is_trusted();
        let key = (trusted, status.leap, status.max_error_us);
        if self.advertised != Some(key) {
            let mut snapshot = SystemSnapshot::default();
            let mut time = TimeSnapshot {
                precision: NtpDuration::from_exponent(-20),
                ..TimeSnapshot::default()
            };
            if trusted {
                snapshot.stratum = self.config.local_stratum;
                snapshot.reference_id =
                    ReferenceId::from_ip(IpAddr::V4(Ipv4Addr::from(self.config.reference_id)));
                time.leap_indicator = match status.leap {
                    Leap::None => NtpLeapIndicator::NoWarning,
                    Leap::Insert => NtpLeapIndicator::Leap61,
                    Leap::Delete => NtpLeapIndicator::Leap59,
                };
                // The kernel's maximum error is our root distance: advertise it as root
                // dispersion (root delay 0: we do not know the upstream path).
                let max_err = status.max_error_us as f64 * 1e-6;
                time.root_variance_base = max_err * max_err;
            } else {
                snapshot.stratum = 16;
                snapshot.reference_id = ReferenceId::NONE;
                time.leap_indicator = NtpLeapIndicator::Unsynchronized;
                time.root_variance_base = 16.0 * 16.0;
            }
            snapshot.time_snapshot = time;
            self.server.update_system(snapshot);
            self.advertised = Some(key);
        }
        trusted
    }

    /// Answers one datagram from `client` received at `receive_time`, into `out`; `now` drives
    /// the rate limiter. Returns the response bytes, or `None` when the datagram must be
    /// dropped (malformed, not a client request, unsupported version, or rate-limited beyond the
    /// Kiss-o'-Death budget). Never panics on any input.
    pub fn respond<'b>(
        &mut self,
        client: IpAddr,
        request: &[u8],
        receive_time: SystemTime,
        now: Instant,
        status: &ClockStatus,
        out: &'b mut [u8],
    ) -> Option<&'b [u8]> {
        match self.limiter.check(client, now) {
            RateDecision::Allow => {}
            RateDecision::Drop => {
                self.stats.rate_dropped += 1;
                return None;
            }
            RateDecision::Kiss => {
                let len = kiss_rate(request, out);
                match len {
                    Some(_) => self.stats.kiss_rate += 1,
                    None => self.stats.ignored += 1,
                }
                return len.map(|n| &out[..n]);
            }
        }
        let trusted = self.advertise(status);
        let mut outcome = Outcome::default();
        let len = match self.server.handle(
            client,
            ntp_timestamp(receive_time),
            request,
            out,
            &mut outcome,
        ) {
            ServerAction::Respond { message } if outcome.responded => message.len(),
            _ => {
                self.stats.ignored += 1;
                return None;
            }
        };
        self.stats.answered += 1;
        if !trusted {
            self.stats.answered_unsynchronized += 1;
        }
        Some(&out[..len])
    }

    /// [`respond`](Self::respond) into a fresh vector.
    pub fn respond_vec(
        &mut self,
        client: IpAddr,
        request: &[u8],
        receive_time: SystemTime,
        now: Instant,
        status: &ClockStatus,
    ) -> Option<Vec<u8>> {
        let mut out = [0u8; MAX_PACKET];
        self.respond(client, request, receive_time, now, status, &mut out)
            .map(<[u8]>::to_vec)
    }
}

/// Length of an NTP header without extension fields or MAC.
const HEADER_LEN: usize = 48;

/// Rewrites the transmit timestamp of a time answer produced by [`NtpResponder::respond`] to
/// `t`, for a server that sends a batch of answers at once and stamps them all right before
/// the send. Only a plain header (48 bytes, server mode, non-zero stratum) is rewritten: a
/// Kiss-o'-Death (stratum 0, transmit timestamp 0) and an answer carrying extension fields or a
/// MAC (which covers the timestamp) are left as they are. Returns whether it rewrote.
pub fn restamp_transmit(response: &mut [u8], t: SystemTime) -> bool {
    if response.len() != HEADER_LEN || response[0] & 0x7 != 4 || response[1] == 0 {
        return false;
    }
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    // Same conversion as `ntp_timestamp` (ntp-proto's `from_seconds_nanos_since_ntp_era`).
    let secs = (d.as_secs() + NTP_UNIX_OFFSET) as u32;
    let fraction = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    let bits = (u64::from(secs) << 32) + fraction;
    response[40..48].copy_from_slice(&bits.to_be_bytes());
    true
}

/// A Kiss-o'-Death RATE for a valid v3/v4 client request (ntp-proto's
/// `NtpPacket::rate_limit_response`); `None` for anything else.
fn kiss_rate(request: &[u8], out: &mut [u8]) -> Option<usize> {
    let (packet, _) = NtpPacket::deserialize(request, &NoCipher).ok()?;
    if packet.mode() != NtpAssociationMode::Client
        || !matches!(packet.version(), NtpVersion::V3 | NtpVersion::V4)
    {
        return None;
    }
    let kod = NtpPacket::rate_limit_response(packet);
    let mut cursor = Cursor::new(out);
    kod.serialize(&mut cursor, &NoCipher, None).ok()?;
    Some(cursor.position() as usize)
}
