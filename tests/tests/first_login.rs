//! README "First login": the walk-through's commands, read from README.md between its
//! `first-login:begin` / `first-login:end` markers and run as they are by bash, in a directory
//! laid out like the repository after `./scripts/run.sh`:
//!
//! * `.home`: a home initialised as run.sh does (`init --time-source declared`) and served
//!   (`serve`) on free ports;
//! * a blank simulated card (`firmware-sim init`) in slot 0 of the virtual reader, on a private
//!   pcscd + vpcd (`PCSCLITE_CSOCK_NAME`) rather than the system one run.sh uses;
//! * `target/release/cps-trust`: the `cps-trust` binary of this build;
//! * `crates/enrol/examples/professionals.csv`: the repository's example file.
//!
//! Then the results the README describes are checked: every activity imported without a
//! warning, the card enrolled with its PIN printed once, an assertion naming the professional
//! and the structure, validated by the `service` operator, and the audit events.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use cps_trust_tests::pcsc::{PcscStack, appliance_with_blank_card};
use cps_trust_tests::*;

const IDNAT: &str = "810002813839";
const STRUCTURE: &str = "1340785161";

/// The lines of the README's first-login block (inside its ```sh fence).
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let start = readme
        .find("<!-- first-login:begin")
        .expect("README.md has no first-login:begin marker");
    let end = readme[start..]
        .find("<!-- first-login:end -->")
        .map(|e| start + e)
        .expect("README.md has no first-login:end marker");
    let section = &readme[start..end];
    let fence = section.find("```sh\n").expect("no ```sh block") + "```sh\n".len();
    let close = section[fence..].find("```").expect("unclosed block") + fence;
    section[fence..close]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn link(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(from, to).unwrap();
}

/// bash running `script` in `cwd`, with the private pcscd's socket and nothing of the test's
/// own appliance environment.
fn bash(cwd: &Path, stack: &PcscStack, script: &str) -> Output {
    Command::new(peer("bash"))
        .args(["-euo", "pipefail", "-x", "-c", script])
        .current_dir(cwd)
        .env_remove("CPS_TRUST_HOME")
        .env_remove("SOFTHSM2_CONF")
        .env("CPS_TRUST_LOG", "warn")
        .env("PCSCLITE_CSOCK_NAME", &stack.socket)
        .output()
        .expect("bash")
}

