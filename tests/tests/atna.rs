//! IHE ATNA against a running appliance and real rsyslog (gtls): registered nodes only into our
//! repository, our audit trail out to an rsyslog repository without loss, `audit verify` on
//! the tamper-evident log, and the TLS policy of the syslog listener.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cps_trust_tests::dicom::{assert_audit_log_schema_valid, assert_schema_valid};
use cps_trust_tests::pcsc::{IDNAT, PcscStack, enrol_card};
use cps_trust_tests::rsyslog::{Rsyslog, logger};
use cps_trust_tests::*;

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// A P-256 key and CSR made by openssl; returns (key path, csr path).
fn key_and_csr(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let csr = openssl_csr(dir, name, "p256");
    (dir.join(format!("{name}.key")), csr)
}

fn enroll_node(home: &Home, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (key, csr) = key_and_csr(dir, name);
    let cert = dir.join(format!("{name}.pem"));
    let out = home.cps(&[
        "node",
        "enroll",
        "--name",
        name,
        "--csr",
        csr.to_str().unwrap(),
        "--org-name",
        "Clinique du Parc",
        "--structure-id",
        "10B0152872",
        "--state",
        "Paris (75)",
        "-o",
        cert.to_str().unwrap(),
    ]);
    assert_success(&out, &format!("node enroll {name}"));
    (key, cert)
}

fn login_xml(user: &str) -> String {
    format!(
        "<AuditMessage><EventIdentification EventActionCode=\"E\" EventDateTime=\"2026-11-22T10:00:00Z\" EventOutcomeIndicator=\"0\"><EventID csd-code=\"110114\" codeSystemName=\"DCM\" originalText=\"User Authentication\"/><EventTypeCode csd-code=\"110122\" codeSystemName=\"DCM\" originalText=\"Login\"/></EventIdentification><ActiveParticipant UserID=\"{user}\" UserIsRequestor=\"true\"/><AuditSourceIdentification AuditSourceID=\"dpi-node\"/></AuditMessage>"
    )
}

fn events_for(home: &Home, user: &str) -> String {
    let out = home.cps(&["audit", "events", "--user", user]);
    assert_success(&out, "audit events");
    text(&out.stdout)
}

/// `openssl s_client` with an optional client certificate and further options, one framed
/// message sent; its stdin (and so the connection) stays open until the caller closes it.
fn s_client_open(
    app: &Appliance,
    home: &Home,
    cert: Option<(&Path, &Path)>,
    extra: &[&str],
    msg: &str,
) -> std::process::Child {
    let mut cmd = Command::new(peer("openssl"));
    cmd.arg("s_client")
        .args(extra)
        .args([
            "-connect",
            &app.syslog_tls,
            // -quiet implies -ign_eof: without this, s_client waits for the server to close (the
            // repository's 300 s idle timeout) after the message is sent.
            "-no_ign_eof",
            "-CAfile",
        ])
        .arg(home.join("ca/root.pem"));
    if let Some((c, k)) = cert {
        cmd.arg("-cert").arg(c).arg("-key").arg(k);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let stdin = child.stdin.as_mut().unwrap();
        let framed = format!("<85>1 2026-11-22T10:00:00Z host app - IHE+RFC-3881 - {msg}");
        let _ = write!(stdin, "{} {}", framed.len(), framed);
        let _ = stdin.flush();
    }
    child
}

