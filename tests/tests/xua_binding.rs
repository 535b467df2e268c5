//! The trust policy for assertion signers, end to end (README, "Trust policy for assertion
//! signers"): a real card login's assertion, changed and re-signed with signxml by an
//! organisation seal that the appliance's own CA issued through the API to another structure,
//! presented to `POST /api/v1/xua/validate` by a `service` operator. The observed attack (NameID
//! changed to an IdNat_PS outside the registry, the login's structure and `DIRECTE` kept) and
//! each other claim the seal may not make are refused with their own code; what it may assert
//! is accepted; the appliance's own assertion still validates. With `xua.org_seal_registry =
//! "not_held"` only the structure binding and the mode apply.

use std::path::{Path, PathBuf};
use std::process::Command;

use cps_trust_tests::pcsc::{PcscStack, blank_card, registry_csv_with};
use cps_trust_tests::*;

const IDNAT: &str = "810002813839";
/// Where DONNAT-GADY's card is enrolled: the login assertion's `Identifiant_Structure`.
const LOGIN_STRUCTURE: &str = "1340785161";
/// The structure the attacker's organisation seal is legitimately issued for.
const ATTACKER: &str = "1ATTACKER1";
/// An active infirmier of the attacker's structure.
const NURSE: &str = "810110323986";
/// A pharmacien of the attacker's structure, suspended.
const SUSPENDED: &str = "810003456786";
/// A well-formed IdNat_PS that is not in the registry (the one of the observed attack).
const UNREGISTERED: &str = "810000000009";

fn registry_csv(dir: &Path) -> PathBuf {
    registry_csv_with(
        dir,
        "8|10110323986|810110323986|BRUN|Solenne|60|Infirmier||1ATTACKER1|CENTRE DE SANTE A|SA05|Centre de santé|\n8|10003456786|810003456786|LE GALL|Jean-Noël|21|Pharmacien||1ATTACKER1|CENTRE DE SANTE A|SA05|Centre de santé|\n",
    )
}

/// An `org-cachet` seal issued through the API by the admin (`ca-operator`): its key (PEM), its
/// certificate (PEM) and its subject as an assertion's `Issuer` names it.
struct Seal {
    key: PathBuf,
    cert: PathBuf,
    subject: String,
}

fn issue_seal(
    home: &Home,
    dir: &Path,
    name: &str,
    holder: &str,
    org: &str,
    structure: &str,
    cn: &str,
) -> Result<Seal, String> {
    let csr = openssl_csr(dir, name, "rsa2048");
    let cert = dir.join(format!("{name}.pem"));
    let out = home.cps(&[
        "cert",
        "issue",
        "--profile",
        "org-cachet",
        "--csr",
        csr.to_str().unwrap(),
        "--holder",
        holder,
        "--org-name",
        org,
        "--structure-id",
        structure,
        "--cn",
        cn,
        "--state",
        "Paris (75)",
        "-o",
        cert.to_str().unwrap(),
    ]);
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    let subject = Command::new(peer("openssl"))
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let subject = text(&subject.stdout)
        .trim()
        .trim_start_matches("subject=")
        .to_owned();
    Ok(Seal {
        key: dir.join(format!("{name}.key")),
        cert,
        subject,
    })
}

/// The text between `open` and the next `close` replaced by `value` (first occurrence).
fn replace_between(xml: &str, open: &str, close: &str, value: &str) -> String {
    let start = xml
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in {xml}"))
        + open.len();
    let end = start + xml[start..].find(close).unwrap();
    format!("{}{value}{}", &xml[..start], &xml[end..])
}

fn with_attribute(xml: &str, name: &str, value: &str) -> String {
    replace_between(
        xml,
        &format!("<saml:Attribute Name=\"{name}\"><saml:AttributeValue>"),
        "</saml:AttributeValue>",
        value,
    )
}

