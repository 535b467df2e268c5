//! Issue "Foundation": the key ceremony against SoftHSM2, pkcs11-tool, openssl and pkilint; a
//! second init; hostile configuration; the appliance starting and stopping.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use cps_trust_tests::pkilint::Linter;
use cps_trust_tests::*;

const HIERARCHY: [&str; 5] = [
    "root",
    "personnes",
    "personnes-ocsp",
    "organisations",
    "organisations-ocsp",
];

/// Every private key `init` made is listed by pkcs11-tool as sensitive and never extractable.
#[test]
fn pkcs11_tool_lists_every_private_key_sensitive_and_never_extractable() {
    let home = Home::initialised();
    let pin = home.user_pin();
    let out = home.pkcs11_tool(&[
        "--login",
        "--pin",
        &pin,
        "--list-objects",
        "--type",
        "privkey",
    ]);
    assert_success(&out, "pkcs11-tool --list-objects");
    let listing = text(&out.stdout);
    let mut keys = BTreeMap::new();
    let mut label = String::new();
    for line in listing.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("label:") {
            label = v.trim().to_owned();
        } else if let Some(v) = l.strip_prefix("Access:") {
            keys.insert(label.clone(), v.trim().to_owned());
        }
    }
    let expected = [
        "ca-organisations",
        "ca-personnes",
        "ca-root",
        "ocsp-organisations",
        "ocsp-personnes",
        "tls-server",
    ];
    assert_eq!(
        keys.keys().map(String::as_str).collect::<Vec<_>>(),
        expected,
        "{listing}"
    );
    for (label, access) in &keys {
        let flags: Vec<&str> = access.split(',').map(str::trim).collect();
        assert!(flags.contains(&"sensitive"), "{label}: {access}");
        assert!(flags.contains(&"never extractable"), "{label}: {access}");
        assert!(!flags.contains(&"extractable"), "{label}: {access}");
    }
}

/// openssl verifies both issuing CAs against the root and each OCSP signer through its CA.
#[test]
fn openssl_verifies_the_hierarchy() {
    let home = Home::initialised();
    let ca = home.join("ca");
    let verify = |args: &[&str]| {
        let out = Command::new(peer("openssl"))
            .arg("verify")
            .args(args)
            .current_dir(&ca)
            .output()
            .expect("openssl");
        assert_success(&out, &format!("openssl verify {args:?}"));
        assert!(
            text(&out.stdout).trim_end().ends_with(": OK"),
            "{}",
            text(&out.stdout)
        );
    };
    verify(&["-CAfile", "root.pem", "root.pem"]);
    for id in ["personnes", "organisations"] {
        verify(&["-CAfile", "root.pem", &format!("{id}.pem")]);
        verify(&[
            "-CAfile",
            "root.pem",
            "-untrusted",
            &format!("{id}.pem"),
            &format!("{id}-ocsp.pem"),
        ]);
        // The published chain file works as a trust bundle too.
        verify(&[
            "-CAfile",
            &format!("{id}-chain.pem"),
            &format!("{id}-ocsp.pem"),
        ]);
        // An OCSP signer does not verify against the other CA.
        let other = if id == "personnes" {
            "organisations"
        } else {
            "personnes"
        };
        let out = Command::new(peer("openssl"))
            .args([
                "verify",
                "-CAfile",
                "root.pem",
                "-untrusted",
                &format!("{other}.pem"),
                &format!("{id}-ocsp.pem"),
            ])
            .current_dir(&ca)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{id}-ocsp must not chain to {other}");
    }
    // The OCSP signers carry what RFC 6960 delegation needs.
    for id in ["personnes", "organisations"] {
        let out = Command::new(peer("openssl"))
            .args([
                "x509",
                "-noout",
                "-ext",
                "extendedKeyUsage,keyUsage,basicConstraints",
                "-in",
                &format!("{id}-ocsp.pem"),
            ])
            .current_dir(&ca)
            .output()
            .unwrap();
        let t = text(&out.stdout);
        assert!(
            t.contains("OCSP Signing") && t.contains("Digital Signature"),
            "{t}"
        );
        let out = Command::new(peer("openssl"))
            .args(["x509", "-noout", "-text", "-in", &format!("{id}-ocsp.pem")])
            .current_dir(&ca)
            .output()
            .unwrap();
        assert!(
            text(&out.stdout).contains("OCSP No Check"),
            "{}",
            text(&out.stdout)
        );
    }
}

