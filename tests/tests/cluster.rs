//! Several nodes on one PostgreSQL database (README, "Several nodes"): two `cps-trust serve`
//! processes, node b made by `cluster join` from node a's home, sharing the database and the
//! SoftHSM2 token. What one node acknowledges, the other acts on at once: a revocation made on
//! b is in a's next OCSP answer, an assertion validated on a is a replay on b (also after a is
//! killed with SIGKILL and restarted), CRL numbers never go back whoever signs, and a failover of
//! the database to its synchronous standby loses nothing that was acknowledged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cps_testkit::postgres::Postgres;
use cps_trust_tests::pcsc::{PcscStack, enrol_card};
use cps_trust_tests::*;

/// A node's home: node a made by `init --store-url`, the others joined from it.
fn first_node(stack: &PcscStack, url: &str) -> Home {
    let home = Home::new().with_env("PCSCLITE_CSOCK_NAME", &stack.socket);
    assert_success(
        &home.cps(&["init", "--store-url", url, "--time-source", "declared"]),
        "init node a",
    );
    let mut cfg = home.config_text();
    cfg.push_str("\n[cluster]\nnode_id = \"a\"\n");
    home.set_config_text(&cfg);
    home
}

fn joined_node(stack: &PcscStack, from: &Home, id: &str) -> Home {
    let home = Home::new().with_env("PCSCLITE_CSOCK_NAME", &stack.socket);
    let out = home.cps(&[
        "cluster",
        "join",
        "--from",
        from.join("").to_str().unwrap(),
        "--node-id",
        id,
    ]);
    assert_success(&out, "cluster join");
    assert!(home.config_text().contains(&format!("node_id = \"{id}\"")));
    // Operators are the cluster's (in the database); their credentials are the person's: the
    // test's admin and service operator use the same files on every node.
    copy_dir(&from.join("operator"), &home.join("operator"));
    home
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// `POST /api/v1/xua/validate` on `app` as the `svc` operator of `home`: status and body.
fn validate(home: &Home, app: &Appliance, file: &Path) -> (u16, serde_json::Value) {
    try_validate(home, app, file).unwrap_or_else(|(code, body)| panic!("{code}: {body}"))
}

/// The same; no JSON answer (e.g. the node is down) is `Err`.
fn try_validate(
    home: &Home,
    app: &Appliance,
    file: &Path,
) -> Result<(u16, serde_json::Value), (u16, String)> {
    let (code, body) = curl(&[
        "--cacert",
        home.join("ca/root.pem").to_str().unwrap(),
        "--cert",
        home.join("operator/svc-cert.pem").to_str().unwrap(),
        "--key",
        home.join("operator/svc-key.pem").to_str().unwrap(),
        "-H",
        "Content-Type: application/xml",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("https://{}/api/v1/xua/validate", app.https),
    ]);
    match serde_json::from_slice(&body) {
        Ok(v) => Ok((code, v)),
        Err(_) => Err((code, text(&body))),
    }
}

fn replayed(home: &Home, app: &Appliance, file: &Path, what: &str) {
    let (code, v) = validate(home, app, file);
    assert_eq!(v["valid"], false, "{what}: {code} {v}");
    assert_eq!(v["code"], "replayed", "{what}: {code} {v}");
}

fn kill9(app: &mut Appliance) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &app.daemon.pid().to_string()])
        .status();
    let _ = app.daemon.child.wait();
}

struct TwoNodes {
    pg: Postgres,
    stack: PcscStack,
    _sim: cps_trust_tests::pcsc::Simulator,
    reader: String,
    dir: tempfile::TempDir,
    a: (Home, Appliance),
    b: (Home, Appliance),
}

fn two_nodes(label: &str) -> TwoNodes {
    two_nodes_with(label, |_| {})
}

fn two_nodes_with(label: &str, configure: impl FnOnce(&Home)) -> TwoNodes {
    let pg = Postgres::start();
    let url = pg.create_database("cps");
    let (stack, sim, reader) = PcscStack::with_blank_card(label);
    let home_a = first_node(&stack, &url);
    configure(&home_a);
    let app_a = Appliance::start(&home_a);
    let home_b = joined_node(&stack, &home_a, "b");
    let app_b = Appliance::start(&home_b);
    TwoNodes {
        pg,
        stack,
        _sim: sim,
        reader,
        dir: tempfile::tempdir().unwrap(),
        a: (home_a, app_a),
        b: (home_b, app_b),
    }
}