/// Changes to a login assertion, as an attacker holding another seal would make them.
#[derive(Default, Clone)]
struct Changes<'a> {
    id_suffix: Option<&'a str>,
    name_id: Option<&'a str>,
    structure: Option<&'a str>,
    mode: Option<&'a str>,
    /// TRE_G15 profession code and label of the role.
    profession: Option<(&'a str, &'a str)>,
    secteur: Option<&'a str>,
}

/// `login` changed as said, its `Issuer` set to `seal`'s subject, and re-signed by `seal` with
/// signxml (the independent implementation).
fn forge(dir: &Path, login: &str, seal: &Seal, c: &Changes<'_>, name: &str) -> PathBuf {
    let start = login.find("<ds:Signature").unwrap();
    let end = login.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let mut xml = format!("{}{}", &login[..start], &login[end..]);
    if let Some(s) = c.id_suffix {
        let id_start = xml.find(" ID=\"").unwrap() + 5;
        let id_end = id_start + xml[id_start..].find('"').unwrap();
        xml.insert_str(id_end, s);
    }
    xml = replace_between(&xml, "X509SubjectName\">", "</saml:Issuer>", &seal.subject);
    if let Some(v) = c.name_id {
        xml = replace_between(&xml, "<saml:NameID>", "</saml:NameID>", v);
    }
    if let Some(v) = c.structure {
        xml = with_attribute(&xml, "Identifiant_Structure", v);
    }
    if let Some(v) = c.mode {
        xml = with_attribute(&xml, "Authentification_Mode", v);
    }
    if let Some(v) = c.secteur {
        xml = with_attribute(&xml, "Secteur_Activite", &format!("{v}^1.2.250.1.71.4.2.4"));
    }
    if let Some((code, label)) = c.profession {
        let role = xml.find("<Role ").unwrap();
        let role_end = role + xml[role..].find('>').unwrap();
        let old = &xml[role..role_end];
        let new = replace_between(
            &replace_between(old, " code=\"", "\"", code),
            " displayName=\"",
            "\"",
            label,
        );
        xml = format!("{}{new}{}", &xml[..role], &xml[role_end..]);
    }
    let at = xml.find("</saml:Issuer>").unwrap() + "</saml:Issuer>".len();
    xml.insert_str(
        at,
        "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" Id=\"placeholder\"></ds:Signature>",
    );
    let unsigned = dir.join(format!("{name}.unsigned.xml"));
    std::fs::write(&unsigned, &xml).unwrap();
    let out = Command::new(peer("python"))
        .arg(repo_root().join("crates/xua/tests/peers/signxml_sign.py"))
        .arg(&unsigned)
        .arg(&seal.key)
        .arg(&seal.cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "signxml: {}", text(&out.stderr));
    let signed = dir.join(format!("{name}.xml"));
    std::fs::write(&signed, &out.stdout).unwrap();
    signed
}

/// `POST /api/v1/xua/validate` as the `service` operator `svc`: (status, JSON answer).
fn validate(home: &Home, app: &Appliance, file: &Path) -> (u16, serde_json::Value) {
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
    let v = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{code}: {}", text(&body)));
    (code, v)
}

fn refused_with(home: &Home, app: &Appliance, file: &Path, code: &str) {
    let (status, v) = validate(home, app, file);
    assert_eq!(
        (status, v["valid"].as_bool(), v["code"].as_str()),
        (422, Some(false), Some(code)),
        "{}: {v}",
        file.display()
    );
}

