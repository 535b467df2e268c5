//! Card login challenges end to end, with the real card stack (pcscd + vpcd + firmware-sim), the
//! `cps-trust` CLI, OpenSC's pkcs11-tool signing with the card, h2load and curl:
//!
//! * a login carries the context the workstation asked for (patient, purpose, structure,
//!   break-glass justification) into the assertion;
//! * the card's signature is bound to the challenge's context and to this appliance: replayed
//!   with another context, over a bare nonce, or presented with another challenge, it is
//!   refused with its own code; a challenge is used once;
//! * 120 000 challenges from one client (the flood that used to fill the table of 100 000 open
//!   challenges and make every login fail with 503) are followed by a successful login;
//! * refusals of attempts that proved nothing are counted into one `login.refused` record per
//!   source and interval, while refusals after the card's signature verified are `login`
//!   failure records of the professional, one each;
//! * when the audit records cannot be committed (the store's disk fails), no assertion leaves:
//!   503, break-glass included.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine;
use cps_store::Store;
use cps_trust_tests::pcsc::{IDNAT, OTHER_STRUCTURE, PcscStack, certificate_pem, enrol_card};
use cps_trust_tests::*;
use serde_json::{Value, json};

const PATIENT: &str = "248079707503828";
const OTHER_PATIENT: &str = "181056210206985";
const JUSTIFICATION: &str = "arrêt cardiaque aux urgences";
/// `cps-trust login` arguments of a break-glass access to [`PATIENT`].
const BREAK_GLASS: [&str; 6] = [
    "--patient-ins",
    PATIENT,
    "--purpose",
    "bris_de_glace",
    "--justification",
    JUSTIFICATION,
];
const FLOOD: usize = 120_000;
const FORGED: usize = 2_000;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// `POST` JSON to the appliance without any client certificate (as a workstation), optionally
/// from another loopback source address.
fn post(app: &Appliance, path: &str, body: &Value, from: Option<&str>) -> (u16, Value) {
    let url = format!("https://{}{path}", app.https);
    let body = body.to_string();
    let mut args = vec!["-sk", "-X", "POST", "-H", "content-type: application/json"];
    if let Some(ip) = from {
        args.extend(["--interface", ip]);
    }
    args.extend([url.as_str(), "-d", body.as_str()]);
    let (code, out) = curl(&args);
    (code, serde_json::from_slice(&out).unwrap_or(Value::Null))
}

/// A challenge for `context`; returns its answer and the bytes to sign.
fn challenge(app: &Appliance, context: &Value) -> (Value, Vec<u8>) {
    let (code, ch) = post(
        app,
        "/api/v1/login/challenge",
        &json!({ "context": context }),
        None,
    );
    assert_eq!(code, 201, "{ch}");
    let bytes = b64().decode(ch["challenge"].as_str().unwrap()).unwrap();
    (ch, bytes)
}

/// The card signs `data` with key `id` (01: authentication, 02: signature) through OpenSC.
fn card_sign(stack: &PcscStack, pin: &str, id: &str, data: &[u8]) -> Vec<u8> {
    let input = stack.dir.path().join("to-sign.bin");
    let output = stack.dir.path().join("signature.der");
    std::fs::write(&input, data).unwrap();
    let _ = std::fs::remove_file(&output);
    stack.sign_with_card(pin, id, &input, &output);
    std::fs::read(&output).unwrap()
}

fn login_body(ch: &Value, cert_pem: &Path, signature: &[u8], context: &Value) -> Value {
    json!({
        "challenge_id": ch["challenge_id"],
        "certificate": std::fs::read_to_string(cert_pem).unwrap(),
        "signature": b64().encode(signature),
        "context": context,
    })
}

/// A whole card login over HTTP: a challenge for `context`, signed by the card's key `id`,
/// posted with the certificate `cert_pem`. Returns the login body (to replay it) and the answer.
fn card_login(
    app: &Appliance,
    stack: &PcscStack,
    pin: &str,
    (id, cert_pem): (&str, &Path),
    context: &Value,
) -> (Value, (u16, Value)) {
    let (ch, to_sign) = challenge(app, context);
    let body = login_body(&ch, cert_pem, &card_sign(stack, pin, id, &to_sign), context);
    let answer = post(app, "/api/v1/login", &body, None);
    (body, answer)
}

