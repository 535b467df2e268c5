//! Against a real rsyslog (gtls driver, mutual x509/name authentication), on loopback, in
//! temporary directories, stopped by PID:
//!
//! * rsyslog as a client forwards `logger --rfc5424 --tcp --octet-count` messages into our
//!   repository, where they are stored and searchable; a CA-issued certificate that is not a
//!   registered node, a certificate the caller's verifier refuses (revoked), and no certificate
//!   are refused (with `openssl s_client` as the client);
//! * our sender delivers to an rsyslog receiver, which writes RFC 5424 carrying A.5.1 XML;
//! * events queued while the receiver is down, across a restart of the sender side, all arrive.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{
    Pki, Rsyslog, client_config, free_port, loopback, server_config, wait_for, wait_port,
};
use cps_atna::events::{self, AuditContext, Person};
use cps_atna::{
    AuditLog, Auditor, Destination, LogOptions, NodeAuthorizer, NodeIdentity, Queue, QueueOptions,
    Repository, RepositoryConfig, SearchFilter, Sender, SenderOptions, SyslogMessage,
    VerifyOptions, XmlLimits, parse_audit_xml, verify,
};
use cps_hsm::{KeyAlgorithm, Signer, SoftwareSigner};
use parking_lot::Mutex;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use time::OffsetDateTime;

fn ctx() -> AuditContext {
    AuditContext {
        source_id: "cps-trust-rsyslog-test".into(),
        site_id: None,
        host: "127.0.0.1".into(),
    }
}

/// Allowlist by certificate fingerprint; remembers refusals.
struct Allow {
    fingerprints: Vec<[u8; 32]>,
    refused: Mutex<Vec<(Option<String>, String)>>,
}

