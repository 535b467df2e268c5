//! The life of one HTTPS connection: bounded in time and idleness, and closable from a request.
//!
//! A connection (HTTP/1.1 keep-alive or HTTP/2) is closed gracefully — the requests in flight
//! finish, HTTP/2 gets a GOAWAY, HTTP/1.1 answers `Connection: close` — when it reaches
//! its maximum age ([`Limits::max_age`]), when it has had no request for [`Limits::idle`], or when
//! a request finds that its client certificate no longer authenticates
//! ([`Connection::close`], called by the authorization middleware when [`crate::Identities::check`]
//! refuses). A connection still open
//! [`Limits::grace`] after that is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Notify;

/// The peer's address, a request extension on the HTTPS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Time bounds of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest life.
    pub max_age: Duration,
    /// Longest time without a request in flight.
    pub idle: Duration,
    /// How long a closing connection may take to finish its requests.
    pub grace: Duration,
}

impl Limits {
    /// Bounds of `max_age_seconds` and `idle_seconds`, with a grace of 30 seconds.
    pub fn new(max_age_seconds: u32, idle_seconds: u32) -> Limits {
        Limits {
            max_age: Duration::from_secs(u64::from(max_age_seconds)),
            idle: Duration::from_secs(u64::from(idle_seconds)),
            grace: Duration::from_secs(30),
        }
    }
}

/// Shared state of one connection (a request extension: `Arc<Connection>`).
#[derive(Debug)]
pub struct Connection {
    started: Instant,
    closing: AtomicBool,
    notify: Notify,
    in_flight: AtomicUsize,
    /// Milliseconds since `started` at the last request's end (or start).
    last_active_ms: AtomicU64,
    /// Whether a card login by TLS client authentication was answered on this connection.
    tls_login_used: AtomicBool,
}

impl Connection {
    pub fn new() -> Arc<Connection> {
        Arc::new(Connection {
            started: Instant::now(),
            closing: AtomicBool::new(false),
            notify: Notify::new(),
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            tls_login_used: AtomicBool::new(false),
        })
    }

    /// Takes the connection's one card login by TLS client authentication: `true` the first time
    /// only. The card proved its presence once, in the handshake (resumption is off), so it
    /// vouches for one assertion; the next needs a new handshake.
    pub fn take_tls_login(&self) -> bool {
        !self.tls_login_used.swap(true, Ordering::SeqCst)
    }

    /// Asks for the connection to be closed after the requests in flight.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Whether [`close`](Connection::close) was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// A request starts; it ends when the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        RequestGuard(self.clone())
    }

    /// How long the connection has had no request in flight (`None` while one is).
    pub fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
        Some(self.started.elapsed().saturating_sub(last))
    }

    /// Resolves once [`close`](Connection::close) has been called.
    pub async fn closed(&self) {
        while !self.is_closing() {
            self.notify.notified().await;
        }
    }
}

/// Marks a request in flight.
pub struct RequestGuard(Arc<Connection>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a connection ended its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The client closed it, or an error ended it.
    Done,
    /// Closed gracefully at its maximum age.
    MaxAge,
    /// Closed gracefully after being idle.
    Idle,
    /// Closed gracefully because a request asked for it.
    Closed,
    /// Dropped: it did not finish within the grace period after a graceful close.
    Dropped,
}

/// Drives `conn` (a hyper connection future) within `limits`; `shutdown` starts a graceful close.
pub async fn drive<F>(
    mut conn: std::pin::Pin<&mut F>,
    shutdown: impl Fn(std::pin::Pin<&mut F>),
    ctl: &Connection,
    limits: Limits,
) -> Ending
where
    F: std::future::Future,
{
    let max_age = tokio::time::sleep(limits.max_age);
    tokio::pin!(max_age);
    // Idleness is checked a few times per idle period.
    let mut idle_tick = tokio::time::interval((limits.idle / 4).max(Duration::from_millis(50)));
    idle_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ending = loop {
        tokio::select! {
            _ = conn.as_mut() => return Ending::Done,
            _ = &mut max_age => break Ending::MaxAge,
            _ = ctl.closed() => break Ending::Closed,
            _ = idle_tick.tick() => {
                if ctl.idle_for().is_some_and(|d| d >= limits.idle) {
                    break Ending::Idle;
                }
            }
        }
    };
    shutdown(conn.as_mut());
    match tokio::time::timeout(limits.grace, conn).await {
        Ok(_) => ending,
        Err(_) => Ending::Dropped,
    }
}

