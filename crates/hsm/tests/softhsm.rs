//! The `hsm` crate against a real SoftHSM2 token (the embedded default), and the same signer
//! tests against the software signer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cps_hsm::{
    Hsm, HsmConfig, HsmError, KeyAlgorithm, MacKey, PinSource, SigFormat, SignatureAlgorithm,
    Signer, SoftwareMacKey, SoftwareSigner, init_token_on_free_slot, verify_signature,
};

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN_VAR: &str = "CPS_TRUST_TEST_HSM_PIN";
const PIN: &str = "246810";

/// One SoftHSM2 token directory per test process: SoftHSM reads SOFTHSM2_CONF once, at
/// C_Initialize. Each test makes its own token (unique label) inside it.
fn softhsm_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!("directories.tokendir = {}/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", dir.path().display()),
        )
        .unwrap();
        // SAFETY: set once, inside OnceLock initialisation, before any PKCS#11 call of this process.
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", &conf);
            std::env::set_var(PIN_VAR, PIN);
        }
        // SoftHSM2 2.6.1's C_InitToken is not safe while other threads use the module (slots
        // vanish or a free slot is initialised twice): every token is made here, up front.
        for label in TOKENS {
            init_token_on_free_slot(Path::new(SOFTHSM), label, "87654321", PIN).unwrap();
        }
        dir
    })
    .path()
}

const TOKENS: [&str; 9] = [
    "contract", "attrs", "weak", "dup", "errors", "wrongpin", "pool", "rng", "mac",
];

fn token(label: &str) -> Hsm {
    softhsm_dir();
    Hsm::open(&config(label)).unwrap()
}

fn config(label: &str) -> HsmConfig {
    HsmConfig {
        module: SOFTHSM.into(),
        token_label: label.into(),
        pin: PinSource::Env(PIN_VAR.into()),
        sessions: 4,
    }
}

fn algorithms_for(key: KeyAlgorithm) -> Vec<SignatureAlgorithm> {
    use SignatureAlgorithm::*;
    match key {
        KeyAlgorithm::EcP256 => vec![EcdsaSha256],
        KeyAlgorithm::EcP384 => vec![EcdsaSha384],
        _ => vec![RsaPkcs1Sha256, RsaPkcs1Sha384, RsaPssSha256, RsaPssSha384],
    }
}

/// The signer contract, for any implementation.
fn exercise_signer(signer: &dyn Signer) {
    let msg = b"cps-trust signer contract";
    for alg in algorithms_for(signer.key_algorithm()) {
        for format in [SigFormat::Der, SigFormat::Raw] {
            let sig = signer.sign(alg, msg, format).unwrap();
            verify_signature(signer.public_key_der(), alg, msg, &sig, format)
                .unwrap_or_else(|e| panic!("{alg} {format:?} from {}: {e}", signer.label()));
            // A changed message must not verify.
            assert!(
                verify_signature(signer.public_key_der(), alg, b"other", &sig, format).is_err()
            );
        }
    }
    // The wrong family of algorithm is refused, not attempted.
    let wrong = if signer.key_algorithm().is_rsa() {
        SignatureAlgorithm::EcdsaSha256
    } else {
        SignatureAlgorithm::RsaPkcs1Sha256
    };
    assert!(matches!(
        signer.sign(wrong, msg, SigFormat::Der),
        Err(HsmError::AlgorithmMismatch { .. })
    ));
    if !signer.key_algorithm().is_rsa() {
        let raw = signer
            .sign(
                signer.key_algorithm().default_signature(),
                msg,
                SigFormat::Raw,
            )
            .unwrap();
        let width = if signer.key_algorithm() == KeyAlgorithm::EcP384 {
            48
        } else {
            32
        };
        assert_eq!(raw.len(), 2 * width, "raw ECDSA is fixed-width r||s");
    }
}

#[test]
fn software_signer_contract() {
    for alg in [KeyAlgorithm::EcP256, KeyAlgorithm::EcP384] {
        exercise_signer(&SoftwareSigner::generate("soft", alg).unwrap());
    }
}

#[test]
fn hsm_signer_contract_every_algorithm() {
    let hsm = token("contract");
    for (label, alg) in [
        ("p256", KeyAlgorithm::EcP256),
        ("p384", KeyAlgorithm::EcP384),
        ("rsa2048", KeyAlgorithm::Rsa2048),
        ("rsa3072", KeyAlgorithm::Rsa3072),
    ] {
        let key = hsm.generate_key_pair(label, alg).unwrap();
        assert_eq!(key.key_algorithm(), alg);
        exercise_signer(&key);
        // Found again by label, same public key.
        let again = hsm.key(label).unwrap();
        assert_eq!(again.public_key_der(), key.public_key_der());
    }
    assert!(
        !hsm.has_combined_ecdsa(),
        "SoftHSM 2.6.1 has no CKM_ECDSA_SHA256: the pre-hash path is under test"
    );
}