impl NodeAuthorizer for Allow {
    fn authorize(&self, _chain: &[CertificateDer<'_>], node: &NodeIdentity) -> Result<(), String> {
        match node.fingerprint {
            Some(f) if self.fingerprints.contains(&f) => Ok(()),
            _ => Err(format!("{} is not registered", node.subject)),
        }
    }
    fn refused(&self, _peer: std::net::SocketAddr, node: Option<&NodeIdentity>, reason: &str) {
        self.refused
            .lock()
            .push((node.map(|n| n.subject.clone()), reason.to_owned()));
    }
}

/// The caller's verifier stand-in: webpki plus a revocation list by fingerprint.
#[derive(Debug)]
struct RevocationAware {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Vec<[u8; 32]>,
}

impl ClientCertVerifier for RevocationAware {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let fp = NodeIdentity::from_certificate(end_entity.as_ref())
            .fingerprint
            .unwrap_or_default();
        if self.revoked.contains(&fp) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
}

fn fingerprint(pki: &Pki, name: &str) -> [u8; 32] {
    let der = common::certs(&pki.dir.join(format!("{name}.crt"))).remove(0);
    NodeIdentity::from_certificate(der.as_ref())
        .fingerprint
        .unwrap()
}

fn login_xml(user: &str) -> String {
    let now = OffsetDateTime::now_utc();
    events::login(&ctx(), now, &Person::id(user), Some("192.0.2.1"), None)
        .to_xml()
        .unwrap()
}

/// Send one octet-counted frame with `openssl s_client`, optionally with a client certificate.
fn s_client(pki: &Pki, port: u16, client: Option<&str>, msg: &str) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-quiet",
        "-verify_return_error",
    ])
    .arg("-CAfile")
    .arg(pki.ca())
    .args(["-verify_hostname", "localhost"]);
    if let Some(c) = client {
        cmd.arg("-cert")
            .arg(pki.dir.join(format!("{c}.crt")))
            .arg("-key")
            .arg(pki.dir.join(format!("{c}.key")));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        let _ = write!(stdin, "{} {}", msg.len(), msg);
        let _ = stdin.flush();
        std::thread::sleep(Duration::from_millis(700));
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn logger(port: u16, msg: &str) {
    common::run(
        Command::new("logger")
            .args([
                "--rfc5424",
                "--tcp",
                "--octet-count",
                "--server",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .args([
                "--size",
                "65536",
                "--msgid",
                "IHE+RFC-3881",
                "-t",
                "atna-test",
                "--",
            ])
            .arg(msg),
    );
}

fn signer() -> Arc<dyn Signer> {
    Arc::new(SoftwareSigner::generate("atna-checkpoints", KeyAlgorithm::EcP256).unwrap())
}

#[test]
fn rsyslog_client_forwards_into_repository_and_strangers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    let pki = Pki::new(&w.join("pki"));
    pki.issue("repo", "localhost", true);
    pki.issue("node-a", "node-a", false);
    pki.issue("node-b", "node-b", false);
    pki.issue("node-c", "node-c", false);
    let revoked = fingerprint(&pki, "node-c");
    let authorizer = Arc::new(Allow {
        fingerprints: vec![fingerprint(&pki, "node-a"), revoked],
        refused: Mutex::new(Vec::new()),
    });
    let tls = server_config(
        &pki,
        "repo",
        |inner| {
            Arc::new(RevocationAware {
                inner,
                revoked: vec![revoked],
            })
        },
        false,
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = signer();
    let spki = key.public_key_der().to_vec();
    let log = AuditLog::open(&w.join("arr"), Some(key), LogOptions::default()).unwrap();
    let port = free_port();
    let config = RepositoryConfig {
        tls_addr: loopback(port),
        ..RepositoryConfig::default()
    };
    let repo = rt
        .block_on(Repository::start(
            config,
            tls,
            authorizer.clone() as Arc<dyn NodeAuthorizer>,
            log.clone(),
        ))
        .unwrap();

    // rsyslog: plain TCP in, gtls with node-a's certificate out to our repository.
    let rs = w.join("rsyslog");
    std::fs::create_dir_all(&rs).unwrap();
    let in_port = free_port();
    let conf = format!(
        r#"global(workDirectory="{rs}/work-fwd"
  maxMessageSize="64k"
  defaultNetstreamDriverCAFile="{pki}/ca.crt"
  defaultNetstreamDriverCertFile="{pki}/node-a.crt"
  defaultNetstreamDriverKeyFile="{pki}/node-a.key")
module(load="imtcp")
input(type="imtcp" port="{in_port}" address="127.0.0.1")
*.* action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
           StreamDriver="gtls" StreamDriverMode="1"
           StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="localhost"
           TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"
           action.resumeRetryCount="-1" queue.type="LinkedList" queue.size="10000")
"#,
        rs = rs.display(),
        pki = pki.dir.display()
    );
    let mut fwd = Rsyslog::start(&rs, "fwd", &conf);
    wait_port(in_port, Duration::from_secs(10));
    for i in 0..3 {
        logger(in_port, &login_xml(&format!("rs-user-{i}")));
    }
    logger(in_port, "a plain text message, not DICOM");

    wait_for(
        "the three DICOM messages in the repository",
        Duration::from_secs(20),
        || {
            (0..3).all(|i| {
                let f = SearchFilter {
                    user: Some(format!("rs-user-{i}")),
                    ..Default::default()
                };
                log.search(&f, 10, None)
                    .map(|p| p.records.len() == 1)
                    .unwrap_or(false)
            })
        },
    );
    wait_for(
        "the plain message, stored flagged",
        Duration::from_secs(20),
        || {
            let f = SearchFilter {
                parse_error: Some(true),
                ..Default::default()
            };
            log.search(&f, 100, None)
                .unwrap()
                .records
                .iter()
                .any(|r| String::from_utf8_lossy(&r.raw).contains("a plain text message"))
        },
    );
    let f = SearchFilter {
        user: Some("rs-user-1".into()),
        event_id: Some("110114".into()),
        ..Default::default()
    };
    let hit = log.search(&f, 10, None).unwrap().records.remove(0);
    assert!(
        hit.node.subject.contains("CN=node-a"),
        "{}",
        hit.node.subject
    );
    assert_eq!(hit.node.fingerprint, Some(fingerprint(&pki, "node-a")));
    let sl = hit.summary.syslog.as_ref().unwrap();
    assert_eq!(sl.msgid.as_deref(), Some("IHE+RFC-3881"));
    assert_eq!(sl.app_name.as_deref(), Some("atna-test"));
    assert_eq!(
        hit.summary.event.as_ref().unwrap().event_types[0].code,
        "110122"
    );
    assert!(String::from_utf8_lossy(&hit.raw).contains("<AuditMessage>"));

    // Refusals: a CA-issued certificate that is not a registered node...
    let before = log.len();
    let err_b = s_client(&pki, port, Some("node-b"), "<13>1 - h a - - - from node-b");
    // ...a certificate the verifier refuses (revoked)...
    let err_c = s_client(&pki, port, Some("node-c"), "<13>1 - h a - - - from node-c");
    // ...and no certificate at all.
    let err_none = s_client(&pki, port, None, "<13>1 - h a - - - from nobody");
    std::thread::sleep(Duration::from_millis(300));
    let refused = authorizer.refused.lock().clone();
    assert!(
        refused.iter().any(
            |(n, r)| n.as_deref().is_some_and(|n| n.contains("CN=node-b"))
                && r.contains("not a registered node")
        ),
        "{refused:?}\n{err_b}"
    );
    assert!(
        refused.iter().any(|(n, r)| n.is_none()
            && r.contains("TLS handshake failed")
            && r.to_lowercase().contains("revoked")),
        "{refused:?}\n{err_c}"
    );
    assert!(
        refused.iter().any(|(n, r)| n.is_none()
            && r.contains("TLS handshake failed")
            && r.contains("no certificate")),
        "{refused:?}\n{err_none}"
    );
    assert!(repo.stats().refused >= 3);
    let all = log.search(&SearchFilter::default(), 10_000, None).unwrap();
    for r in &all.records {
        let s = String::from_utf8_lossy(&r.raw);
        assert!(
            !s.contains("from node-b") && !s.contains("from node-c") && !s.contains("from nobody"),
            "{s}"
        );
        assert!(r.node.subject.contains("CN=node-a"));
    }
    assert!(log.len() >= before);

    // With a verifier that lets certificate-less clients through the handshake, our own check
    // refuses them.
    let lax = server_config(&pki, "repo", |v| v, true);
    let port2 = free_port();
    let repo2 = rt
        .block_on(Repository::start(
            RepositoryConfig {
                tls_addr: loopback(port2),
                ..RepositoryConfig::default()
            },
            lax,
            authorizer.clone() as Arc<dyn NodeAuthorizer>,
            log.clone(),
        ))
        .unwrap();
    s_client(&pki, port2, None, "<13>1 - h a - - - nobody again");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        authorizer
            .refused
            .lock()
            .iter()
            .any(|(_, r)| r == "no client certificate")
    );

    fwd.stop();
    assert!(
        !fwd.output().contains("error"),
        "rsyslog reported errors:\n{}",
        fwd.output()
    );
    rt.block_on(repo.shutdown());
    rt.block_on(repo2.shutdown());
    log.checkpoint_blocking().unwrap();
    let report = verify(&w.join("arr"), &VerifyOptions::key(&spki)).unwrap();
    assert_eq!(report.records, log.len());
}