/// One framed message over `openssl s_client` with an optional client certificate.
fn s_client(app: &Appliance, home: &Home, cert: Option<(&Path, &Path)>, msg: &str) -> String {
    let mut child = s_client_open(app, home, cert, &["-quiet"], msg);
    std::thread::sleep(Duration::from_millis(800));
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

#[test]
fn rsyslog_forwards_into_the_repository_and_only_registered_nodes_get_in() {
    let (home, mut app) = Appliance::fresh();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a_key, a_cert) = enroll_node(&home, d, "node-a.example");
    let (b_key, b_cert) = enroll_node(&home, d, "node-b.example");

    // rsyslog with node-a's certificate: plain TCP in, gtls out to the appliance.
    let rs = d.join("rs");
    let in_port = free_port();
    let conf = format!(
        r#"global(workDirectory="{rs}/work-fwd" maxMessageSize="64k"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp")
input(type="imtcp" port="{in_port}" address="127.0.0.1")
*.* action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
           StreamDriver="gtls" StreamDriverMode="1"
           StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="cps-trust.localhost"
           TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"
           action.resumeRetryCount="-1" queue.type="LinkedList")
"#,
        rs = rs.display(),
        ca = home.join("ca/root.pem").display(),
        cert = a_cert.display(),
        key = a_key.display(),
        port = port_of(&app.syslog_tls),
    );
    let _fwd = Rsyslog::start(&rs, "fwd", &conf);
    wait_for("rsyslog input", Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", in_port)).ok()
    });
    for i in 0..3 {
        logger(in_port, &login_xml(&format!("rs-user-{i}")));
    }
    wait_for(
        "forwarded events searchable",
        Duration::from_secs(30),
        || {
            (0..3)
                .all(|i| events_for(&home, &format!("rs-user-{i}")).contains("110114"))
                .then_some(())
        },
    );
    let hit = events_for(&home, "rs-user-1");
    assert!(
        hit.contains("node-a.example"),
        "stored with the node's identity: {hit}"
    );

    // node-b is registered: it gets in directly too.
    s_client(&app, &home, Some((&b_cert, &b_key)), &login_xml("direct-b"));
    wait_for("node-b's event", Duration::from_secs(10), || {
        events_for(&home, "direct-b")
            .contains("110114")
            .then_some(())
    });

    // A certificate from our CA that is not a registered node: refused.
    let (c_key, c_csr) = key_and_csr(d, "stranger");
    let c_cert = d.join("stranger.pem");
    assert_success(
        &home.cps(&[
            "cert",
            "issue",
            "--profile",
            "org-tls-client",
            "--csr",
            c_csr.to_str().unwrap(),
            "--holder",
            "stranger",
            "--org-name",
            "Clinique du Parc",
            "--structure-id",
            "10B0152872",
            "--cn",
            "stranger.example",
            "--state",
            "Paris (75)",
            "-o",
            c_cert.to_str().unwrap(),
        ]),
        "cert issue stranger",
    );
    s_client(
        &app,
        &home,
        Some((&c_cert, &c_key)),
        &login_xml("from-stranger"),
    );
    // No client certificate: refused.
    s_client(&app, &home, None, &login_xml("from-nobody"));
    // node-b removed (its certificate revoked): refused from now on.
    assert_success(
        &home.cps(&["node", "remove", "node-b.example"]),
        "node remove",
    );
    s_client(
        &app,
        &home,
        Some((&b_cert, &b_key)),
        &login_xml("from-removed-b"),
    );
    std::thread::sleep(Duration::from_secs(1));
    for user in ["from-stranger", "from-nobody", "from-removed-b"] {
        assert!(
            !events_for(&home, user).contains("110114"),
            "{user} must have been refused"
        );
    }
    // (The refusals are audited as one record per source and interval: see
    // `a_flood_of_failed_handshakes_is_audited_once_per_source_and_interval`.)
    // The syslog listener's TLS policy, scanned with a registered node's certificate.
    let out = Command::new(peer("sslscan"))
        .args(["--no-colour", "--no-heartbleed"])
        .arg(format!("--certs={}", a_cert.display()))
        .arg(format!("--pk={}", a_key.display()))
        .arg(&app.syslog_tls)
        .output()
        .unwrap();
    let report = text(&out.stdout);
    for (proto, want) in [
        ("TLSv1.0", "disabled"),
        ("TLSv1.1", "disabled"),
        ("TLSv1.2", "enabled"),
        ("TLSv1.3", "enabled"),
    ] {
        let line = report.lines().find(|l| l.starts_with(proto)).unwrap_or("");
        assert!(line.contains(want), "{proto} must be {want}:\n{report}");
    }
    for l in report
        .lines()
        .filter(|l| l.starts_with("Accepted") || l.starts_with("Preferred"))
    {
        assert!(
            l.contains("GCM") || l.contains("CHACHA20"),
            "not an AEAD suite: {l}\n{report}"
        );
    }
    // Every message of the run (nodes, certificates, the forwarded logins, refusals): valid.
    app.daemon.stop(Duration::from_secs(10));
    assert_audit_log_schema_valid(&home);
}