#[test]
fn generated_keys_have_the_mandated_attributes_and_cannot_be_read() {
    let hsm = token("attrs");
    for (label, alg) in [
        ("k-ec", KeyAlgorithm::EcP256),
        ("k-rsa", KeyAlgorithm::Rsa2048),
    ] {
        hsm.generate_key_pair(label, alg).unwrap();
        let a = hsm.key_attributes(label).unwrap();
        assert!(
            a.token
                && a.private
                && a.sensitive
                && a.always_sensitive
                && a.never_extractable
                && a.sign
                && a.local,
            "{a:?}"
        );
        assert!(
            !a.extractable && !a.decrypt && !a.unwrap && !a.derive,
            "{a:?}"
        );
        assert!(a.problems().is_empty());
        assert!(!hsm.secret_value_readable(label).unwrap());
    }
    let report = hsm.self_check(&["k-ec", "k-rsa"]);
    assert!(report.is_ok(), "{report:?}");
    report.into_result().unwrap();
}

/// A key created behind the appliance's back with unsafe attributes is caught by the self-check.
#[test]
fn self_check_refuses_extractable_and_missing_keys() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::Attribute;
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;

    let hsm = token("weak");
    let ctx = Pkcs11::new(SOFTHSM).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)); // already initialised in-process
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == "weak")
        .unwrap();
    let s = ctx.open_rw_session(slot).unwrap();
    let _ = s.login(UserType::User, Some(&AuthPin::from(PIN.to_owned())));
    let label = b"exportable".to_vec();
    s.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::Token(true),
            Attribute::Label(label.clone()),
            Attribute::EcParams(vec![
                0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
            ]),
            Attribute::Verify(true),
        ],
        &[
            Attribute::Token(true),
            Attribute::Label(label),
            Attribute::Private(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Sign(true),
            Attribute::Derive(true),
        ],
    )
    .unwrap();
    drop(s);

    let report = hsm.self_check(&["exportable", "absent"]);
    assert!(!report.is_ok());
    let bad = &report.keys[0];
    assert!(
        bad.problems
            .iter()
            .any(|p| p.contains("CKA_EXTRACTABLE true")),
        "{:?}",
        bad.problems
    );
    assert!(
        bad.problems
            .iter()
            .any(|p| p.contains("CKA_SENSITIVE false")),
        "{:?}",
        bad.problems
    );
    assert!(
        bad.problems.iter().any(|p| p.contains("CKA_DERIVE true")),
        "{:?}",
        bad.problems
    );
    assert!(
        bad.problems
            .iter()
            .any(|p| p.contains("readable from the token")),
        "{:?}",
        bad.problems
    );
    assert!(report.keys[1].attributes.is_none());
    let err = report.into_result().unwrap_err().to_string();
    assert!(
        err.contains("key 'exportable' on token 'weak' is unsafe"),
        "{err}"
    );
}

#[test]
fn generating_over_an_existing_label_is_refused() {
    let hsm = token("dup");
    let first = hsm.generate_key_pair("ca", KeyAlgorithm::EcP256).unwrap();
    let err = hsm
        .generate_key_pair("ca", KeyAlgorithm::EcP256)
        .unwrap_err();
    assert!(matches!(err, HsmError::KeyExists { .. }), "{err}");
    assert_eq!(
        hsm.key("ca").unwrap().public_key_der(),
        first.public_key_der(),
        "original key untouched"
    );
    assert_eq!(hsm.private_key_labels().unwrap(), vec!["ca".to_string()]);
}

