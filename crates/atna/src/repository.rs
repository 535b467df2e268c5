//! The audit record repository's listeners: syslog over TLS (RFC 5425) with node
//! authentication, and an optional syslog over UDP input (RFC 5426, off unless configured).
//!
//! The caller builds the `rustls::ServerConfig`, including the client-certificate verifier that
//! checks the chain to our CA and the live revocation state; a connection whose handshake fails
//! is refused by rustls. Then the client must have presented a certificate, and the
//! [`NodeAuthorizer`] must accept it as a registered node (an allowlist: being issued by our CA
//! is not enough). Refusals are logged with their reason and reported to
//! [`NodeAuthorizer::refused`] (so the appliance can aggregate and audit them; it is called on
//! the runtime, so it must not block), and the connection is closed. The authorizer itself runs
//! on a blocking thread.
//!
//! An accepted node stays accepted only while the authorizer says so: every open connection
//! asks again at least every [`RepositoryConfig::reauthorize_every`], and at once whenever
//! [`RepositoryConfig::reauthorize_on`] changes (the caller bumps it when a certificate is
//! revoked or a node removed). A connection whose node is no longer accepted stops reading and
//! is closed.
//!
//! Each accepted connection reads octet-counted frames, parses each message (RFC 5424, then
//! DICOM XML; unparseable messages are stored too, flagged) and appends them to the
//! [`AuditLog`] in batches; reading runs at most [`MAX_PENDING`] bytes ahead of the batch being
//! made durable. While [`RepositoryConfig::writes_paused`] holds a reason (a full disk),
//! connections neither read nor append: peers are held back by TCP flow control and resume when
//! it clears. A batch the log refuses is kept and retried (the log recovers from a failed
//! write); only after [`MAX_APPEND_FAILURES`] failures in a row with writes not paused is the
//! connection closed. A framing error, an oversized frame or the idle timeout closes it too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use crate::framing::FrameDecoder;
use crate::log::AuditLog;
use crate::log::record::{NewRecord, NodeIdentity, Transport};
use crate::parse::XmlLimits;

/// Decides whether a TLS client is a registered node.
pub trait NodeAuthorizer: Send + Sync + 'static {
    /// `chain` is the client's certificate chain, end-entity first, already verified by the
    /// `ServerConfig`'s client verifier; `node` its subject and fingerprint. `Err` carries the
    /// reason for the refusal.
    fn authorize(&self, chain: &[CertificateDer<'_>], node: &NodeIdentity) -> Result<(), String>;

    /// Called for every refused connection (failed handshake, no certificate, not a registered
    /// node), with what is known of the client.
    fn refused(&self, peer: SocketAddr, node: Option<&NodeIdentity>, reason: &str) {
        let _ = (peer, node, reason);
    }
}

/// Listener configuration.
#[derive(Debug, Clone)]
pub struct RepositoryConfig {
    /// Syslog-TLS address (port 6514 in production; port 0 picks a free one).
    pub tls_addr: SocketAddr,
    /// Syslog-UDP address; `None` (the default) disables the UDP input.
    pub udp_addr: Option<SocketAddr>,
    /// Most simultaneous TLS connections; more are closed at once.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Largest frame (SYSLOG-MSG octets); at least 32 768.
    pub max_frame: usize,
    /// Limits of the XML parser.
    pub xml_limits: XmlLimits,
    /// Every open connection's node is authorized again at least this often.
    pub reauthorize_every: Duration,
    /// Every open connection's node is authorized again whenever this changes.
    pub reauthorize_on: Option<tokio::sync::watch::Receiver<u64>>,
    /// While this holds a reason, nothing is read or appended (see the module documentation).
    pub writes_paused: Option<tokio::sync::watch::Receiver<Option<String>>>,
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        RepositoryConfig {
            tls_addr: SocketAddr::from(([0, 0, 0, 0], 6514)),
            udp_addr: None,
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_frame: 256 * 1024,
            xml_limits: XmlLimits::default(),
            reauthorize_every: Duration::from_secs(60),
            reauthorize_on: None,
            writes_paused: None,
        }
    }
}