#[test]
fn repository_accepts_large_messages_and_closes_on_framing_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    let pki = Pki::new(&w.join("pki"));
    pki.issue("repo", "localhost", true);
    pki.issue("node-a", "node-a", false);
    let authorizer = Arc::new(Allow {
        fingerprints: vec![fingerprint(&pki, "node-a")],
        refused: Mutex::new(Vec::new()),
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = AuditLog::open(&w.join("arr"), None, LogOptions::default()).unwrap();
    let port = free_port();
    let repo = rt
        .block_on(Repository::start(
            RepositoryConfig {
                tls_addr: loopback(port),
                max_frame: 64 * 1024,
                ..RepositoryConfig::default()
            },
            server_config(&pki, "repo", |v| v, false),
            authorizer as Arc<dyn NodeAuthorizer>,
            log.clone(),
        ))
        .unwrap();
    let client = client_config(&pki, Some("node-a"));
    rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let connect = || async {
            let tcp = tokio::net::TcpStream::connect(loopback(port))
                .await
                .unwrap();
            tokio_rustls::TlsConnector::from(client.clone())
                .connect(
                    rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .unwrap()
        };
        // A 40 000-octet message (DICOM PS3.15 A.6 asks for at least 32 768).
        let mut big =
            format!("<85>1 - h a - IHE+RFC-3881 - {}", login_xml("big-user")).into_bytes();
        big.extend(std::iter::repeat_n(b' ', 40_000 - big.len()));
        let mut s = connect().await;
        let mut wire = Vec::new();
        cps_atna::encode_frame(&big, &mut wire);
        cps_atna::encode_frame(b"<85>1 - h a - - - second", &mut wire);
        s.write_all(&wire).await.unwrap();
        s.flush().await.unwrap();
        // Then garbage: the connection is closed after what came before is stored.
        s.write_all(b"xyz 12 hello").await.unwrap();
        s.flush().await.unwrap();
        let _ = s.shutdown().await;
    });
    wait_for("two records", Duration::from_secs(10), || log.len() == 2);
    let r = log.get(1).unwrap();
    assert_eq!(r.raw.len(), 40_000);
    assert!(
        r.summary
            .event
            .as_ref()
            .unwrap()
            .user_ids
            .contains(&"big-user".to_owned()),
        "{:?}",
        r.summary
    );
    wait_for("a framing error", Duration::from_secs(10), || {
        repo.stats().frame_errors == 1
    });
    rt.block_on(repo.shutdown());
}

