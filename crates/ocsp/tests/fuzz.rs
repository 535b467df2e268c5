//! Mutation loop: valid requests, mutated (bit flips, byte overwrites, truncation, insertion,
//! deletion, duplication), fed to `respond`. Never a panic, always a well-formed OCSPResponse
//! (decoded back with x509-ocsp), and a successful one always carries a valid signature.
//! Deterministic (seeded); `CPS_OCSP_FUZZ_ITERATIONS` and `CPS_OCSP_FUZZ_SEED` change the
//! count and the seed.

mod common;

use common::*;
use cps_hsm::Signer;
use cps_ocsp::{NotIssuedPolicy, ResponseStatusKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use x509_cert_02::der::Encode;

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.gen_range(1..=3) {
        let len = v.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] = *[0x00, 0x01, 0x7f, 0x80, 0x81, 0x82, 0xff, 0x30, 0xa0, 0x04]
                    .get(rng.gen_range(0..10))
                    .unwrap();
            }
            2 => v.truncate(rng.gen_range(0..=len)),
            3 => {
                let i = rng.gen_range(0..=len);
                let n = rng.gen_range(1..8);
                for _ in 0..n {
                    v.insert(i, rng.r#gen());
                }
            }
            4 if len > 0 => {
                let i = rng.gen_range(0..len);
                let j = rng.gen_range(i..=len.min(i + 8));
                v.drain(i..j);
            }
            5 if len > 0 => {
                let i = rng.gen_range(0..len);
                let j = rng.gen_range(i..=len);
                let chunk = v[i..j].to_vec();
                let at = rng.gen_range(0..=v.len());
                v.splice(at..at, chunk);
            }
            _ => v.push(rng.r#gen()),
        }
    }
    v
}

#[test]
fn mutated_requests_never_panic_and_always_yield_a_wellformed_response() {
    let now = 1_800_000_000;
    let pki = build_pki(now, 3);
    let (r, _) = responder(&pki, config(NotIssuedPolicy::RevokedExtended));
    let (a, b) = (&pki.cas[0], &pki.cas[1]);
    let mut seeds = vec![
        request(
            vec![cert_id(&a.cert_der, &a.ee[0].serial, Hash::Sha1, true)],
            None,
        ),
        request(
            vec![cert_id(&a.cert_der, &a.ee[1].serial, Hash::Sha256, false)],
            None,
        ),
        request(
            vec![cert_id(&b.cert_der, &b.ee[0].serial, Hash::Sha1, false)],
            Some(&[0x42; 16]),
        ),
        request(
            vec![
                cert_id(&a.cert_der, &a.ee[0].serial, Hash::Sha1, true),
                cert_id(&a.cert_der, &[0x12, 0x34], Hash::Sha256, true),
                cert_id(&b.cert_der, &b.ee[2].serial, Hash::Sha1, true),
            ],
            Some(&[7; 32]),
        ),
    ];
    let mut with_name = x509_ocsp::OcspRequest::from_der_helper(&seeds[0]);
    with_name.tbs_request.requestor_name =
        Some(x509_cert_02::ext::pkix::name::GeneralName::DnsName(
            x509_cert_02::der::asn1::Ia5String::new("a.example.test").unwrap(),
        ));
    seeds.push(with_name.to_der().unwrap());

    let iterations: usize = std::env::var("CPS_OCSP_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed = std::env::var("CPS_OCSP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6960_5019);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = std::collections::HashMap::<ResponseStatusKind, usize>::new();
    let mut odd_oids = 0usize;
    for n in 0..iterations {
        let seed = &seeds[n % seeds.len()];
        let input = mutate(&mut rng, seed);
        let reply = r.respond(&input, now);
        *counts.entry(reply.status).or_default() += 1;
        let (status, basic) = match try_decode(&reply.der) {
            Ok(d) => d,
            Err(e) if e.kind() == x509_cert_02::der::ErrorKind::OidMalformed => {
                // A CertID of a foreign issuer echoed with a hash-algorithm OID that is valid
                // X.690 but beyond const-oid 0.9 (e.g. 2.1573624.1...): x509-ocsp cannot read
                // it. Check the DER structure with der 0.8 instead.
                assert_eq!(reply.status, ResponseStatusKind::Successful);
                well_formed(&reply.der, 0);
                odd_oids += 1;
                continue;
            }
            Err(e) => panic!(
                "{e}: input {} output {}",
                hex::encode(&input),
                hex::encode(&reply.der)
            ),
        };
        assert_eq!(status, reply.status.code(), "input {}", hex::encode(&input));
        match basic {
            Some(basic) => {
                assert_eq!(reply.status, ResponseStatusKind::Successful);
                let n = basic.tbs_response_data.responses.len();
                assert!((1..=8).contains(&n));
                let ok = pki.cas.iter().any(|ca| {
                    let tbs = basic.tbs_response_data.to_der().unwrap();
                    cps_hsm::verify_signature(
                        ca.ocsp_key.public_key_der(),
                        cps_hsm::SignatureAlgorithm::EcdsaSha256,
                        &tbs,
                        basic.signature.raw_bytes(),
                        cps_hsm::SigFormat::Der,
                    )
                    .is_ok()
                });
                assert!(ok, "signature, input {}", hex::encode(&input));
            }
            None => {
                assert_ne!(reply.status, ResponseStatusKind::Successful);
                assert_eq!(reply.der.len(), 5);
            }
        }
    }
    // The loop must exercise both sides: mutations that still parse, and refusals.
    let successful = counts
        .get(&ResponseStatusKind::Successful)
        .copied()
        .unwrap_or(0);
    let malformed = counts
        .get(&ResponseStatusKind::MalformedRequest)
        .copied()
        .unwrap_or(0);
    assert!(successful > iterations / 50, "{counts:?}");
    assert!(malformed > iterations / 2, "{counts:?}");
    eprintln!(
        "{iterations} mutated requests: {counts:?}, {odd_oids} with OIDs beyond const-oid 0.9"
    );
}