#[test]
fn a_revocation_and_a_validation_on_one_node_hold_on_the_other() {
    let mut t = two_nodes("cluster-two");
    let dir = t.dir.path().to_path_buf();
    let ((home_a, app_a), (home_b, app_b)) = (&t.a, &t.b);

    // Each node names itself.
    for (app, id) in [(app_a, "a"), (app_b, "b")] {
        let (_, body) = http_get(&app.http, "/health").unwrap();
        let h: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(h["node"], id, "{h}");
    }

    // Issue on a, OCSP on a says good (and caches it), revoke on b: a says revoked at once.
    let csr = openssl_csr(&dir, "doc", "p256");
    let cert = dir.join("doc.pem");
    assert_success(
        &issue_org(
            home_a,
            &csr,
            &cert,
            "org-tls-client",
            "318751275100020",
            "client.clinique.example",
            &[],
        ),
        "issue on a",
    );
    let serial = serial_of(&cert);
    // Without a nonce: answered from (and put into) the pre-signed cache.
    for _ in 0..3 {
        let answer = ocsp_query(home_a, app_a, "organisations", &[&cert], &["-no_nonce"]);
        assert!(answer.contains(": good"), "{answer}");
    }
    assert_success(
        &home_b.revoke("organisations", &serial, "keyCompromise"),
        "revoke on b",
    );
    for extra in [&["-no_nonce"][..], &[]] {
        let answer = ocsp_query(home_a, app_a, "organisations", &[&cert], extra);
        assert!(
            answer.contains(": revoked"),
            "node a after b's revocation ({extra:?}): {answer}"
        );
        let answer = ocsp_query(home_b, app_b, "organisations", &[&cert], extra);
        assert!(answer.contains(": revoked"), "node b ({extra:?}): {answer}");
    }

    // A console form shown by a is accepted by b (the form-token key comes from the shared HSM):
    // the console needs no sticky session.
    let admin = |app: &Appliance, extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "--cacert".into(),
            home_a.join("ca/root.pem").to_str().unwrap().to_owned(),
            "--cert".into(),
            home_a
                .join("operator/admin-cert.pem")
                .to_str()
                .unwrap()
                .to_owned(),
            "--key".into(),
            home_a
                .join("operator/admin-key.pem")
                .to_str()
                .unwrap()
                .to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("https://{}/console/professionals/new", app.https));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args)
    };
    let (code, page) = admin(app_a, &[]);
    assert_eq!(code, 200, "{}", text(&page));
    let page = text(&page);
    let token = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no form token in:\n{page}"))
        .to_owned();
    let form = format!(
        "csrf={token}&idnat_ps=810003456786&surname=LE+GALL&given_names=Jean&profession_code=21\
         &savoir_faire=&act0_structure_id=P290001234&act0_structure_name=PHARMACIE+DU+PORT\
         &act0_secteur=SA33&act1_structure_id=&act1_structure_name=&act1_secteur="
    );
    let (code, body) = admin(
        app_b,
        &[
            "-H",
            "Content-Type: application/x-www-form-urlencoded",
            "--data",
            &form,
        ],
    );
    assert_eq!(code, 303, "b refused a's form: {}", text(&body));

    // A card enrolled through a, an assertion from a login on a: valid once, on either node.
    let card = enrol_card(home_a, &dir, &t.reader);
    assert_success(
        &home_a.cps(&["operator", "add", "--name", "svc", "--role", "service"]),
        "operator add",
    );
    copy_dir(&home_a.join("operator"), &home_b.join("operator"));
    let logins: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("a{i}.xml"))).collect();
    for f in &logins {
        assert_success(&card_login(home_a, &t.reader, &card.pin, f), "login on a");
    }
    let (code, v) = validate(home_a, app_a, &logins[0]);
    assert_eq!((code, &v["valid"]), (200, &serde_json::json!(true)), "{v}");
    replayed(home_b, app_b, &logins[0], "first assertion on b after a");
    // The other way round.
    let (code, v) = validate(home_b, app_b, &logins[1]);
    assert_eq!((code, &v["valid"]), (200, &serde_json::json!(true)), "{v}");
    replayed(home_a, app_a, &logins[1], "second assertion on a after b");

    // Killed right after an accepted validation: the record was durable before the answer.
    let (code, v) = validate(home_a, app_a, &logins[2]);
    assert_eq!((code, &v["valid"]), (200, &serde_json::json!(true)), "{v}");
    kill9(&mut t.a.1);
    replayed(&t.b.0, &t.b.1, &logins[2], "on b while a is down");
    t.a.1 = Appliance::start(&t.a.0);
    for f in &logins {
        replayed(&t.a.0, &t.a.1, f, "on a after its restart");
        replayed(&t.b.0, &t.b.1, f, "on b after a's restart");
    }
    let _ = &t.stack;
}