/// Largest body read and dropped before a refusal is answered.
const DISCARD_LIMIT: usize = 64 * 1024;

/// Reads (and drops) what the client already sent of a refused request's body, then answers:
/// a connection closed with unread data is reset, and the reset can reach the client before the
/// answer does (it would see no answer at all). Not for a client that waits for `100 Continue`:
/// it has sent nothing, and reading would ask it to.
pub async fn discard_then(
    req: axum::extract::Request,
    refusal: axum::response::Response,
) -> axum::response::Response {
    let waits = req
        .headers()
        .get(axum::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !waits {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            axum::body::to_bytes(req.into_body(), DISCARD_LIMIT),
        )
        .await;
    }
    refusal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_age: u64, idle: u64) -> Limits {
        Limits {
            max_age: Duration::from_millis(max_age),
            idle: Duration::from_millis(idle),
            grace: Duration::from_millis(200),
        }
    }

    /// A connection future that ends `after` its graceful shutdown starts (or never).
    struct Fake {
        shutdown_at: Option<tokio::time::Instant>,
        finish_after: Option<Duration>,
    }

    impl std::future::Future for Fake {
        type Output = ();
        fn poll(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<()> {
            match (self.shutdown_at, self.finish_after) {
                (Some(at), Some(after)) if tokio::time::Instant::now() >= at + after => {
                    std::task::Poll::Ready(())
                }
                _ => {
                    let w = cx.waker().clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        w.wake();
                    });
                    std::task::Poll::Pending
                }
            }
        }
    }

    fn fake(finish_after: Option<u64>) -> Fake {
        Fake {
            shutdown_at: None,
            finish_after: finish_after.map(Duration::from_millis),
        }
    }

    fn shutdown(f: std::pin::Pin<&mut Fake>) {
        f.get_mut().shutdown_at = Some(tokio::time::Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed() {
        let ctl = Connection::new();
        let mut f = fake(Some(1));
        let e = drive(
            std::pin::Pin::new(&mut f),
            shutdown,
            &ctl,
            limits(60_000, 1_000),
        )
        .await;
        assert_eq!(e, Ending::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_not_idle_but_still_ages_out() {
        let ctl = Connection::new();
        let _busy = ctl.begin();
        let mut f = fake(Some(1));
        let t = tokio::time::Instant::now();
        let e = drive(
            std::pin::Pin::new(&mut f),
            shutdown,
            &ctl,
            limits(5_000, 100),
        )
        .await;
        assert_eq!(e, Ending::MaxAge);
        assert!(t.elapsed() >= Duration::from_millis(5_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_can_close_its_connection_and_a_stuck_one_is_dropped() {
        let ctl = Connection::new();
        let c2 = ctl.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            c2.close();
        });
        let mut f = fake(Some(1));
        let e = drive(
            std::pin::Pin::new(&mut f),
            shutdown,
            &ctl,
            limits(60_000, 60_000),
        )
        .await;
        assert_eq!(e, Ending::Closed);
        let ctl = Connection::new();
        ctl.close();
        let mut stuck = fake(None);
        let e = drive(
            std::pin::Pin::new(&mut stuck),
            shutdown,
            &ctl,
            limits(60_000, 60_000),
        )
        .await;
        assert_eq!(e, Ending::Dropped);
    }

    #[test]
    fn one_tls_login_per_connection() {
        let c = Connection::new();
        assert!(c.take_tls_login());
        assert!(!c.take_tls_login());
        assert!(!c.take_tls_login());
    }

    #[test]
    fn in_flight_requests_are_counted() {
        let ctl = Connection::new();
        assert!(ctl.idle_for().is_some());
        let g = ctl.begin();
        let h = ctl.begin();
        assert!(ctl.idle_for().is_none());
        drop(g);
        assert!(ctl.idle_for().is_none());
        drop(h);
        assert!(ctl.idle_for().is_some());
    }
}
