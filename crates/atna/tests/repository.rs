//! Our sender into our repository, the repository's limits (connections, idle timeout), and the
//! optional UDP input fed by `logger --udp --rfc5424`.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{Pki, client_config, free_port, loopback, server_config, wait_for};
use cps_atna::events::{self, AuditContext, Person};
use cps_atna::{
    AuditLog, Auditor, Destination, LogOptions, NodeAllowlist, NodeAuthorizer, NodeIdentity, Queue,
    QueueOptions, Repository, RepositoryConfig, SearchFilter, Sender, SenderOptions, Transport,
};
use rustls::pki_types::{CertificateDer, ServerName};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct OnlyNodeA;
impl NodeAuthorizer for OnlyNodeA {
    fn authorize(&self, _: &[CertificateDer<'_>], node: &NodeIdentity) -> Result<(), String> {
        if node.subject.contains("CN=node-a") {
            Ok(())
        } else {
            Err("unknown".into())
        }
    }
}

fn setup(dir: &std::path::Path) -> Pki {
    let pki = Pki::new(&dir.join("pki"));
    pki.issue("repo", "localhost", true);
    pki.issue("node-a", "node-a", false);
    pki
}

#[test]
fn our_sender_into_our_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = setup(tmp.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = AuditLog::open(&tmp.path().join("arr"), None, LogOptions::default()).unwrap();
    let port = free_port();
    let repo = rt
        .block_on(Repository::start(
            RepositoryConfig {
                tls_addr: loopback(port),
                ..RepositoryConfig::default()
            },
            server_config(&pki, "repo", |v| v, false),
            allowlist_of(&pki, "node-a"),
            log.clone(),
        ))
        .unwrap();
    let queue = Queue::open(&tmp.path().join("q"), &["arr-1"], QueueOptions::default()).unwrap();
    let auditor = Auditor::new(queue.clone(), "appliance.test", "cps-trust");
    let ctx = AuditContext {
        source_id: "appliance-1".into(),
        site_id: None,
        host: "127.0.0.1".into(),
    };
    for i in 0..300 {
        let now = OffsetDateTime::now_utc();
        auditor
            .record(
                &events::logout(&ctx, now, &Person::id(format!("u{i}")), None),
                now,
            )
            .unwrap();
    }
    let dest = Destination {
        name: "arr-1".into(),
        address: format!("127.0.0.1:{port}"),
        server_name: ServerName::try_from("localhost").unwrap(),
        tls: client_config(&pki, Some("node-a")),
    };
    let sender = rt.block_on(async {
        Sender::spawn(queue.clone(), vec![dest], SenderOptions::default()).unwrap()
    });
    assert!(rt.block_on(sender.wait_delivered(300, Duration::from_secs(20))));
    wait_for("300 records", Duration::from_secs(10), || log.len() >= 300);
    let p = log
        .search(
            &SearchFilter {
                user: Some("u123".into()),
                event_type: Some("110123".into()),
                ..Default::default()
            },
            10,
            None,
        )
        .unwrap();
    assert_eq!(p.records.len(), 1);
    assert_eq!(p.records[0].transport, Transport::Tls);
    assert_eq!(p.records[0].summary.syslog.as_ref().unwrap().pri, 85);
    rt.block_on(sender.shutdown());
    rt.block_on(repo.shutdown());
}

#[test]
fn connection_limit_and_idle_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = setup(tmp.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = AuditLog::open(&tmp.path().join("arr"), None, LogOptions::default()).unwrap();
    let port = free_port();
    let repo = rt
        .block_on(Repository::start(
            RepositoryConfig {
                tls_addr: loopback(port),
                max_connections: 1,
                idle_timeout: Duration::from_millis(400),
                ..RepositoryConfig::default()
            },
            server_config(&pki, "repo", |v| v, false),
            Arc::new(OnlyNodeA),
            log.clone(),
        ))
        .unwrap();
    let tls = client_config(&pki, Some("node-a"));
    rt.block_on(async {
        let connect = || async {
            let tcp = tokio::net::TcpStream::connect(loopback(port))
                .await
                .unwrap();
            tokio_rustls::TlsConnector::from(tls.clone())
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
        };
        let mut first = connect().await.unwrap();
        let mut frame = Vec::new();
        cps_atna::encode_frame(b"<85>1 - h a - - - first", &mut frame);
        first.write_all(&frame).await.unwrap();
        first.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The second connection is closed at once: the handshake or the first read fails.
        let second = connect().await;
        let refused = match second {
            Err(_) => true,
            Ok(mut s) => {
                let mut b = [0u8; 8];
                matches!(
                    tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await,
                    Ok(Ok(0)) | Ok(Err(_))
                )
            }
        };
        assert!(
            refused,
            "a second connection beyond the limit must be closed"
        );
        // The first one is closed after the idle timeout.
        let mut b = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(3), first.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "idle connection should be closed: {r:?}"
        );
    });
    assert_eq!(log.len(), 1);
    assert!(repo.stats().refused >= 1);
    rt.block_on(repo.shutdown());
}

