//! Checkpoints signed by keys held in a real SoftHSM2 token (as in production), verified with
//! the token's public keys; a tampered log fails against them.

use std::path::Path;
use std::sync::Arc;

use cps_atna::{
    AuditLog, LogOptions, NewRecord, NodeIdentity, Transport, VerifyError, VerifyOptions,
    XmlLimits, verify,
};
use cps_hsm::{Hsm, HsmConfig, KeyAlgorithm, PinSource, Signer, init_token_on_free_slot};

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN_VAR: &str = "CPS_ATNA_TEST_HSM_PIN";

#[test]
fn checkpoints_signed_in_softhsm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tokens")).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            dir.path().display()
        ),
    )
    .unwrap();
    // SAFETY: the only test of this binary; set before any PKCS#11 call.
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", &conf);
        std::env::set_var(PIN_VAR, "135790");
    }
    init_token_on_free_slot(Path::new(SOFTHSM), "atna", "24680246", "135790").unwrap();
    let hsm = Hsm::open(&HsmConfig {
        module: SOFTHSM.into(),
        token_label: "atna".into(),
        pin: PinSource::Env(PIN_VAR.into()),
        sessions: 2,
    })
    .unwrap();
    for (label, alg) in [
        ("checkpoint-p256", KeyAlgorithm::EcP256),
        ("checkpoint-rsa", KeyAlgorithm::Rsa2048),
    ] {
        let key: Arc<dyn Signer> = Arc::new(hsm.generate_key_pair(label, alg).unwrap());
        let spki = key.public_key_der().to_vec();
        let logdir = dir.path().join(label);
        let log = AuditLog::open(
            &logdir,
            Some(key),
            LogOptions {
                checkpoint_every: 7,
                ..LogOptions::default()
            },
        )
        .unwrap();
        for i in 0..30u64 {
            let raw = format!("<85>1 - h a - - - record {i}");
            log.append_blocking(vec![NewRecord::from_message(
                i as i64,
                &NodeIdentity::default(),
                "127.0.0.1:1",
                Transport::Tls,
                raw.as_bytes(),
                &XmlLimits::default(),
            )])
            .unwrap();
        }
        log.checkpoint_blocking().unwrap();
        assert_eq!(log.last_checkpoint().unwrap().seq, 30);
        drop(log);
        let report = verify(&logdir, &VerifyOptions::key(&spki)).unwrap();
        assert_eq!(
            (report.records, report.checkpoints, report.unsigned_tail),
            (30, 6, 0),
            "{label}"
        );

        // Cut the last 3 records: the HSM-signed checkpoint of record 30 shows it.
        let p = logdir.join("records.log");
        let mut data = std::fs::read(&p).unwrap();
        let mut offsets = Vec::new();
        let mut i = 0;
        while i < data.len() {
            offsets.push(i);
            i += 8 + u32::from_be_bytes(data[i + 4..i + 8].try_into().unwrap()) as usize + 32;
        }
        data.truncate(offsets[27]);
        std::fs::write(&p, data).unwrap();
        let e = verify(&logdir, &VerifyOptions::key(&spki)).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::Truncated {
                    last_seq: 27,
                    checkpoint_seq: 30
                }
            ),
            "{label}: {e}"
        );
        assert_eq!(e.first_bad_record(), Some(28));
    }
}
