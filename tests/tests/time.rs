//! IHE CT in the running appliance: its NTP service answers chronyd and ntplib, the clock
//! trust shows in /health and /metrics, and with an untrusted clock nothing is signed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cps_trust_tests::*;

fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').expect("host:port").1
}

/// `chronyd -Q` (client only: it never sets the clock) against the appliance's NTP port.
fn chronyd(app: &Appliance) -> (bool, String) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("/usr/sbin/chronyd")
        .args(["-Q", "-t", "10"])
        .arg(format!(
            "server 127.0.0.1 port {} iburst maxsamples 1",
            port_of(&app.ntp)
        ))
        .stdin(Stdio::null())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("spawn chronyd (apt-get install chrony)");
    let deadline = Instant::now() + Duration::from_secs(25);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(log.path()).unwrap_or_default();
    (status.success(), out)
}

/// ntplib's view of the appliance's NTP answer (best of 5 by delay, as a clock filter does).
fn ntplib(app: &Appliance) -> std::collections::HashMap<String, String> {
    let script = "import sys, ntplib\n\
        c = ntplib.NTPClient()\n\
        rs = [c.request('127.0.0.1', port=int(sys.argv[1]), version=4, timeout=2) for _ in range(5)]\n\
        r = min(rs, key=lambda r: r.delay)\n\
        print(f'version={r.version}\\nmode={r.mode}\\nstratum={r.stratum}\\nleap={r.leap}\\noffset={r.offset:.9f}')\n";
    let out = Command::new(peer("python3"))
        .arg("-c")
        .arg(script)
        .arg(port_of(&app.ntp))
        .output()
        .expect("python3 with ntplib (scripts/install-deps.sh)");
    assert_success(&out, "ntplib");
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn health(app: &Appliance) -> (u16, serde_json::Value) {
    let (code, body) = http_get(&app.http, "/health").unwrap();
    (code, serde_json::from_slice(&body).expect("health JSON"))
}

#[test]
fn the_appliance_serves_time_to_chronyd_and_ntplib() {
    let (_home, app) = Appliance::fresh();
    let (ok, out) = chronyd(&app);
    assert!(ok, "chronyd -Q against the appliance failed:\n{out}");

    let r = ntplib(&app);
    assert_eq!(r["version"], "4");
    assert_eq!(r["mode"], "4");
    assert_eq!(r["leap"], "0");
    assert_eq!(r["stratum"], "3", "the configured time.ntp_stratum");
    let offset: f64 = r["offset"].parse().unwrap();
    assert!(
        offset.abs() < 1e-3,
        "offset {offset} s against the host clock"
    );

    let (code, h) = health(&app);
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["clock"]["trusted"], true, "{h}");
    assert_eq!(h["clock"]["source"], "declared", "{h}");

    let (code, metrics) = http_get(&app.http, "/metrics").unwrap();
    assert_eq!(code, 200);
    let metrics = text(&metrics);
    assert!(metrics.contains("\ncps_clock_trusted 1\n"), "{metrics}");
    let answered: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cps_ntp_answered_total "))
        .expect("NTP counter")
        .parse()
        .unwrap();
    assert!(answered >= 5, "{metrics}");
}

/// Switch a home to the kernel's clock state with a zero tolerance: whatever the kernel says
/// (a container reports "not synchronised"; a synchronised host still has a non-zero error
/// bound), the clock is not trusted.
fn distrust_the_clock(home: &Home) {
    let cfg = home.config_text();
    let start = cfg.find("\n[time]\n").expect("[time] section") + 1;
    let end = cfg[start + 1..]
        .find("\n[")
        .map_or(cfg.len(), |i| start + 1 + i + 1);
    let mut cfg = cfg;
    cfg.replace_range(
        start..end,
        "[time]\nsource = \"kernel\"\nmax_error_ms = 0\n",
    );
    home.set_config_text(&cfg);
}

#[test]
fn with_an_untrusted_clock_nothing_is_signed() {
    let (home, mut app) = Appliance::fresh();
    let dir = tempfile::tempdir().unwrap();
    // A certificate issued while the clock is trusted, to ask OCSP about later.
    let csr = openssl_csr(dir.path(), "before", "p256");
    let issued = dir.path().join("before.pem");
    assert_success(
        &issue_org(
            &home,
            &csr,
            &issued,
            "org-tls-client",
            "before",
            "dmp-connector",
            &[],
        ),
        "cert issue",
    );
    app.daemon.stop(Duration::from_secs(10));

    distrust_the_clock(&home);
    let app = Appliance::start(&home);
    let log = std::fs::read_to_string(home.join("serve.log")).unwrap();
    assert!(
        log.contains("CLOCK ALARM"),
        "operator alarm expected:\n{log}"
    );

    // /health: degraded, with the reason.
    let (code, h) = health(&app);
    assert_eq!(code, 503, "{h}");
    assert_eq!(h["clock"]["trusted"], false, "{h}");
    let alarm = h["clock"]["alarm"].as_str().unwrap().to_owned();
    assert!(alarm.contains("signing refused"), "{alarm}");
    let (_, metrics) = http_get(&app.http, "/metrics").unwrap();
    assert!(text(&metrics).contains("\ncps_clock_trusted 0\n"));

    // Certificates: refused with the clock's reason, nothing recorded.
    let csr2 = openssl_csr(dir.path(), "after", "p256");
    let out = issue_org(
        &home,
        &csr2,
        &dir.path().join("after.pem"),
        "org-tls-client",
        "after",
        "dmp-connector",
        &[],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("signing refused") && err.contains("clock"),
        "{err}"
    );
    assert!(!dir.path().join("after.pem").exists());

    // CRLs: never signed with an untrusted clock. The one signed while the clock was trusted is
    // in the store, complete and current: it is still served (as every node of a cluster
    // serves the stored CRL)...
    let (code, body) = http_get(&app.http, "/crl/personnes.crl").unwrap();
    assert_eq!(code, 200, "{}", text(&body));
    // ...until a revocation makes it incomplete: then no CRL, with the clock's reason.
    let victim = serial_of(&home.join("ca/personnes-ocsp.pem"));
    assert_success(&home.revoke("personnes", &victim, "superseded"), "revoke");
    let (code, body) = http_get(&app.http, "/crl/personnes.crl").unwrap();
    assert_eq!(code, 503, "{}", text(&body));
    assert!(text(&body).contains("signing refused"), "{}", text(&body));

    // OCSP: tryLater (RFC 6960 status 3), not a signed answer.
    let out = ocsp_query(&home, &app, "organisations", &[&issued], &[]);
    assert!(out.contains("trylater"), "openssl ocsp said:\n{out}");

    // NTP advertises the untrusted clock: LI 3, stratum 16; chronyd refuses it.
    let r = ntplib(&app);
    assert_eq!((r["leap"].as_str(), r["stratum"].as_str()), ("3", "16"));
}