#[test]
fn organisation_seals_vouch_only_for_their_structure_and_the_registry() {
    let stack = PcscStack::start("xua-binding");
    let dir = stack.dir.path().to_path_buf();
    let card_file = dir.join("card.json");
    blank_card(&card_file);
    let _sim = stack.simulator(&[(0, &card_file)], &[]);
    let reader = stack.reader(0);
    let (home, mut app) =
        Appliance::fresh_in(Home::new().with_env("PCSCLITE_CSOCK_NAME", &stack.socket));

    let csv = registry_csv(&dir);
    assert_success(
        &home.cps(&["professional", "import", csv.to_str().unwrap()]),
        "professional import",
    );
    assert_success(
        &home.cps(&["professional", "status", SUSPENDED, "suspended"]),
        "professional status suspended",
    );
    let out = home.cps(&[
        "card",
        "enroll",
        "--reader",
        &reader,
        "--professional",
        IDNAT,
        "--activity",
        LOGIN_STRUCTURE,
    ]);
    assert_success(&out, "card enroll");
    let pin = field(&text(&out.stdout), "initial PIN ").to_owned();
    assert_success(
        &home.cps(&["operator", "add", "--name", "svc", "--role", "service"]),
        "operator add svc",
    );

    // A seal legitimately issued (raw issuance, ca-operator) to another organisation.
    let attacker = issue_seal(
        &home,
        &dir,
        "attacker",
        ATTACKER,
        "ATTACKER",
        ATTACKER,
        "ATTACKER cachet",
    )
    .expect("org-cachet seal for 1ATTACKER1");
    // Raw issuance cannot take a holder of the appliance's own namespaces.
    for holder in [
        "appliance:xua-cachet",
        "node:cps-trust.localhost",
        "operator:svc",
    ] {
        let e = issue_seal(
            &home,
            &dir,
            "reserved",
            holder,
            "ATTACKER",
            ATTACKER,
            "ATTACKER cachet",
        )
        .err()
        .unwrap_or_else(|| panic!("holder {holder} was accepted"));
        assert!(
            e.contains("400") && e.contains("reserved namespace"),
            "{holder}: {e}"
        );
    }
    // A seal with the appliance's own seal subject (what `ensure_cachet` certifies with the
    // default [xua] organisation and structure), for another key.
    let lookalike = issue_seal(
        &home,
        &dir,
        "lookalike",
        "lookalike",
        "cps-trust",
        "10B0000001",
        "cps-trust XUA",
    )
    .expect("org-cachet seal named like the appliance's");
    let own_subject = text(
        &Command::new(peer("openssl"))
            .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
            .arg(home.join("xua/cachet.pem"))
            .output()
            .unwrap()
            .stdout,
    );
    assert!(
        own_subject.contains(&lookalike.subject),
        "{own_subject} vs {}",
        lookalike.subject
    );

    // A real card login: DIRECTE, the card's structure, signed by the appliance's seal.
    let login_file = dir.join("login.xml");
    let out = home.cps(&[
        "login",
        "--reader",
        &reader,
        "--pin",
        &pin,
        "--out",
        login_file.to_str().unwrap(),
    ]);
    assert_success(&out, "cps-trust login");
    let login = std::fs::read_to_string(&login_file).unwrap();
    for want in [
        format!("<saml:NameID>{IDNAT}</saml:NameID>"),
        format!("<saml:AttributeValue>{LOGIN_STRUCTURE}</saml:AttributeValue>"),
        "<saml:AttributeValue>DIRECTE</saml:AttributeValue>".to_owned(),
    ] {
        assert!(login.contains(&want), "{want} not in {login}");
    }

    // The observed attack: NameID changed to an IdNat_PS outside the registry, structure and
    // mode of the login kept, re-signed by the other organisation's seal.
    let observed = Changes {
        name_id: Some(UNREGISTERED),
        ..Default::default()
    };
    let f = forge(&dir, &login, &attacker, &observed, "observed");
    refused_with(&home, &app, &f, "structure_mismatch");
    let out = home.cps(&["xua", "--as", "svc", "validate", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("structure_mismatch"),
        "{}",
        text(&out.stderr)
    );

    // Each claim the organisation seal may not make, one at a time (same ID as the login's:
    // refusals do not consume it).
    let own = |c: Changes<'static>| Changes {
        structure: Some(ATTACKER),
        mode: Some("INDIRECTE"),
        secteur: Some("SA05"),
        ..c
    };
    for (name, changes, code) in [
        (
            "directe",
            Changes {
                mode: Some("DIRECTE"),
                ..own(Changes {
                    name_id: Some(NURSE),
                    profession: Some(("60", "Infirmier")),
                    ..Default::default()
                })
            },
            "authentication_mode_not_allowed",
        ),
        (
            "unknown",
            own(Changes {
                name_id: Some(UNREGISTERED),
                ..Default::default()
            }),
            "unknown_professional",
        ),
        (
            "suspended",
            own(Changes {
                name_id: Some(SUSPENDED),
                profession: Some(("21", "Pharmacien")),
                ..Default::default()
            }),
            "professional_not_active",
        ),
        (
            "elsewhere",
            own(Changes::default()),
            "activity_not_in_structure",
        ),
        (
            "profession",
            own(Changes {
                name_id: Some(NURSE),
                ..Default::default()
            }),
            "claim_contradicts_registry",
        ),
    ] {
        let f = forge(&dir, &login, &attacker, &changes, name);
        refused_with(&home, &app, &f, code);
    }
    // The seal named like the appliance's is an organisation seal: it may not assert DIRECTE,
    // even for the appliance's own structure.
    let f = forge(
        &dir,
        &login,
        &lookalike,
        &Changes {
            structure: Some("10B0000001"),
            ..Default::default()
        },
        "lookalike",
    );
    refused_with(&home, &app, &f, "authentication_mode_not_allowed");

    // What the organisation seal may assert: its structure, INDIRECTE, its active nurse with
    // the registry's profession and sector.
    let nurse = Changes {
        id_suffix: Some("n"),
        name_id: Some(NURSE),
        profession: Some(("60", "Infirmier")),
        ..own(Changes::default())
    };
    let f = forge(&dir, &login, &attacker, &nurse, "nurse");
    let (status, v) = validate(&home, &app, &f);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            v["valid"].as_bool(),
            v["idnat_ps"].as_str(),
            v["structure_id"].as_str()
        ),
        (Some(true), Some(NURSE), Some(ATTACKER)),
        "{v}"
    );
    assert!(v["signer"].as_str().unwrap().contains(ATTACKER), "{v}");

    // The appliance's own login assertion (DIRECTE, for a structure not its seal's) is trusted
    // as issued, and its ID was not consumed by the refusals above.
    let (status, v) = validate(&home, &app, &login_file);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["idnat_ps"].as_str(), Some(IDNAT), "{v}");

    // Where the network's registry is not held here: the unknown professional passes, the
    // structure binding and the mode still refuse.
    let _ = app.daemon.child.kill();
    let _ = app.daemon.child.wait();
    let cfg = home.config_text();
    let cfg = cfg.replace(
        "org_seal_registry = \"required\"",
        "org_seal_registry = \"not_held\"",
    );
    assert!(cfg.contains("org_seal_registry = \"not_held\""), "{cfg}");
    home.set_config_text(&cfg);
    app = Appliance::start(&home);
    let f = forge(
        &dir,
        &login,
        &attacker,
        &Changes {
            id_suffix: Some("u"),
            name_id: Some(UNREGISTERED),
            ..own(Changes::default())
        },
        "unknown-not-held",
    );
    let (status, v) = validate(&home, &app, &f);
    assert_eq!(
        (status, v["idnat_ps"].as_str()),
        (200, Some(UNREGISTERED)),
        "{v}"
    );
    let f = forge(
        &dir,
        &login,
        &attacker,
        &Changes {
            id_suffix: Some("o"),
            ..observed
        },
        "observed-not-held",
    );
    refused_with(&home, &app, &f, "structure_mismatch");
    let f = forge(
        &dir,
        &login,
        &attacker,
        &Changes {
            id_suffix: Some("d"),
            mode: Some("DIRECTE"),
            ..own(Changes::default())
        },
        "directe-not-held",
    );
    refused_with(&home, &app, &f, "authentication_mode_not_allowed");
}