/// pkilint reports nothing at WARNING or above for any certificate init produced: the
/// hierarchy, the appliance's TLS server certificate and the first operator's certificate.
#[test]
fn pkilint_reports_nothing_for_the_hierarchy() {
    let home = Home::initialised();
    let dir = tempfile::tempdir().unwrap();
    let mut pems: Vec<std::path::PathBuf> = HIERARCHY
        .iter()
        .map(|id| home.join(&format!("ca/{id}.pem")))
        .collect();
    for (name, bundle) in [
        ("tls-server", "tls/server.pem"),
        ("operator", "operator/admin-cert.pem"),
    ] {
        // The first certificate of the bundle (the leaf).
        let leaf = dir.path().join(format!("{name}.pem"));
        let out = Command::new(peer("openssl"))
            .args(["x509", "-in"])
            .arg(home.join(bundle))
            .arg("-out")
            .arg(&leaf)
            .output()
            .unwrap();
        assert_success(&out, "extract leaf");
        pems.push(leaf);
    }
    for pem in pems {
        pkilint::assert_clean(Linter::Certificate, &pem);
    }
}

fn snapshot(home: &Home) -> (Vec<Vec<u8>>, String) {
    let certs = HIERARCHY
        .iter()
        .map(|id| std::fs::read(home.join(&format!("ca/{id}.der"))).unwrap())
        .collect();
    let pin = home.user_pin();
    let pubkeys = home.pkcs11_tool(&[
        "--login",
        "--pin",
        &pin,
        "--list-objects",
        "--type",
        "pubkey",
    ]);
    assert_success(&pubkeys, "list public keys");
    (certs, text(&pubkeys.stdout))
}