fn refused_with(r: (u16, Value), code: &str) {
    assert_eq!(r.0, 401, "{}", r.1);
    assert_eq!(r.1["code"], code, "{}", r.1);
    assert!(r.1.get("assertion").is_none());
}

/// `cps-trust login` with the card in `reader`.
fn cli_login(home: &Home, reader: &str, pin: &str, extra: &[&str], out: &Path) -> Output {
    let mut args = vec!["login", "--reader", reader, "--pin", pin];
    args.extend_from_slice(extra);
    args.extend(["--out", out.to_str().unwrap()]);
    home.cps(&args)
}

/// h2load against the appliance; returns the counts of 2xx, 4xx and 5xx answers.
fn h2load(app: &Appliance, path: &str, body: &Value, n: usize) -> (usize, usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("body.json");
    std::fs::write(&f, body.to_string()).unwrap();
    let out = Command::new(peer("h2load"))
        .args(["-n", &n.to_string(), "-c", "4", "-m", "32", "-d"])
        .arg(&f)
        .args(["-H", "content-type: application/json"])
        .arg(format!("https://{}{path}", app.https))
        .output()
        .unwrap();
    let o = text(&out.stdout);
    let line = o
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or_else(|| panic!("h2load: {o}{}", text(&out.stderr)));
    let count = |class: &str| -> usize {
        line.split(',')
            .find(|p| p.trim_end().ends_with(class))
            .and_then(|p| p.split_whitespace().rev().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    eprintln!(
        "h2load {path}: {}",
        o.lines()
            .find(|l| l.starts_with("finished in"))
            .unwrap_or("")
    );
    (count("2xx"), count("4xx"), count("5xx"))
}

fn set_config(home: &Home, from: &str, to: &str) {
    let cfg = home.config_text();
    assert!(cfg.contains(from), "no '{from}' in the configuration");
    home.set_config_text(&cfg.replacen(from, to, 1));
}

/// An ext4 file system on a loop device over a sparse file, mounted for the test; unmounted and
/// detached on drop. [`Disk::fail`] shuts it down (`EXT4_IOC_SHUTDOWN`): from then on every
/// write and `fdatasync` fails with EIO, as on a failed disk.
///
/// (A full file system does not make the store's commits fail at once: sled writes into a log
/// file it has already allocated, so a full tmpfs let them succeed.)
struct Disk {
    mount: PathBuf,
    device: String,
}

impl Disk {
    fn new(image: &Path, mount: &Path, megabytes: u64) -> Disk {
        let run = |what: &str, cmd: &mut Command| -> String {
            let out = cmd.output().unwrap();
            assert_success(&out, &format!("{what} (the suite runs as root)"));
            text(&out.stdout).trim().to_owned()
        };
        std::fs::File::create(image)
            .unwrap()
            .set_len(megabytes << 20)
            .unwrap();
        let device = run(
            "losetup",
            Command::new(peer("losetup"))
                .args(["-f", "--show"])
                .arg(image),
        );
        let disk = Disk {
            mount: mount.to_path_buf(),
            device,
        };
        run(
            "mkfs.ext4",
            Command::new(peer("mkfs.ext4")).args(["-q", &disk.device]),
        );
        std::fs::create_dir_all(mount).unwrap();
        run(
            "mount",
            Command::new(peer("mount")).arg(&disk.device).arg(mount),
        );
        disk
    }

    fn fail(&self) {
        use std::os::fd::AsRawFd;
        // EXT4_IOC_SHUTDOWN = _IOR('X', 125, __u32); EXT4_GOING_FLAGS_DEFAULT = 0: what was
        // written so far is synced first, every operation after fails.
        const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
        let dir = std::fs::File::open(&self.mount).unwrap();
        let flags: u32 = 0;
        // SAFETY: a valid descriptor and a pointer to a live u32, as the ioctl expects.
        let rc = unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_SHUTDOWN, &flags) };
        assert_eq!(
            rc,
            0,
            "EXT4_IOC_SHUTDOWN: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Unmounts and mounts again (ext4 replays its journal).
    fn remount(&self) {
        assert_success(
            &Command::new(peer("umount"))
                .arg(&self.mount)
                .output()
                .unwrap(),
            "umount",
        );
        assert_success(
            &Command::new(peer("mount"))
                .arg(&self.device)
                .arg(&self.mount)
                .output()
                .unwrap(),
            "mount",
        );
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new(peer("umount"))
            .arg("-l")
            .arg(&self.mount)
            .output();
        let _ = Command::new(peer("losetup"))
            .args(["-d", &self.device])
            .output();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The audit records of a stopped appliance's store.
fn audit_records(store_path: &Path) -> Vec<cps_store::AuditRecord> {
    let store = cps_store::SledStore::open(store_path).unwrap();
    let n = store.audit_len().unwrap();
    store
        .audit_range(1, n as usize + 1)
        .unwrap()
        .into_iter()
        .map(|e| e.record)
        .collect()
}

/// `successes` logins answered with an assertion, one of them break-glass: as many `login` and
/// `xua.issue` success records, and one `xua.break_glass`.
fn assert_each_assertion_audited(records: &[cps_store::AuditRecord], successes: usize) {
    let kind = |k: &str| {
        records
            .iter()
            .filter(|r| r.kind == k && r.outcome == "success")
            .count()
    };
    assert_eq!(kind("login"), successes);
    assert_eq!(kind("xua.issue"), successes);
    assert_eq!(kind("xua.break_glass"), 1);
}

#[test]
fn login_challenges_are_stateless_bound_to_their_context_and_audited() {
    let (stack, _sim, reader) = PcscStack::with_blank_card("login");
    let dir = stack.dir.path().to_path_buf();
    let home = stack.home();
    assert_success(
        &home.cps(&["init", "--time-source", "declared"]),
        "cps-trust init",
    );
    // Short intervals, so the test sees several of them.
    set_config(
        &home,
        "refusal_audit_seconds = 60",
        "refusal_audit_seconds = 2",
    );
    let mut app = Appliance::start(&home);
    let card = enrol_card(&home, &dir, &reader);
    let pin = card.pin.as_str();
    let auth_pem = certificate_pem(&home, &dir, &card.auth_serial);
    let sign_pem = certificate_pem(&home, &dir, &card.sign_serial);
    let mut successes = 0;
    let (mut unauthenticated, mut identified) = (0usize, Vec::new());

    // --- A login carries the context asked for into the assertion. ---
    for (name, args, wants) in [
        (
            "a1.xml",
            vec![
                "--patient-ins",
                PATIENT,
                "--purpose",
                "centre_15",
                "--structure-id",
                OTHER_STRUCTURE,
            ],
            vec![IDNAT, PATIENT, "centre_15", OTHER_STRUCTURE],
        ),
        (
            "a2.xml",
            BREAK_GLASS.to_vec(),
            vec![PATIENT, "bris_de_glace", JUSTIFICATION],
        ),
    ] {
        let file = dir.join(name);
        let out = cli_login(&home, &reader, pin, &args, &file);
        assert_success(&out, &format!("cps-trust login {args:?}"));
        successes += 1;
        let xml = std::fs::read_to_string(&file).unwrap();
        for want in wants {
            assert!(xml.contains(want), "{want} not in {xml}");
        }
    }

    // --- The card's signature is bound to the context and to the challenge. ---
    let ctx_a = json!({ "patient_ins": PATIENT, "purpose_of_use": "normal" });
    let ctx_b = json!({ "patient_ins": OTHER_PATIENT, "purpose_of_use": "normal" });
    let (ch_a, msg_a) = challenge(&app, &ctx_a);
    assert_eq!(msg_a.len(), 128);
    assert!(msg_a.starts_with(b"cps-trust card login v1\0"));
    assert_eq!(ch_a["format"], "cps-trust card login v1");
    let sig_a = card_sign(&stack, pin, "01", &msg_a);
    // The signature replayed with another patient: refused, and the challenge is used up.
    let body = login_body(&ch_a, &auth_pem, &sig_a, &ctx_b);
    refused_with(post(&app, "/api/v1/login", &body, None), "context_mismatch");
    let body = login_body(&ch_a, &auth_pem, &sig_a, &ctx_a);
    refused_with(post(&app, "/api/v1/login", &body, None), "used_challenge");
    // The same signature presented with a challenge for the other patient.
    let (ch_b, _) = challenge(&app, &ctx_b);
    let body = login_body(&ch_b, &auth_pem, &sig_a, &ctx_b);
    refused_with(post(&app, "/api/v1/login", &body, None), "bad_signature");
    // A signature over the bare nonce (what the card signed before, and what another service
    // asking for 32 bytes would obtain).
    let (ch_c, msg_c) = challenge(&app, &ctx_a);
    let nonce_sig = card_sign(&stack, pin, "01", &msg_c[56..88]);
    let body = login_body(&ch_c, &auth_pem, &nonce_sig, &ctx_a);
    refused_with(
        post(&app, "/api/v1/login", &body, None),
        "bare_nonce_signature",
    );
    unauthenticated += 4;
    // The right signature for the right context: an assertion for that patient, once.
    let auth_key = ("01", auth_pem.as_path());
    let sign_key = ("02", sign_pem.as_path());
    let (good_login, (code, ok)) = card_login(&app, &stack, pin, auth_key, &ctx_a);
    assert_eq!(code, 200, "{ok}");
    assert!(ok["assertion"].as_str().unwrap().contains(PATIENT));
    successes += 1;
    refused_with(
        post(&app, "/api/v1/login", &good_login, None),
        "used_challenge",
    );
    unauthenticated += 1;
    // The card's signature key signs the challenge correctly, but its certificate may not log
    // in: the professional is identified, so this is a failure record of its own.
    let (_, answer) = card_login(&app, &stack, pin, sign_key, &ctx_a);
    refused_with(answer, "wrong_certificate_profile");
    identified.push("wrong_certificate_profile");

    // --- A flood of challenges from one client, then a login. ---
    let t = Instant::now();
    let (ok2xx, c4xx, c5xx) = h2load(
        &app,
        "/api/v1/login/challenge",
        &json!({ "context": ctx_a }),
        FLOOD,
    );
    eprintln!("{FLOOD} challenges in {:?}", t.elapsed());
    assert_eq!((ok2xx, c4xx, c5xx), (FLOOD, 0, 0));
    let a3 = dir.join("a3.xml");
    assert_success(
        &cli_login(&home, &reader, pin, &["--patient-ins", PATIENT], &a3),
        "cps-trust login after the flood",
    );
    successes += 1;

    // --- Refusals: counted per source when nothing is proved, recorded one by one after. ---
    let t_refusals = Instant::now();
    let (forged_ch, _) = challenge(&app, &ctx_a);
    // One character of the MAC changed.
    let mut token = forged_ch["challenge_id"].as_str().unwrap().to_owned();
    let flipped = if token.as_bytes()[130] == b'A' {
        "B"
    } else {
        "A"
    };
    token.replace_range(130..131, flipped);
    let forged = json!({
        "challenge_id": token,
        "certificate": std::fs::read_to_string(&auth_pem).unwrap(),
        "signature": good_login["signature"],
        "context": ctx_a,
    });
    assert_eq!(
        h2load(&app, "/api/v1/login", &forged, FORGED),
        (0, FORGED, 0),
        "every forged login refused"
    );
    unauthenticated += FORGED;
    for _ in 0..3 {
        let r = post(&app, "/api/v1/login", &forged, Some("127.0.0.2"));
        refused_with(r, "forged_challenge");
    }
    // A suspended card: the signature verifies, the certificate is on hold.
    assert_success(
        &home.cps(&["card", "suspend", &card.serial]),
        "card suspend",
    );
    let out = cli_login(&home, &reader, pin, &[], &dir.join("a4.xml"));
    assert!(
        text(&out.stderr).contains("revoked_certificate"),
        "{}",
        text(&out.stderr)
    );
    identified.push("revoked_certificate");
    assert_success(&home.cps(&["card", "resume", &card.serial]), "card resume");
    // Stopped, the appliance writes what its last interval counted.
    let elapsed = t_refusals.elapsed();
    app.daemon.stop(Duration::from_secs(20));
    let records = audit_records(&home.join("store"));
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r.kind == "login.refused")
        .collect();
    let from = |ip: &str| -> Vec<&cps_store::AuditRecord> {
        refused
            .iter()
            .copied()
            .filter(|r| r.detail["source"] == ip)
            .collect()
    };
    let count = |rs: &[&cps_store::AuditRecord]| -> usize {
        rs.iter()
            .map(|r| r.detail["count"].as_u64().unwrap() as usize)
            .sum()
    };
    let local = from("127.0.0.1");
    let other = from("127.0.0.2");
    assert_eq!(count(&local), unauthenticated, "{local:#?}");
    assert_eq!(count(&other), 3, "{other:#?}");
    // One record per source and interval (2 s), not one per attempt.
    let intervals = (elapsed.as_secs() / 2 + 2) as usize;
    assert!(
        local.len() <= intervals + 4,
        "{} login.refused records for 127.0.0.1 over {elapsed:?}",
        local.len()
    );
    assert_eq!(other.len(), 1, "{other:#?}");
    assert_eq!(other[0].detail["reasons"]["forged_challenge"], 3);
    assert_eq!(other[0].actor, "peer:127.0.0.2");
    // Identified failures: one durable record each, naming the professional.
    let failures: Vec<_> = records
        .iter()
        .filter(|r| r.kind == "login" && r.outcome == "failure")
        .collect();
    let codes: Vec<&str> = failures
        .iter()
        .map(|r| r.detail["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, identified, "{failures:#?}");
    for f in &failures {
        assert_eq!(f.detail["idnat_ps"], IDNAT);
        assert_eq!(f.actor, format!("professional:{IDNAT}"));
        assert_eq!(f.detail["source"], "127.0.0.1");
    }
    // Every assertion handed out has its login and issue records; break-glass its own.
    assert_each_assertion_audited(&records, successes);

    // --- No assertion without its durable audit record. ---
    let disk = Disk::new(&dir.join("store.img"), &dir.join("store-fs"), 96);
    let store_path = disk.mount.join("store");
    copy_dir(&home.join("store"), &store_path);
    set_config(
        &home,
        "path = \"store\"",
        &format!("path = \"{}\"", store_path.display()),
    );
    // A small file system: keep only 1 MiB free in reserve (the disk guard's default would
    // refuse all work before the failure this part is about).
    home.set_config_value("min_free_mb", "1");
    let app = Appliance::start(&home);
    let a5 = dir.join("a5.xml");
    assert_success(
        &cli_login(&home, &reader, pin, &[], &a5),
        "cps-trust login with the store on the loop device",
    );
    successes += 1;
    disk.fail();
    for (what, extra) in [
        ("normal", vec!["--patient-ins", PATIENT]),
        ("break-glass", BREAK_GLASS.to_vec()),
    ] {
        let out_file = dir.join(format!("refused-{what}.xml"));
        let out = cli_login(&home, &reader, pin, &extra, &out_file);
        assert!(!out.status.success(), "{what} login with a failed disk");
        assert!(
            text(&out.stderr).contains("could not be audited"),
            "{what}: {}",
            text(&out.stderr)
        );
        assert!(!out_file.exists(), "{what}: an assertion was written");
        assert!(text(&out.stdout).trim().is_empty());
    }
    // The same at the HTTP level: 503 and no assertion in the answer.
    let (_, (code, answer)) = card_login(&app, &stack, pin, auth_key, &ctx_a);
    assert_eq!(code, 503, "{answer}");
    assert!(answer.get("assertion").is_none(), "{answer}");
    // An identified refusal that cannot be recorded is not answered as a plain refusal either.
    let (_, (code, answer)) = card_login(&app, &stack, pin, sign_key, &ctx_a);
    assert_eq!(code, 503, "{answer}");
    // Attempts that proved nothing are still refused (counted in memory, no write needed).
    refused_with(
        post(&app, "/api/v1/login", &forged, None),
        "forged_challenge",
    );
    drop(app);
    // Once the disk is back, the store holds the records of every assertion handed out, and
    // of none other.
    disk.remount();
    assert_each_assertion_audited(&audit_records(&store_path), successes);
}
