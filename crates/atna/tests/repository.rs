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