/// Every TLV is definite-length DER and constructed ones nest exactly (der 0.8).
fn well_formed(der: &[u8], depth: usize) {
    use der::{Decode, Reader, Tagged};
    assert!(depth < 32);
    let mut r = der::SliceReader::new(der).unwrap();
    while !r.is_finished() {
        let any = der::asn1::AnyRef::decode(&mut r).expect("well-formed DER");
        if any.tag().is_constructed() {
            well_formed(any.value(), depth + 1);
        }
    }
}

trait FromDerHelper {
    fn from_der_helper(der: &[u8]) -> Self;
}

impl FromDerHelper for x509_ocsp::OcspRequest {
    fn from_der_helper(der: &[u8]) -> Self {
        <Self as x509_cert_02::der::Decode>::from_der(der).unwrap()
    }
}

/// Responses read back (`parse_response` → `verify` → `status_of`, and `decide`), mutated:
/// never a panic, and nothing changed still verifies.
#[test]
fn mutated_responses_never_panic_and_never_verify() {
    use cps_ocsp::{LongTermPolicy, LongTermQuery, ResponseLimits, decide, parse_response};
    let now = 1_800_000_000;
    let pki = build_pki(now, 3);
    let (r, _) = responder(&pki, config(NotIssuedPolicy::Unknown));
    let a = &pki.cas[0];
    let seeds: Vec<(usize, Vec<u8>)> = [(0usize, None), (1, Some(&[0x42u8; 16][..]))]
        .into_iter()
        .map(|(n, nonce)| {
            let req = request(
                vec![cert_id(&a.cert_der, &a.ee[n].serial, Hash::Sha256, false)],
                nonce,
            );
            (n, r.respond(&req, now).der.to_vec())
        })
        .collect();
    let original: Vec<_> = seeds
        .iter()
        .map(|(n, der)| {
            parse_response(der, &ResponseLimits::default())
                .unwrap()
                .verify(&a.cert_der)
                .unwrap()
                .status_of(&a.ee[*n].cert_der)
                .unwrap()
                .clone()
        })
        .collect();
    let iterations: usize = std::env::var("CPS_OCSP_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut still_valid = 0usize;
    for i in 0..iterations {
        let k = i % seeds.len();
        let (n, der) = &seeds[k];
        let m = mutate(&mut rng, der);
        let verified = parse_response(&m, &ResponseLimits::default())
            .and_then(|p| p.verify(&a.cert_der))
            .and_then(|v| v.status_of(&a.ee[*n].cert_der).cloned());
        if let Ok(s) = verified {
            // Only the mutations that left the bytes as they were: every byte of a response is
            // signed, or checked (the responder certificate), or strict DER framing.
            still_valid += 1;
            assert_eq!(m, *der, "a changed response still verifies");
            assert_eq!(s, original[k], "a mutation changed a verified status");
        }
        let embedded = [m];
        let _ = decide(
            &LongTermQuery {
                proof_time: now,
                certificate: &a.ee[*n].cert_der,
                issuer: &a.cert_der,
                embedded: &embedded,
                live: None,
            },
            &LongTermPolicy::default(),
        );
    }
    eprintln!("{iterations} mutated responses, {still_valid} still verified");
}
