//! The same check as pkcs11-tool's listing, through cryptoki: every key `init` made has the
//! mandated attributes, and the appliance's start-up self-check passes, then catches a key that
//! goes missing. (Its own test process: SoftHSM2 reads SOFTHSM2_CONF once per process.)

use cps_trust_tests::*;

#[test]
fn init_keys_have_the_mandated_attributes_through_cryptoki() {
    let home = Home::initialised();
    // SAFETY: the only test of this process, before any PKCS#11 call.
    unsafe { std::env::set_var("SOFTHSM2_CONF", home.softhsm_conf()) };
    let config = cps_appliance::config::Config::load(&home.join("cps-trust.toml")).unwrap();
    let hsm = cps_hsm::Hsm::open(&config.hsm_config(&home.path).unwrap()).unwrap();
    let labels = config.key_labels();
    assert_eq!(
        labels.len(),
        6,
        "root, two issuing CAs, two OCSP signers, TLS server"
    );
    for label in &labels {
        let a = hsm.key_attributes(label).unwrap();
        assert!(
            a.token
                && a.private
                && a.sensitive
                && a.always_sensitive
                && a.never_extractable
                && a.local,
            "{label}: {a:?}"
        );
        assert!(
            !a.extractable && !a.decrypt && !a.unwrap && !a.derive && a.sign,
            "{label}: {a:?}"
        );
        assert!(!hsm.secret_value_readable(label).unwrap(), "{label}");
    }
    assert!(hsm.self_check(&labels).is_ok());
    // A configured key that is not on the token fails the self-check by name.
    let mut with_missing = labels.clone();
    with_missing.push("ca-absent".into());
    let err = hsm
        .self_check(&with_missing)
        .into_result()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("key 'ca-absent' not found on token 'cps-trust'"),
        "{err}"
    );
}