fn receiver_conf(rs: &Path, pki: &Pki, port: u16) -> String {
    format!(
        r#"global(workDirectory="{rs}/work-recv"
  maxMessageSize="64k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{pki}/ca.crt"
  defaultNetstreamDriverCertFile="{pki}/repo.crt"
  defaultNetstreamDriverKeyFile="{pki}/repo.key")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"
       StreamDriver.AuthMode="x509/name" PermittedPeer=["node-a"])
input(type="imtcp" port="{port}" address="127.0.0.1")
if $msgid == "IHE+RFC-3881" then {{
  action(type="omfile" file="{rs}/received.log" template="RSYSLOG_SyslogProtocol23Format")
}}
"#,
        rs = rs.display(),
        pki = pki.dir.display()
    )
}

fn received(rs: &Path) -> Vec<SyslogMessage> {
    let data = std::fs::read(rs.join("received.log")).unwrap_or_default();
    data.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            SyslogMessage::parse(l).unwrap_or_else(|e| {
                panic!(
                    "rsyslog wrote a non-RFC 5424 line: {e}: {}",
                    String::from_utf8_lossy(l)
                )
            })
        })
        .collect()
}

fn destination(pki: &Pki, port: u16) -> Destination {
    Destination {
        name: "rsyslog".into(),
        address: format!("127.0.0.1:{port}"),
        server_name: rustls::pki_types::ServerName::try_from("localhost").unwrap(),
        tls: client_config(pki, Some("node-a")),
    }
}

fn fast() -> SenderOptions {
    SenderOptions {
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        ..SenderOptions::default()
    }
}

/// Check the A.5.1 structure of an XML audit message written out by rsyslog.
fn check_a51(xml: &[u8]) -> roxmltree::Document<'_> {
    let doc = roxmltree::Document::parse(std::str::from_utf8(xml).unwrap()).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "AuditMessage");
    let kids: Vec<_> = root.children().filter(|n| n.is_element()).collect();
    assert_eq!(kids[0].tag_name().name(), "EventIdentification");
    let ev = kids[0];
    assert!(
        ev.attribute("EventDateTime").is_some() && ev.attribute("EventOutcomeIndicator").is_some()
    );
    let id = ev
        .children()
        .find(|n| n.has_tag_name("EventID"))
        .expect("EventID");
    for a in ["csd-code", "codeSystemName", "originalText"] {
        assert!(id.attribute(a).is_some(), "EventID@{a}");
    }
    let n_ap = kids
        .iter()
        .skip(1)
        .take_while(|k| k.has_tag_name("ActiveParticipant"))
        .count();
    assert!(n_ap >= 1);
    assert!(kids[1 + n_ap].has_tag_name("AuditSourceIdentification"));
    assert!(kids[1 + n_ap].attribute("AuditSourceID").is_some());
    assert!(
        kids[2 + n_ap..]
            .iter()
            .all(|k| k.has_tag_name("ParticipantObjectIdentification"))
    );
    doc
}

#[test]
fn sender_delivers_to_rsyslog_receiver() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    let pki = Pki::new(&w.join("pki"));
    pki.issue("repo", "localhost", true);
    pki.issue("node-a", "node-a", false);
    let rs = w.join("rsyslog");
    std::fs::create_dir_all(&rs).unwrap();
    let port = free_port();
    let _recv = Rsyslog::start(&rs, "recv", &receiver_conf(&rs, &pki, port));
    wait_port(port, Duration::from_secs(10));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let queue = Queue::open(&w.join("queue"), &["rsyslog"], QueueOptions::default()).unwrap();
    let auditor = Auditor::new(queue.clone(), "appliance.test", "cps-trust");
    let now = OffsetDateTime::now_utc();
    let c = ctx();
    let dr = Person::id("810000000001");
    let msgs = vec![
        events::login(&c, now, &dr, Some("192.0.2.1"), None),
        events::login(&c, now, &dr, Some("192.0.2.1"), Some("wrong PIN")),
        events::break_glass(
            &c,
            now,
            &dr,
            "PAT-1",
            events::purpose_of_use("bris_de_glace"),
            None,
        ),
        events::assertion_issued(&c, now, &dr, "_assertion-1", None),
    ];
    for m in &msgs {
        auditor.record(m, now).unwrap();
    }
    let sender = rt.block_on(async {
        Sender::spawn(queue.clone(), vec![destination(&pki, port)], fast()).unwrap()
    });
    assert!(
        rt.block_on(sender.wait_delivered(4, Duration::from_secs(20))),
        "{:?}",
        sender.status()
    );
    wait_for(
        "rsyslog to write 4 messages",
        Duration::from_secs(20),
        || received(&rs).len() >= 4,
    );
    let got = received(&rs);
    assert_eq!(got.len(), 4);
    for (m, sent) in got.iter().zip(&msgs) {
        assert_eq!(m.facility, 10);
        assert_eq!(
            m.severity,
            if sent.event.outcome == cps_atna::EventOutcome::Success {
                5
            } else {
                4
            }
        );
        assert_eq!(m.msgid.as_deref(), Some("IHE+RFC-3881"));
        assert_eq!(m.hostname.as_deref(), Some("appliance.test"));
        assert_eq!(m.app_name.as_deref(), Some("cps-trust"));
        let doc = check_a51(&m.msg);
        let id = doc
            .descendants()
            .find(|n| n.has_tag_name("EventID"))
            .unwrap();
        assert_eq!(
            id.attribute("csd-code"),
            Some(sent.event.event_id.code.as_str())
        );
        let s = parse_audit_xml(&m.msg, &XmlLimits::default()).unwrap();
        assert_eq!(s.outcome, Some(sent.event.outcome.code()));
    }
    let bg = parse_audit_xml(&got[2].msg, &XmlLimits::default()).unwrap();
    assert_eq!(bg.patient_ids, vec!["PAT-1".to_owned()]);
    assert_eq!(bg.event_types[1].code, "bris_de_glace");
    assert_eq!(queue.backlog("rsyslog").unwrap(), 0);
    rt.block_on(sender.shutdown());
}

