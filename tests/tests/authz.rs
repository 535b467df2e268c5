//! Issue "Hardening", items 1–3 and the EKU point of item 9, against a running appliance: the
//! authorization table walked route by route for every role; request forgery on every
//! state-changing route; a revoked operator on a live HTTP/1.1 and HTTP/2 connection and on a
//! resumed TLS session (openssl s_client); connection age and idleness; client certificates
//! without clientAuth.

use std::process::Command;
use std::time::{Duration, Instant};

use cps_appliance::authz::{Forgery, ROUTES, Role, Who};
use cps_trust_tests::https::Conn;
use cps_trust_tests::*;

/// An operator credential of the home.
fn cred(home: &Home, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    (
        home.join(&format!("operator/{name}-cert.pem")),
        home.join(&format!("operator/{name}-key.pem")),
    )
}

fn add_operator(home: &Home, name: &str, role: &str) {
    let out = home.cps(&["operator", "add", "--name", name, "--role", role]);
    assert_success(&out, &format!("operator add {name}"));
}

fn open(home: &Home, app: &Appliance, who: Option<&str>, h2: bool) -> Conn {
    let c = who.map(|n| cred(home, n));
    Conn::open(
        &app.https,
        &home.join("ca/root.pem"),
        c.as_ref().map(|(a, b)| (a.as_path(), b.as_path())),
        h2,
    )
    .unwrap()
}

fn serial_of(pem: &std::path::Path) -> String {
    let out = Command::new(peer("openssl"))
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    text(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_owned()
}

/// A concrete path for a route pattern.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{ca}", "organisations")
        .replace("{serial}", "0123456789ABCDEF")
        .replace("{idnat}", "810000000000")
        .replace("{name}", "no-such-node.example")
        .replace("{id}", "00000000")
        .replace("{action}", "suspend")
        .replace("{*rest}", "index.html")
}

/// A request the route accepts as to its form (content type and a body of that type), so that
/// only the route's authorization can refuse it.
fn well_formed(forgery: Forgery) -> (Vec<(&'static str, &'static str)>, &'static [u8]) {
    match forgery {
        Forgery::Read => (vec![], b""),
        Forgery::Write(types) => match types[0] {
            "application/json" => (vec![("content-type", "application/json")], b"{}"),
            "text/csv" => (vec![("content-type", "text/csv")], b""),
            _ => (vec![("content-type", types[0])], b"<x/>"),
        },
        Forgery::Form => (
            vec![("content-type", "application/x-www-form-urlencoded")],
            b"x=1",
        ),
    }
}

