//! `cps-trust audit verify` with the real binary against a real appliance's log: intact while
//! the appliance runs (anchors through the API) and once it is stopped (anchors from the store);
//! each way of damaging the log or its checkpoints, on a copy of the log directory, exits 3
//! with one `error:` line naming what is missing; the checkpoint key is trusted by its
//! certificate's chain to the root and its profile, never by a file next to the log; a log cut
//! back while the appliance was stopped is reported at the next start and kept reported; and no
//! checkpoint is signed while the clock is not trusted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use cps_atna::{AuditLog, LogOptions, read_checkpoints};
use cps_hsm::SoftwareSigner;
use cps_trust_tests::*;

/// Set `[audit] checkpoint_every` and `checkpoint_seconds`.
fn set_checkpoints(home: &Home, every: u64, seconds: u32) {
    let cfg: Vec<String> = home
        .config_text()
        .lines()
        .map(|l| {
            if l.starts_with("checkpoint_every = ") {
                format!("checkpoint_every = {every}")
            } else if l.starts_with("checkpoint_seconds = ") {
                format!("checkpoint_seconds = {seconds}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    home.set_config_text(&(cfg.join("\n") + "\n"));
}

fn log_dir(home: &Home) -> PathBuf {
    home.join("audit/log")
}

/// A copy of the home's log directory.
fn copy_log(home: &Home) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(log_dir(home)).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

fn verify_dir(home: &Home, dir: &Path) -> Output {
    home.cps(&["audit", "verify", "--dir", dir.to_str().unwrap()])
}

/// `audit verify --dir` on a copy of the home's log damaged by `damage`, which is given the
/// copy's directory and its records.log and checkpoints.log.
fn damaged(home: &Home, damage: impl FnOnce(&Path, &Path, &Path)) -> Output {
    let copy = copy_log(home);
    let _ = std::fs::remove_file(copy.path().join("index.snap"));
    damage(
        copy.path(),
        &copy.path().join("records.log"),
        &copy.path().join("checkpoints.log"),
    );
    verify_dir(home, copy.path())
}

/// Exit 3 with one `error:` line containing every `expect`.
fn assert_refused(out: &Output, expect: &[&str]) {
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_one_line_error(out, expect);
}

/// (offset, length) of each entry of a checkpoints.log.
fn entries(path: &Path) -> Vec<(usize, usize)> {
    let d = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 8 <= d.len() {
        let len = 8 + u32::from_be_bytes(d[i + 4..i + 8].try_into().unwrap()) as usize;
        out.push((i, len));
        i += len;
    }
    out
}

/// Offsets of each record of a records.log.
fn records(path: &Path) -> Vec<usize> {
    let d = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 8 <= d.len() {
        out.push(i);
        i += 8 + u32::from_be_bytes(d[i + 4..i + 8].try_into().unwrap()) as usize + 32;
    }
    out
}

fn truncate(path: &Path, len: usize) {
    let mut d = std::fs::read(path).unwrap();
    d.truncate(len);
    std::fs::write(path, d).unwrap();
}

/// `openssl` with the words of `command` (paths of temporary directories hold no spaces).
fn openssl(command: &str) -> Output {
    let out = Command::new(peer("openssl"))
        .args(command.split_whitespace())
        .output()
        .unwrap();
    assert_success(&out, &format!("openssl {command}"));
    out
}

/// A P-256 key made by openssl (PKCS#8 DER, with the public key ring wants): (its path, the
/// same key as a signer).
fn openssl_key(dir: &Path, name: &str) -> (PathBuf, SoftwareSigner) {
    let pem = dir.join(format!("{name}.pem.key"));
    let p8 = dir.join(format!("{name}.p8"));
    openssl(&format!(
        "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {}",
        pem.display()
    ));
    openssl(&format!(
        "pkcs8 -topk8 -nocrypt -in {} -outform DER -out {}",
        pem.display(),
        p8.display()
    ));
    let signer = SoftwareSigner::from_pkcs8(name, &std::fs::read(&p8).unwrap()).unwrap();
    (p8, signer)
}

/// `openssl req -new` for the DER key `key` with `options`, written to `out`.
fn openssl_req(key: &Path, options: &str, out: &Path) {
    openssl(&format!(
        "req -new -keyform DER -key {} {options} -out {}",
        key.display(),
        out.display()
    ));
}

/// Replace the copy's checkpoints with one signed by `signer` over all its records, and its
/// certificates with `certs_pem` (what an attacker with another key would do).
fn resign(dir: &Path, signer: SoftwareSigner, certs_pem: &str) {
    std::fs::remove_file(dir.join("checkpoints.log")).unwrap();
    let log = AuditLog::open(dir, Some(Arc::new(signer)), LogOptions::default()).unwrap();
    assert!(log.last_checkpoint().is_some(), "re-signed at open");
    drop(log);
    std::fs::write(dir.join("checkpoint-certs.pem"), certs_pem).unwrap();
}

fn sha256_fingerprint(pem: &Path) -> String {
    let out = openssl(&format!(
        "x509 -noout -fingerprint -sha256 -in {}",
        pem.display()
    ));
    text(&out.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase()
}

/// `audit verify` succeeds; its output, which must contain every `expect`.
fn verified(home: &Home, args: &[&str], expect: &[&str]) -> Output {
    let mut all = vec!["audit", "verify"];
    all.extend_from_slice(args);
    let out = home.cps(&all);
    assert_success(&out, &all.join(" "));
    for e in expect {
        assert!(text(&out.stdout).contains(e), "{e}: {}", text(&out.stdout));
    }
    out
}

/// Records in the log per `audit verify`'s report ("intact: N records").
fn intact_records(out: &Output) -> Option<u64> {
    let s = text(&out.stdout);
    let i = s.find("audit log intact: ")? + "audit log intact: ".len();
    s[i..].split_whitespace().next()?.parse().ok()
}

#[test]
fn audit_verify_names_every_way_of_damaging_the_log() {
    let (home, mut app) = Appliance::fresh();
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    app.daemon.stop(Duration::from_secs(10));
    set_checkpoints(&home, 4, 10);
    let app = Appliance::start(&home);
    assert!(
        !home.join("audit/checkpoint-key.pem").exists(),
        "the public key file next to the log has no role any more"
    );
    assert!(home.join("audit/checkpoint.pem").exists());

    // Audit records: one per certificate issued.
    issue_certs(&home, d, "c", 10);
    // The checkpoint profile is not for anyone else's key.
    let csr = openssl_csr(d, "mine", "p256");
    let out = home.cps(&[
        "cert",
        "issue",
        "--profile",
        "audit-checkpoint",
        "--csr",
        csr.to_str().unwrap(),
        "--holder",
        "x",
        "--org-name",
        "Clinique du Parc",
        "--structure-id",
        "10B0152872",
        "--cn",
        "forged checkpoints",
        "--state",
        "Paris (75)",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("reserved"),
        "{}",
        text(&out.stderr)
    );
    // A seal certificate from our own CA for a key of ours (valid chain, another purpose).
    let (seal_key, seal_signer) = openssl_key(d, "seal");
    let seal_csr = d.join("seal.csr");
    openssl_req(&seal_key, "-subj /CN=ignored", &seal_csr);
    let seal_pem = d.join("seal.pem");
    assert_success(
        &home.cps(&[
            "cert",
            "issue",
            "--profile",
            "org-cachet",
            "--csr",
            seal_csr.to_str().unwrap(),
            "--holder",
            "10B0152872",
            "--org-name",
            "Clinique du Parc",
            "--structure-id",
            "10B0152872",
            "--cn",
            "Clinique du Parc SIGN",
            "--state",
            "Paris (75)",
            "-o",
            seal_pem.to_str().unwrap(),
        ]),
        "cert issue org-cachet",
    );

    // While the appliance runs: intact, anchors read through its API.
    let out = wait_for("the forwarded records", Duration::from_secs(30), || {
        let out = home.cps(&["audit", "verify"]);
        (out.status.success() && intact_records(&out).is_some_and(|n| n >= 12)).then_some(out)
    });
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("(through the running appliance)"),
        "{stdout}"
    );
    let root_fp = sha256_fingerprint(&home.join("ca/root.pem"));
    assert!(
        stdout.contains(&root_fp),
        "root fingerprint {root_fp}:\n{stdout}"
    );
    assert!(
        stdout.contains("CN=cps-trust audit checkpoints"),
        "{stdout}"
    );
    // A damaged copy, verified while the appliance runs.
    assert_refused(
        &damaged(&home, |_, _, cpath| std::fs::remove_file(cpath).unwrap()),
        &[
            "checkpoints.log was cut back or deleted",
            "anchored in the store",
        ],
    );

    // Stopped (clean shutdown: the last records are signed and anchored).
    let mut app = app;
    app.daemon.stop(Duration::from_secs(20));
    let out = verified(
        &home,
        &[],
        &["(read from the store)", ", 0 records after it"],
    );
    let cps = read_checkpoints(&log_dir(&home)).unwrap();
    let last = cps.last().unwrap().seq;
    assert!(cps.len() >= 3, "every 4 records: {cps:?}");
    let n = intact_records(&out).unwrap();
    assert_eq!(n, last);

    // checkpoints.log deleted.
    assert_refused(
        &damaged(&home, |_, _, cpath| std::fs::remove_file(cpath).unwrap()),
        &[
            "checkpoints.log was cut back or deleted",
            &format!("the checkpoint of record {last} (anchored in the store at"),
            "it holds no checkpoint",
            &format!("records 1 to {last} are no longer covered"),
        ],
    );

    // checkpoints.log truncated inside its last entry.
    let before = cps[cps.len() - 2].seq;
    assert_refused(
        &damaged(&home, |_, _, cpath| {
            let (off, len) = *entries(cpath).last().unwrap();
            truncate(cpath, off + len / 2);
        }),
        &[
            &format!("the checkpoint of record {last} (anchored in the store at"),
            &format!("the last checkpoint it holds covers record {before}"),
        ],
    );

    // checkpoints.log cut back at an entry boundary: the last two checkpoints removed.
    assert_refused(
        &damaged(&home, |_, _, cpath| {
            let e = entries(cpath);
            truncate(cpath, e[e.len() - 2].0);
        }),
        &[
            "checkpoints.log was cut back or deleted",
            &format!("the checkpoint of record {last}"),
            &format!("covers record {}", cps[cps.len() - 3].seq),
        ],
    );

    // The last records cut off (the final checkpoint covers them).
    assert_refused(
        &damaged(&home, |_, rpath, _| {
            truncate(rpath, records(rpath)[(last - 2) as usize])
        }),
        &[
            "log truncated",
            &format!("it ends at record {}", last - 2),
            &format!("records {} to {last} are missing", last - 1),
        ],
    );

    // What was observed: half of records.log cut away and checkpoints.log deleted.
    assert_refused(
        &damaged(&home, |_, rpath, cpath| {
            truncate(rpath, std::fs::metadata(rpath).unwrap().len() as usize / 2);
            std::fs::remove_file(cpath).unwrap();
        }),
        &[
            "checkpoints.log was cut back or deleted",
            &format!("the checkpoint of record {last}"),
            "missing from records.log",
        ],
    );

    // The key swapped: checkpoints re-signed by another key with a self-signed certificate
    // that claims the checkpoint purpose, and its public key in the old key file's place.
    let (attacker_key, attacker) = openssl_key(d, "attacker");
    let self_signed = d.join("attacker.pem");
    let ext = d.join("attacker.cnf");
    std::fs::write(
        &ext,
        "[req]\ndistinguished_name = dn\nx509_extensions = ext\n[dn]\n[ext]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = 1.3.6.1.4.1.32473.3.1\n",
    )
    .unwrap();
    openssl_req(
        &attacker_key,
        &format!(
            "-x509 -config {} -subj /C=FR/O=cps-trust/CN=forged-audit-checkpoints -days 30",
            ext.display()
        ),
        &self_signed,
    );
    let spki_pem = text(
        &openssl(&format!(
            "pkey -inform DER -in {} -pubout",
            attacker_key.display()
        ))
        .stdout,
    );
    std::fs::write(home.join("audit/checkpoint-key.pem"), spki_pem).unwrap();
    let self_signed = std::fs::read_to_string(&self_signed).unwrap();
    assert_refused(
        &damaged(&home, |dir, _, _| resign(dir, attacker, &self_signed)),
        &[
            "which no trusted certificate holds",
            "does not chain to the root",
        ],
    );
    std::fs::remove_file(home.join("audit/checkpoint-key.pem")).unwrap();

    // Re-signed by a key certified by our own CA, but as a seal: not a checkpoint key.
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(&seal_pem).unwrap(),
        std::fs::read_to_string(home.join("ca/organisations.pem")).unwrap()
    );
    assert_refused(
        &damaged(&home, |dir, _, _| resign(dir, seal_signer, &chain)),
        &[
            "which no trusted certificate holds",
            "does not carry the audit checkpoint extended key usage",
        ],
    );

    // Another root given: nothing chains to it, and its fingerprint is the one printed.
    let (other_key, _) = openssl_key(d, "other-root");
    let other_root = d.join("other-root.pem");
    openssl_req(
        &other_key,
        "-x509 -subj /CN=Another-Root -days 30",
        &other_root,
    );
    let out = home.cps(&["audit", "verify", "--root", other_root.to_str().unwrap()]);
    assert_refused(&out, &["does not chain to the root"]);
    assert!(
        text(&out.stdout).contains(&sha256_fingerprint(&other_root)),
        "{}",
        text(&out.stdout)
    );

    // The undamaged log still verifies.
    verified(&home, &[], &[]);

    // The log itself cut back while the appliance is stopped, then the appliance started: it
    // raises the alarm, keeps the anchor it no longer finds, and verify keeps reporting it.
    let rpath = log_dir(&home).join("records.log");
    truncate(&rpath, records(&rpath)[(last / 2) as usize]);
    std::fs::remove_file(log_dir(&home).join("checkpoints.log")).unwrap();
    let _ = std::fs::remove_file(log_dir(&home).join("index.snap"));
    let mut app = Appliance::start(&home);
    let serve_log = std::fs::read_to_string(home.join("serve.log")).unwrap();
    assert!(serve_log.contains("AUDIT LOG ALARM"), "{serve_log}");
    app.daemon.stop(Duration::from_secs(20));
    assert_refused(
        &home.cps(&["audit", "verify"]),
        &[
            "was cut back, deleted or replaced while the appliance was stopped",
            &format!("did not hold the checkpoint of record {last}"),
        ],
    );
}

#[test]
fn no_checkpoint_is_signed_while_the_clock_is_not_trusted() {
    let (home, mut app) = Appliance::fresh();
    app.daemon.stop(Duration::from_secs(10));
    // A checkpoint after every record: the last one made (at this run's end) carries that
    // policy, which governs the records that follow it.
    set_checkpoints(&home, 1, 1);
    let mut app = Appliance::start(&home);
    app.daemon.stop(Duration::from_secs(20));
    verified(&home, &[], &[]);
    // The kernel's clock with no tolerance: never trusted.
    let trusted = home.config_text();
    let cfg = trusted.replace(
        "source = \"declared\"",
        "source = \"kernel\"\nmax_error_ms = 0",
    );
    let cfg = cfg.replacen("max_error_ms = 1000\n", "", 1);
    home.set_config_text(&cfg);
    let mut app = Appliance::start(&home);
    // Records that need no signature: registry changes.
    let csv = repo_root().join("crates/enrol/examples/professionals.csv");
    assert_success(
        &home.cps(&["professional", "import", csv.to_str().unwrap()]),
        "professional import",
    );
    for status in ["suspended", "active"] {
        assert_success(
            &home.cps(&["professional", "status", "810002813839", status]),
            "professional status",
        );
    }
    let out = wait_for("an unsigned tail", Duration::from_secs(30), || {
        let out = home.cps(&["audit", "verify"]);
        (out.status.code() == Some(3)).then_some(out)
    });
    assert_one_line_error(
        &out,
        &[
            "checkpoints are missing",
            "nothing is signed while the clock is not trusted",
        ],
    );
    let serve_log = std::fs::read_to_string(home.join("serve.log")).unwrap();
    assert!(
        serve_log.contains("audit log checkpoint failed") && serve_log.contains("signing refused"),
        "{serve_log}"
    );
    app.daemon.stop(Duration::from_secs(20));
    // Trusted again: the tail is signed at the next start.
    home.set_config_text(&trusted);
    let mut app = Appliance::start(&home);
    app.daemon.stop(Duration::from_secs(20));
    verified(&home, &[], &[", 0 records after it"]);
}

/// The serial of the first certificate of a PEM file.
fn serial_of(pem: &Path) -> String {
    let out = openssl(&format!("x509 -noout -serial -in {}", pem.display()));
    text(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_uppercase()
}

/// A home made before checkpoint keys were certified (the key, a public key file next to the
/// log, no certificate) gets its certificate at the next start and its earlier checkpoints still
/// verify; the route that gives the anchors is for auditors and CA operators only; a revoked
/// checkpoint certificate stops the key's later checkpoints from being trusted.
#[test]
fn an_old_home_is_certified_and_a_revoked_checkpoint_certificate_is_honoured() {
    let (home, mut app) = Appliance::fresh();
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    issue_certs(&home, d, "a", 2);
    app.daemon.stop(Duration::from_secs(20));
    let first_serial = serial_of(&home.join("audit/checkpoint.pem"));
    let before = read_checkpoints(&log_dir(&home)).unwrap();
    assert!(!before.is_empty());
    // As a home of the previous release looked.
    std::fs::remove_file(home.join("audit/checkpoint.pem")).unwrap();
    std::fs::remove_file(log_dir(&home).join("checkpoint-certs.pem")).unwrap();
    std::fs::write(
        home.join("audit/checkpoint-key.pem"),
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();

    let app = Appliance::start(&home);
    assert!(!home.join("audit/checkpoint-key.pem").exists());
    let second_serial = serial_of(&home.join("audit/checkpoint.pem"));
    assert_ne!(first_serial, second_serial, "certified again at start");
    let bundle = std::fs::read_to_string(log_dir(&home).join("checkpoint-certs.pem")).unwrap();
    assert_eq!(
        bundle.matches("BEGIN CERTIFICATE").count(),
        2,
        "certificate and issuer"
    );
    let out = verified(&home, &[], &[]);
    assert!(
        intact_records(&out).unwrap() >= before.last().unwrap().seq,
        "{}",
        text(&out.stdout)
    );

    // GET /api/v1/audit/checkpoints: auditors and CA operators; not a service.
    for (name, role) in [("aud", "auditor"), ("svc", "service")] {
        assert_success(
            &home.cps(&["operator", "add", "--name", name, "--role", role]),
            "operator add",
        );
    }
    verified(&home, &["--as", "aud"], &[]);
    let out = home.cps(&["audit", "verify", "--as", "svc"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_one_line_error(&out, &["403", "lacks the role"]);

    // The checkpoint certificate revoked: what the key signs afterwards is not trusted.
    assert_success(
        &home.revoke("organisations", &second_serial, "keyCompromise"),
        "revoke the checkpoint certificate",
    );
    std::thread::sleep(Duration::from_millis(1100));
    issue_certs(&home, d, "after", 1);
    let mut app = app;
    app.daemon.stop(Duration::from_secs(20));
    assert_refused(
        &home.cps(&["audit", "verify"]),
        &[
            &format!("certificate {second_serial}"),
            "revoked at",
            "stopped being valid",
        ],
    );
}

/// Sets `[cluster] node_id` (added once, then replaced).
fn set_node(home: &Home, node: &str) {
    let cfg = home.config_text();
    if cfg.contains("\n[cluster]\n") {
        home.set_config_value("node_id", &format!("\"{node}\""));
    } else {
        home.set_config_text(&format!("{cfg}\n[cluster]\nnode_id = \"{node}\"\n"));
    }
}

/// Two nodes of one store. sled lets one process at a time open it, so the two node ids take
/// turns on one home (node-b's log continues the same directory). `/health` names the node;
/// `audit verify` checks this node's log against this node's anchors and lists the other node
/// with its latest anchor and how to check it; the other node's log verifies from a copy with
/// `--node`; without a copy it says where that log is; node-b's anchors are not in node-a's
/// log, so a copy of the wrong log is refused.
#[test]
fn audit_verify_checks_one_node_and_reports_every_node_of_the_store() {
    let (home, mut app) = Appliance::fresh();
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    app.daemon.stop(Duration::from_secs(10));
    set_checkpoints(&home, 4, 10);
    set_node(&home, "node-a");
    let mut app = Appliance::start(&home);
    let (code, body) = http_get(&app.http, "/health").unwrap();
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (code, health["node"].as_str()),
        (200, Some("node-a")),
        "{health}"
    );
    issue_certs(&home, d, "a", 3);
    verified(&home, &[], &["node node-a", "audit log intact"]);
    app.daemon.stop(Duration::from_secs(10));
    let copy_a = copy_log(&home);

    set_node(&home, "node-b");
    let mut app = Appliance::start(&home);
    issue_certs(&home, d, "b", 3);
    // Running: the anchors of both nodes through the API.
    let reports = [
        "node node-b",
        "audit log intact",
        "node node-a (host",
        "`cps-trust audit verify --node node-a --dir <copy of its audit/log>`",
    ];
    wait_for("node-b's anchors", Duration::from_secs(30), || {
        let out = home.cps(&["audit", "verify"]);
        (out.status.success() && text(&out.stdout).contains("latest anchor: checkpoint"))
            .then_some(())
    });
    verified(&home, &[], &reports);
    app.daemon.stop(Duration::from_secs(10));
    // Stopped: from the store.
    verified(&home, &[], &reports);
    let a = copy_a.path().to_str().unwrap();
    verified(
        &home,
        &["--node", "node-a", "--dir", a],
        &["node node-a", "audit log intact", "node node-b (host"],
    );
    let out = home.cps(&["audit", "verify", "--node", "node-a"]);
    assert_one_line_error(&out, &["node-a", "on that node's machine", "--dir"]);
    let out = home.cps(&["audit", "verify", "--node", "node-b", "--dir", a]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = home.cps(&["audit", "verify", "--node", "no such node!"]);
    assert_one_line_error(&out, &["not a node id"]);
}