fn receiver_conf(rs: &Path, home: &Home, cert: &Path, key: &Path, port: u16) -> String {
    format!(
        r#"global(workDirectory="{rs}/work-recv" maxMessageSize="64k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"
       StreamDriver.AuthMode="x509/name" PermittedPeer=["cps-trust.localhost"])
input(type="imtcp" port="{port}" address="127.0.0.1")
if $msgid == "IHE+RFC-3881" then {{
  action(type="omfile" file="{rs}/received.log" template="RSYSLOG_SyslogProtocol23Format")
}}
"#,
        rs = rs.display(),
        ca = home.join("ca/root.pem").display(),
        cert = cert.display(),
        key = key.display(),
    )
}

/// The audit messages rsyslog wrote out, each checked as RFC 5424 + DICOM A.5.1.
fn received(rs: &Path) -> Vec<String> {
    let data = std::fs::read_to_string(rs.join("received.log")).unwrap_or_default();
    data.lines().map(str::to_owned).collect()
}

fn check_a51(line: &str) {
    // RFC 5424 header: <PRI>1 TIMESTAMP HOST APP PROCID MSGID; facility 10 (authpriv).
    let pri: u32 = line[1..line.find('>').unwrap()].parse().unwrap();
    assert_eq!(pri / 8, 10, "facility: {line}");
    assert!(pri % 8 == 5 || pri % 8 == 4, "severity: {line}");
    assert!(line.contains(" IHE+RFC-3881 "), "{line}");
    let xml = &line[line.find("<AuditMessage").expect("DICOM audit XML")..];
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "AuditMessage");
    let child = |n: &str| root.children().find(|c| c.tag_name().name() == n);
    let ev = child("EventIdentification").expect("EventIdentification");
    for a in ["EventActionCode", "EventDateTime", "EventOutcomeIndicator"] {
        assert!(ev.attribute(a).is_some(), "{a}: {xml}");
    }
    let id = ev
        .children()
        .find(|c| c.tag_name().name() == "EventID")
        .expect("EventID");
    assert!(id.attribute("csd-code").is_some() && id.attribute("codeSystemName").is_some());
    assert!(child("ActiveParticipant").is_some(), "{xml}");
    assert!(child("AuditSourceIdentification").is_some(), "{xml}");
}

/// The stopped appliance of `home` sends its audit trail to `127.0.0.1:port` (server name
/// `arr.example`) once started again.
fn add_destination(home: &Home, port: u16) {
    let mut cfg = home.config_text().replace("destinations = []\n", "");
    cfg.push_str(&format!(
        "\n[[audit.destinations]]\nname = \"arr\"\naddress = \"127.0.0.1:{port}\"\nserver_name = \"arr.example\"\n"
    ));
    home.set_config_text(&cfg);
}