#[test]
fn udp_input_takes_logger_messages_when_enabled() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = setup(tmp.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = AuditLog::open(&tmp.path().join("arr"), None, LogOptions::default()).unwrap();
    let udp = free_port();
    let repo = rt
        .block_on(Repository::start(
            RepositoryConfig {
                tls_addr: loopback(0),
                udp_addr: Some(loopback(udp)),
                ..RepositoryConfig::default()
            },
            server_config(&pki, "repo", |v| v, false),
            Arc::new(OnlyNodeA),
            log.clone(),
        ))
        .unwrap();
    assert_eq!(repo.udp_local_addr(), Some(loopback(udp)));
    let now = OffsetDateTime::now_utc();
    let ctx = AuditContext {
        source_id: "udp-src".into(),
        site_id: None,
        host: "127.0.0.1".into(),
    };
    let xml = events::login(&ctx, now, &Person::id("udp-user"), None, None)
        .to_xml()
        .unwrap();
    common::run(
        Command::new("logger")
            .args([
                "--rfc5424",
                "--udp",
                "--server",
                "127.0.0.1",
                "--port",
                &udp.to_string(),
            ])
            .args([
                "--size",
                "8192",
                "--msgid",
                "IHE+RFC-3881",
                "-t",
                "udp-test",
                "--",
            ])
            .arg(&xml),
    );
    wait_for("the UDP message", Duration::from_secs(10), || {
        log.len() == 1
    });
    let r = log.get(1).unwrap();
    assert_eq!(r.transport, Transport::Udp);
    assert!(r.node.fingerprint.is_none());
    assert_eq!(r.summary.event.as_ref().unwrap().user_ids[0], "udp-user");
    assert_eq!(repo.stats().udp_messages, 1);
    rt.block_on(repo.shutdown());

    // Off by default.
    assert!(RepositoryConfig::default().udp_addr.is_none());
}

fn allowlist_of(pki: &Pki, name: &str) -> Arc<NodeAllowlist> {
    let list = NodeAllowlist::default();
    list.register_certificate(common::certs(&pki.dir.join(format!("{name}.crt")))[0].as_ref());
    Arc::new(list)
}