#[test]
fn nothing_is_lost_across_receiver_and_sender_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    let pki = Pki::new(&w.join("pki"));
    pki.issue("repo", "localhost", true);
    pki.issue("node-a", "node-a", false);
    let rs = w.join("rsyslog");
    std::fs::create_dir_all(&rs).unwrap();
    let port = free_port();
    let conf = receiver_conf(&rs, &pki, port);
    let mut recv = Rsyslog::start(&rs, "recv", &conf);
    wait_port(port, Duration::from_secs(10));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let qdir = w.join("queue");
    let event = |i: usize| {
        let now = OffsetDateTime::now_utc();
        events::login(
            &ctx(),
            now,
            &Person::id(format!("restart-user-{i}")),
            None,
            None,
        )
    };
    let queue = Queue::open(&qdir, &["rsyslog"], QueueOptions::default()).unwrap();
    let auditor = Auditor::new(queue.clone(), "appliance.test", "cps-trust");
    let sender = rt.block_on(async {
        Sender::spawn(queue.clone(), vec![destination(&pki, port)], fast()).unwrap()
    });
    for i in 0..5 {
        auditor
            .record(&event(i), OffsetDateTime::now_utc())
            .unwrap();
    }
    assert!(
        rt.block_on(sender.wait_delivered(5, Duration::from_secs(20))),
        "{:?}",
        sender.status()
    );

    // The repository goes down; events keep coming.
    recv.stop();
    for i in 5..15 {
        auditor
            .record(&event(i), OffsetDateTime::now_utc())
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        queue.backlog("rsyslog").unwrap() >= 10,
        "nothing can be delivered while the receiver is down"
    );
    // The sender side restarts too (all state from disk).
    rt.block_on(sender.shutdown());
    drop(auditor);
    drop(queue);
    let queue = Queue::open(&qdir, &["rsyslog"], QueueOptions::default()).unwrap();
    assert_eq!(queue.last_seq(), 15);
    let auditor = Auditor::new(queue.clone(), "appliance.test", "cps-trust");
    let sender = rt.block_on(async {
        Sender::spawn(queue.clone(), vec![destination(&pki, port)], fast()).unwrap()
    });
    for i in 15..20 {
        auditor
            .record(&event(i), OffsetDateTime::now_utc())
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    // The repository comes back.
    let _recv2 = Rsyslog::start(&rs, "recv2", &conf);
    assert!(
        rt.block_on(sender.wait_delivered(20, Duration::from_secs(30))),
        "{:?}",
        sender.status()
    );
    let want: BTreeSet<String> = (0..20).map(|i| format!("restart-user-{i}")).collect();
    wait_for(
        "all 20 users in rsyslog's file",
        Duration::from_secs(20),
        || {
            let got: BTreeSet<String> = received(&rs)
                .iter()
                .filter_map(|m| parse_audit_xml(&m.msg, &XmlLimits::default()).ok())
                .map(|s| s.user_ids[0].clone())
                .collect();
            want.is_subset(&got)
        },
    );
    assert!(sender.status()["rsyslog"].connections >= 1);
    rt.block_on(sender.shutdown());
}