#[test]
fn the_readme_first_login_walk_through_works() {
    let commands = readme_commands();
    // The walk-through keeps every step the README promises.
    for step in [
        "professional import crates/enrol/examples/professionals.csv",
        "card enroll",
        "cps-trust login",
        "--role service",
        "xua --as",
        "audit events",
    ] {
        assert!(
            commands.iter().any(|c| c.contains(step)),
            "the README walk-through lost '{step}': {commands:#?}"
        );
    }

    // What ./scripts/run.sh leaves running: the appliance and a blank card in slot 0.
    let (stack, _sim, home, _app) = appliance_with_blank_card("first-login");
    let work = tempfile::tempdir().unwrap();
    let repo = work.path();
    link(&home.path, &repo.join(".home"));
    link(&cps_trust_bin(), &repo.join("target/release/cps-trust"));
    link(
        &repo_root().join("crates/enrol/examples/professionals.csv"),
        &repo.join("crates/enrol/examples/professionals.csv"),
    );

    let out = bash(repo, &stack, &commands.join("\n"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    eprintln!("--- walk-through stdout ---\n{stdout}--- stderr ---\n{stderr}");
    assert!(out.status.success(), "the README's commands failed");

    // Import: the whole example, no line flagged (each activity can be used for login).
    assert!(
        stdout.contains("5 lines, 4 professionals, 5 activities; outcome imported"),
        "{stdout}"
    );
    assert!(
        !stderr.lines().any(|l| l.starts_with("warning:")),
        "{stderr}"
    );
    // Enrolment: the card, its two certificates, the PIN and PUK printed once.
    let enrolment = &stdout;
    let pin = field(enrolment, "initial PIN ");
    assert!(
        pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit()),
        "{enrolment}"
    );
    assert!(
        enrolment.contains("cps-auth") && enrolment.contains("cps-sign"),
        "{enrolment}"
    );
    // Login: a VIHF assertion for the professional, at the structure of the enrolled activity.
    let xml = std::fs::read_to_string(repo.join("assertion.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let name_id = doc
        .descendants()
        .find(|n| n.has_tag_name("NameID"))
        .and_then(|n| n.text());
    assert_eq!(name_id, Some(IDNAT), "{xml}");
    let attribute = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name("Attribute") && n.attribute("Name") == Some(name))
            .and_then(|a| a.descendants().find(|n| n.has_tag_name("AttributeValue")))
            .and_then(|v| v.text())
            .map(str::to_owned)
    };
    assert_eq!(
        attribute("Identifiant_Structure").as_deref(),
        Some(STRUCTURE),
        "{xml}"
    );
    assert_eq!(
        attribute("Authentification_Mode").as_deref(),
        Some("DIRECTE")
    );
    // Validation by the service operator.
    assert!(
        home.join("operator/dmp-service-cert.pem").exists(),
        "operator add wrote the credential into .home"
    );
    assert!(
        stdout.contains(IDNAT) && stdout.contains(STRUCTURE),
        "{stdout}"
    );
    // The audit events of the professional: the login (DICOM 110114 User Authentication,
    // 110122 Login) and the validation of the assertion. The login's record reaches the log
    // through the forwarder: if the first search ran before it did, the README's own command
    // is run again.
    let audit_line = commands.last().unwrap();
    assert!(audit_line.contains("audit events"), "{audit_line}");
    let search = format!("{}\n{audit_line}", commands[0]);
    let events = wait_for(
        "the login in the audit events",
        Duration::from_secs(20),
        || {
            let o = bash(repo, &stack, &search);
            assert!(o.status.success(), "{}", text(&o.stderr));
            let t = text(&o.stdout);
            ["110122", "assertion-issued", "assertion-validated"]
                .iter()
                .all(|e| t.contains(e))
                .then_some(t)
        },
    );
    eprintln!("--- audit events ---\n{events}");
    for event in ["110122", "assertion-issued", "assertion-validated"] {
        assert!(
            events
                .lines()
                .any(|l| l.contains("110114") && l.contains(event) && l.contains(IDNAT)),
            "{event}: {events}"
        );
    }

    // The activity the example used to carry, the Annuaire Santé's technical identifier of the
    // CHU (`F340785161`): flagged at import, refused at enrolment and at login, each saying why.
    let technical = repo.join("technical.csv");
    std::fs::write(
        &technical,
        "Identification nationale PP|Nom d'exercice|Prénom d'exercice|Code profession|Code savoir-faire|Identifiant technique de la structure|Raison sociale site|Code secteur d'activité\n\
         810002813839|DONNAT-GADY|ISABELLE|10|SM26|1340785161|CHU DE MONTPELLIER|SA01\n\
         810002813839|DONNAT-GADY|ISABELLE|10|SM26|410002813839001|CABINET DU DR DONNAT-GADY|SA07\n\
         810002813839|DONNAT-GADY|ISABELLE|10|SM26|F340785161|CHU DE MONTPELLIER|SA01\n",
    )
    .unwrap();
    let env = &commands[0];
    let o = bash(
        repo,
        &stack,
        &format!("{env}\ncps-trust professional import technical.csv"),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("warning: line 4, column 'Identifiant technique de la structure': 'F340785161' cannot be used for login"),
        "{err}"
    );
    assert!(text(&o.stdout).contains("outcome imported"));
    let o = bash(
        repo,
        &stack,
        &format!("{env}\ncps-trust card enroll --professional {IDNAT} --activity F340785161"),
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    for want in [
        "structure 'F340785161' cannot be used for card login",
        "not a struct_IdNat (unknown type prefix 'F'",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    let o = bash(
        repo,
        &stack,
        &format!(
            "{env}\nexport PIN={pin}\ncps-trust login --pin-env PIN --structure-id F340785161 -o other.xml"
        ),
    );
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("activity_not_for_login") && err.contains("not a struct_IdNat"),
        "{err}"
    );
    assert!(!repo.join("other.xml").exists());
    // The card still logs in for its own activity.
    let o = bash(
        repo,
        &stack,
        &format!("{env}\nexport PIN={pin}\ncps-trust login --pin-env PIN -o again.xml"),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
}

/// The block is read from the README as written: its first line sets the environment the
/// others use, and its last one is the audit search the walk-through re-runs.
#[test]
fn the_readme_block_is_found_and_only_it() {
    let c = readme_commands();
    assert!(c[0].starts_with("export CPS_TRUST_HOME="), "{c:#?}");
    assert!(c.iter().all(|l| !l.contains("```")), "{c:#?}");
    assert!(c.last().unwrap().contains("audit events"), "{c:#?}");
}
