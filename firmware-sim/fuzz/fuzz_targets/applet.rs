//! The card applet on arbitrary sequences of APDUs: never panics, always answers a valid
//! status word, and whatever it asks to persist is a state that loads again.
//!
//! Input: a first byte of flags (bit 0: authenticate with the management key first; bit 1:
//! verify the PIN first), then APDUs as (1-byte length, bytes).
#![no_main]

use firmware_sim::applet::Card;
use firmware_sim::apdu::sw;
use firmware_sim::crypto::{TestRng, mgmt_cipher};
use firmware_sim::state::{CardState, DEFAULT_MGMT_KEY, MgmtAlg};
use libfuzzer_sys::fuzz_target;

fn admin(card: &mut Card, rng: &mut TestRng) {
    let r = card.process(&[0, 0x87, 0x0A, 0x9B, 4, 0x7C, 2, 0x80, 0, 0], rng).response;
    if r.len() != 22 {
        return;
    }
    let plain = mgmt_cipher(MgmtAlg::Aes192, &DEFAULT_MGMT_KEY, &r[4..20], false).unwrap();
    let mut a = vec![0, 0x87, 0x0A, 0x9B, 38, 0x7C, 36, 0x80, 16];
    a.extend(plain);
    a.extend([0x81, 16]);
    a.extend([7u8; 16]);
    a.push(0);
    card.process(&a, rng);
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let mut rng = TestRng(0x5EED);
    let mut card = Card::new(CardState::blank([9; 16], "20301231", MgmtAlg::Aes192));
    if flags & 1 != 0 {
        admin(&mut card, &mut rng);
    }
    if flags & 2 != 0 {
        card.process(b"\x00\x20\x00\x80\x08123456\xFF\xFF", &mut rng);
    }
    let mut n = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len());
        let (apdu, next) = tail.split_at(len);
        rest = next;
        n += 1;
        if n > 64 {
            break;
        }
        let out = card.process(apdu, &mut rng);
        let r = &out.response;
        assert!(r.len() >= 2);
        let s = u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]]);
        assert!(sw::is_valid(s), "status {s:04x}");
        if out.persist {
            CardState::from_json(&card.state().to_json()).expect("persisted state loads");
        }
        if flags & 4 != 0 {
            card.reset();
        }
    }
});
