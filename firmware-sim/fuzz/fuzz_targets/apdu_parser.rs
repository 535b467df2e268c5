//! The APDU and BER-TLV parsers on arbitrary bytes: no panic, and what they return lies
//! inside the input.
#![no_main]

use firmware_sim::{apdu::Command, tlv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Command::parse(data) {
        assert!(c.data.len() + 4 <= data.len());
        if let Some(le) = c.le {
            assert!((1..=65536).contains(&le));
        }
    }
    if let Ok((t, rest)) = tlv::read(data) {
        assert!(t.value.len() + rest.len() < data.len());
        // re-encoding gives a TLV that parses back to the same tag and value
        let enc = tlv::tlv(t.tag, t.value);
        let back = tlv::read_single(&enc).expect("re-encoded TLV parses");
        assert_eq!((back.tag, back.value), (t.tag, t.value));
    }
    let _ = tlv::read_all(data, 64);
});