/// Every route of the table, called by every role (and without a certificate): 403 exactly
/// where the table does not list the role, never where it does; 401 without a certificate on
/// every route that needs one. The router serves every route of the table.
#[test]
fn every_role_against_every_route() {
    let (home, app) = Appliance::fresh();
    for role in Role::ALL {
        add_operator(&home, role.as_str(), role.as_str());
    }
    let mut anonymous = open(&home, &app, None, false);
    let mut conns: Vec<(Role, Conn)> = Role::ALL
        .iter()
        .map(|r| (*r, open(&home, &app, Some(r.as_str()), false)))
        .collect();
    let mut checked = 0;
    for route in ROUTES {
        let path = concrete(route.path);
        let method = route.method.as_str();
        let (headers, body) = well_formed(route.forgery);
        let a = anonymous.send(method, &path, &headers, body).unwrap();
        assert_ne!(a.status, 404, "{method} {path} is not routed: {}", a.text());
        match route.who {
            Who::Anyone => assert_ne!(a.status, 401, "{method} {path}: {}", a.text()),
            _ => assert_eq!(
                a.status,
                401,
                "{method} {path} without a certificate: {}",
                a.text()
            ),
        }
        for (role, conn) in conns.iter_mut() {
            let r = conn.send(method, &path, &headers, body).unwrap();
            let refused_for_role = r.status == 403 && r.text().contains("lacks the role");
            let expected = match route.who {
                Who::Operator(roles) => !roles.contains(role),
                Who::Anyone | Who::CardCertificate => false,
            };
            assert_eq!(
                refused_for_role,
                expected,
                "{method} {path} as {}: {} {}",
                role.as_str(),
                r.status,
                r.text()
            );
            if route.who != Who::CardCertificate {
                assert_ne!(
                    r.status,
                    401,
                    "{method} {path} as {}: {}",
                    role.as_str(),
                    r.text()
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * Role::ALL.len());
    // A route outside the table does not exist.
    let r = conns[0].1.send("GET", "/api/v1/nope", &[], b"").unwrap();
    assert_eq!(r.status, 404);
}

/// The observed attack: a revocation posted the way a hostile page makes a browser post it
/// (`text/plain`, a foreign `Origin`, `Sec-Fetch-Site: cross-site`) is refused, and so is every
/// other state-changing route called that way; the certificate stays valid.
#[test]
fn cross_site_and_simple_content_type_requests_change_nothing() {
    let (home, app) = Appliance::fresh();
    let mut admin = open(&home, &app, Some("admin"), false);
    // The appliance's own seal certificate (organisations CA), made at its first start.
    let victim = serial_of(&home.join("xua/cachet.pem"));
    assert!(!victim.is_empty());
    let revoke = format!("/api/v1/certificates/organisations/{victim}/revoke");
    let attacks: Vec<Vec<(&str, &str)>> = vec![
        vec![
            ("content-type", "text/plain"),
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
        vec![("content-type", "text/plain")],
        vec![("content-type", "application/x-www-form-urlencoded")],
        vec![("content-type", "multipart/form-data; boundary=x")],
        vec![],
        vec![
            ("content-type", "application/json"),
            ("origin", "https://evil.example"),
        ],
        vec![("content-type", "application/json"), ("origin", "null")],
        vec![
            ("content-type", "application/json"),
            ("sec-fetch-site", "cross-site"),
        ],
        vec![
            ("content-type", "application/json"),
            ("sec-fetch-site", "same-site"),
        ],
    ];
    for h in &attacks {
        let r = admin
            .send("POST", &revoke, h, br#"{"reason":"keyCompromise"}"#)
            .unwrap();
        assert!(
            r.status == 403 || r.status == 415,
            "{h:?}: {} {}",
            r.status,
            r.text()
        );
    }
    let r = admin
        .send(
            "GET",
            &format!("/api/v1/certificates/organisations/{victim}"),
            &[],
            b"",
        )
        .unwrap();
    assert!(r.text().contains("\"status\":\"valid\""), "{}", r.text());
    // Every state-changing route of the table refuses the same forms, before its handler.
    for route in ROUTES {
        if route.forgery == Forgery::Read {
            continue;
        }
        let path = concrete(route.path);
        let (good, body) = well_formed(route.forgery);
        for bad in [
            vec![("content-type", "text/plain")],
            vec![
                good.first().copied().unwrap_or(("x-none", "")),
                ("origin", "https://evil.example"),
            ],
            vec![
                good.first().copied().unwrap_or(("x-none", "")),
                ("sec-fetch-site", "cross-site"),
            ],
        ] {
            let r = admin.send("POST", &path, &bad, body).unwrap();
            assert!(
                r.status == 403 || r.status == 415,
                "POST {path} {bad:?}: {} {}",
                r.status,
                r.text()
            );
            assert!(
                r.text().contains("nothing was changed"),
                "POST {path} {bad:?} refused by its handler, not before: {}",
                r.text()
            );
        }
    }
    // The genuine request still works.
    let r = admin
        .send(
            "POST",
            &revoke,
            &[("content-type", "application/json")],
            br#"{"reason":"superseded"}"#,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

fn revoke(home: &Home, name: &str) {
    let serial = serial_of(&home.join(&format!("operator/{name}-cert.pem")));
    let out = home.revoke("organisations", &serial, "keyCompromise");
    assert_success(&out, "revoke");
}

/// A connection opened before the revocation (HTTP/1.1 keep-alive and HTTP/2) gets 401 on its
/// next request and is closed; a new connection cannot even complete its handshake.
#[test]
fn a_revoked_operator_loses_its_live_connections() {
    let (home, app) = Appliance::fresh();
    add_operator(&home, "audrey", "auditor");
    let mut h1 = open(&home, &app, Some("audrey"), false);
    let mut h2 = open(&home, &app, Some("audrey"), true);
    for c in [&mut h1, &mut h2] {
        let r = c.send("GET", "/api/v1/whoami", &[], b"").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("audrey"));
    }
    revoke(&home, "audrey");
    for (name, c) in [("HTTP/1.1", &mut h1), ("HTTP/2", &mut h2)] {
        let r = c.send("GET", "/api/v1/whoami", &[], b"").unwrap();
        assert_eq!(r.status, 401, "{name}: {}", r.text());
        assert!(r.text().contains("revoked"), "{name}: {}", r.text());
        assert!(
            c.closed_within(Duration::from_secs(5)),
            "{name}: the connection stays open after the revocation"
        );
    }
    let c = cred(&home, "audrey");
    assert!(
        Conn::open(
            &app.https,
            &home.join("ca/root.pem"),
            Some((&c.0, &c.1)),
            false
        )
        .and_then(|mut c| c.send("GET", "/api/v1/whoami", &[], b"").map(|_| ()))
        .is_err(),
        "a new handshake with a revoked certificate must fail"
    );
}

/// `openssl s_client -sess_out` / `-sess_in`: the appliance hands out no resumable session
/// (TLS 1.3 tickets, TLS 1.2 session IDs), so a saved session reconnects with a full handshake,
/// and without the certificate it has no identity; after the revocation, nothing.
#[test]
fn a_saved_tls_session_carries_no_identity() {
    let (home, app) = Appliance::fresh();
    add_operator(&home, "audrey", "auditor");
    let (cert, key) = cred(&home, "audrey");
    let dir = tempfile::tempdir().unwrap();
    let request = format!(
        "GET /api/v1/whoami HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        app.https
    );
    let s_client = |version: &str, extra: &[&str]| -> String {
        let mut cmd = Command::new(peer("openssl"));
        cmd.args(["s_client", version, "-connect", &app.https, "-CAfile"])
            .arg(home.join("ca/root.pem"))
            .args(["-alpn", "http/1.1", "-ign_eof"])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write;
            // Give TLS 1.3 time to deliver any ticket before the request.
            std::thread::sleep(Duration::from_millis(300));
            let _ = child.stdin.take().unwrap().write_all(request.as_bytes());
        }
        let out = child.wait_with_output().unwrap();
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    };
    for version in ["-tls1_3", "-tls1_2"] {
        let sess = dir.path().join(format!("sess{version}.pem"));
        let first = s_client(
            version,
            &[
                "-cert",
                cert.to_str().unwrap(),
                "-key",
                key.to_str().unwrap(),
                "-sess_out",
                sess.to_str().unwrap(),
            ],
        );
        assert!(first.contains("HTTP/1.1 200"), "{version}:\n{first}");
        assert!(first.contains("audrey"), "{version}:\n{first}");
        if sess.exists() && std::fs::metadata(&sess).unwrap().len() > 0 {
            let again = s_client(version, &["-sess_in", sess.to_str().unwrap()]);
            assert!(
                !again.contains("Reused, TLSv"),
                "{version}: the session was resumed:\n{again}"
            );
            assert!(
                again.contains("HTTP/1.1 401"),
                "{version}: a saved session without the certificate must not authenticate:\n{again}"
            );
        }
    }
    revoke(&home, "audrey");
    let sess = dir.path().join("sess-tls1_3.pem");
    if sess.exists() && std::fs::metadata(&sess).unwrap().len() > 0 {
        let after = s_client("-tls1_3", &["-sess_in", sess.to_str().unwrap()]);
        assert!(!after.contains("HTTP/1.1 200"), "{after}");
    }
}

/// A connection is closed after `listen.idle_seconds` without a request, and at
/// `listen.connection_max_seconds` however busy it is; HTTP/1.1 and HTTP/2.
#[test]
fn connections_are_bounded_in_idleness_and_age() {
    let (home, app) = Appliance::fresh_configured(Home::new(), |h| {
        h.set_config_value("connection_max_seconds", "4");
        h.set_config_value("idle_seconds", "2");
    });
    for h2 in [false, true] {
        // Idle.
        let mut c = open(&home, &app, Some("admin"), h2);
        assert_eq!(
            c.send("GET", "/api/v1/whoami", &[], b"").unwrap().status,
            200
        );
        let t = Instant::now();
        assert!(
            c.closed_within(Duration::from_secs(6)),
            "h2={h2}: idle connection left open"
        );
        let idle = t.elapsed();
        assert!(
            idle >= Duration::from_millis(1500),
            "h2={h2}: closed after {idle:?}"
        );
        // Busy: a request every 500 ms, closed at its maximum age anyway.
        let mut c = open(&home, &app, Some("admin"), h2);
        let t = Instant::now();
        let mut served = 0;
        while t.elapsed() < Duration::from_secs(10) {
            match c.send("GET", "/api/v1/whoami", &[], b"") {
                Ok(r) if r.status == 200 => served += 1,
                _ => break,
            }
            if c.closed_within(Duration::from_millis(500)) {
                break;
            }
        }
        let age = t.elapsed();
        assert!(
            age >= Duration::from_millis(3500) && age < Duration::from_secs(8),
            "h2={h2}: busy connection lived {age:?} ({served} requests)"
        );
        assert!(served >= 5, "h2={h2}: {served}");
    }
}

/// Client certificates must list clientAuth and be of a profile meant for the listener: a seal
/// (documentSigning), a TLS server certificate (serverAuth) and a node certificate (clientAuth,
/// but for syslog-TLS) do not complete a handshake on the HTTPS listener.
#[test]
fn only_client_certificates_meant_for_the_listener_authenticate() {
    let (home, app) = Appliance::fresh_in(Home::new().with_env("CPS_TRUST_LOG", "info"));
    let dir = tempfile::tempdir().unwrap();
    let key_of = |name: &str| dir.path().join(format!("{name}.key"));
    let mut cases = vec![];
    for (name, profile) in [("seal", "org-cachet"), ("server", "org-tls-server")] {
        let csr = openssl_csr(dir.path(), name, "p256");
        let out_pem = dir.path().join(format!("{name}.pem"));
        let dns: &[&str] = if profile == "org-tls-server" {
            &["--dns", "test.example"]
        } else {
            &[]
        };
        let out = issue_org(&home, &csr, &out_pem, profile, name, "test.example", dns);
        assert_success(&out, profile);
        cases.push((profile, out_pem, key_of(name)));
    }
    let node_csr = openssl_csr(dir.path(), "node", "p256");
    let node_pem = dir.path().join("node.pem");
    let out = home.cps(&[
        "node",
        "enroll",
        "--name",
        "dmp-node.example",
        "--csr",
        node_csr.to_str().unwrap(),
        "--org-name",
        "CLINIQUE TEST",
        "--structure-id",
        "1340785161",
        "--state",
        "Herault (34)",
        "-o",
        node_pem.to_str().unwrap(),
    ]);
    assert_success(&out, "node enroll");
    cases.push(("node-tls", node_pem, key_of("node")));
    for (profile, cert, key) in cases {
        let r = Conn::open(
            &app.https,
            &home.join("ca/root.pem"),
            Some((&cert, &key)),
            false,
        )
        .and_then(|mut c| c.send("GET", "/api/v1/whoami", &[], b""));
        assert!(
            r.is_err(),
            "a {profile} certificate completed a handshake: {:?}",
            r.map(|a| (a.status, a.text()))
        );
    }
    wait_for(
        "the refusals logged with their reason",
        Duration::from_secs(10),
        || {
            let log = std::fs::read_to_string(home.join("serve.log")).unwrap_or_default();
            (log.matches("does not list clientAuth").count() == 2
                && log.contains("a 'node-tls' certificate does not authenticate on this listener"))
            .then_some(())
        },
    );
}

/// The card's authentication key as a PEM file, read from the simulated card's state (the state
/// file *is* the card): a workstation doing TLS client authentication with the card.
fn card_key_pem(card: &cps_trust_tests::pcsc::CardAppliance) -> std::path::PathBuf {
    let dir = card.stack.dir.path();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("card.json")).unwrap()).unwrap();
    let key = &state["keys"]["9a"];
    assert_eq!(key["alg"], "p256", "{key}");
    let d = key["d"].as_str().unwrap();
    // SEC1 ECPrivateKey without its public key; openssl computes it.
    let der = hex_bytes(&format!("30310201010420{d}a00a06082a8648ce3d030107"));
    assert_eq!(der.len(), 51, "a P-256 scalar is 32 bytes");
    let raw = dir.join("card-key.der");
    std::fs::write(&raw, &der).unwrap();
    let pem = dir.join("card-key.pem");
    let out = Command::new(peer("openssl"))
        .args(["ec", "-inform", "DER", "-in"])
        .arg(&raw)
        .arg("-out")
        .arg(&pem)
        .output()
        .unwrap();
    assert_success(&out, "openssl ec");
    pem
}

/// Card login by TLS client authentication: one assertion per handshake (the card signed once),
/// and a suspended card loses its open connection at the next request.
#[test]
fn a_tls_login_is_one_assertion_per_handshake_and_follows_the_card() {
    let card = cps_trust_tests::pcsc::CardAppliance::start("tls-login");
    let key = card_key_pem(&card);
    let root = card.home.join("ca/root.pem");
    let connect = || {
        Conn::open(
            &card.app.https,
            &root,
            Some((card.auth_pem.as_path(), key.as_path())),
            false,
        )
        .unwrap()
    };
    let json = [("content-type", "application/json")];
    let mut c = connect();
    let r = c.send("POST", "/api/v1/login/tls", &json, b"{}").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("saml2:Assertion") || r.text().contains("Assertion"),
        "{}",
        r.text()
    );
    let r = c.send("POST", "/api/v1/login/tls", &json, b"{}").unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.text().contains("one TLS login per handshake"),
        "{}",
        r.text()
    );
    // A new handshake, a new login; then the card is suspended while the connection is open.
    let mut c = connect();
    let r = c.send("GET", "/api/v1/crl/personnes", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_success(
        &card.home.cps(&["card", "suspend", &card.card.serial]),
        "card suspend",
    );
    let r = c.send("POST", "/api/v1/login/tls", &json, b"{}").unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("on hold"), "{}", r.text());
    assert!(c.closed_within(Duration::from_secs(5)));
    assert!(
        Conn::open(
            &card.app.https,
            &root,
            Some((card.auth_pem.as_path(), key.as_path())),
            false
        )
        .and_then(|mut c| c
            .send("POST", "/api/v1/login/tls", &json, b"{}")
            .map(|_| ()))
        .is_err(),
        "a suspended card completed a handshake"
    );
}
