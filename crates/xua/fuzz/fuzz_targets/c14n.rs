//! Exclusive canonicalisation of arbitrary XML: never panics, and is idempotent (the canonical
//! form of the canonical form is itself), for every element of the document as apex.
#![no_main]

use cps_xua::c14n::{InclusivePrefixes, canonicalize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(doc) = roxmltree::Document::parse(text) else { return };
    let prefixes = InclusivePrefixes::parse("#default xs ds");
    for apex in doc.descendants().filter(|n| n.is_element()).take(8) {
        let mut once = Vec::new();
        if canonicalize(apex, None, &prefixes, &mut once).is_err() {
            continue;
        }
        let once = String::from_utf8(once).expect("canonical form is UTF-8");
        let doc2 = roxmltree::Document::parse(&once).expect("canonical form parses");
        let mut twice = Vec::new();
        canonicalize(doc2.root_element(), None, &prefixes, &mut twice).expect("canonicalises");
        assert_eq!(once.as_bytes(), &twice[..], "not idempotent");
    }
});
