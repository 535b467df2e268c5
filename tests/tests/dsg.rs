//! Document signatures (IHE DSG) end to end: the real `cps-trust serve` (SoftHSM2 seals certified
//! by its CA at the first start, its TSA, its OCSP responder, its audit trail) driven through
//! `cps-trust dsg` and the API, its signatures checked by peers no one here wrote (signxml's
//! XAdES verifier, xmlsec1, `openssl ts -verify`), signxml's own XAdES signatures verified by
//! it, the seal binding, the long-term decision after revocations, and hostile requests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cps_trust_tests::*;

const SEAL_A: &str = "10B0000001";
const SEAL_B: &str = "10B0000002";
const SUBMISSION_SET: &str = "urn:oid:1.2.250.1.999.2.1";
const DETACHED: &str = "urn:ihe:iti:dsg:detached:2014";
const ENVELOPING: &str = "urn:ihe:iti:dsg:enveloping:2014";
/// ASTM E1762 commitment types.
const AUTHOR: &str = "urn:oid:1.2.840.10065.1.12.1.1";
const VERIFICATION: &str = "urn:oid:1.2.840.10065.1.12.1.5";

fn python() -> PathBuf {
    peer("python")
}

fn peer_script(name: &str) -> PathBuf {
    repo_root().join("crates/dsg/tests/peers").join(name)
}

/// `[[dsg.seals]]` for each (structure, signers), appended to the configuration.
fn add_seals(home: &Home, seals: &[(&str, &[&str])]) {
    let mut cfg = home.config_text();
    for (structure, signers) in seals {
        let signers: Vec<String> = signers.iter().map(|s| format!("\"{s}\"")).collect();
        cfg.push_str(&format!(
            "\n[[dsg.seals]]\nstructure_id = \"{structure}\"\norganisation = \"Clinique {structure}\"\nstate = \"Paris (75)\"\nsigners = [{}]\n",
            signers.join(", ")
        ));
    }
    home.set_config_text(&cfg);
}

fn add_operator(home: &Home, name: &str, role: &str) {
    assert_success(
        &home.cps(&["operator", "add", "--name", name, "--role", role]),
        &format!("operator add {name}"),
    );
}

fn cred(home: &Home, name: &str) -> (PathBuf, PathBuf) {
    (
        home.join(&format!("operator/{name}-cert.pem")),
        home.join(&format!("operator/{name}-key.pem")),
    )
}

/// `n` documents `urn:oid:1.2.250.1.999.1.<i>` written in `dir`: (unique ID, file).
fn documents(dir: &Path, n: usize) -> Vec<(String, PathBuf)> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("doc{i}.xml"));
            std::fs::write(
                &p,
                format!("<ClinicalDocument>compte rendu n° {i}</ClinicalDocument>\n"),
            )
            .unwrap();
            (format!("urn:oid:1.2.250.1.999.1.{i}"), p)
        })
        .collect()
}

fn doc_args(docs: &[(String, PathBuf)]) -> Vec<String> {
    docs.iter()
        .flat_map(|(u, p)| ["--document".to_owned(), format!("{u}={}", p.display())])
        .collect()
}