/// Counters of a running repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryStats {
    /// TLS connections accepted as registered nodes.
    pub accepted: u64,
    /// Connections refused (handshake failure, no certificate, not a node, too many).
    pub refused: u64,
    /// Messages stored (TLS and UDP).
    pub messages: u64,
    /// Of which stored unparsed.
    pub parse_errors: u64,
    /// Connections closed for a framing error.
    pub frame_errors: u64,
    /// Messages received over UDP.
    pub udp_messages: u64,
    /// Open connections closed because their node was no longer authorized.
    pub deauthorized: u64,
    /// UDP messages dropped because the log could not take them (UDP cannot hold peers back).
    pub udp_dropped: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    messages: AtomicU64,
    parse_errors: AtomicU64,
    frame_errors: AtomicU64,
    udp_messages: AtomicU64,
    deauthorized: AtomicU64,
    udp_dropped: AtomicU64,
}

/// A running repository listener.
pub struct Repository {
    local_addr: SocketAddr,
    udp_local_addr: Option<SocketAddr>,
    counters: Arc<Counters>,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Ctx {
    acceptor: tokio_rustls::TlsAcceptor,
    authorizer: Arc<dyn NodeAuthorizer>,
    log: AuditLog,
    config: RepositoryConfig,
    counters: Arc<Counters>,
    limit: Arc<tokio::sync::Semaphore>,
}

fn now_micros() -> i64 {
    crate::time_fmt::unix_micros(time::OffsetDateTime::now_utc())
}

impl Repository {
    /// Bind the listeners and start serving on the current tokio runtime.
    pub async fn start(
        config: RepositoryConfig,
        tls: Arc<rustls::ServerConfig>,
        authorizer: Arc<dyn NodeAuthorizer>,
        log: AuditLog,
    ) -> std::io::Result<Repository> {
        let listener = TcpListener::bind(config.tls_addr).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let counters = Arc::new(Counters::default());
        let mut tasks = Vec::new();
        let mut udp_local_addr = None;
        if let Some(addr) = config.udp_addr {
            let sock = UdpSocket::bind(addr).await?;
            udp_local_addr = Some(sock.local_addr()?);
            tasks.push(tokio::spawn(udp_loop(
                sock,
                log.clone(),
                config.xml_limits,
                counters.clone(),
                config.writes_paused.clone(),
                shutdown.subscribe(),
            )));
            tracing::info!(address = %udp_local_addr.unwrap_or(addr), "syslog UDP input enabled (no node authentication)");
        }
        let ctx = Arc::new(Ctx {
            acceptor: tokio_rustls::TlsAcceptor::from(tls),
            authorizer,
            log,
            limit: Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1))),
            config,
            counters: counters.clone(),
        });
        tasks.push(tokio::spawn(accept_loop(
            listener,
            ctx,
            shutdown.subscribe(),
        )));
        Ok(Repository {
            local_addr,
            udp_local_addr,
            counters,
            shutdown,
            tasks,
        })
    }

    /// The bound TLS address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound UDP address, when the UDP input is on.
    pub fn udp_local_addr(&self) -> Option<SocketAddr> {
        self.udp_local_addr
    }

    /// Current counters.
    pub fn stats(&self) -> RepositoryStats {
        let c = &self.counters;
        RepositoryStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            messages: c.messages.load(Ordering::Relaxed),
            parse_errors: c.parse_errors.load(Ordering::Relaxed),
            frame_errors: c.frame_errors.load(Ordering::Relaxed),
            udp_messages: c.udp_messages.load(Ordering::Relaxed),
            deauthorized: c.deauthorized.load(Ordering::Relaxed),
            udp_dropped: c.udp_dropped.load(Ordering::Relaxed),
        }
    }

    /// Stop accepting, close every connection (after its current batch is durable).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Ctx>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "syslog-TLS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        while conns.try_join_next().is_some() {}
        let Ok(permit) = ctx.limit.clone().try_acquire_owned() else {
            ctx.counters.refused.fetch_add(1, Ordering::Relaxed);
            let reason = format!("connection limit of {} reached", ctx.config.max_connections);
            tracing::debug!(%peer, %reason, "syslog-TLS connection refused");
            ctx.authorizer.refused(peer, None, &reason);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let ctx = ctx.clone();
        let sd = shutdown.clone();
        conns.spawn(async move {
            handle(tcp, peer, &ctx, sd).await;
            drop(permit);
        });
    }
    conns.shutdown().await;
}

