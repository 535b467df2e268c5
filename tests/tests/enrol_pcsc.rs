//! Enrolment through the real PC/SC stack (pcscd + vpcd + firmware-sim): the example CSV is
//! imported, a blank simulated card is enrolled with `cps-enrol` in a child process (libpcsclite
//! reads the socket path from the environment once per process), then OpenSC's `pkcs11-tool`
//! signs with the card's authentication key and the signature verifies with openssl against
//! the issued certificate, which chains to the test CA and carries the professional's
//! IdNat_PS, names and profession label.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cps_card::{Pcsc, Piv, Slot};
use cps_enrol::{
    CardSecrets, CardService, CardServiceConfig, EnrolRequest, ImportOptions, Registry,
};
use cps_trust_tests::pcsc::{PcscStack, blank_card, child_env};
use cps_trust_tests::{assert_success, peer, repo_root, text};

const NAME: &str = "enrolment_through_pcscd_then_opensc_signs_with_the_card";
const IDNAT: &str = "810002813839";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn pem(label: &str, der: &[u8]) -> String {
    cps_pki::pem_encode(label, der)
}

fn enrol_child() {
    let out = PathBuf::from(std::env::var("ENROL_OUT").expect("ENROL_OUT"));
    let reader = std::env::var("ENROL_READER").expect("ENROL_READER");
    let store: Arc<dyn cps_store::Store> =
        Arc::new(cps_store::SledStore::open(out.join("store")).expect("store"));
    let now = now();
    let reg = Registry::new(store.clone());
    let csv = std::fs::read(repo_root().join("crates/enrol/examples/professionals.csv"))
        .expect("example CSV");
    let report = reg
        .import_csv(
            &csv,
            ImportOptions::default(),
            "officer:test",
            now,
            &mut |_| {},
        )
        .expect("import");
    assert_eq!(report.created, 4, "{:?}", report.errors);
    let ca = Arc::new(cps_ca::hierarchy::software_ca(store.clone(), now - 600).expect("CA"));
    std::fs::write(
        out.join("root.pem"),
        pem("CERTIFICATE", &ca.authority("root").expect("root").cert_der),
    )
    .unwrap();
    std::fs::write(
        out.join("ca.pem"),
        pem(
            "CERTIFICATE",
            &ca.authority("personnes").expect("CA").cert_der,
        ),
    )
    .unwrap();
    let cards = CardService::new(
        store,
        ca,
        CardSecrets::new(Arc::new(cps_hsm::SoftwareMacKey::new(
            "card-master",
            b"pcsc test master",
        ))),
        CardServiceConfig::default(),
    );
    let pcsc = Pcsc::establish().expect("pcscd");
    pcsc.wait_for_card(&reader, Duration::from_secs(10))
        .expect("card");
    let mut piv = Piv::select(pcsc.connect(&reader).expect("connect")).expect("select PIV");
    let mut steps = Vec::new();
    let t = Instant::now();
    let outcome = cards
        .enrol(
            &mut piv,
            &EnrolRequest {
                idnat_ps: IDNAT.into(),
                structure_id: "1340785161".into(),
                replaces: None,
            },
            "officer:test",
            now,
            &mut |p| steps.push(format!("{} {:?}", p.step, p.state)),
        )
        .unwrap_or_else(|e| panic!("enrolment: {e}"));
    let elapsed = t.elapsed();
    eprintln!(
        "enrolment through pcscd: {:.0} ms; steps: {steps:?}",
        elapsed.as_secs_f64() * 1000.0
    );
    let secrets = outcome.initial_secrets.expect("PIN and PUK");
    std::fs::write(out.join("pin"), secrets.pin.as_bytes()).unwrap();
    std::fs::write(out.join("elapsed_ms"), format!("{}", elapsed.as_millis())).unwrap();
    assert!(matches!(
        outcome.card.management_key,
        cps_enrol::ManagementKeyState::PerCard { .. }
    ));
    assert!(
        piv.authenticate(&cps_card::ManagementKey::default_aes192())
            .is_err(),
        "default management key replaced"
    );
    let auth = piv
        .read_certificate(Slot::Authentication)
        .unwrap()
        .expect("auth certificate");
    std::fs::write(out.join("auth.der"), &auth).unwrap();
    std::fs::write(out.join("auth.pem"), pem("CERTIFICATE", &auth)).unwrap();
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(peer("openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert_success(&out, &format!("openssl {}", args.join(" ")));
    text(&out.stdout)
}

#[test]
fn enrolment_through_pcscd_then_opensc_signs_with_the_card() {
    if child_env(NAME).is_some() {
        return enrol_child();
    }
    let stack = PcscStack::start("enrol");
    let dir = stack.dir.path().to_path_buf();
    let card = dir.join("card.json");
    blank_card(&card);
    let _sim = stack.simulator(&[(0, &card)], &[]);
    let reader = stack.reader(0);
    let out = dir.join("enrol");
    std::fs::create_dir_all(&out).unwrap();
    stack.run_child(
        NAME,
        &[
            ("ENROL_OUT", out.display().to_string()),
            ("ENROL_READER", reader.clone()),
        ],
    );
    let pin = std::fs::read_to_string(out.join("pin")).unwrap();
    assert_eq!(pin.len(), 6);
    let ms: u64 = std::fs::read_to_string(out.join("elapsed_ms"))
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("enrolment through pcscd took {ms} ms");

    // The certificate: issued by the test CA, for the professional of the CSV.
    let v = openssl(
        &out,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "ca.pem",
            "auth.pem",
        ],
    );
    assert!(v.contains("auth.pem: OK"), "{v}");
    let subject = openssl(
        &out,
        &[
            "x509",
            "-in",
            "auth.pem",
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253,-esc_msb",
        ],
    );
    for want in [
        &format!("CN={IDNAT}"),
        "SN=DONNAT-GADY",
        "GN=ISABELLE",
        "title=Médecin",
        "C=FR",
    ] {
        assert!(subject.contains(want), "{want} not in {subject}");
    }

    // OpenSC sees both certificates.
    let listing = stack.pkcs15_tool(&["--reader", &reader, "--list-certificates"]);
    assert_success(&listing, "pkcs15-tool --list-certificates");
    assert_eq!(
        text(&listing.stdout).matches("X.509 Certificate [").count(),
        2
    );

    // pkcs11-tool signs with the authentication key (id 01) and the initial PIN; openssl
    // verifies with the certificate's key.
    let data = out.join("data.txt");
    std::fs::write(&data, b"signed by the enrolled card through OpenSC\n").unwrap();
    let sig = out.join("sig.bin");
    stack.sign_with_card(&pin, "01", &data, &sig);
    openssl(
        &out,
        &[
            "x509", "-in", "auth.pem", "-pubkey", "-noout", "-out", "auth.pub",
        ],
    );
    let v = openssl(
        &out,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "auth.pub",
            "-signature",
            "sig.bin",
            "data.txt",
        ],
    );
    assert!(v.contains("Verified OK"), "{v}");
    // The default PIN no longer opens the card.
    let r = stack.pkcs11_tool(&["--login", "--pin", "123456", "--list-objects"]);
    assert!(!r.status.success());
    assert!(
        text(&r.stderr).contains("CKR_PIN_INCORRECT"),
        "{}",
        text(&r.stderr)
    );
}
