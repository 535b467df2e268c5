//! Bad input on the login, XUA, registry, card, node and audit routes: a precise 4xx (or a
//! failed job with its reason), nothing recorded, and the appliance still healthy.

use std::time::Duration;

use cps_trust_tests::*;

fn admin(home: &Home) -> Vec<String> {
    vec![
        "--cacert".into(),
        home.join("ca/root.pem").display().to_string(),
        "--cert".into(),
        home.join("operator/admin-cert.pem").display().to_string(),
        "--key".into(),
        home.join("operator/admin-key.pem").display().to_string(),
    ]
}

fn call(app: &Appliance, auth: &[String], method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("body");
    std::fs::write(&f, body).unwrap();
    let mut args: Vec<String> = auth.to_vec();
    if auth.is_empty() {
        args.push("-k".into());
    }
    // Each state-changing route takes its own content type (anything else is a 415, tested in
    // tests/tests/authz.rs): the bodies here are bad in their content.
    let content_type = if path.starts_with("/api/v1/xua/") {
        "application/xml"
    } else if path.starts_with("/api/v1/professionals/import") {
        "text/csv"
    } else {
        "application/json"
    };
    args.extend([
        "-X".into(),
        method.into(),
        format!("https://{}{path}", app.https),
        "-H".into(),
        format!("Content-Type: {content_type}"),
        "--data-binary".into(),
        format!("@{}", f.display()),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = curl(&refs);
    (code, text(&out))
}

#[test]
fn new_routes_refuse_bad_input_precisely() {
    let (home, app) = Appliance::fresh();
    let a = admin(&home);
    // Validation is for services only.
    assert_success(
        &home.cps(&["operator", "add", "--name", "svc", "--role", "service"]),
        "operator add",
    );
    let svc: Vec<String> = a
        .iter()
        .map(|s| {
            s.replace("admin-cert.pem", "svc-cert.pem")
                .replace("admin-key.pem", "svc-key.pem")
        })
        .collect();

    // Login.
    let (c, b) = call(&app, &[], "POST", "/api/v1/login/challenge", b"{not json");
    assert_eq!(c, 400, "{b}");
    let (c, b) = call(
        &app,
        &[],
        "POST",
        "/api/v1/login/challenge",
        b"{\"audience\":\"a\\u0001b\"}",
    );
    assert_eq!(c, 400, "{b}");
    let (c, b) = call(
        &app,
        &[],
        "POST",
        "/api/v1/login",
        b"{\"challenge_id\":\"x\",\"certificate\":\"%%%\",\"signature\":\"AA==\"}",
    );
    assert_eq!(c, 400, "{b}");
    assert!(b.contains("certificate"), "{b}");
    let (c, b) = call(
        &app,
        &[],
        "POST",
        "/api/v1/login",
        b"{\"challenge_id\":\"nope\",\"certificate\":\"AAAA\",\"signature\":\"AA==\"}",
    );
    assert_eq!(c, 401, "{b}");
    assert!(b.contains("unknown_challenge"), "{b}");
    let (_, ch) = call(&app, &[], "POST", "/api/v1/login/challenge", b"{}");
    let id = serde_json::from_str::<serde_json::Value>(&ch).unwrap()["challenge_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = format!(
        "{{\"challenge_id\":\"{id}\",\"certificate\":\"MIIBAAAA\",\"signature\":\"AA==\"}}"
    );
    let (c, b) = call(&app, &[], "POST", "/api/v1/login", body.as_bytes());
    assert_eq!(c, 401, "{b}");
    assert!(b.contains("bad_certificate"), "{b}");
    // The challenge was consumed by that attempt.
    let (c, b) = call(&app, &[], "POST", "/api/v1/login", body.as_bytes());
    assert!(c == 401 && b.contains("used_challenge"), "{b}");
    // TLS login without a card certificate.
    let (c, _) = call(&app, &[], "POST", "/api/v1/login/tls", b"{}");
    assert_eq!(c, 401);

    // XUA validation: hostile XML, oversized, not XML at all.
    let bomb = b"<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]><l>&b;</l>";
    let (c, b) = call(&app, &svc, "POST", "/api/v1/xua/validate", bomb);
    assert_eq!(c, 422, "{b}");
    assert!(b.contains("\"valid\":false"), "{b}");
    let (c, _) = call(
        &app,
        &svc,
        "POST",
        "/api/v1/xua/validate",
        &vec![b'<'; 70 * 1024],
    );
    assert_eq!(c, 413);
    let (c, b) = call(
        &app,
        &svc,
        "POST",
        "/api/v1/xua/validate",
        b"\x00\x01garbage",
    );
    assert_eq!(c, 422, "{b}");
    // Without an operator certificate, no validation.
    let (c, _) = call(&app, &[], "POST", "/api/v1/xua/validate", b"<x/>");
    assert_eq!(c, 401);

    // Registry import: a Latin-1 file is rejected as a whole, with the line.
    let mut latin1 = b"Identification nationale PP|Nom d'exercice|Pr".to_vec();
    latin1.push(0xE9); // é in Latin-1
    latin1.extend_from_slice(b"nom d'exercice\n");
    let (c, b) = call(&app, &a, "POST", "/api/v1/professionals/import", &latin1);
    assert_eq!(c, 202, "{b}");
    let job = serde_json::from_str::<serde_json::Value>(&b).unwrap()["job"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = wait_for("import job", Duration::from_secs(20), || {
        let (_, b) = call(&app, &a, "GET", &format!("/api/v1/jobs/{job}"), b"");
        let v: serde_json::Value = serde_json::from_str(&b).ok()?;
        (v["status"] != "running").then_some(v)
    });
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["result"]["error_count"].as_u64().unwrap_or(0) >= 1,
        "{done}"
    );
    let (c, b) = call(&app, &a, "GET", "/api/v1/professionals?q=a", b"");
    assert_eq!(c, 200);
    assert!(b.contains("\"professionals\":[]"), "nothing imported: {b}");
    let (c, _) = call(&app, &a, "GET", "/api/v1/professionals/810002345675", b"");
    assert_eq!(c, 404);

    // Card routes.
    let (c, b) = call(&app, &a, "POST", "/api/v1/cards/enrol", b"{\"reader\":1}");
    assert_eq!(c, 400, "{b}");
    let (c, b) = call(&app, &a, "POST", "/api/v1/cards/NOPE/suspend", b"");
    assert_eq!(c, 404, "{b}");
    let (c, b) = call(
        &app,
        &a,
        "POST",
        "/api/v1/cards/NOPE/oppose",
        b"{\"reason\":\"bored\"}",
    );
    assert_eq!(c, 400, "{b}");
    let (c, _) = call(&app, &a, "POST", "/api/v1/cards/NOPE/explode", b"");
    assert_eq!(c, 404);
    let (c, _) = call(&app, &a, "GET", "/api/v1/jobs/unknown", b"");
    assert_eq!(c, 404);

    // Nodes.
    let (c, b) = call(&app, &a, "POST", "/api/v1/nodes",
        b"{\"name\":\"n.example\",\"csr\":\"garbage\",\"organisation\":{\"state\":\"Paris (75)\",\"name\":\"X\",\"structure_id\":\"10B0152872\",\"common_name\":\"n\"}}");
    assert_eq!(c, 400, "{b}");
    let (c, b) = call(&app, &a, "POST", "/api/v1/nodes",
        b"{\"name\":\"bad name/..\",\"csr\":\"x\",\"organisation\":{\"state\":\"Paris (75)\",\"name\":\"X\",\"structure_id\":\"10B0152872\",\"common_name\":\"n\"}}");
    assert_eq!(c, 400, "{b}");
    let (c, _) = call(
        &app,
        &a,
        "POST",
        "/api/v1/nodes/unknown.example/remove",
        b"",
    );
    assert_eq!(c, 400);

    // Audit search.
    let (c, _) = call(&app, &a, "GET", "/api/v1/audit/events?outcome=999", b"");
    assert_eq!(c, 400);
    let (c, _) = call(&app, &a, "GET", "/api/v1/audit/events?bogus=1", b"");
    assert_eq!(c, 400);

    // Still healthy; every refused login was audited.
    assert_eq!(http_get(&app.http, "/health").unwrap().0, 200);
    let (c, b) = call(
        &app,
        &a,
        "GET",
        "/api/v1/audit/events?event=110114&outcome=4",
        b"",
    );
    assert_eq!(c, 200, "{b}");
}