fn refuse(ctx: &Ctx, peer: SocketAddr, node: Option<&NodeIdentity>, reason: &str) {
    ctx.counters.refused.fetch_add(1, Ordering::Relaxed);
    // Debug only: peers choose how often this happens (the authorizer aggregates refusals).
    tracing::debug!(%peer, node = node.map(|n| n.subject.as_str()).unwrap_or(""), %reason, "syslog-TLS client refused");
    ctx.authorizer.refused(peer, node, reason);
}

/// Asks the authorizer on a blocking thread (it may read the store).
async fn authorize(
    authorizer: &Arc<dyn NodeAuthorizer>,
    chain: &Arc<Vec<CertificateDer<'static>>>,
    node: &NodeIdentity,
) -> Result<(), String> {
    let (a, c, n) = (authorizer.clone(), chain.clone(), node.clone());
    tokio::task::spawn_blocking(move || a.authorize(&c, &n))
        .await
        .unwrap_or_else(|e| Err(format!("authorization task failed: {e}")))
}

/// The reason writes are paused, if they are.
fn paused(rx: &Option<tokio::sync::watch::Receiver<Option<String>>>) -> Option<String> {
    rx.as_ref().and_then(|r| r.borrow().clone())
}

/// Resolves when `rx` changes (never when there is none, or its sender is gone).
async fn changed<T>(rx: &mut Option<tokio::sync::watch::Receiver<T>>) {
    let alive = match rx {
        Some(r) => r.changed().await.is_ok(),
        None => false,
    };
    if !alive {
        std::future::pending::<()>().await;
    }
}

