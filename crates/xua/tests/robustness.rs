//! Hostile input never panics the validator: random byte changes, insertions and truncations of
//! valid assertions (bare and in SOAP) each get an answer, and whatever is accepted still reads
//! the signed values. Also: the issuer name in the other DN order, and c14n idempotence.

mod common;

use common::*;
use cps_xua::c14n::{InclusivePrefixes, canonicalize};
use cps_xua::{IssuerConfig, RefusalCode};
use rand::{Rng, SeedableRng};

#[test]
fn random_mutations_never_panic_and_never_change_what_is_read() {
    let a = corpus_issuer()
        .issue(&claims(), corpus_now(), &id(70))
        .unwrap();
    let v = validator(Setup::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5a11);
    let pieces: [&[u8]; 8] = [
        b"<",
        b">",
        b"&",
        b"<!---->",
        b"]]>",
        b"\"",
        b"<x:y xmlns:x='urn:x'/>",
        b"&#0;",
    ];
    let mut accepted = 0;
    for doc in [a.xml.clone().into_bytes(), a.soap_envelope().into_bytes()] {
        for _ in 0..1500 {
            let mut d = doc.clone();
            match rng.gen_range(0..4) {
                0 => {
                    let i = rng.gen_range(0..d.len());
                    d[i] = rng.r#gen();
                }
                1 => {
                    let i = rng.gen_range(0..d.len());
                    let p = pieces[rng.gen_range(0..pieces.len())];
                    d.splice(i..i, p.iter().copied());
                }
                2 => d.truncate(rng.gen_range(0..d.len())),
                _ => {
                    let i = rng.gen_range(0..d.len());
                    let j = (i + rng.gen_range(1..64)).min(d.len());
                    d.drain(i..j);
                }
            }
            if let Ok(ok) = v.verify(&d, corpus_now()) {
                // Only changes the signature does not cover can pass (whitespace or comments
                // between elements, the envelope): what is read is still what was signed.
                assert_eq!(ok.claims, claims());
                assert_eq!(ok.id, a.id);
                accepted += 1;
            }
        }
    }
    assert!(accepted < 3000 / 4, "{accepted} mutations accepted");
}

#[test]
fn issuer_text_in_either_dn_order_names_the_signer() {
    let p = pki();
    let subject = corpus_issuer().issuer_name().to_owned();
    // RFC 4514 order is what the issuer writes; the ANS examples write the other order.
    let mut parts: Vec<&str> = subject.split(',').collect();
    parts.reverse();
    let forward = parts.join(", ");
    let issuer = issuer_for(
        p.seal.signer.clone(),
        &p.seal_der,
        IssuerConfig {
            issuer_name: Some(forward.clone()),
            ..IssuerConfig::default()
        },
    );
    let a = issuer.issue(&claims(), corpus_now(), &id(71)).unwrap();
    let ok = validator(Setup::default())
        .verify(a.xml.as_bytes(), corpus_now())
        .unwrap();
    assert_eq!(ok.issuer, forward);
    // Another name is refused (the check is on, by default).
    let other = issuer_for(
        p.seal.signer.clone(),
        &p.seal_der,
        IssuerConfig {
            issuer_name: Some("CN=Someone,O=Else,C=FR".into()),
            ..IssuerConfig::default()
        },
    )
    .issue(&claims(), corpus_now(), &id(72))
    .unwrap();
    assert_eq!(
        validator(Setup::default())
            .verify(other.xml.as_bytes(), corpus_now())
            .unwrap_err()
            .code,
        RefusalCode::IssuerMismatch
    );
    let mut s = Setup::default();
    s.config.issuer_must_match_signer = false;
    validator(s)
        .verify(other.xml.as_bytes(), corpus_now())
        .unwrap();
}

#[test]
fn canonicalisation_is_idempotent_on_every_corpus_file() {
    let dir = corpus_dir().join("cases");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let Ok(doc) = roxmltree::Document::parse(&text) else {
            continue;
        };
        let mut once = Vec::new();
        canonicalize(
            doc.root_element(),
            None,
            &InclusivePrefixes::none(),
            &mut once,
        )
        .unwrap();
        let once = String::from_utf8(once).unwrap();
        let doc2 = roxmltree::Document::parse(&once).unwrap();
        let mut twice = Vec::new();
        canonicalize(
            doc2.root_element(),
            None,
            &InclusivePrefixes::none(),
            &mut twice,
        )
        .unwrap();
        assert_eq!(
            once,
            String::from_utf8(twice).unwrap(),
            "{}",
            path.display()
        );
        n += 1;
    }
    assert!(n > 40);
}

#[test]
fn only_utf8_documents_are_read() {
    let a = corpus_issuer()
        .issue(&claims(), corpus_now(), &id(73))
        .unwrap();
    let v = validator(Setup::default());
    let utf8 = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}", a.xml);
    v.verify(utf8.as_bytes(), corpus_now()).unwrap();
    for enc in ["ISO-8859-1", "UTF-16", "windows-1252"] {
        let other = format!("<?xml version='1.0' encoding='{enc}'?>\n{}", a.xml);
        assert_eq!(
            v.verify(other.as_bytes(), corpus_now()).unwrap_err().code,
            RefusalCode::MalformedXml,
            "{enc}"
        );
    }
    let mut latin1 = a.xml.clone().into_bytes();
    latin1.push(0xe9);
    assert_eq!(
        v.verify(&latin1, corpus_now()).unwrap_err().code,
        RefusalCode::MalformedXml
    );
}
