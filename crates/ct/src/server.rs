//! The thin async UDP loop around [`NtpResponder`].
//!
//! Datagrams are read in batches (`recvmmsg`, and GRO when a client sends with GSO) through
//! `quinn-udp`'s safe API: one system call for up to 32 requests. The receive timestamp is taken
//! right after the read returns. The answers to a batch are sent together with one `sendmmsg(2)`
//! (up to [`BATCH_SIZE`] answers a system call); their transmit timestamps are rewritten with one
//! clock read right before that call, so the transmit timestamp stays the last field filled in.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use quinn_udp::{BATCH_SIZE, RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::net::{ToSocketAddrs, UdpSocket};

use crate::clock::{ClockError, ClockSource, ClockStatus};
use crate::responder::{
    MAX_PACKET, NtpResponder, ResponderConfig, ResponderStats, TimeSource, restamp_transmit,
};

/// How long a clock status read is reused before `adjtimex` is called again.
const STATUS_MAX_AGE: Duration = Duration::from_millis(250);

/// Receive buffer per batch slot: large enough for a GRO-coalesced run of datagrams.
const SLOT: usize = 64 * 1024;

/// Answers sent with one `sendmmsg`: a received batch (more when GRO coalesced datagrams, which
/// then leave in several calls).
const SEND_BATCH: usize = BATCH_SIZE;

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
        // Answer `i` of a batch is built in `out[i * MAX_PACKET..]`; `pending` holds its
        // destination and length.
        let mut out = vec![0u8; MAX_PACKET * SEND_BATCH];
        let mut pending: Vec<(SocketAddr, usize)> = Vec::with_capacity(SEND_BATCH);
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
                    let at = pending.len() * MAX_PACKET;
                    let Some(response) = responder.respond(
                        m.addr.ip(),
                        request,
                        receive_time,
                        now,
                        &status,
                        &mut out[at..at + MAX_PACKET],
                    ) else {
                        continue;
                    };
                    pending.push((m.addr, response.len()));
                    if pending.len() == SEND_BATCH {
                        send_batch(&socket, &time, &mut out, &pending).await?;
                        pending.clear();
                    }
                }
            }
            if !pending.is_empty() {
                send_batch(&socket, &time, &mut out, &pending).await?;
                pending.clear();
            }
            shared_stats.set(responder.stats());
        }
    }
}

/// Sends the answers `pending` (answer `i` in `out[i * MAX_PACKET..]`) with as few `sendmmsg`
/// calls as the socket allows. The transmit timestamps are set right before the call (again after
/// waiting for the socket to become writable). An error on one datagram that is not a socket
/// error drops that answer only; the rest of the batch is still sent.
async fn send_batch(
    socket: &UdpSocket,
    time: &impl TimeSource,
    out: &mut [u8],
    pending: &[(SocketAddr, usize)],
) -> io::Result<()> {
    let mut start = 0;
    let mut stamp = true;
    while start < pending.len() {
        if stamp {
            let t = time.now();
            for (i, &(_, len)) in pending.iter().enumerate().skip(start) {
                restamp_transmit(&mut out[i * MAX_PACKET..i * MAX_PACKET + len], t);
            }
            stamp = false;
        }
        let rest = &pending[start..];
        let packets = &out[start * MAX_PACKET..];
        match socket.try_io(Interest::WRITABLE, || {
            sendmmsg(socket.as_fd(), packets, rest)
        }) {
            // The kernel sends at least one datagram when it returns success.
            Ok(sent) => start += sent.max(1),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                socket.writable().await?;
                stamp = true;
            }
            // The error belongs to the first datagram of the call (a later one ends the call
            // early with a short count instead).
            Err(e) if is_transient(&e) => {
                tracing::debug!(peer = %rest[0].0, error = %e, "NTP response not sent");
                start += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Raw `sockaddr_in` / `sockaddr_in6` for a destination.
enum RawAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl From<SocketAddr> for RawAddr {
    fn from(addr: SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(a) => Self::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => Self::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            }),
        }
    }
}

/// The crate's second `unsafe`: one `sendmmsg(2)` carrying `pending[i]` (destination, length)
/// from `packets[i * MAX_PACKET..]`, for at most [`SEND_BATCH`] answers. Returns how many
/// datagrams the kernel sent (≥ 1 on success). `nix`'s wrapper is not used: reading its result
/// (the sent count) goes through uninitialised address storage.
#[allow(unsafe_code)]
fn sendmmsg(
    fd: BorrowedFd<'_>,
    packets: &[u8],
    pending: &[(SocketAddr, usize)],
) -> io::Result<usize> {
    let n = pending.len().min(SEND_BATCH);
    if n == 0 {
        return Ok(0);
    }
    let addrs: [Option<RawAddr>; SEND_BATCH] =
        std::array::from_fn(|i| pending.get(i).map(|&(a, _)| RawAddr::from(a)));
    // Bounds-checked slices: every iovec points into `packets`.
    let mut iovs: [libc::iovec; SEND_BATCH] = std::array::from_fn(|_| libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    });
    for (i, &(_, len)) in pending.iter().take(n).enumerate() {
        let data = &packets[i * MAX_PACKET..][..len.min(MAX_PACKET)];
        iovs[i] = libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
    }
    // SAFETY: `mmsghdr` is plain old data and all-zero is a valid value (no name, no iovec,
    // no control data). Every pointer stored below refers to `addrs`, `iovs` or `packets`,
    // which outlive the call; `msg_namelen` is the size of the pointed-to address and
    // `msg_iovlen` is 1 (one iovec each). The kernel only reads these buffers
    // (`sendmmsg` writes `msg_len` of the headers, which are ours and exclusive), and
    // `n <= SEND_BATCH` headers are passed.
    let mut hdrs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
    let iov_base = iovs.as_mut_ptr();
    for (i, hdr) in hdrs.iter_mut().take(n).enumerate() {
        let (name, namelen): (*const libc::c_void, usize) = match &addrs[i] {
            Some(RawAddr::V4(a)) => ((a as *const libc::sockaddr_in).cast(), size_of_val(a)),
            Some(RawAddr::V6(a)) => ((a as *const libc::sockaddr_in6).cast(), size_of_val(a)),
            None => (std::ptr::null(), 0),
        };
        hdr.msg_hdr.msg_name = name.cast_mut();
        hdr.msg_hdr.msg_namelen = namelen as libc::socklen_t;
        hdr.msg_hdr.msg_iov = iov_base.wrapping_add(i);
        hdr.msg_hdr.msg_iovlen = 1;
    }
    let sent = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

fn is_transient(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::NotConnected | io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
    ) && e.raw_os_error() != Some(libc::EBADF)
}
