//! The thin async UDP loop around [`NtpResponder`].
//!
//! Datagrams are read in batches (`recvmmsg`, and GRO when a client sends with GSO) through
//! `quinn-udp`'s safe API: one system call for up to 32 requests. The receive timestamp is taken
//! right after the read returns; each answer's transmit timestamp is the last field the responder
//! fills in, right before its send.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quinn_udp::{BATCH_SIZE, RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::net::{ToSocketAddrs, UdpSocket};

use crate::clock::{ClockError, ClockSource, ClockStatus};
use crate::responder::{MAX_PACKET, NtpResponder, ResponderConfig, ResponderStats, TimeSource};

/// How long a clock status read is reused before `adjtimex` is called again.
const STATUS_MAX_AGE: Duration = Duration::from_millis(250);

/// Receive buffer per batch slot: large enough for a GRO-coalesced run of datagrams.
const SLOT: usize = 64 * 1024;

/// An NTP server on one UDP socket.
pub struct NtpServer<S: ClockSource, T: TimeSource> {
    shared_stats: StatsHandle,
    socket: UdpSocket,
    state: UdpSocketState,
    responder: NtpResponder<T>,
    clock: S,
    time: T,
}

impl<S: ClockSource, T: TimeSource> std::fmt::Debug for NtpServer<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtpServer")
            .field("socket", &self.socket)
            .field("responder", &self.responder)
            .finish_non_exhaustive()
    }
}

/// The counters of a running server, readable from other tasks (updated after every batch).
#[derive(Debug, Clone, Default)]
pub struct StatsHandle(std::sync::Arc<std::sync::Mutex<ResponderStats>>);

impl StatsHandle {
    /// The counters as of the last batch served.
    pub fn get(&self) -> ResponderStats {
        self.0.lock().map(|s| *s).unwrap_or_default()
    }

    fn set(&self, stats: ResponderStats) {
        if let Ok(mut s) = self.0.lock() {
            *s = stats;
        }
    }
}

/// Fail closed: an unreadable clock status is advertised as unsynchronised.
fn read_status(clock: &impl ClockSource) -> ClockStatus {
    clock.status().unwrap_or_else(|e: ClockError| {
        tracing::warn!(error = %e, "cannot read the host clock status: answering as unsynchronised");
        ClockStatus::unsynchronized()
    })
}

impl<S: ClockSource, T: TimeSource> NtpServer<S, T> {
    /// Binds the UDP socket (port 123 in production, an unprivileged port in development).
    pub async fn bind(
        addr: impl ToSocketAddrs,
        config: ResponderConfig,
        clock: S,
        time: T,
    ) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        let state = UdpSocketState::new((&socket).into())?;
        Ok(Self {
            shared_stats: StatsHandle::default(),
            socket,
            state,
            responder: NtpResponder::new(config, time.clone()),
            clock,
            time,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Counters so far.
    pub fn stats(&self) -> ResponderStats {
        self.responder.stats()
    }

    /// A handle on the counters that stays valid while [`NtpServer::run`] serves.
    pub fn stats_handle(&self) -> StatsHandle {
        self.shared_stats.clone()
    }

    /// Serves until a socket error that is not per-datagram (the future can also simply be
    /// dropped or its task aborted).
    pub async fn run(self) -> io::Result<()> {
        let Self {
            shared_stats,
            socket,
            state,
            mut responder,
            clock,
            time,
        } = self;
        let mut bufs = vec![0u8; SLOT * BATCH_SIZE];
        let mut meta = [RecvMeta::default(); BATCH_SIZE];
        let mut out = [0u8; MAX_PACKET];
        let mut status = read_status(&clock);
        let mut status_read = Instant::now();
        loop {
            socket.readable().await?;
            let read = {
                let mut iovs: Vec<IoSliceMut<'_>> =
                    bufs.chunks_mut(SLOT).map(IoSliceMut::new).collect();
                socket.try_io(Interest::READABLE, || {
                    state.recv((&socket).into(), &mut iovs, &mut meta)
                })
            };
            // Receive timestamp as close to the read as we can get in user space.
            let receive_time = time.now();
            let now = Instant::now();
            let count = match read {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // ICMP errors reported on the socket, truncation, …: per-datagram, keep serving.
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Err(e),
            };
            if now.duration_since(status_read) > STATUS_MAX_AGE {
                status = read_status(&clock);
                status_read = now;
            }
            for (slot, m) in bufs.chunks(SLOT).zip(&meta).take(count) {
                let data = &slot[..m.len.min(SLOT)];
                for request in data.chunks(m.stride.max(1)) {
                    let Some(response) = responder.respond(
                        m.addr.ip(),
                        request,
                        receive_time,
                        now,
                        &status,
                        &mut out,
                    ) else {
                        continue;
                    };
                    let sent = match socket.try_send_to(response, m.addr) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            socket.send_to(response, m.addr).await
                        }
                        r => r,
                    };
                    if let Err(e) = sent {
                        if !is_transient(&e) {
                            return Err(e);
                        }
                        tracing::debug!(peer = %m.addr, error = %e, "NTP response not sent");
                    }
                }
            }
            shared_stats.set(responder.stats());
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::NotConnected | io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
    ) && e.raw_os_error() != Some(libc::EBADF)
}