/// A second init refuses, says why, and changes nothing: same certificates, same keys.
#[test]
fn second_init_changes_nothing_and_fails() {
    let home = Home::initialised();
    let before = snapshot(&home);
    let config_before = home.config_text();
    let out = home.cps(&["init"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_one_line_error(
        &out,
        &[
            "refusing to initialise",
            "already initialised",
            "nothing was changed",
        ],
    );
    assert_eq!(snapshot(&home), before);
    assert_eq!(home.config_text(), config_before);
    // A non-empty directory that is not an appliance is refused too.
    let other = Home::new();
    std::fs::create_dir_all(&other.path).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let out = other.cps(&["init"]);
    assert_one_line_error(&out, &["refusing to initialise", "not empty"]);
    assert_eq!(
        std::fs::read_to_string(other.join("notes.txt")).unwrap(),
        "mine"
    );
}

/// `ca show` lists the hierarchy, the key labels and a passing self-check.
#[test]
fn ca_show_reports_hierarchy_and_self_check() {
    let home = Home::initialised();
    let out = home.cps(&["ca", "show"]);
    assert_success(&out, "ca show");
    let t = text(&out.stdout);
    assert!(t.contains("HSM self-check: OK — 6 keys"), "{t}");
    for id in HIERARCHY {
        assert!(t.contains(&format!("{id} (")), "{id} missing:\n{t}");
    }
    for label in ["ca-root", "ca-personnes", "ocsp-organisations"] {
        assert!(t.contains(&format!("'{label}'")), "{t}");
    }
    assert_eq!(
        t.matches("chain       signature verified").count(),
        5,
        "{t}"
    );
    let out = home.cps(&["config", "validate"]);
    assert_success(&out, "config validate");
}

fn edit(home: &Home, from: &str, to: &str) {
    let t = home.config_text();
    assert!(t.contains(from), "config has no '{from}':\n{t}");
    home.set_config_text(&t.replacen(from, to, 1));
}

/// Hostile configuration: each gives one actionable line and no panic, for every command that
/// reads it.
#[test]
fn hostile_configuration_gets_one_actionable_line() {
    let home = Home::initialised();
    let pristine = home.config_text();
    let pin_file = home.join("secrets/hsm-user.pin");
    let pin = std::fs::read_to_string(&pin_file).unwrap();

    // Unknown key.
    edit(&home, "[hsm]\n", "[hsm]\nmodul = \"/usr/lib/x.so\"\n");
    for cmd in [&["config", "validate"][..], &["ca", "show"], &["serve"]] {
        assert_one_line_error(&home.cps(cmd), &["unknown field `modul`", "line "]);
    }
    home.set_config_text(&pristine);

    // Missing token.
    edit(
        &home,
        "token_label = \"cps-trust\"",
        "token_label = \"no-such-token\"",
    );
    for cmd in [&["ca", "show"][..], &["serve"]] {
        assert_one_line_error(
            &home.cps(cmd),
            &[
                "token 'no-such-token' not found",
                "tokens present: 'cps-trust'",
            ],
        );
    }
    home.set_config_text(&pristine);

    // Wrong PIN.
    std::fs::write(&pin_file, "0000000000\n").unwrap();
    for cmd in [&["ca", "show"][..], &["serve"]] {
        assert_one_line_error(
            &home.cps(cmd),
            &[
                "login to token 'cps-trust' failed",
                "CKR_PIN_INCORRECT",
                "wrong PIN",
            ],
        );
    }
    std::fs::write(&pin_file, &pin).unwrap();

    // A module path that is not a PKCS#11 library.
    let not_lib = home.join("not-a-module.so");
    std::fs::write(&not_lib, "plain text").unwrap();
    edit(
        &home,
        "module = \"/usr/lib/softhsm/libsofthsm2.so\"",
        &format!("module = \"{}\"", not_lib.display()),
    );
    for cmd in [&["ca", "show"][..], &["serve"]] {
        assert_one_line_error(
            &home.cps(cmd),
            &["cannot load PKCS#11 module", "not-a-module.so"],
        );
    }
    home.set_config_text(&pristine);
    // A real shared library that is not PKCS#11.
    let libz = [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap();
    edit(
        &home,
        "module = \"/usr/lib/softhsm/libsofthsm2.so\"",
        &format!("module = \"{libz}\""),
    );
    assert_one_line_error(&home.cps(&["serve"]), &["PKCS#11 module", "libz"]);
    home.set_config_text(&pristine);
    // A module path that does not exist.
    edit(
        &home,
        "module = \"/usr/lib/softhsm/libsofthsm2.so\"",
        "module = \"/nonexistent/libpkcs11.so\"",
    );
    assert_one_line_error(
        &home.cps(&["config", "validate"]),
        &["hsm.module /nonexistent/libpkcs11.so does not exist"],
    );
    home.set_config_text(&pristine);

    // World-readable PIN file.
    std::fs::set_permissions(
        &pin_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    for cmd in [&["config", "validate"][..], &["ca", "show"], &["serve"]] {
        assert_one_line_error(&home.cps(cmd), &["readable by others", "chmod 600"]);
    }
    std::fs::set_permissions(
        &pin_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();

    // Not TOML at all, and an absent configuration.
    home.set_config_text("this is [not toml");
    assert_one_line_error(&home.cps(&["config", "validate"]), &["cps-trust.toml"]);
    std::fs::remove_file(home.join("cps-trust.toml")).unwrap();
    assert_one_line_error(&home.cps(&["ca", "show"]), &["not found", "init"]);
    home.set_config_text(&pristine);

    // Back to a working appliance: nothing was damaged by the failed attempts.
    assert_success(&home.cps(&["ca", "show"]), "ca show after hostile configs");
}

/// A hostile configuration handed to `init --config` is refused before anything is created.
#[test]
fn init_with_a_bad_configuration_creates_nothing() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let out = home.cps(&["config", "default"]);
    assert_success(&out, "config default");
    let good = text(&out.stdout);
    std::fs::write(
        &cfg,
        good.replace("algorithm = \"p384\"", "algorithm = \"dsa1024\""),
    )
    .unwrap();
    let out = home
        .command(&["init", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_one_line_error(&out, &["unknown algorithm 'dsa1024'"]);
    assert!(
        !home.path.exists(),
        "a failed init must leave no home behind"
    );
    // A vendor HSM token that does not exist: refused, nothing left behind.
    let out = home
        .command(&[
            "init",
            "--time-source",
            "declared",
            "--hsm-module",
            SOFTHSM_MODULE,
            "--token-label",
            "vendor-token",
            "--pin",
            "env:CPS_TEST_PIN",
        ])
        .env("CPS_TEST_PIN", "123456")
        .env("SOFTHSM2_CONF", dir.path().join("missing.conf"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !home.path.exists(),
        "a failed init must leave no home behind"
    );
}

/// `serve` refuses to start on a failing self-check, starts otherwise, serves the public CA
/// material, and stops on SIGTERM.
#[test]
fn serve_starts_serves_ca_certificates_and_stops_by_pid() {
    let home = Home::initialised();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    edit(
        &home,
        "http = \"127.0.0.1:8080\"",
        &format!("http = \"{addr}\""),
    );
    let mut d = Daemon::spawn(
        "cps-trust serve",
        home.command(&["serve"]),
        &home.join("serve.log"),
    );
    let (status, body) = wait_for("/health", Duration::from_secs(20), || {
        http_get(&addr, "/health").ok()
    });
    assert_eq!(status, 200, "{}", text(&body));
    let health = text(&body);
    assert!(
        health.contains("\"status\":\"ok\"") && health.contains("\"hsm\":\"ok\""),
        "{health}"
    );
    for id in HIERARCHY {
        let (status, der) = http_get(&addr, &format!("/ca/{id}.der")).unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            der,
            std::fs::read(home.join(&format!("ca/{id}.der"))).unwrap(),
            "{id}"
        );
    }
    let (status, _) = http_get(&addr, "/ca/nope.der").unwrap();
    assert_eq!(status, 404);
    let (status, _) = http_get(&addr, "/ca/..%2Fsecrets%2Fhsm-user.pin").unwrap();
    assert_eq!(status, 404);
    let st = d.stop(Duration::from_secs(10)).expect("serve exits");
    assert!(st.success(), "serve exit status {st:?}");
}
