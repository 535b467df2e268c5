//! Delivery of queued audit messages to audit record repositories: RFC 5425 (octet-counted
//! syslog over mutually authenticated TLS), one task and one queue cursor per destination.
//!
//! **Delivery is at least once.** An entry leaves a destination's backlog (its cursor advances)
//! only after its frame was written and flushed to the TLS connection *and* the peer's TCP stack
//! acknowledged every byte (the socket's unacknowledged-bytes counter, `SIOCOUTQ`, fell to zero).
//! RFC 5425 has no application-level acknowledgement, so this is the strongest evidence a
//! sender can get: a repository that crashes after its kernel acknowledged the bytes but before
//! it stored them loses them. Anything not so acknowledged is sent again after a reconnect, so a
//! repository may see duplicates.
//!
//! Connections are re-established with exponential backoff. The TLS client configuration
//! (trust anchors, the node's client certificate and key — possibly an HSM key behind a
//! `rustls::sign::SigningKey`) is built by the caller.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::framing::encode_frame;
use crate::queue::Queue;

/// One audit record repository.
#[derive(Clone)]
pub struct Destination {
    /// Name: also the queue cursor's name (`[A-Za-z0-9_.-]{1,64}`).
    pub name: String,
    /// `host:port` to connect to.
    pub address: String,
    /// The name the server certificate must carry.
    pub server_name: ServerName<'static>,
    /// TLS client configuration (with the node's client certificate).
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Tuning of a [`Sender`].
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Most entries per write.
    pub batch_entries: usize,
    /// About this many bytes per write.
    pub batch_bytes: usize,
    /// How long the peer may take to acknowledge a batch before the connection is dropped and
    /// the batch re-sent.
    pub ack_timeout: Duration,
}

impl Default for SenderOptions {
    fn default() -> Self {
        SenderOptions {
            connect_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            batch_entries: 512,
            batch_bytes: 1 << 20,
            ack_timeout: Duration::from_secs(30),
        }
    }
}

/// State of one destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderStatus {
    /// Currently connected.
    pub connected: bool,
    /// Queue sequence number delivered up to.
    pub delivered: u64,
    /// Successful connections so far.
    pub connections: u64,
    /// The last connection or delivery error.
    pub last_error: Option<String>,
}