async fn handle(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    ctx: &Ctx,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tls =
        match tokio::time::timeout(ctx.config.handshake_timeout, ctx.acceptor.accept(tcp)).await {
            Err(_) => return refuse(ctx, peer, None, "TLS handshake timed out"),
            Ok(Err(e)) => return refuse(ctx, peer, None, &format!("TLS handshake failed: {e}")),
            Ok(Ok(s)) => s,
        };
    let chain: Arc<Vec<CertificateDer<'static>>> = Arc::new(
        tls.get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
            .unwrap_or_default(),
    );
    let Some(ee) = chain.first() else {
        refuse(ctx, peer, None, "no client certificate");
        let _ = tls.shutdown().await;
        return;
    };
    let node = NodeIdentity::from_certificate(ee.as_ref());
    // Subscribe before the first check: a change from here on triggers another.
    let mut reauth_rx = ctx.config.reauthorize_on.clone();
    if let Some(r) = &mut reauth_rx {
        r.mark_unchanged();
    }
    if let Err(reason) = authorize(&ctx.authorizer, &chain, &node).await {
        refuse(
            ctx,
            peer,
            Some(&node),
            &format!("not a registered node: {reason}"),
        );
        let _ = tls.shutdown().await;
        return;
    }
    ctx.counters.accepted.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, node = %node.subject, "syslog-TLS node connected");
    let peer_s = peer.to_string();
    let mut dec = FrameDecoder::new(ctx.config.max_frame);
    let mut buf = vec![0u8; 64 * 1024];
    let mut paused_rx = ctx.config.writes_paused.clone();
    let mut recheck = tokio::time::interval_at(
        tokio::time::Instant::now() + ctx.config.reauthorize_every,
        ctx.config.reauthorize_every.max(Duration::from_millis(10)),
    );
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Reading and parsing go on while the previous batch is being made durable (at most one
    // batch in flight per connection, and at most MAX_PENDING bytes parsed ahead of it).
    let mut pending: Vec<NewRecord> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut inflight: Option<(Pending, Vec<NewRecord>, usize)> = None;
    let mut reading = true;
    let mut failures = 0u32;
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let pause = paused(&paused_rx);
        let retry_due = retry_at.is_none_or(|t| t <= tokio::time::Instant::now());
        if inflight.is_none() && !pending.is_empty() && pause.is_none() && retry_due {
            retry_at = None;
            let batch = std::mem::take(&mut pending);
            let bytes = std::mem::take(&mut pending_bytes);
            match ctx.log.submit(batch.clone()) {
                Ok(rx) => inflight = Some((rx, batch, bytes)),
                Err(e) => {
                    tracing::error!(%peer, error = %e, records = batch.len(), "audit log gone; closing the connection");
                    break;
                }
            }
        }
        if inflight.is_none() && !reading && (pending.is_empty() || pause.is_some()) {
            if !pending.is_empty() {
                tracing::error!(%peer, node = %node.subject, records = pending.len(), reason = pause.as_deref().unwrap_or(""), "closing a syslog-TLS connection with records not yet written");
            }
            break;
        }
        let can_read = reading && pending_bytes < MAX_PENDING && pause.is_none();
        tokio::select! {
            r = async { (&mut inflight.as_mut().expect("guarded").0).await }, if inflight.is_some() => {
                let (_, batch, bytes) = inflight.take().expect("guarded");
                match r {
                    Ok(Ok(_)) => {
                        failures = 0;
                        let errors = batch.iter().filter(|r| r.index.parse_error).count() as u64;
                        ctx.counters.messages.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        ctx.counters.parse_errors.fetch_add(errors, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => {
                        // Nothing of the batch was written: keep it, ahead of what came since,
                        // and try again (the log takes the next batch once the disk does).
                        if paused(&paused_rx).is_none() {
                            failures += 1;
                        }
                        tracing::error!(%peer, error = %e, records = batch.len(), failures, "audit log append failed; the batch is kept and retried");
                        if failures >= MAX_APPEND_FAILURES {
                            tracing::error!(%peer, node = %node.subject, records = batch.len() + pending.len(), "closing the syslog-TLS connection: the audit log keeps refusing its records");
                            break;
                        }
                        let mut again = batch;
                        again.append(&mut pending);
                        pending = again;
                        pending_bytes += bytes;
                        retry_at = Some(tokio::time::Instant::now() + RETRY_AFTER);
                    }
                    Err(_) => {
                        tracing::error!(%peer, "audit log writer gone; closing the connection");
                        break;
                    }
                }
            }
            _ = async { tokio::time::sleep_until(retry_at.expect("guarded")).await }, if retry_at.is_some() && inflight.is_none() => {}
            _ = changed(&mut paused_rx) => {}
            _ = changed(&mut reauth_rx), if reading => {
                recheck.reset();
                if !still_authorized(ctx, &chain, &node, peer).await {
                    reading = false;
                }
            }
            _ = recheck.tick(), if reading => {
                if !still_authorized(ctx, &chain, &node, peer).await {
                    reading = false;
                }
            }
            r = tokio::time::timeout(ctx.config.idle_timeout, tls.read(&mut buf)), if can_read => {
                let n = match r {
                    Err(_) => {
                        tracing::info!(%peer, node = %node.subject, "closing idle syslog-TLS connection");
                        reading = false;
                        continue;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, node = %node.subject, error = %e, "syslog-TLS connection error");
                        reading = false;
                        continue;
                    }
                    Ok(Ok(n)) => n,
                };
                if n == 0 {
                    if let Err(e) = dec.finish() {
                        ctx.counters.frame_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, node = %node.subject, error = %e, "syslog-TLS stream ended inside a frame");
                    }
                    reading = false;
                    continue;
                }
                dec.push(&buf[..n]);
                let received = now_micros();
                loop {
                    match dec.next_frame() {
                        Ok(Some(f)) => {
                            let r = NewRecord::from_message(received, &node, &peer_s, Transport::Tls, f, &ctx.config.xml_limits);
                            pending_bytes += r.encoded_len();
                            pending.push(r);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            ctx.counters.frame_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%peer, node = %node.subject, error = %e, "closing syslog-TLS connection: framing error");
                            reading = false;
                            break;
                        }
                    }
                }
            }
            _ = shutdown.changed(), if reading => reading = false,
        }
    }
    let _ = tls.shutdown().await;
}

/// Authorizes an open connection's node again; `false` (logged and counted) when it no longer
/// is: the connection stops reading, writes what it already received and closes.
async fn still_authorized(
    ctx: &Ctx,
    chain: &Arc<Vec<CertificateDer<'static>>>,
    node: &NodeIdentity,
    peer: SocketAddr,
) -> bool {
    match authorize(&ctx.authorizer, chain, node).await {
        Ok(()) => true,
        Err(reason) => {
            ctx.counters.deauthorized.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, node = %node.subject, %reason, "closing a syslog-TLS connection: the node is no longer authorized");
            false
        }
    }
}

type Pending =
    tokio::sync::oneshot::Receiver<Result<std::ops::RangeInclusive<u64>, crate::error::LogError>>;

/// Parsed records a connection may hold ahead of the batch being made durable.
pub const MAX_PENDING: usize = 8 << 20;

