//! Serial-number entropy (attack class 12: EJBCA's 63-bit serials). 10 000 serials from
//! `ring`'s CSPRNG through `serial_from_random`: no duplicates, always 16 octets, positive and
//! DER-minimal, and every random bit (bits 2..127; bit 0 is cleared for the sign, bit 1 set
//! for a fixed length) balanced.

use cps_pki::{Serial, serial_from_random};
use ring::rand::{SecureRandom, SystemRandom};

#[test]
fn ten_thousand_random_serials() {
    const N: usize = 10_000;
    let rng = SystemRandom::new();
    let mut seen = std::collections::HashSet::with_capacity(N);
    let mut ones = [0u32; 128];
    for _ in 0..N {
        let mut r = [0u8; 16];
        rng.fill(&mut r).unwrap();
        let s = serial_from_random(r);
        let b = s.as_bytes();
        assert_eq!(b.len(), 16, "{s}");
        assert_eq!(b[0] & 0xc0, 0x40, "positive, top random bit set: {s}");
        Serial::from_bytes(b).expect("positive, DER-minimal, ≤ 20 octets");
        assert!(seen.insert(b.to_vec()), "duplicate serial {s}");
        for (i, one) in ones.iter_mut().enumerate() {
            *one += u32::from((b[i / 8] >> (7 - i % 8)) & 1);
        }
    }
    assert_eq!(ones[0], 0);
    assert_eq!(ones[1], N as u32);
    // Binomial(10 000, ½): mean 5 000, σ = 50. ±6σ keeps a false alarm below 1e-6 for all 126
    // bits together, while a stuck or strongly biased bit (or a 63-bit serial) fails.
    for (bit, &count) in ones.iter().enumerate().skip(2) {
        assert!(
            (4_700..=5_300).contains(&count),
            "bit {bit} set in {count} of {N} serials"
        );
    }
    let total: u32 = ones[2..].iter().sum();
    let expected = 126.0 * N as f64 / 2.0;
    // σ of the total = sqrt(126·N/4) ≈ 561; ±6σ.
    assert!(
        (f64::from(total) - expected).abs() < 6.0 * (126.0 * N as f64 / 4.0).sqrt(),
        "{total} ones in total, {expected} expected"
    );
}