/// The acknowledged operations of one load thread.
#[derive(Default)]
struct Acked {
    serials: Vec<String>,
    validated: Vec<PathBuf>,
    before_kill: usize,
    after_kill: usize,
}

/// 30 s of mixed load: issuance alternating over `issuers`, card logins on the `login` node and
/// validations on the `validator` node; `event` runs after 10 s. What was acknowledged, counted
/// before and after the event.
fn mixed_load(
    issuers: &[&Home],
    login: (&Home, &str, &str),
    validator: (&Home, &Appliance),
    dir: &Path,
    event: impl FnOnce(),
) -> Acked {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    let killed = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let acked = Mutex::new(Acked::default());
    let count = || {
        let mut a = acked.lock().unwrap();
        if killed.load(Ordering::SeqCst) {
            a.after_kill += 1;
        } else {
            a.before_kill += 1;
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let home = issuers[i % issuers.len()];
                let tag = format!("load{i}");
                let csr = openssl_csr(dir, &tag, "p256");
                let pem = dir.join(format!("{tag}.pem"));
                let out = issue_org(
                    home,
                    &csr,
                    &pem,
                    "org-tls-client",
                    &format!("31875127510{i:04}"),
                    "client.clinique.example",
                    &[],
                );
                if out.status.success() {
                    acked.lock().unwrap().serials.push(serial_of(&pem));
                    count();
                }
            }
        });
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let f = dir.join(format!("v{i}.xml"));
                if !card_login(login.0, login.1, login.2, &f).status.success() {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                let Ok((code, v)) = try_validate(validator.0, validator.1, &f) else {
                    continue;
                };
                if code == 200 && v["valid"] == true {
                    acked.lock().unwrap().validated.push(f);
                    count();
                }
            }
        });
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(10));
        event();
        killed.store(true, Ordering::SeqCst);
        eprintln!("event at {:?}", t0.elapsed());
        std::thread::sleep(Duration::from_secs(30).saturating_sub(t0.elapsed()));
        stop.store(true, Ordering::SeqCst);
    });
    acked.into_inner().unwrap()
}

/// Every acknowledged certificate is in the database, every acknowledged validation a replay on
/// each of `nodes`.
fn all_acknowledged_found(url: &str, acked: &Acked, nodes: &[(&Home, &Appliance)]) {
    use cps_store::Store;
    let db = cps_store::PgStore::open(url, cps_store::PgOptions::default()).unwrap();
    for serial in &acked.serials {
        assert!(
            db.get_certificate("organisations", &hex_bytes(serial))
                .unwrap()
                .is_some(),
            "acknowledged certificate {serial} lost"
        );
    }
    for f in &acked.validated {
        for (home, app) in nodes {
            replayed(home, app, f, "an acknowledged validation");
        }
    }
}