/// `cps-trust dsg --as <op> sign …` of a detached manifest (with the submission set) over `docs`.
fn sign_detached(
    home: &Home,
    op: &str,
    structure: &str,
    docs: &[(String, PathBuf)],
    out: &Path,
) -> Output {
    let mut args: Vec<String> = [
        "dsg",
        "--as",
        op,
        "sign",
        "--structure",
        structure,
        "--purpose",
        "author",
        "--submission-set",
        SUBMISSION_SET,
        "-o",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(out.display().to_string());
    args.extend(doc_args(docs));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    home.cps(&refs)
}

/// `cps-trust dsg --as <op> verify …`: the exit code and the verdict (JSON on stdout).
fn verify(
    home: &Home,
    op: &str,
    sig: &Path,
    docs: &[(String, PathBuf)],
    live: bool,
) -> (Option<i32>, serde_json::Value) {
    let mut args: Vec<String> = ["dsg", "--as", op, "verify", "--signature"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(sig.display().to_string());
    args.extend(doc_args(docs));
    if live {
        args.push("--live".into());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = home.cps(&refs);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "dsg verify: no verdict ({e}); exit {:?}\n{}\n{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out.status.code(), v)
}

fn assert_valid(
    home: &Home,
    op: &str,
    sig: &Path,
    docs: &[(String, PathBuf)],
    live: bool,
) -> serde_json::Value {
    let (code, v) = verify(home, op, sig, docs, live);
    assert_eq!(code, Some(0), "expected valid (live {live}): {v:#}");
    assert_eq!(v["valid"], true, "{v:#}");
    v
}

fn assert_refused(
    home: &Home,
    op: &str,
    sig: &Path,
    docs: &[(String, PathBuf)],
    live: bool,
    want: &str,
) -> serde_json::Value {
    let (code, v) = verify(home, op, sig, docs, live);
    assert_eq!(
        code,
        Some(3),
        "expected refused {want} (live {live}): {v:#}"
    );
    assert_eq!(v["valid"], false, "{v:#}");
    assert_eq!(v["code"], want, "{v:#}");
    v
}

/// The first certificate of a PEM chain file, written alone.
fn first_cert(chain: &Path, out: &Path) -> PathBuf {
    let pem = std::fs::read_to_string(chain).unwrap();
    let end = pem.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----\n".len();
    std::fs::write(out, &pem[..end.min(pem.len())]).unwrap();
    out.to_path_buf()
}

/// signxml's `XAdESVerifier` (the crate test's script): the core, the XAdES signed properties,
/// the policy; then each manifest reference against the documents by unique ID.
fn signxml_verify(
    sig: &Path,
    cert: &Path,
    policy: &str,
    docs: &[(String, PathBuf)],
) -> (bool, String) {
    let mut cmd = Command::new(python());
    cmd.arg(peer_script("signxml_verify_dsg.py"))
        .arg(sig)
        .arg(cert)
        .arg(policy);
    for (u, p) in docs {
        cmd.arg(format!("{u}={}", p.display()));
    }
    let out = cmd.output().expect("python");
    (
        out.status.success() && out.stdout.starts_with(b"ok"),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// `xmlsec1 --verify` of the XML-DSig core, the chain anchored at our root (manifest references
/// name documents by unique ID: the application resolves them).
fn xmlsec1_verify(sig: &Path, root: &Path) -> (bool, String) {
    let out = Command::new(peer("xmlsec1"))
        .arg("--verify")
        .arg("--ignore-manifests")
        .arg("--trusted-pem")
        .arg(root)
        .args(["--id-attr:Id", "Manifest"])
        .args(["--id-attr:Id", "Object"])
        .args([
            "--id-attr:Id",
            "http://uri.etsi.org/01903/v1.3.2#:SignedProperties",
        ])
        .arg(sig)
        .output()
        .expect("xmlsec1");
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> &'a str {
    let i = s.find(open).unwrap_or_else(|| panic!("no {open}"));
    let j = s[i..].find(close).unwrap() + i + close.len();
    &s[i..j]
}

/// The canonical (C14N 1.1) bytes of the signature's `ds:SignatureValue`: what the
/// SignatureTimeStamp covers.
fn canonical_signature_value(xml: &str) -> Vec<u8> {
    let d = roxmltree::Document::parse(xml).unwrap();
    let sv = d
        .descendants()
        .find(|n| n.tag_name().name() == "SignatureValue")
        .expect("SignatureValue");
    let mut c = Vec::new();
    cps_xua::c14n::canonicalize_11(sv, None, false, &mut c).unwrap();
    c
}

/// The same bytes by lxml (an independent canonicalizer; C14N 1.0 and 1.1 agree on this element).
fn lxml_canonical_signature_value(sig: &Path, out: &Path) {
    let o = Command::new(python())
        .args([
            "-c",
            "import sys\nfrom lxml import etree\nt = etree.parse(sys.argv[1])\n\
             sv = t.find('.//{http://www.w3.org/2000/09/xmldsig#}SignatureValue')\n\
             open(sys.argv[2], 'wb').write(etree.tostring(sv, method='c14n'))",
        ])
        .arg(sig)
        .arg(out)
        .output()
        .unwrap();
    assert_success(&o, "lxml c14n");
}

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(peer("openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// The embedded SignatureTimeStamp token, extracted, verified by `openssl ts -verify` over the
/// canonical SignatureValue (root as CA file, the TSA's chain untrusted); a token over other
/// bytes fails.
fn openssl_verifies_the_timestamp(home: &Home, sig: &Path, dir: &Path) {
    let xml = std::fs::read_to_string(sig).unwrap();
    let token = between(
        &xml,
        "<xades:EncapsulatedTimeStamp>",
        "</xades:EncapsulatedTimeStamp>",
    );
    let token = token
        .trim_start_matches("<xades:EncapsulatedTimeStamp>")
        .trim_end_matches("</xades:EncapsulatedTimeStamp>");
    let der = B64
        .decode(token.split_whitespace().collect::<String>())
        .unwrap();
    std::fs::write(dir.join("ts.der"), der).unwrap();
    std::fs::write(dir.join("sv.c14n"), canonical_signature_value(&xml)).unwrap();
    lxml_canonical_signature_value(sig, &dir.join("sv.lxml"));
    assert_eq!(
        std::fs::read(dir.join("sv.c14n")).unwrap(),
        std::fs::read(dir.join("sv.lxml")).unwrap(),
        "two canonicalizers disagree on the SignatureValue"
    );
    std::fs::write(dir.join("other"), b"another signature value").unwrap();
    let root = home.join("ca/root.pem");
    let tsa = home.join("tsa/tsa.pem");
    let run = |data: &str| {
        openssl(
            dir,
            &[
                "ts",
                "-verify",
                "-token_in",
                "-in",
                "ts.der",
                "-data",
                data,
                "-CAfile",
                root.to_str().unwrap(),
                "-untrusted",
                tsa.to_str().unwrap(),
            ],
        )
    };
    let (ok, out) = run("sv.lxml");
    assert!(
        ok && out.contains("Verification: OK"),
        "openssl ts -verify: {out}"
    );
    let (ok, out) = run("other");
    assert!(!ok, "a token over other bytes verified: {out}");
}

#[test]
fn seal_signatures_verify_in_signxml_xmlsec1_and_openssl_ts() {
    let (home, mut app) =
        Appliance::fresh_configured(Home::new(), |h| add_seals(h, &[(SEAL_A, &["alice"])]));
    add_operator(&home, "alice", "signer");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let docs = documents(d, 10);
    let root = home.join("ca/root.pem");
    let seal_cert = first_cert(
        &home.join(&format!("dsg/{SEAL_A}.pem")),
        &d.join("seal.pem"),
    );

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let det = d.join("detached.xml");
    assert_success(
        &sign_detached(&home, "alice", SEAL_A, &docs, &det),
        "dsg sign",
    );
    let env = d.join("enveloping.xml");
    let out = home.cps(&[
        "dsg",
        "--as",
        "alice",
        "sign",
        "--structure",
        SEAL_A,
        "--purpose",
        "author",
        "--enveloping",
        "--document",
        &format!("{}={}", docs[0].0, docs[0].1.display()),
        "-o",
        env.to_str().unwrap(),
    ]);
    assert_success(&out, "dsg sign --enveloping");

    // signxml's XAdES verifier: both forms, documents resolved by unique ID; a changed document
    // fails the manifest check there too.
    let (ok, out) = signxml_verify(&det, &seal_cert, DETACHED, &docs);
    assert!(ok, "signxml on the detached signature: {out}");
    let (ok, out) = signxml_verify(&env, &seal_cert, ENVELOPING, &docs[..1]);
    assert!(ok, "signxml on the enveloping signature: {out}");
    let changed = d.join("changed.xml");
    std::fs::write(&changed, b"<ClinicalDocument>autre</ClinicalDocument>\n").unwrap();
    let mut docs_changed = docs.clone();
    docs_changed[3].1 = changed.clone();
    let (ok, _) = signxml_verify(&det, &seal_cert, DETACHED, &docs_changed);
    assert!(!ok, "signxml accepted a changed document");

    // xmlsec1: the XML-DSig core with the chain to our root; a changed signed property fails.
    for sig in [&det, &env] {
        let (ok, out) = xmlsec1_verify(sig, &root);
        assert!(ok, "xmlsec1 on {}: {out}", sig.display());
        let bad = std::fs::read_to_string(sig)
            .unwrap()
            .replacen(AUTHOR, VERIFICATION, 1);
        let f = d.join("bad.xml");
        std::fs::write(&f, bad).unwrap();
        assert!(
            !xmlsec1_verify(&f, &root).0,
            "xmlsec1 accepted a changed SignedProperties"
        );
    }

    // The embedded time-stamp tokens verify with openssl ts.
    openssl_verifies_the_timestamp(&home, &det, d);
    openssl_verifies_the_timestamp(&home, &env, d);

    // Our verifier: valid, with the signer, the purpose, the proven signing time, each document.
    let v = assert_valid(&home, "alice", &det, &docs, false);
    assert!(v["signer"].as_str().unwrap().contains(SEAL_A), "{v:#}");
    assert_eq!(v["purpose"], AUTHOR.trim_start_matches("urn:oid:"), "{v:#}");
    assert_eq!(v["policy"], "detached", "{v:#}");
    let t = v["signing_time"].as_i64().unwrap();
    assert!(
        t >= before - 1 && t <= before + 120,
        "signing time {t} (start {before})"
    );
    let results = v["documents"].as_array().unwrap();
    assert_eq!(results.len(), 10, "{v:#}");
    assert!(results.iter().all(|r| r["valid"] == true), "{v:#}");
    let v = assert_valid(&home, "alice", &env, &[], false);
    assert_eq!(v["policy"], "enveloping", "{v:#}");

    // One document changed: refused, with each document's result.
    let v = assert_refused(
        &home,
        "alice",
        &det,
        &docs_changed,
        false,
        "document_digest_mismatch",
    );
    let results = v["documents"].as_array().unwrap();
    assert_eq!(results.len(), 10, "{v:#}");
    for r in results {
        let is_changed = r["unique_id"] == docs[3].0;
        assert_eq!(r["valid"], !is_changed, "{v:#}");
    }

    // The audit trail: the signatures (113031 Signed Manifest), the verifications (110007 Report
    // Verification: two accepted, one refused), the time-stamp tokens.
    let events = |filter: &[&str]| -> Vec<String> {
        let mut args = vec!["audit", "events", "--limit", "1000"];
        args.extend(filter);
        let out = home.cps(&args);
        assert_success(&out, "audit events");
        text(&out.stdout).lines().map(str::to_owned).collect()
    };
    let signed = wait_for(
        "the signatures' audit records",
        Duration::from_secs(15),
        || {
            let l = events(&["--event", "113031"]);
            (l.len() >= 2).then_some(l)
        },
    );
    assert_eq!(signed.len(), 2, "{signed:#?}");
    assert!(
        signed.iter().all(|l| l.contains("outcome 0")),
        "{signed:#?}"
    );
    let verified = wait_for(
        "the verifications' audit records",
        Duration::from_secs(15),
        || {
            let l = events(&["--event", "110007"]);
            (l.len() >= 3).then_some(l)
        },
    );
    assert_eq!(verified.len(), 3, "{verified:#?}");
    assert_eq!(
        verified.iter().filter(|l| l.contains("outcome 0")).count(),
        2,
        "{verified:#?}"
    );
    assert!(
        verified.iter().all(|l| l.contains("urn:ihe:iti:dsg")),
        "EventTypeCode urn:ihe:iti:dsg: {verified:#?}"
    );
    wait_for("the tokens' audit records", Duration::from_secs(15), || {
        (events(&["--event-type", "timestamp-issued"]).len() >= 2).then_some(())
    });
    app.daemon.stop(Duration::from_secs(10));
    assert_audit_log_intact(&home);
}

/// A sign request body (JSON) for `structure` over documents given by content.
fn sign_body(structure: &str, docs: &[(String, PathBuf)]) -> String {
    serde_json::json!({
        "structure_id": structure,
        "purpose": "author",
        "submission_set": SUBMISSION_SET,
        "documents": docs.iter().map(|(u, p)| serde_json::json!({
            "unique_id": u,
            "content": B64.encode(std::fs::read(p).unwrap()),
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

fn verify_body(sig: &str, docs: &[(String, PathBuf)]) -> String {
    serde_json::json!({
        "signature": sig,
        "documents": docs.iter().map(|(u, p)| serde_json::json!({
            "unique_id": u,
            "content": B64.encode(std::fs::read(p).unwrap()),
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

fn post_json(home: &Home, app: &Appliance, op: &str, path: &str, body: &str) -> (u16, String) {
    let (c, k) = cred(home, op);
    curl_mtls(home, app, (&c, &k), "POST", path, Some(body), &[])
}

#[test]
fn seals_sign_only_for_their_bound_signers() {
    let (home, app) = Appliance::fresh_configured(Home::new(), |h| {
        add_seals(h, &[(SEAL_A, &["alice"]), (SEAL_B, &["bob"])])
    });
    for (name, role) in [
        ("alice", "signer"),
        ("bob", "signer"),
        ("mallory", "signer"),
        ("svc", "service"),
    ] {
        add_operator(&home, name, role);
    }
    let dir = tempfile::tempdir().unwrap();
    let docs = documents(dir.path(), 2);
    let sign = |op: &str, structure: &str| {
        post_json(
            &home,
            &app,
            op,
            "/api/v1/dsg/sign",
            &sign_body(structure, &docs),
        )
    };

    // The bound signer signs for its own structure.
    let (code, body) = sign("alice", SEAL_A);
    assert_eq!(code, 200, "{body}");
    let sig: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sig = sig["signature"].as_str().unwrap().to_owned();
    let (code, body) = sign("bob", SEAL_B);
    assert_eq!(code, 200, "{body}");

    // Each other caller is refused, with a JSON error saying why.
    let cases = [
        ("alice", SEAL_B, "not a signer of structure"),
        ("bob", SEAL_A, "not a signer of structure"),
        ("mallory", SEAL_A, "not a signer of structure"),
        ("alice", "10B0000099", "has no seal"),
        ("admin", SEAL_A, ""),
        ("svc", SEAL_A, ""),
    ];
    for (op, structure, why) in cases {
        let (code, body) = sign(op, structure);
        assert_eq!(code, 403, "{op} signing for {structure}: {body}");
        let e: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("{op} for {structure}: not JSON: {body}"));
        assert!(
            e["error"].as_str().is_some_and(|m| m.contains(why)),
            "{op}: {body}"
        );
    }
    // The CLI says the same (exit 3, refused).
    let out = sign_detached(&home, "alice", SEAL_B, &docs, &dir.path().join("x.xml"));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(!dir.path().join("x.xml").exists());

    // A service operator verifies (and the signers); the admin and unknown callers do not.
    for op in ["svc", "alice", "mallory"] {
        let (code, body) = post_json(
            &home,
            &app,
            op,
            "/api/v1/dsg/verify",
            &verify_body(&sig, &docs),
        );
        assert_eq!(code, 200, "{op}: {body}");
        assert!(body.contains("\"valid\":true"), "{body}");
    }
    let (code, body) = post_json(
        &home,
        &app,
        "admin",
        "/api/v1/dsg/verify",
        &verify_body(&sig, &docs),
    );
    assert_eq!(code, 403, "admin verifying: {body}");
    // Without a client certificate: nothing.
    let (code, _) = curl(&[
        "--cacert",
        home.join("ca/root.pem").to_str().unwrap(),
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &sign_body(SEAL_A, &docs),
        &format!("https://{}/api/v1/dsg/sign", app.https),
    ]);
    assert_eq!(code, 401);
}

/// The time of a verdict, as a Unix time.
fn signing_time(v: &serde_json::Value) -> i64 {
    v["signing_time"].as_i64().expect("signing_time")
}

#[test]
fn long_term_verdicts_after_revocation() {
    let (home, _app) = Appliance::fresh_configured(Home::new(), |h| {
        add_seals(h, &[(SEAL_A, &["alice"]), (SEAL_B, &["alice"])])
    });
    add_operator(&home, "alice", "signer");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let docs = documents(d, 3);
    let (sig_a, sig_b) = (d.join("a.xml"), d.join("b.xml"));
    assert_success(
        &sign_detached(&home, "alice", SEAL_A, &docs, &sig_a),
        "sign A",
    );
    assert_success(
        &sign_detached(&home, "alice", SEAL_B, &docs, &sig_b),
        "sign B",
    );
    assert_valid(&home, "alice", &sig_a, &docs, true);
    let t_b = signing_time(&assert_valid(&home, "alice", &sig_b, &docs, true));
    // Times have a one-second grain and a revocation in the second of the time-stamp counts as
    // before it (refused): revoke strictly later, as any real revocation is.
    std::thread::sleep(Duration::from_millis(2100));

    // A's certificate superseded after the signature: the signature keeps verifying, from its
    // embedded OCSP answer and with the live status (revoked after the proven signing time).
    let serial_a = serial_of(&home.join(&format!("dsg/{SEAL_A}.pem")));
    assert_success(
        &home.revoke("organisations", &serial_a, "superseded"),
        "revoke A superseded",
    );
    assert_valid(&home, "alice", &sig_a, &docs, false);
    assert_valid(&home, "alice", &sig_a, &docs, true);

    // B's key compromised since before the signature (invalidity date): the embedded answer,
    // made when it was signed, still says good, so without --live the verdict is valid; the live
    // status says revoked from before the signing time, so with --live it is refused.
    let serial_b = serial_of(&home.join(&format!("dsg/{SEAL_B}.pem")));
    let out = home.cps(&[
        "cert",
        "revoke",
        "--ca",
        "organisations",
        "--serial",
        &serial_b,
        "--reason",
        "keyCompromise",
        "--invalidity-date",
        &(t_b - 600).to_string(),
    ]);
    assert_success(&out, "revoke B keyCompromise");
    let v = assert_valid(&home, "alice", &sig_b, &docs, false);
    assert_eq!(signing_time(&v), t_b);
    let v = assert_refused(&home, "alice", &sig_b, &docs, true, "certificate_revoked");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("keycompromise"),
        "{v:#}"
    );
    // A is unaffected by B's revocation.
    assert_valid(&home, "alice", &sig_a, &docs, true);
}

#[test]
fn hostile_requests_get_clear_errors_and_the_appliance_stays_healthy() {
    let (home, app) =
        Appliance::fresh_configured(Home::new(), |h| add_seals(h, &[(SEAL_A, &["alice"])]));
    add_operator(&home, "alice", "signer");
    add_operator(&home, "svc", "service");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let docs = documents(d, 2);
    let (code, body) = post_json(
        &home,
        &app,
        "alice",
        "/api/v1/dsg/sign",
        &sign_body(SEAL_A, &docs),
    );
    assert_eq!(code, 200, "{body}");
    let good: serde_json::Value = serde_json::from_str(&body).unwrap();
    let good = good["signature"].as_str().unwrap().to_owned();

    let json_error = |code: u16, body: &str, want_code: u16, what: &str| {
        assert_eq!(code, want_code, "{what}: {body}");
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: not JSON: {body}"));
        v
    };
    // A DTD with an external entity: refused as such, nothing resolved.
    let xxe = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE s [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
        good.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
    );
    let (c, b) = post_json(
        &home,
        &app,
        "svc",
        "/api/v1/dsg/verify",
        &verify_body(&xxe, &docs),
    );
    let v = json_error(c, &b, 422, "DTD / XXE");
    assert_eq!(v["code"], "dtd_forbidden", "{b}");
    assert!(!b.contains("root:x:0"), "{b}");
    // An entity expansion bomb inside the signature's text.
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]><l>&b;</l>";
    let (c, b) = post_json(
        &home,
        &app,
        "svc",
        "/api/v1/dsg/verify",
        &verify_body(bomb, &docs),
    );
    assert_eq!(
        json_error(c, &b, 422, "entity bomb")["code"],
        "dtd_forbidden",
        "{b}"
    );
    // Not a signature at all.
    let (c, b) = post_json(
        &home,
        &app,
        "svc",
        "/api/v1/dsg/verify",
        &verify_body("<x/>", &[]),
    );
    assert_eq!(
        json_error(c, &b, 422, "not a signature")["valid"],
        false,
        "{b}"
    );
    // Malformed JSON, unknown fields, a wrong type.
    for (what, body) in [
        ("malformed JSON", "{\"signature\": \"<x/>\", "),
        (
            "unknown field",
            "{\"signature\": \"<x/>\", \"documents\": [], \"trust_me\": true}",
        ),
        ("wrong type", "{\"signature\": 42, \"documents\": []}"),
    ] {
        for (op, path) in [("svc", "/api/v1/dsg/verify"), ("alice", "/api/v1/dsg/sign")] {
            let (c, b) = post_json(&home, &app, op, path, body);
            assert!(c == 400 || c == 422, "{what} on {path}: {c} {b}");
            assert!(
                json_error(c, &b, c, what)["error"].is_string(),
                "{what}: {b}"
            );
        }
    }
    // Bad base64 content, a bad digest, content and digest both.
    let doc = |v: serde_json::Value| {
        let mut d = serde_json::json!({"unique_id": "urn:oid:1.2.250.1.999.1.0"});
        d.as_object_mut()
            .unwrap()
            .extend(v.as_object().unwrap().clone());
        d
    };
    for (what, d) in [
        (
            "bad base64",
            doc(serde_json::json!({"content": "not base64 !!"})),
        ),
        ("bad digest", doc(serde_json::json!({"sha256": "abcd"}))),
        (
            "both",
            doc(serde_json::json!({"content": "AA==", "sha256": "00".repeat(32)})),
        ),
        ("neither", doc(serde_json::json!({}))),
    ] {
        let sign = serde_json::json!({"structure_id": SEAL_A, "purpose": "author", "documents": [d.clone()]});
        let (c, b) = post_json(&home, &app, "alice", "/api/v1/dsg/sign", &sign.to_string());
        let e = json_error(c, &b, 400, what);
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .contains("urn:oid:1.2.250.1.999.1.0"),
            "{what}: {b}"
        );
        let ver = serde_json::json!({"signature": good, "documents": [d]});
        let (c, b) = post_json(&home, &app, "svc", "/api/v1/dsg/verify", &ver.to_string());
        json_error(c, &b, 400, what);
    }
    // Unknown purpose and policy.
    let mut bad = serde_json::json!({"structure_id": SEAL_A, "purpose": "whatever", "documents": [doc(serde_json::json!({"content": "AA=="}))]});
    let (c, b) = post_json(&home, &app, "alice", "/api/v1/dsg/sign", &bad.to_string());
    json_error(c, &b, 400, "unknown purpose");
    bad["purpose"] = "author".into();
    bad["policy"] = "enveloped".into();
    let (c, b) = post_json(&home, &app, "alice", "/api/v1/dsg/sign", &bad.to_string());
    json_error(c, &b, 400, "unknown policy");
    // A body over the route's limit (24 MiB): 413, before any parsing.
    let big = d.join("big.json");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&big).unwrap();
        f.write_all(b"{\"signature\": \"").unwrap();
        let chunk = vec![b'A'; 1 << 20];
        for _ in 0..25 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\", \"documents\": []}").unwrap();
    }
    for (op, path) in [("svc", "/api/v1/dsg/verify"), ("alice", "/api/v1/dsg/sign")] {
        let (c, k) = cred(&home, op);
        let (code, body) = curl_mtls(
            &home,
            &app,
            (&c, &k),
            "POST",
            path,
            None,
            // HTTP/1.1: over HTTP/2 the early 413 is followed by a stream reset that curl
            // reports as a framing error instead of the answer.
            &[
                "--http1.1",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &format!("@{}", big.display()),
            ],
        );
        assert_eq!(code, 413, "oversized on {path}: {body}");
    }
    // Still healthy; still signing and verifying.
    let (code, _) = http_get(&app.http, "/health").unwrap();
    assert_eq!(code, 200);
    let (code, body) = post_json(
        &home,
        &app,
        "svc",
        "/api/v1/dsg/verify",
        &verify_body(&good, &docs),
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = post_json(
        &home,
        &app,
        "alice",
        "/api/v1/dsg/sign",
        &sign_body(SEAL_A, &docs),
    );
    assert_eq!(code, 200, "{body}");
}

/// signxml's XAdESSigner (the crate test's script) signs a detached DSG manifest over `docs`
/// with `key` and its `chain`.
fn signxml_sign(key: &Path, chain: &Path, out: &Path, purpose: &str, docs: &[(String, PathBuf)]) {
    let mut cmd = Command::new(python());
    cmd.arg(peer_script("signxml_sign_dsg.py"))
        .arg(key)
        .arg(chain)
        .arg(out)
        .arg(purpose);
    for (u, p) in docs {
        cmd.arg(format!("{u}={}", p.display()));
    }
    assert_success(&cmd.output().unwrap(), "signxml XAdESSigner");
}

#[test]
fn signxml_signatures_extended_with_our_tsa_and_ocsp_verify_and_are_refused_once_changed() {
    let (home, app) =
        Appliance::fresh_configured(Home::new(), |h| add_seals(h, &[(SEAL_A, &["alice"])]));
    add_operator(&home, "svc", "service");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let docs = documents(d, 10);

    // A seal key made by openssl, certified by our CA (org-cachet).
    let csr = openssl_csr(d, "ext", "p256");
    let cert = d.join("ext.pem");
    assert_success(
        &issue_org(
            &home,
            &csr,
            &cert,
            "org-cachet",
            "structure:ext",
            "Cachet externe",
            &[],
        ),
        "cert issue org-cachet",
    );
    let org_ca = home.join("ca/organisations.pem");
    let chain = d.join("chain.pem");
    std::fs::write(
        &chain,
        std::fs::read_to_string(&cert).unwrap() + &std::fs::read_to_string(&org_ca).unwrap(),
    )
    .unwrap();
    let theirs = d.join("signxml.xml");
    signxml_sign(&d.join("ext.key"), &chain, &theirs, VERIFICATION, &docs);
    let xml = std::fs::read_to_string(&theirs).unwrap();

    // The long-term values, as a signer's software adds them: our TSA's token over the canonical
    // SignatureValue (openssl ts -query, POST /tsa), the chain, our OCSP answer (openssl ocsp).
    std::fs::write(d.join("sv.c14n"), canonical_signature_value(&xml)).unwrap();
    let (ok, out) = openssl(
        d,
        &[
            "ts", "-query", "-data", "sv.c14n", "-sha256", "-cert", "-out", "q.tsq",
        ],
    );
    assert!(ok, "{out}");
    let (code, reply) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/timestamp-query",
        "--data-binary",
        &format!("@{}", d.join("q.tsq").display()),
        &format!("http://{}/tsa", app.http),
    ]);
    assert_eq!(code, 200, "{}", text(&reply));
    std::fs::write(d.join("r.tsr"), &reply).unwrap();
    let (ok, out) = openssl(
        d,
        &[
            "ts",
            "-reply",
            "-in",
            "r.tsr",
            "-token_out",
            "-out",
            "tok.der",
        ],
    );
    assert!(ok, "{out}");
    let ocsp = ocsp_query(
        &home,
        &app,
        "organisations",
        &[&cert],
        &["-respout", d.join("ocsp.der").to_str().unwrap()],
    );
    assert!(ocsp.contains(": good"), "{ocsp}");
    let der_of = |pem: &Path| {
        let out = Command::new(peer("openssl"))
            .args(["x509", "-outform", "DER", "-in"])
            .arg(pem)
            .output()
            .unwrap();
        B64.encode(out.stdout)
    };
    let certs: String = [
        cert.as_path(),
        org_ca.as_path(),
        home.join("ca/root.pem").as_path(),
    ]
    .iter()
    .map(|p| {
        format!(
            "<xades:EncapsulatedX509Certificate>{}</xades:EncapsulatedX509Certificate>",
            der_of(p)
        )
    })
    .collect();
    let unsigned = format!(
        "<xades:UnsignedProperties><xades:UnsignedSignatureProperties><xades:SignatureTimeStamp><ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2006/12/xml-c14n11\"/><xades:EncapsulatedTimeStamp>{}</xades:EncapsulatedTimeStamp></xades:SignatureTimeStamp><xades:CertificateValues>{certs}</xades:CertificateValues><xades:RevocationValues><xades:OCSPValues><xades:EncapsulatedOCSPValue>{}</xades:EncapsulatedOCSPValue></xades:OCSPValues></xades:RevocationValues></xades:UnsignedSignatureProperties></xades:UnsignedProperties>",
        B64.encode(std::fs::read(d.join("tok.der")).unwrap()),
        B64.encode(std::fs::read(d.join("ocsp.der")).unwrap()),
    );
    let extended = xml.replacen(
        "</xades:QualifyingProperties>",
        &format!("{unsigned}</xades:QualifyingProperties>"),
        1,
    );
    assert_ne!(extended, xml, "signxml's QualifyingProperties not found");
    let sig = d.join("extended.xml");
    std::fs::write(&sig, &extended).unwrap();

    let v = assert_valid(&home, "svc", &sig, &docs, false);
    assert_eq!(
        v["purpose"],
        VERIFICATION.trim_start_matches("urn:oid:"),
        "{v:#}"
    );
    assert_eq!(v["policy"], "detached", "{v:#}");
    assert!(
        v["signer"].as_str().unwrap().contains("Cachet externe"),
        "{v:#}"
    );
    assert_valid(&home, "svc", &sig, &docs, true);

    // A changed document, SignedProperties, manifest: each refused with its own code.
    let changed = d.join("changed.xml");
    std::fs::write(&changed, b"<ClinicalDocument>autre</ClinicalDocument>\n").unwrap();
    let mut docs_changed = docs.clone();
    docs_changed[7].1 = changed;
    assert_refused(
        &home,
        "svc",
        &sig,
        &docs_changed,
        false,
        "document_digest_mismatch",
    );
    let write = |name: &str, s: String| {
        assert_ne!(s, extended, "{name}: nothing changed");
        let p = d.join(name);
        std::fs::write(&p, s).unwrap();
        p
    };
    let sp = write("sp.xml", extended.replacen(VERIFICATION, AUTHOR, 1));
    assert_refused(
        &home,
        "svc",
        &sp,
        &docs,
        false,
        "signed_properties_digest_mismatch",
    );
    let digest0 = B64.encode(sha256(&std::fs::read(&docs[0].1).unwrap()));
    let other = B64.encode(sha256(b"another document"));
    let manifest = write("manifest.xml", extended.replacen(&digest0, &other, 1));
    assert_refused(
        &home,
        "svc",
        &manifest,
        &docs,
        false,
        "manifest_digest_mismatch",
    );
}

fn sha256(b: &[u8]) -> Vec<u8> {
    let out = Command::new(peer("openssl"))
        .args(["dgst", "-sha256", "-binary"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        })
        .unwrap();
    out.stdout
}
