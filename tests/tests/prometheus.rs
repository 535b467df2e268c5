//! A real Prometheus scrapes the appliance: after a scripted scenario (issue, revoke, OCSP,
//! refused assertion validations, a time-stamp token) PromQL over Prometheus's HTTP API returns
//! the scenario's counts; `promtool` accepts the alerting rules and finds no convention problem
//! in the exposition.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cps_trust_tests::*;

/// `promtool` with `args`: (success, stdout and stderr).
fn promtool(args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    use std::io::Write;
    let mut cmd = Command::new("promtool");
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("promtool (scripts/install-deps.sh installs it)");
    let mut input = child.stdin.take().unwrap();
    if let Some(b) = stdin {
        input.write_all(b).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

#[test]
fn promtool_accepts_the_alerting_rules_and_the_scrape_config() {
    let rules = repo_root().join("monitoring/alerts.yml");
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert!(ok, "{out}");
    let (ok, out) = promtool(
        &[
            "check",
            "config",
            repo_root()
                .join("monitoring/prometheus.yml")
                .to_str()
                .unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}");
}

/// The repository's scrape configuration with `target` as the appliance, 1 s scrapes, and the
/// rules file by its absolute path.
fn scrape_config(target: &str) -> String {
    let base = std::fs::read_to_string(repo_root().join("monitoring/prometheus.yml")).unwrap();
    assert!(base.contains("\"127.0.0.1:8080\""), "{base}");
    assert!(base.contains("scrape_interval: 15s"), "{base}");
    base.replace("\"127.0.0.1:8080\"", &format!("\"{target}\""))
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace(
            "  - alerts.yml",
            &format!(
                "  - {}",
                repo_root().join("monitoring/alerts.yml").display()
            ),
        )
}

/// `query` over Prometheus's HTTP API: the value of its single sample, or `None` when the
/// result is empty.
fn instant(prom: &str, query: &str) -> Option<f64> {
    let (code, body) = curl(&[
        "-G",
        "--data-urlencode",
        &format!("query={query}"),
        &format!("http://{prom}/api/v1/query"),
    ]);
    assert_eq!(code, 200, "{query}: {}", text(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "success", "{v}");
    let result = v["data"]["result"].as_array().expect("vector result");
    assert!(result.len() <= 1, "{query}: several series: {v}");
    result.first().map(|s| {
        s["value"][1]
            .as_str()
            .expect("sample value")
            .parse()
            .unwrap()
    })
}

fn post_tsa(app: &Appliance, body: &Path) -> (u16, Vec<u8>) {
    curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/timestamp-query",
        "--data-binary",
        &format!("@{}", body.display()),
        &format!("http://{}/tsa", app.http),
    ])
}

#[test]
fn prometheus_scrapes_the_scenario_counts() {
    let (home, app) = Appliance::fresh();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The scenario: three certificates issued, one revoked; OCSP for the good and the revoked
    // ones; two refused validations; one time-stamp token.
    let mut pems = Vec::new();
    for tag in ["m1", "m2", "m3"] {
        let csr = openssl_csr(d, tag, "p256");
        let pem = d.join(format!("{tag}.pem"));
        let out = issue_org(
            &home,
            &csr,
            &pem,
            "org-tls-client",
            tag,
            "dmp-connector",
            &[],
        );
        assert_success(&out, "cert issue");
        pems.push(pem);
    }
    assert_success(
        &home.revoke("organisations", &serial_of(&pems[0]), "keyCompromise"),
        "cert revoke",
    );
    let out = ocsp_query(&home, &app, "organisations", &[&pems[0], &pems[1]], &[]);
    assert!(out.contains(": revoked") && out.contains(": good"), "{out}");
    let out = ocsp_query(&home, &app, "organisations", &[&pems[2]], &[]);
    assert!(out.contains(": good"), "{out}");

    assert_success(
        &home.cps(&["operator", "add", "--name", "svc", "--role", "service"]),
        "operator add",
    );
    let bogus = d.join("bogus.xml");
    std::fs::write(&bogus, b"<saml:Assertion>not an assertion</saml:Assertion>").unwrap();
    for _ in 0..2 {
        let out = home.cps(&["xua", "--as", "svc", "validate", bogus.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    }

    std::fs::write(d.join("data.txt"), b"CDA document\n").unwrap();
    let out = Command::new(peer("openssl"))
        .current_dir(d)
        .args([
            "ts", "-query", "-data", "data.txt", "-cert", "-out", "q.tsq",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (code, reply) = post_tsa(&app, &d.join("q.tsq"));
    assert_eq!(code, 200, "{}", text(&reply));

    // The raw exposition: promtool finds no convention problem in it.
    let (code, exposition) = http_get(&app.http, "/metrics").unwrap();
    assert_eq!(code, 200);
    let (ok, lint) = promtool(&["check", "metrics"], Some(&exposition));
    assert!(
        ok && lint.trim().is_empty(),
        "promtool check metrics:\n{lint}"
    );
    let exposition = text(&exposition);
    // No serial (nor any other identifier of the scenario) in a label.
    for pem in &pems {
        let serial = serial_of(pem).to_lowercase();
        assert!(
            !exposition.to_lowercase().contains(&serial),
            "serial {serial} in /metrics"
        );
    }

    // A real Prometheus scrapes it.
    let prom_dir = tempfile::tempdir().unwrap();
    let config = prom_dir.path().join("prometheus.yml");
    std::fs::write(&config, scrape_config(&app.http)).unwrap();
    let prom = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"));
    let mut daemon = Daemon::spawn("prometheus", cmd, &prom_dir.path().join("prometheus.log"));
    wait_for("prometheus ready", Duration::from_secs(60), || {
        (curl(&[&format!("http://{prom}/-/ready")]).0 == 200).then_some(())
    });
    wait_for("a scrape of the appliance", Duration::from_secs(60), || {
        (instant(&prom, "up{job=\"cps-trust\"}") == Some(1.0)
            && instant(&prom, "sum(cps_tsa_tokens_total)").is_some())
        .then_some(())
    });

    let q = |query: &str| instant(&prom, query);
    // Three issued by the organisations CA with the scenario's profile (and the appliance's own
    // credentials, of other profiles, issued at start).
    assert_eq!(
        q(r#"cps_certificates_issued_total{ca="organisations",profile="org-tls-client"}"#),
        Some(3.0)
    );
    assert_eq!(
        q(r#"cps_certificates_revoked_total{ca="organisations",reason="keyCompromise"}"#),
        Some(1.0)
    );
    assert_eq!(
        q(r#"sum(cps_ocsp_responses_total{status="successful"})"#),
        Some(2.0)
    );
    assert_eq!(
        q(r#"sum(cps_assertions_validated_total{outcome="failure"})"#),
        Some(2.0)
    );
    assert_eq!(
        q(r#"sum(cps_assertions_validated_total{outcome="success"})"#),
        None
    );
    assert_eq!(q(r#"cps_tsa_tokens_total{outcome="success"}"#), Some(1.0));
    assert_eq!(
        q(r#"cps_audit_events_total{kind="cert.revoke",outcome="success"}"#),
        Some(1.0)
    );
    assert_eq!(q("sum(cps_break_glass_total)"), None);
    // The HSM signed (certificates, OCSP, the token) and was timed per key.
    assert!(q("sum(cps_hsm_sign_duration_seconds_count)").unwrap() >= 6.0);
    // Request latency by route pattern: the validations' route, by its pattern.
    assert_eq!(
        q(r#"sum(cps_http_request_duration_seconds_count{route="/api/v1/xua/validate"})"#),
        Some(2.0)
    );
    // The appliance's own certificates: the root expires in more than 30 days.
    assert!(q(r#"cps_certificate_expiry_seconds{certificate="root"}"#).unwrap() > 30.0 * 86400.0);
    // The audit trail's repository counters are exported (nothing was sent to it, nothing refused).
    assert_eq!(
        q(r#"cps_audit_messages_received_total{transport="tls"}"#),
        Some(0.0)
    );
    assert_eq!(q("cps_audit_connections_refused_total"), Some(0.0));
    // The appliance's own end-entity certificates too (made at init or at the first start).
    for own in ["tls-server", "xua-seal", "tsa"] {
        let left = q(&format!(
            r#"cps_certificate_expiry_seconds{{certificate="{own}"}}"#
        ))
        .unwrap_or_else(|| panic!("no expiry of {own}"));
        assert!(
            left > 30.0 * 86400.0 && left < 4.0 * 366.0 * 86400.0,
            "{own}: {left}"
        );
    }
    assert_eq!(q("cps_clock_trusted"), Some(1.0));
    // No alert fires on a healthy appliance after the scenario.
    assert_eq!(q(r#"count(ALERTS{alertstate="firing"})"#), None);

    daemon.stop(Duration::from_secs(10));
    drop(app);
}