#[test]
fn a_database_failover_under_load_loses_nothing_acknowledged() {
    let mut primary = Postgres::start();
    primary.create_database("cps");
    let standby = Postgres::standby_of(&primary);
    let url = format!(
        "postgresql://postgres@{},{}/cps?target_session_attrs=read-write&connect_timeout=2",
        primary.host_port(),
        standby.host_port()
    );
    let (stack, _sim, reader) = PcscStack::with_blank_card("cluster-failover");
    let home_a = first_node(&stack, &url);
    let app_a = Appliance::start(&home_a);
    let home_b = joined_node(&stack, &home_a, "b");
    let app_b = Appliance::start(&home_b);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_path_buf();
    let card = enrol_card(&home_a, &dir, &reader);
    assert_success(
        &home_a.cps(&["operator", "add", "--name", "svc", "--role", "service"]),
        "operator add",
    );
    copy_dir(&home_a.join("operator"), &home_b.join("operator"));

    let acked = mixed_load(
        &[&home_a, &home_b],
        (&home_a, &reader, &card.pin),
        (&home_b, &app_b),
        &dir,
        || {
            primary.kill9();
            let t = std::time::Instant::now();
            standby.promote();
            eprintln!("standby promoted {:?} after the kill", t.elapsed());
        },
    );
    eprintln!(
        "acknowledged: {} issuances, {} validations ({} before the kill, {} after)",
        acked.serials.len(),
        acked.validated.len(),
        acked.before_kill,
        acked.after_kill
    );
    assert!(acked.before_kill >= 5, "too little load before the kill");
    // The nodes answer again without a restart: an issuance on each.
    for (home, tag) in [(&home_a, "after-a"), (&home_b, "after-b")] {
        let csr = openssl_csr(&dir, tag, "p256");
        let pem = dir.join(format!("{tag}.pem"));
        wait_for(
            "an issuance after the failover",
            Duration::from_secs(60),
            || {
                issue_org(
                    home,
                    &csr,
                    &pem,
                    "org-tls-client",
                    "318751275199999",
                    "client.clinique.example",
                    &[],
                )
                .status
                .success()
                .then_some(())
            },
        );
    }
    // Every acknowledged operation is on the promoted standby.
    all_acknowledged_found(
        &standby.url_of("cps"),
        &acked,
        &[(&home_a, &app_a), (&home_b, &app_b)],
    );
    drop((app_a, app_b));
}

/// The number of a DER CRL (openssl's reading of it) and a digest of its bytes.
fn crl_number(der: &[u8], dir: &Path) -> (u64, Vec<u8>) {
    let f = dir.join("served.crl");
    std::fs::write(&f, der).unwrap();
    let out = std::process::Command::new(peer("openssl"))
        .args(["crl", "-inform", "DER", "-noout", "-crlnumber", "-in"])
        .arg(&f)
        .output()
        .unwrap();
    let t = text(&out.stdout);
    let hex = t
        .trim()
        .strip_prefix("crlNumber=")
        .unwrap_or_else(|| panic!("no CRL number: {t}{}", text(&out.stderr)));
    let n = u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap();
    (n, der.to_vec())
}

fn lease(url: &str) -> serde_json::Value {
    use cps_store::Store;
    let db = cps_store::PgStore::open(url, cps_store::PgOptions::default()).unwrap();
    db.get_record("crl-lease", b"crl-signer")
        .unwrap()
        .map(|v| serde_json::from_slice(&v).unwrap())
        .unwrap_or_default()
}

