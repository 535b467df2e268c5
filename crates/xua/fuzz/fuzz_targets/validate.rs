//! Arbitrary bytes through the whole validator (trusting the corpus test PKI): it must answer,
//! never panic, and never accept anything whose claims differ from a correctly signed assertion
//! of that PKI (only the seeds from `tests/corpus/cases` can be accepted at all).
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use cps_xua::{
    EKU_DOCUMENT_SIGNING, EkuPolicy, InMemoryReplayCache, StaticRevocationList, TrustStore,
    Validator, ValidatorConfig,
};
use libfuzzer_sys::fuzz_target;

fn validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| {
        let pem = include_str!("../../tests/corpus/pki/root.crt.pem");
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64_decode(&b64);
        let trust =
            TrustStore::new(vec![der], vec![], EkuPolicy::RequiredIfPresent(EKU_DOCUMENT_SIGNING))
                .unwrap();
        Validator::new(
            ValidatorConfig::default(),
            Arc::new(trust),
            Arc::new(StaticRevocationList::new()),
            Arc::new(InMemoryReplayCache::new(1024)),
        )
    })
}

fn base64_decode(s: &str) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = T.iter().position(|&t| t == c).unwrap() as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The corpus instant (2026-01-15T10:00:00Z).
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_768_471_200);
    let _ = validator().verify(data, now);
});