#[test]
fn the_audit_trail_reaches_rsyslog_without_loss_and_the_log_verifies() {
    let (home, mut app) = Appliance::fresh();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The repository rsyslog stands for is a registered node with a certificate from our CA.
    let (r_key, r_cert) = enroll_node(&home, d, "arr.example");
    app.daemon.stop(Duration::from_secs(10));
    let recv_port = free_port();
    add_destination(&home, recv_port);
    let rs = d.join("rs");
    let mut recv = Rsyslog::start(
        &rs,
        "recv",
        &receiver_conf(&rs, &home, &r_cert, &r_key, recv_port),
    );
    let mut app = Appliance::start(&home);

    issue_certs(&home, d, "first", 2);
    wait_for(
        "cert-issued messages at rsyslog",
        Duration::from_secs(30),
        || {
            (received(&rs)
                .iter()
                .filter(|l| l.contains("cert-issued"))
                .count()
                >= 2)
                .then_some(())
        },
    );
    for l in received(&rs) {
        check_a51(&l);
    }

    // Repository down; events happen; the appliance restarts too; then the repository is back.
    recv.stop();
    issue_certs(&home, d, "down", 3);
    app.daemon.stop(Duration::from_secs(10));
    let mut app = Appliance::start(&home);
    issue_certs(&home, d, "after", 1);
    let _recv = Rsyslog::start(
        &rs,
        "recv2",
        &receiver_conf(&rs, &home, &r_cert, &r_key, recv_port),
    );
    wait_for("every event at rsyslog", Duration::from_secs(60), || {
        let lines = received(&rs);
        let got = lines
            .iter()
            .filter(|l| l.contains("cert-issued") && l.contains("atna-test-holder"))
            .count();
        (got >= 6).then_some(())
    });

    // The checkpoints of the appliance's log reach the repository too, each with what is needed
    // to check it there: its signature verifies with the checkpoint certificate's key, and it is
    // a checkpoint of the local log.
    let line = wait_for("a checkpoint at rsyslog", Duration::from_secs(30), || {
        received(&rs)
            .into_iter()
            .find(|l| l.contains("audit-checkpoint"))
    });
    check_a51(&line);
    let xml = &line[line.find("<AuditMessage").unwrap()..];
    let doc = roxmltree::Document::parse(xml).unwrap();
    let entry = doc
        .descendants()
        .find(|n| n.attribute("type") == Some("checkpoint"))
        .and_then(|n| n.attribute("value"))
        .expect("the checkpoint entry");
    let entry = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(entry)
            .unwrap()
    };
    let cp = cps_atna::Checkpoint::from_bytes(&entry).unwrap();
    let chain = cps_pki::pem_certificates(
        &std::fs::read_to_string(home.join("audit/checkpoint.pem")).unwrap(),
    );
    let spki = cps_pki::parse_certificate(&chain[0]).unwrap().spki;
    cp.verify(&spki).unwrap();
    assert!(
        cps_atna::read_checkpoints(&home.join("audit/log"))
            .unwrap()
            .contains(&cp),
        "the repository's checkpoint is one of the local log's"
    );

    // The appliance's own log: intact, then tampered with.
    app.daemon.stop(Duration::from_secs(10));
    assert_audit_log_intact(&home);
    // Every message rsyslog received, and every record of the log: valid DICOM.
    assert_schema_valid("rsyslog", &received(&rs));
    assert_audit_log_schema_valid(&home);
    let log_dir = home.join("audit/log");
    let records = std::fs::read_dir(&log_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("records"))
        })
        .expect("records file");
    let pristine = std::fs::read(&records).unwrap();
    // One byte of one record's message changed.
    let mut changed = pristine.clone();
    let at = changed
        .windows(14)
        .position(|w| w == b"EventDateTime=")
        .expect("a record body");
    changed[at + 20] ^= 0x01;
    std::fs::write(&records, &changed).unwrap();
    let out = home.cps(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("record"),
        "{}",
        text(&out.stderr)
    );
    // The tail cut off.
    std::fs::write(&records, &pristine[..pristine.len() / 2]).unwrap();
    let out = home.cps(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    std::fs::write(&records, &pristine).unwrap();
    assert_success(&home.cps(&["audit", "verify"]), "audit verify restored");
}

/// TLS client settings trusting the appliance's root, without a client certificate.
fn anonymous_tls(home: &Home) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read_to_string(home.join("ca/root.pem")).unwrap();
    for der in cps_pki::pem_certificates(&pem) {
        roots.add(der.into()).unwrap();
    }
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// One complete TLS attempt without a client certificate: the handshake runs to its end on
/// the client's side and the repository refuses it (its alert arrives on the first read).
fn attempt_without_certificate(addr: &str, tls: &std::sync::Arc<rustls::ClientConfig>) {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(addr) else {
        return;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let name = rustls::pki_types::ServerName::try_from("cps-trust.localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(tls.clone(), name).unwrap();
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            return;
        }
    }
    let mut s = rustls::Stream::new(&mut conn, &mut tcp);
    let _ = s.write_all(b"5 hello");
    let mut b = [0u8; 16];
    let _ = s.read(&mut b);
}