/// A directory, a PKI with the repository and node-a, a runtime and an empty log.
fn fixture() -> (tempfile::TempDir, Pki, tokio::runtime::Runtime, AuditLog) {
    let tmp = tempfile::tempdir().unwrap();
    let pki = setup(tmp.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = AuditLog::open(&tmp.path().join("arr"), None, LogOptions::default()).unwrap();
    (tmp, pki, rt, log)
}

/// A repository on a free loopback port, its default configuration changed by `configure`;
/// returns it and its port.
fn start_repository(
    rt: &tokio::runtime::Runtime,
    pki: &Pki,
    configure: impl FnOnce(&mut RepositoryConfig),
    authorizer: Arc<dyn NodeAuthorizer>,
    log: &AuditLog,
) -> (Repository, u16) {
    let port = free_port();
    let mut config = RepositoryConfig {
        tls_addr: loopback(port),
        ..RepositoryConfig::default()
    };
    configure(&mut config);
    let tls = server_config(pki, "repo", |v| v, false);
    let repo = rt
        .block_on(Repository::start(config, tls, authorizer, log.clone()))
        .unwrap();
    (repo, port)
}

/// A node's open connection: frames go in, and `closed_within` tells whether the repository
/// closed it within a bound.
struct NodeConn {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

impl NodeConn {
    async fn open(tls: &Arc<rustls::ClientConfig>, port: u16) -> std::io::Result<NodeConn> {
        let tcp = tokio::net::TcpStream::connect(loopback(port)).await?;
        let tls = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        Ok(NodeConn { tls })
    }

    async fn send(&mut self, text: &str) -> std::io::Result<()> {
        let mut frame = Vec::new();
        cps_atna::encode_frame(format!("<85>1 - h a - - - {text}").as_bytes(), &mut frame);
        self.tls.write_all(&frame).await?;
        self.tls.flush().await
    }

    /// Whether the server closed the connection within `bound`.
    async fn closed_within(&mut self, bound: Duration) -> bool {
        let mut b = [0u8; 16];
        matches!(
            tokio::time::timeout(bound, self.tls.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// A new connection is refused: the handshake or the first read fails.
    async fn refused(tls: &Arc<rustls::ClientConfig>, port: u16) -> bool {
        match NodeConn::open(tls, port).await {
            Err(_) => true,
            Ok(mut c) => c.closed_within(Duration::from_secs(3)).await,
        }
    }
}

/// An open connection loses its node's authorization: at once when the caller signals a
/// change, and without a signal at the latest after `reauthorize_every`. Its records up to
/// then are kept; its next connection is refused.
#[test]
fn open_connections_of_a_withdrawn_node_are_closed() {
    let (_tmp, pki, rt, log) = fixture();
    pki.issue("node-b", "node-b", false);
    let list = Arc::new(NodeAllowlist::default());
    let fp = |name: &str| {
        list.register_certificate(common::certs(&pki.dir.join(format!("{name}.crt")))[0].as_ref())
    };
    let (fp_a, fp_b) = (fp("node-a"), fp("node-b"));
    let (changes, changes_rx) = tokio::sync::watch::channel(0u64);
    let configure = |c: &mut RepositoryConfig| {
        c.reauthorize_every = Duration::from_millis(700);
        c.reauthorize_on = Some(changes_rx);
    };
    let (repo, port) = start_repository(&rt, &pki, configure, list.clone(), &log);
    let (tls_a, tls_b) = (
        client_config(&pki, Some("node-a")),
        client_config(&pki, Some("node-b")),
    );
    rt.block_on(async {
        let mut a = NodeConn::open(&tls_a, port).await.unwrap();
        let mut b = NodeConn::open(&tls_b, port).await.unwrap();
        a.send("from-a").await.unwrap();
        b.send("from-b").await.unwrap();
        while log.len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !a.closed_within(Duration::from_millis(900)).await,
            "a stays: still allowed"
        );

        // Signalled: node-a's connection closes at once (well before the periodic check).
        list.remove(&fp_a);
        let t = std::time::Instant::now();
        changes.send_modify(|v| *v += 1);
        assert!(a.closed_within(Duration::from_secs(2)).await);
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
        assert!(
            NodeConn::refused(&tls_a, port).await,
            "node-a cannot reconnect"
        );

        // Not signalled: node-b's connection goes at the next periodic check.
        list.remove(&fp_b);
        assert!(b.closed_within(Duration::from_secs(2)).await);
        assert!(
            NodeConn::refused(&tls_b, port).await,
            "node-b cannot reconnect"
        );
    });
    assert_eq!(log.len(), 2, "what the nodes sent while allowed is kept");
    assert_eq!(repo.stats().deauthorized, 2);
    rt.block_on(repo.shutdown());
}

/// While writes are paused (a full disk) nothing is read or appended; the node is held back,
/// not disconnected, and everything it sent is stored once writes resume.
#[test]
fn paused_writes_hold_nodes_back_and_lose_nothing() {
    let (_tmp, pki, rt, log) = fixture();
    let (pause, pause_rx) = tokio::sync::watch::channel(Some("disk full".to_string()));
    let configure = |c: &mut RepositoryConfig| {
        // Shorter than the pause: a held connection is not an idle one.
        c.idle_timeout = Duration::from_millis(500);
        c.writes_paused = Some(pause_rx);
    };
    let (repo, port) = start_repository(&rt, &pki, configure, allowlist_of(&pki, "node-a"), &log);
    let tls = client_config(&pki, Some("node-a"));
    rt.block_on(async {
        let mut a = NodeConn::open(&tls, port).await.unwrap();
        for i in 0..50 {
            a.send(&format!("held-{i}")).await.unwrap();
        }
        // Longer than the idle timeout: a paused connection is not idle, just held.
        assert!(!a.closed_within(Duration::from_millis(1200)).await);
        assert_eq!(log.len(), 0, "nothing is written while paused");
        pause.send_replace(None);
        let t = std::time::Instant::now();
        while log.len() < 50 && t.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(log.len(), 50);
    let texts: Vec<String> = (1..=50)
        .map(|s| String::from_utf8_lossy(&log.get(s).unwrap().raw).into_owned())
        .collect();
    for (i, t) in texts.iter().enumerate() {
        assert!(t.ends_with(&format!("held-{i}")), "{t}");
    }
    rt.block_on(repo.shutdown());
}