/// The running delivery tasks.
pub struct Sender {
    queue: Queue,
    status: Arc<Mutex<BTreeMap<String, SenderStatus>>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sender {
    /// Start one task per destination on the current tokio runtime. The queue must have been
    /// opened with every destination's name.
    pub fn spawn(
        queue: Queue,
        destinations: Vec<Destination>,
        options: SenderOptions,
    ) -> Result<Sender, crate::QueueError> {
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let status = Arc::new(Mutex::new(BTreeMap::new()));
        let mut tasks = Vec::new();
        for d in destinations {
            let delivered = queue.cursor(&d.name)?;
            status.lock().insert(
                d.name.clone(),
                SenderStatus {
                    delivered,
                    ..Default::default()
                },
            );
            let task = Task {
                queue: queue.clone(),
                dest: d,
                options: options.clone(),
                status: status.clone(),
                shutdown: shutdown.subscribe(),
            };
            tasks.push(tokio::spawn(task.run()));
        }
        Ok(Sender {
            queue,
            status,
            shutdown,
            tasks,
        })
    }

    /// Status of every destination.
    pub fn status(&self) -> BTreeMap<String, SenderStatus> {
        self.status.lock().clone()
    }

    /// Wait until every destination has every entry up to `seq`, or `timeout` passes; returns
    /// whether it was reached.
    pub async fn wait_delivered(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self.status.lock().values().all(|s| s.delivered >= seq);
            if done {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The queue this sender drains.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Stop every task (undelivered entries stay queued for the next start).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

struct Task {
    queue: Queue,
    dest: Destination,
    options: SenderOptions,
    status: Arc<Mutex<BTreeMap<String, SenderStatus>>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

impl Task {
    fn set(&self, f: impl FnOnce(&mut SenderStatus)) {
        if let Some(s) = self.status.lock().get_mut(&self.dest.name) {
            f(s);
        }
    }

    async fn run(mut self) {
        let mut backoff = self.options.backoff_min;
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            let mut stop = self.shutdown.clone();
            let connected = tokio::select! {
                r = self.connect() => r,
                _ = stop.changed() => return,
            };
            match connected {
                Ok(stream) => {
                    backoff = self.options.backoff_min;
                    self.set(|s| {
                        s.connected = true;
                        s.connections += 1;
                    });
                    tracing::info!(destination = %self.dest.name, address = %self.dest.address, "audit sender connected");
                    let r = self.deliver(stream).await;
                    self.set(|s| s.connected = false);
                    match r {
                        Ok(()) => return, // shutdown
                        Err(e) => {
                            tracing::warn!(destination = %self.dest.name, error = %e, "audit delivery interrupted; will reconnect");
                            self.set(|s| s.last_error = Some(e));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(destination = %self.dest.name, address = %self.dest.address, error = %e, retry_in = ?backoff, "audit repository unreachable");
                    self.set(|s| s.last_error = Some(e));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(self.options.backoff_max);
        }
    }

    async fn connect(&self) -> Result<Tls, String> {
        let fut = async {
            let tcp = TcpStream::connect(&self.dest.address)
                .await
                .map_err(|e| format!("connect {}: {e}", self.dest.address))?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(self.dest.tls.clone())
                .connect(self.dest.server_name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake with {}: {e}", self.dest.address))
        };
        tokio::time::timeout(self.options.connect_timeout, fut)
            .await
            .map_err(|_| format!("connect to {} timed out", self.dest.address))?
    }

    /// Deliver until an error (returned) or shutdown (`Ok`).
    async fn deliver(&mut self, stream: Tls) -> Result<(), String> {
        let fd = stream.get_ref().0.as_raw_fd();
        let (mut rd, mut wr) = tokio::io::split(stream);
        let cursor = self
            .queue
            .cursor(&self.dest.name)
            .map_err(|e| e.to_string())?;
        let mut reader = self.queue.reader(cursor);
        let mut changes = self.queue.subscribe();
        let mut sink = [0u8; 512];
        let mut out = Vec::with_capacity(self.options.batch_bytes + 4096);
        loop {
            let batch = reader
                .read_batch(self.options.batch_entries, self.options.batch_bytes)
                .map_err(|e| format!("reading the queue: {e}"))?;
            if batch.is_empty() {
                tokio::select! {
                    r = changes.changed() => { if r.is_err() { return Ok(()) } }
                    r = rd.read(&mut sink) => return Err(peer_closed(r)),
                    _ = self.shutdown.changed() => {
                        let _ = wr.shutdown().await;
                        return Ok(());
                    }
                }
                continue;
            }
            out.clear();
            for (_, payload) in &batch {
                encode_frame(payload, &mut out);
            }
            let last = batch.last().map_or(0, |b| b.0);
            // On shutdown mid-batch the cursor stays put: the batch is sent again next time.
            tokio::select! {
                r = async {
                    wr.write_all(&out).await?;
                    wr.flush().await
                } => r.map_err(|e| format!("write: {e}"))?,
                r = rd.read(&mut sink) => return Err(peer_closed(r)),
                _ = self.shutdown.changed() => return Ok(()),
            }
            tokio::select! {
                r = wait_acknowledged(fd, self.options.ack_timeout) => r?,
                r = rd.read(&mut sink) => return Err(peer_closed(r)),
                _ = self.shutdown.changed() => return Ok(()),
            }
            self.queue
                .commit(&self.dest.name, last)
                .map_err(|e| format!("committing the cursor: {e}"))?;
            self.set(|s| s.delivered = last);
        }
    }
}

fn peer_closed(r: std::io::Result<usize>) -> String {
    match r {
        Ok(0) => "the repository closed the connection".into(),
        Ok(n) => format!("the repository sent {n} unexpected bytes"),
        Err(e) => format!("connection error: {e}"),
    }
}

/// Bytes written to the socket that the peer's TCP has not acknowledged yet.
fn unacknowledged(fd: RawFd) -> std::io::Result<i32> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (= SIOCOUTQ for sockets) writes one c_int through the pointer, which
    // points to a live local; `fd` is the socket of a stream the caller keeps open.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ as _, &mut n as *mut libc::c_int) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n)
}

async fn wait_acknowledged(fd: RawFd, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        let n = unacknowledged(fd).map_err(|e| format!("SIOCOUTQ: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "{n} bytes not acknowledged by the repository after {timeout:?}"
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