#[test]
fn crl_numbers_never_go_back_and_never_repeat_across_a_paused_leader() {
    let t = two_nodes_with("cluster-crl", |home| {
        // A short signer lease, so that a paused leader loses it within the test.
        let cfg = home
            .config_text()
            .replacen("[ca]\n", "[ca]\ncrl_lease_seconds = 5\n", 1);
        home.set_config_text(&cfg);
    });
    let url = t.pg.url_of("cps");
    let dir = t.dir.path().to_path_buf();
    let nodes = [&t.a, &t.b];
    // (node, number, bytes) of every CRL served, in order.
    let mut seen: Vec<(usize, u64, Vec<u8>)> = Vec::new();
    let fetch = |i: usize, seen: &mut Vec<(usize, u64, Vec<u8>)>| {
        let (code, der) = http_get(&nodes[i].1.http, "/crl/organisations.crl").unwrap();
        assert_eq!(code, 200, "node {i}: {}", text(&der));
        let (n, bytes) = crl_number(&der, &dir);
        seen.push((i, n, bytes));
    };
    let revoke_one = |round: usize, via: &Home| {
        let csr = openssl_csr(&dir, &format!("r{round}"), "p256");
        let pem = dir.join(format!("r{round}.pem"));
        assert_success(
            &issue_org(
                via,
                &csr,
                &pem,
                "org-tls-client",
                &format!("3187512751{round:05}"),
                "client.clinique.example",
                &[],
            ),
            "issue",
        );
        assert_success(
            &via.revoke("organisations", &serial_of(&pem), "superseded"),
            "revoke",
        );
    };
    for i in [0, 1, 0, 1] {
        fetch(i, &mut seen);
    }
    let first = lease(&url);
    let mut epochs = vec![first["epoch"].as_u64().unwrap_or(0)];
    for round in 0..3 {
        // Who signs now; pause it longer than its lease.
        let holder = lease(&url)["holder"].as_str().unwrap_or("a").to_owned();
        let (leader, other) = if holder == "b" { (1, 0) } else { (0, 1) };
        let pid = nodes[leader].1.daemon.pid().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-STOP", &pid])
                .status()
                .unwrap()
                .success()
        );
        revoke_one(round, &nodes[other].0);
        std::thread::sleep(Duration::from_secs(7));
        // The other node takes the lease and signs a CRL with the revocation.
        for _ in 0..3 {
            fetch(other, &mut seen);
        }
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status();
        for i in [leader, other, leader, other, leader] {
            fetch(i, &mut seen);
        }
        epochs.push(lease(&url)["epoch"].as_u64().unwrap_or(0));
    }
    // What each node serves never goes back.
    for i in 0..2 {
        let numbers: Vec<u64> = seen.iter().filter(|s| s.0 == i).map(|s| s.1).collect();
        assert!(
            numbers.windows(2).all(|w| w[0] <= w[1]),
            "node {i} served CRL numbers {numbers:?}"
        );
    }
    // No two different CRLs share a number, whoever signed them.
    let mut by_number: std::collections::HashMap<u64, &Vec<u8>> = Default::default();
    for (_, n, bytes) in &seen {
        if let Some(prev) = by_number.insert(*n, bytes) {
            assert_eq!(prev, bytes, "two different CRLs numbered {n}");
        }
    }
    // The lease changed hands while its holder was paused, and the CRLs moved on.
    assert!(
        epochs.windows(2).any(|w| w[1] > w[0]),
        "the lease never changed hands: epochs {epochs:?}"
    );
    let max = seen.iter().map(|s| s.1).max().unwrap();
    let min = seen.iter().map(|s| s.1).min().unwrap();
    assert!(
        max >= min + 3,
        "numbers {min}..{max}: the revocations were not published"
    );
}

#[test]
fn a_node_killed_under_load_loses_nothing_acknowledged_and_the_other_carries_on() {
    let mut t = two_nodes("cluster-node-kill");
    let dir = t.dir.path().to_path_buf();
    let card = enrol_card(&t.a.0, &dir, &t.reader);
    assert_success(
        &t.a.0
            .cps(&["operator", "add", "--name", "svc", "--role", "service"]),
        "operator add",
    );
    copy_dir(&t.a.0.join("operator"), &t.b.0.join("operator"));
    // Issuance on both nodes, logins on b (the card's reader is shared by the machine), and
    // validations on a; node a is killed with SIGKILL after 10 s.
    let pid = t.a.1.daemon.pid().to_string();
    let acked = mixed_load(
        &[&t.a.0, &t.b.0],
        (&t.b.0, &t.reader, &card.pin),
        (&t.a.0, &t.a.1),
        &dir,
        || {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
        },
    );
    eprintln!(
        "acknowledged: {} issuances, {} validations ({} before the kill, {} after)",
        acked.serials.len(),
        acked.validated.len(),
        acked.before_kill,
        acked.after_kill
    );
    assert!(acked.before_kill >= 5, "too little load before the kill");
    // b carried on alone: issuances kept being acknowledged after a was gone.
    assert!(acked.after_kill >= 5, "node b did not carry on");
    let _ = t.a.1.daemon.child.wait();
    t.a.1 = Appliance::start(&t.a.0);
    all_acknowledged_found(
        &t.pg.url_of("cps"),
        &acked,
        &[(&t.a.0, &t.a.1), (&t.b.0, &t.b.1)],
    );
}