/// A flood of failed handshakes (thousands of complete TLS attempts without a certificate from
/// one source) is counted in memory and audited as one `atna.refused` record per source and
/// interval carrying the exact count, in the store and in the DICOM trail; no durable write per
/// attempt.
#[test]
fn a_flood_of_failed_handshakes_is_audited_once_per_source_and_interval() {
    const INTERVAL: u64 = 2;
    let (home, mut app) = Appliance::fresh_configured(Home::new(), |h| {
        h.set_config_value("refusal_summary_seconds", &INTERVAL.to_string())
    });
    let tls = anonymous_tls(&home);
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (addr, tls) = (app.syslog_tls.clone(), tls.clone());
            std::thread::spawn(move || {
                for _ in 0..750 {
                    attempt_without_certificate(&addr, &tls);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let attempts: u64 = 3000;
    let flood = started.elapsed();
    // Two more intervals: the last counts are written.
    std::thread::sleep(Duration::from_secs(2 * INTERVAL + 1));
    app.daemon.stop(Duration::from_secs(10));

    let refused: Vec<_> = store_audit(&home)
        .into_iter()
        .filter(|r| r.kind == "atna.refused")
        .collect();
    let counted: u64 = refused
        .iter()
        .map(|r| r.detail["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        counted, attempts,
        "every refusal counted once: {refused:#?}"
    );
    eprintln!(
        "{attempts} refused handshakes in {flood:?}: {} atna.refused records, counts {:?}",
        refused.len(),
        refused
            .iter()
            .map(|r| r.detail["count"].as_u64().unwrap())
            .collect::<Vec<_>>()
    );
    let bound = flood.as_secs() / INTERVAL + 3;
    assert!(
        !refused.is_empty() && refused.len() as u64 <= bound,
        "{} records for a {flood:?} flood (at most one per {INTERVAL} s interval, {bound}): not aggregated",
        refused.len()
    );
    for r in &refused {
        assert_eq!(r.detail["source"], "127.0.0.1", "{r:?}");
        assert_eq!(r.actor, "peer:127.0.0.1");
        assert_eq!(r.outcome, "failure");
        let reasons = r.detail["reasons"].as_object().unwrap();
        assert!(
            reasons.keys().all(|k| k == "TLS handshake failed"),
            "{reasons:?}"
        );
    }
    // No durable record per attempt, of any kind.
    let all = store_audit(&home).len();
    assert!(
        all < 100,
        "{all} audit records in the store after {attempts} refusals"
    );
    // The same summaries are in the DICOM trail (security alerts, node authentication).
    let log = cps_atna::AuditLog::open(&home.join("audit/log"), None, Default::default()).unwrap();
    let alerts = log
        .search(
            &cps_atna::SearchFilter {
                event_id: Some("110113".into()),
                ..Default::default()
            },
            1000,
            None,
        )
        .unwrap();
    let summaries = alerts
        .records
        .iter()
        .filter(|r| {
            String::from_utf8_lossy(&r.raw)
                .contains("refused syslog-TLS connections from 127.0.0.1")
        })
        .count();
    assert_eq!(summaries, refused.len());
    drop(log);
    assert_audit_log_schema_valid(&home);
}

/// `openssl s_client` as a node (from [`s_client_open`]): its connection stays open until it
/// ends or the appliance closes it.
struct NodeClient {
    child: std::process::Child,
}

impl NodeClient {
    fn of(child: std::process::Child) -> NodeClient {
        NodeClient { child }
    }

    /// Connected with a node's certificate, its first message stored; the connection open.
    fn delivered(app: &Appliance, home: &Home, cert: (&Path, &Path), user: &str) -> NodeClient {
        let c = NodeClient::of(s_client_open(app, home, Some(cert), &[], &login_xml(user)));
        wait_for(&format!("{user}'s event"), Duration::from_secs(10), || {
            stored(home, user).then_some(())
        });
        c
    }

    /// Whether the appliance closed the connection within `bound` (s_client exits then).
    fn closed_within(&mut self, bound: Duration) -> Option<Duration> {
        let t = std::time::Instant::now();
        while t.elapsed() < bound {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Ends the session; returns what s_client printed.
    fn finish(mut self) -> String {
        drop(self.child.stdin.take());
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut out = String::new();
        use std::io::Read;
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut out);
        }
        out
    }
}

impl Drop for NodeClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stored(home: &Home, user: &str) -> bool {
    events_for(home, user).contains("110114")
}

/// A node's open syslog-TLS connection is closed within seconds of `node remove`, and of the
/// revocation of its certificate (re-authorization on the change, not the periodic check,
/// which is set to 5 minutes here); the node cannot connect again. No TLS session can be
/// saved for later resumption (TLS 1.3 or 1.2), so a revoked client cannot skip the
/// certificate check with an old session.
#[test]
fn removed_or_revoked_nodes_lose_their_open_connections_and_cannot_resume() {
    let (home, app) = Appliance::fresh_configured(Home::new(), |h| {
        h.set_config_value("reauthorize_seconds", "300")
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bound = Duration::from_secs(5);

    // Removal.
    let (a_key, a_cert) = enroll_node(&home, d, "node-a.example");
    let mut a = NodeClient::delivered(&app, &home, (&a_cert, &a_key), "open-a");
    assert!(
        a.closed_within(Duration::from_millis(500)).is_none(),
        "open"
    );
    assert_success(
        &home.cps(&["node", "remove", "node-a.example"]),
        "node remove",
    );
    let took = a.closed_within(bound);
    assert!(
        took.is_some(),
        "node-a's connection still open {bound:?} after its removal"
    );
    drop(a);
    let again = NodeClient::of(s_client_open(
        &app,
        &home,
        Some((&a_cert, &a_key)),
        &[],
        &login_xml("again-a"),
    ));
    again.finish();

    // Revocation of the certificate of a node that stays registered.
    let (b_key, b_cert) = enroll_node(&home, d, "node-b.example");
    let mut b = NodeClient::delivered(&app, &home, (&b_cert, &b_key), "open-b");
    let serial = serial_of(&b_cert);
    assert_success(
        &home.revoke("organisations", &serial, "keyCompromise"),
        "cert revoke",
    );
    assert!(
        b.closed_within(bound).is_some(),
        "node-b's connection still open {bound:?} after its certificate was revoked"
    );
    drop(b);
    NodeClient::of(s_client_open(
        &app,
        &home,
        Some((&b_cert, &b_key)),
        &[],
        &login_xml("again-b"),
    ))
    .finish();

    // Resumption: a registered node saves its session (TLS 1.3, then 1.2): there is none to
    // save, the appliance issues neither tickets nor session IDs on this listener.
    let (c_key, c_cert) = enroll_node(&home, d, "node-c.example");
    for (version, user) in [("-tls1_3", "resume-13"), ("-tls1_2", "resume-12")] {
        let sess = d.join(format!("c{version}.sess"));
        let c = NodeClient::of(s_client_open(
            &app,
            &home,
            Some((&c_cert, &c_key)),
            &[version, "-sess_out", sess.to_str().unwrap()],
            &login_xml(user),
        ));
        wait_for("node-c's event", Duration::from_secs(10), || {
            stored(&home, user).then_some(())
        });
        std::thread::sleep(Duration::from_millis(300));
        let out = c.finish();
        assert!(out.contains("New, TLSv1."), "{out}");
        assert!(
            !sess.exists() || std::fs::metadata(&sess).unwrap().len() == 0,
            "{version}: the appliance gave the client a session to resume:\n{out}"
        );
    }

    std::thread::sleep(Duration::from_secs(1));
    for user in ["again-a", "again-b"] {
        assert!(!stored(&home, user), "{user} must have been refused");
    }
}

/// The DICOM messages rsyslog received whose EventTypeCodes include `code`.
fn with_type_code(rs: &Path, code: &str) -> Vec<String> {
    let attr = format!("csd-code=\"{code}\"");
    received(rs)
        .into_iter()
        .filter(|l| l.contains(&attr))
        .collect()
}

/// A card's life in the ATNA trail: a card enrolled through the real PC/SC stack, logged in
/// with, suspended, then opposed reaches rsyslog as three messages of their own — Security
/// Alert (110113) / User Security Attributes Changed (110137) with the local codes
/// `card-enrolled`, `card-suspended`, `card-opposed`, the card and its holder (the
/// professional's IdNat_PS) as participant objects — and not as a generic alert carrying raw
/// JSON. Then every message rsyslog received and every record of the appliance's log validates
/// against the DICOM schema.
#[test]
fn a_card_enrolment_suspension_and_opposition_reach_rsyslog_as_their_own_events() {
    let (stack, _sim, reader) = PcscStack::with_blank_card("atna-card");
    let (home, mut app) = Appliance::fresh_in(stack.home());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (r_key, r_cert) = enroll_node(&home, d, "arr.example");
    app.daemon.stop(Duration::from_secs(10));
    let recv_port = free_port();
    add_destination(&home, recv_port);
    let rs = d.join("rs");
    let _recv = Rsyslog::start(
        &rs,
        "recv",
        &receiver_conf(&rs, &home, &r_cert, &r_key, recv_port),
    );
    let mut app = Appliance::start(&home);

    let card = enrol_card(&home, d, &reader);
    let login = card_login(&home, &reader, &card.pin, &d.join("assertion.xml"));
    assert_success(&login, "card login");
    assert_success(
        &home.cps(&["card", "suspend", &card.serial]),
        "card suspend",
    );
    assert_success(
        &home.cps(&["card", "oppose", &card.serial, "--reason", "stolen"]),
        "card oppose",
    );
    let codes = ["card-enrolled", "card-suspended", "card-opposed"];
    wait_for(
        "the card's events at rsyslog",
        Duration::from_secs(60),
        || {
            codes
                .iter()
                .all(|c| !with_type_code(&rs, c).is_empty())
                .then_some(())
        },
    );
    let mut seen = Vec::new();
    for code in codes {
        let lines = with_type_code(&rs, code);
        assert_eq!(lines.len(), 1, "one {code} message: {lines:#?}");
        let line = &lines[0];
        check_a51(line);
        let xml = &line[line.find("<AuditMessage").unwrap()..];
        let doc = roxmltree::Document::parse(xml).unwrap();
        let ev = doc
            .descendants()
            .find(|n| n.has_tag_name("EventIdentification"))
            .unwrap();
        let coded = |n: roxmltree::Node| {
            (
                n.attribute("csd-code").unwrap_or("").to_owned(),
                n.attribute("codeSystemName").unwrap_or("").to_owned(),
            )
        };
        let id = ev.children().find(|n| n.has_tag_name("EventID")).unwrap();
        assert_eq!(coded(id), ("110113".into(), "DCM".into()), "{code}: {xml}");
        let types: Vec<(String, String)> = ev
            .children()
            .filter(|n| n.has_tag_name("EventTypeCode"))
            .map(coded)
            .collect();
        assert_eq!(types.len(), 2, "{code}: {xml}");
        assert_eq!(types[0], ("110137".into(), "DCM".into()), "{code}: {xml}");
        assert_eq!(types[1].0, code, "{code}: {xml}");
        assert_eq!(
            ev.attribute("EventOutcomeIndicator"),
            Some("0"),
            "{code}: {xml}"
        );
        // Not the generic alert of old: no raw JSON record in the description.
        let description = ev
            .children()
            .find(|n| n.has_tag_name("EventOutcomeDescription"))
            .and_then(|n| n.text())
            .unwrap_or("");
        assert!(!description.contains('{'), "{code}: {xml}");
        // The participant objects: the card (a security resource, its serial) and its holder
        // (a person, the user, by IdNat_PS).
        let objects: Vec<(String, String, String, String)> = doc
            .descendants()
            .filter(|n| n.has_tag_name("ParticipantObjectIdentification"))
            .map(|n| {
                let id_type = n
                    .children()
                    .find(|c| c.has_tag_name("ParticipantObjectIDTypeCode"))
                    .and_then(|c| c.attribute("csd-code"))
                    .unwrap_or("")
                    .to_owned();
                (
                    n.attribute("ParticipantObjectID").unwrap_or("").to_owned(),
                    id_type,
                    n.attribute("ParticipantObjectTypeCode")
                        .unwrap_or("")
                        .to_owned(),
                    n.attribute("ParticipantObjectTypeCodeRole")
                        .unwrap_or("")
                        .to_owned(),
                )
            })
            .collect();
        assert_eq!(
            objects,
            vec![
                (
                    card.serial.clone(),
                    "card-serial".to_owned(),
                    "2".to_owned(),
                    "13".to_owned()
                ),
                (
                    IDNAT.to_owned(),
                    "11".to_owned(),
                    "1".to_owned(),
                    "6".to_owned()
                ),
            ],
            "{code}: {xml}"
        );
        seen.push(line.clone());
    }
    seen.dedup();
    assert_eq!(seen.len(), 3, "three distinct messages");
    // The login with the card is in the trail too (User Authentication, assertion issued).
    for code in ["110122", "assertion-issued"] {
        assert!(
            !with_type_code(&rs, code).is_empty(),
            "{code} at rsyslog: {:#?}",
            received(&rs)
        );
    }
    // No card or enrolment event reached the trail as a generic Security Alert without its
    // own code (the old `enrol.*` fallback: Use of Restricted Function with raw JSON).
    for l in received(&rs) {
        assert!(!l.contains("enrol."), "{l}");
    }

    app.daemon.stop(Duration::from_secs(10));
    assert_schema_valid("rsyslog", &received(&rs));
    assert_audit_log_schema_valid(&home);
}
