//! The thin async UDP loop around [`NtpResponder`].

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{ToSocketAddrs, UdpSocket};

use crate::clock::{ClockError, ClockSource, ClockStatus};
use crate::responder::{MAX_PACKET, NtpResponder, ResponderConfig, ResponderStats, TimeSource};

/// How long a clock status read is reused before `adjtimex` is called again.
const STATUS_MAX_AGE: Duration = Duration::from_millis(250);

/// An NTP server on one UDP socket.
pub struct NtpServer<S: ClockSource, T: TimeSource> {
    socket: UdpSocket,
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
        Ok(Self {
            socket,
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

    /// Serves until a socket error that is not per-datagram (the future can also simply be
    /// dropped or the task aborted).
    pub async fn run(mut self) -> io::Result<()> {
        let mut buf = [0u8; MAX_PACKET];
        let mut out = [0u8; MAX_PACKET];
        let mut status = read_status(&self.clock);
        let mut status_read = Instant::now();
        loop {
            let (len, peer) = match self.socket.recv_from(&mut buf).await {
                Ok(r) => r,
                // ICMP errors reported on the socket, a datagram larger than the buffer, …:
                // per-datagram problems, keep serving.
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Err(e),
            };
            // Receive timestamp as close to the read as we can get in user space.
            let receive_time = self.time.now();
            let now = Instant::now();
            if now.duration_since(status_read) > STATUS_MAX_AGE {
                status = read_status(&self.clock);
                status_read = now;
            }
            // The transmit timestamp is taken by the responder as the last field it fills in,
            // right before the send below.
            let Some(response) = self.responder.respond(
                peer.ip(),
                &buf[..len],
                receive_time,
                now,
                &status,
                &mut out,
            ) else {
                continue;
            };
            if let Err(e) = self.socket.send_to(response, peer).await {
                if !is_transient(&e) {
                    return Err(e);
                }
                tracing::debug!(%peer, error = %e, "NTP response not sent");
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::NotConnected | io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
    ) && e.raw_os_error() != Some(libc::EBADF)
}