/// Appends refused in a row (writes not paused) before a connection gives up and closes.
pub const MAX_APPEND_FAILURES: u32 = 30;

/// Wait before a refused batch is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

async fn udp_loop(
    sock: UdpSocket,
    log: AuditLog,
    limits: XmlLimits,
    counters: Arc<Counters>,
    writes_paused: Option<tokio::sync::watch::Receiver<Option<String>>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 65_536];
    let node = NodeIdentity::default();
    loop {
        let (n, peer) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "syslog UDP receive failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let received = now_micros();
        let mut batch = vec![NewRecord::from_message(
            received,
            &node,
            &peer.to_string(),
            Transport::Udp,
            &buf[..n],
            &limits,
        )];
        // Take whatever else is already waiting, up to a bound.
        while batch.len() < 256 {
            match sock.try_recv_from(&mut buf) {
                Ok((n, p)) => batch.push(NewRecord::from_message(
                    received,
                    &node,
                    &p.to_string(),
                    Transport::Udp,
                    &buf[..n],
                    &limits,
                )),
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        let errors = batch.iter().filter(|r| r.index.parse_error).count() as u64;
        // UDP cannot hold its peers back: while writes are paused or the log refuses a batch,
        // datagrams are dropped (counted and logged), and the input goes on.
        if let Some(reason) = paused(&writes_paused) {
            counters.udp_dropped.fetch_add(count, Ordering::Relaxed);
            tracing::warn!(messages = count, %reason, "syslog UDP messages dropped: writes are paused");
            continue;
        }
        if let Err(e) = log.append(batch).await {
            counters.udp_dropped.fetch_add(count, Ordering::Relaxed);
            tracing::error!(error = %e, messages = count, "audit log append failed; syslog UDP messages dropped");
            continue;
        }
        counters.messages.fetch_add(count, Ordering::Relaxed);
        counters.udp_messages.fetch_add(count, Ordering::Relaxed);
        counters.parse_errors.fetch_add(errors, Ordering::Relaxed);
    }
}

/// A ready-made [`NodeAuthorizer`]: registered nodes by SHA-256 certificate fingerprint,
/// changeable while the repository runs (node enrolment adds, de-registration removes).
#[derive(Debug, Default)]
pub struct NodeAllowlist {
    nodes: parking_lot::RwLock<std::collections::HashSet<[u8; 32]>>,
}

impl NodeAllowlist {
    /// An allowlist holding `fingerprints`.
    pub fn new(fingerprints: impl IntoIterator<Item = [u8; 32]>) -> Self {
        NodeAllowlist {
            nodes: parking_lot::RwLock::new(fingerprints.into_iter().collect()),
        }
    }

    /// Register a node certificate (DER); returns its fingerprint.
    pub fn register_certificate(&self, der: &[u8]) -> [u8; 32] {
        let fp = NodeIdentity::from_certificate(der)
            .fingerprint
            .unwrap_or_default();
        self.nodes.write().insert(fp);
        fp
    }

    /// Remove a node; returns whether it was registered.
    pub fn remove(&self, fingerprint: &[u8; 32]) -> bool {
        self.nodes.write().remove(fingerprint)
    }

    /// Whether a fingerprint is registered.
    pub fn contains(&self, fingerprint: &[u8; 32]) -> bool {
        self.nodes.read().contains(fingerprint)
    }
}

impl NodeAuthorizer for NodeAllowlist {
    fn authorize(&self, _chain: &[CertificateDer<'_>], node: &NodeIdentity) -> Result<(), String> {
        match node.fingerprint {
            Some(fp) if self.contains(&fp) => Ok(()),
            _ => Err(format!(
                "certificate {} ({}) is not registered as a node",
                node.fingerprint_hex(),
                node.subject
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_by_fingerprint() {
        let a = NodeAllowlist::default();
        let fp = a.register_certificate(b"not even a certificate");
        let node = NodeIdentity::from_certificate(b"not even a certificate");
        assert_eq!(node.fingerprint, Some(fp));
        assert!(a.authorize(&[], &node).is_ok());
        assert!(a.remove(&fp));
        let e = a.authorize(&[], &node).unwrap_err();
        assert!(e.contains("not registered"), "{e}");
        assert!(a.authorize(&[], &NodeIdentity::default()).is_err());
    }
}