#[test]
fn actionable_errors() {
    let hsm = token("errors");
    // Missing key names the token and the key.
    let err = hsm.key("nope").unwrap_err().to_string();
    assert!(
        err.contains("key 'nope' not found on token 'errors'"),
        "{err}"
    );
    // Missing token lists those present.
    let err = Hsm::open(&config("no-such-token")).unwrap_err().to_string();
    assert!(
        err.contains("token 'no-such-token' not found") && err.contains("'errors'"),
        "{err}"
    );
    // Wrong PIN: the return code and a hint.
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, "000000\n").unwrap();
    std::fs::set_permissions(
        &pin_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut cfg = config("wrongpin");
    cfg.pin = PinSource::File(pin_file);
    let err = Hsm::open(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("login to token 'wrongpin' failed")
            && err.contains("CKR_PIN_INCORRECT")
            && err.contains("wrong PIN"),
        "{err}"
    );
    // A file that is not a PKCS#11 library.
    let not_lib = dir.path().join("libnot.so");
    std::fs::write(&not_lib, "this is not a shared library").unwrap();
    let mut cfg = config("errors");
    cfg.module = not_lib.clone();
    let err = Hsm::open(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("cannot load PKCS#11 module") && err.contains(not_lib.to_str().unwrap()),
        "{err}"
    );
    // A real shared library that is not PKCS#11.
    cfg.module = PathBuf::from(find_libc());
    let err = Hsm::open(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("PKCS#11 module") || err.contains("C_GetFunctionList"),
        "{err}"
    );
    // A module path that does not exist.
    cfg.module = dir.path().join("missing.so");
    let err = Hsm::open(&cfg).unwrap_err().to_string();
    assert!(err.contains("no such file"), "{err}");
}

fn find_libc() -> &'static str {
    [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/x86_64-linux-gnu/libm.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("a non-PKCS#11 shared library")
}

#[test]
fn concurrent_signing_through_a_small_pool() {
    let hsm = token("pool");
    let key = Arc::new(hsm.generate_key_pair("ocsp", KeyAlgorithm::EcP256).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let key = key.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let msg = format!("thread {t} message {i}");
                    let sig = key
                        .sign(
                            SignatureAlgorithm::EcdsaSha256,
                            msg.as_bytes(),
                            SigFormat::Der,
                        )
                        .unwrap();
                    verify_signature(
                        key.public_key_der(),
                        SignatureAlgorithm::EcdsaSha256,
                        msg.as_bytes(),
                        &sig,
                        SigFormat::Der,
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn random_comes_from_the_token() {
    let hsm = token("rng");
    let a = hsm.random(32).unwrap();
    let b = hsm.random(32).unwrap();
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
}

#[test]
fn mac_keys_compute_hmac_sha256_and_never_leave_the_token() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;

    let hsm = token("mac");
    // A generated key: deterministic, found again by label, refused twice.
    let k = hsm.generate_mac_key("card-management").unwrap();
    let a = k.hmac_sha256(b"card 0001").unwrap();
    assert_eq!(a, k.hmac_sha256(b"card 0001").unwrap());
    assert_ne!(a, k.hmac_sha256(b"card 0002").unwrap());
    assert_eq!(
        hsm.mac_key("card-management")
            .unwrap()
            .hmac_sha256(b"card 0001")
            .unwrap(),
        a
    );
    assert!(matches!(
        hsm.generate_mac_key("card-management"),
        Err(HsmError::KeyExists { .. })
    ));
    assert!(matches!(
        hsm.mac_key("absent"),
        Err(HsmError::KeyNotFound { .. })
    ));

    // Raw PKCS#11: the generated value is not readable, and a key of known value gives the
    // RFC 2104 HMAC that ring computes.
    let ctx = Pkcs11::new(SOFTHSM).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == "mac")
        .unwrap();
    let s = ctx.open_rw_session(slot).unwrap();
    let _ = s.login(UserType::User, Some(&AuthPin::from(PIN.to_owned())));
    let generated = s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"card-management".to_vec()),
        ])
        .unwrap();
    assert_eq!(generated.len(), 1);
    let readable = s
        .get_attributes(generated[0], &[AttributeType::Value])
        .map(|v| {
            v.iter()
                .any(|a| matches!(a, Attribute::Value(x) if !x.is_empty()))
        })
        .unwrap_or(false);
    assert!(!readable, "the MAC key value must not be readable");
    let known = [0x5Au8; 32];
    let mk = |label: &str, extractable: bool| {
        s.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Value(known.to_vec()),
            Attribute::Sensitive(!extractable),
            Attribute::Extractable(extractable),
            Attribute::Sign(true),
        ])
        .unwrap();
    };
    mk("known", false);
    mk("exportable-mac", true);
    drop(s);
    let soft = SoftwareMacKey::new("soft", &known);
    let hk = hsm.mac_key("known").unwrap();
    for msg in [&b""[..], b"abc", &[7u8; 300][..]] {
        assert_eq!(hk.hmac_sha256(msg).unwrap(), soft.hmac_sha256(msg).unwrap());
    }
    let err = hsm.mac_key("exportable-mac").unwrap_err().to_string();
    assert!(err.contains("CKA_EXTRACTABLE true"), "{err}");
}
