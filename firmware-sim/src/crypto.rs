//! On-card cryptography: key generation, ECDSA P-256 over a pre-hashed digest, raw RSA-2048,
//! the card management key (3DES / AES block cipher in ECB, one block), all through RustCrypto.
//!
//! Randomness always comes in through [`Rng`]; nothing here reads the OS RNG.
//!
//! Note: the `rsa` crate has the Marvin timing side channel (RUSTSEC-2023-0071) on its private
//! operation. This is a *simulator*: its private keys are test keys in a file, and the timing of
//! a process on the test machine is not an attack surface. Blinding is still applied.

use p256::ecdsa::signature::hazmat::PrehashSigner;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, RsaPrivateKey};

use crate::state::{KeyMaterial, MgmtAlg};

/// The card's source of randomness (the binary uses the OS; tests and fuzzing a seeded one).
pub trait Rng {
    fn fill(&mut self, out: &mut [u8]);
}

/// OS randomness (getrandom).
pub struct OsRng;

impl Rng for OsRng {
    fn fill(&mut self, out: &mut [u8]) {
        if getrandom::getrandom(out).is_err() {
            // No usable OS RNG: there is nothing safe to do on a card without randomness.
            eprintln!("firmware-sim: the OS random number generator failed");
            std::process::abort();
        }
    }
}

/// Deterministic generator for tests and fuzzing (SplitMix64). Not for real keys.
pub struct TestRng(pub u64);

impl Rng for TestRng {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// `rand_core` view of an [`Rng`] (for the `rsa` crate's key generation and blinding).
struct RandAdapter<'a>(&'a mut dyn Rng);

impl rand_core::RngCore for RandAdapter<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for RandAdapter<'_> {}

/// PIV algorithm identifiers (SP 800-78-4 Table 6-2).
pub const ALG_RSA2048: u8 = 0x07;
pub const ALG_P256: u8 = 0x11;

/// A slot's private key, parsed once for fast use.
pub enum LoadedKey {
    P256(p256::SecretKey),
    Rsa2048(Box<RsaPrivateKey>),
}

impl LoadedKey {
    pub fn load(m: &KeyMaterial) -> Result<LoadedKey, String> {
        match m {
            KeyMaterial::P256 { d } => p256::SecretKey::from_slice(d)
                .map(LoadedKey::P256)
                .map_err(|_| "invalid P-256 scalar".to_string()),
            KeyMaterial::Rsa2048 { n, e, d, p, q } => {
                if n.len() != 256 {
                    return Err("RSA modulus is not 2048 bits".into());
                }
                let k = RsaPrivateKey::from_components(
                    BigUint::from_bytes_be(n),
                    BigUint::from_bytes_be(e),
                    BigUint::from_bytes_be(d),
                    vec![BigUint::from_bytes_be(p), BigUint::from_bytes_be(q)],
                )
                .map_err(|e| format!("invalid RSA key: {e}"))?;
                if k.n().bits() != 2048 {
                    return Err("RSA modulus is not 2048 bits".into());
                }
                Ok(LoadedKey::Rsa2048(Box::new(k)))
            }
        }
    }

    pub fn alg(&self) -> u8 {
        match self {
            LoadedKey::P256(_) => ALG_P256,
            LoadedKey::Rsa2048(_) => ALG_RSA2048,
        }
    }

    /// The public key as the contents of the `7F49` template of GENERATE ASYMMETRIC KEY PAIR
    /// (`81` modulus + `82` exponent, or `86` uncompressed point).
    pub fn public_template(&self) -> Vec<u8> {
        let mut body = Vec::new();
        match self {
            LoadedKey::P256(k) => {
                use p256::elliptic_curve::sec1::ToEncodedPoint;
                let pt = k.public_key().to_encoded_point(false);
                crate::tlv::put(&mut body, 0x86, pt.as_bytes());
            }
            LoadedKey::Rsa2048(k) => {
                crate::tlv::put(&mut body, 0x81, &left_pad(&k.n().to_bytes_be(), 256));
                crate::tlv::put(&mut body, 0x82, &k.e().to_bytes_be());
            }
        }
        crate::tlv::tlv(0x7F49, &body)
    }
}

/// Generates a key pair on the card.
pub fn generate(alg: u8, rng: &mut dyn Rng) -> Option<(KeyMaterial, LoadedKey)> {
    match alg {
        ALG_P256 => loop {
            let mut d = [0u8; 32];
            rng.fill(&mut d);
            if let Ok(k) = p256::SecretKey::from_slice(&d) {
                return Some((KeyMaterial::P256 { d: d.to_vec() }, LoadedKey::P256(k)));
            }
        },
        ALG_RSA2048 => {
            let mut r = RandAdapter(rng);
            let k = RsaPrivateKey::new_with_exp(&mut r, 2048, &BigUint::from(65537u32)).ok()?;
            let primes = k.primes();
            if primes.len() != 2 {
                return None;
            }
            let m = KeyMaterial::Rsa2048 {
                n: k.n().to_bytes_be(),
                e: k.e().to_bytes_be(),
                d: k.d().to_bytes_be(),
                p: primes[0].to_bytes_be(),
                q: primes[1].to_bytes_be(),
            };
            Some((m, LoadedKey::Rsa2048(Box::new(k))))
        }
        _ => None,
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum CryptoError {
    /// Input of the wrong size or out of range for the key.
    BadInput,
}

/// ECDSA P-256 over a 32-byte digest (RFC 6979 deterministic nonce); DER `SEQUENCE{r,s}`.
pub fn ecdsa_sign(k: &p256::SecretKey, digest: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if digest.len() != 32 {
        return Err(CryptoError::BadInput);
    }
    let sk = p256::ecdsa::SigningKey::from(k);
    let sig: p256::ecdsa::Signature = sk.sign_prehash(digest).map_err(|_| CryptoError::BadInput)?;
    Ok(sig.to_der().as_bytes().to_vec())
}

/// ECDH P-256 with a peer's uncompressed point: the shared x-coordinate.
pub fn ecdh(k: &p256::SecretKey, peer: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let pk = p256::PublicKey::from_sec1_bytes(peer).map_err(|_| CryptoError::BadInput)?;
    let shared = p256::ecdh::diffie_hellman(k.to_nonzero_scalar(), pk.as_affine());
    Ok(shared.raw_secret_bytes().to_vec())
}

/// Raw RSA private operation (`m^d mod n`, blinded), as PIV does: the host pads.
pub fn rsa_raw(k: &RsaPrivateKey, input: &[u8], rng: &mut dyn Rng) -> Result<Vec<u8>, CryptoError> {
    if input.len() != 256 {
        return Err(CryptoError::BadInput);
    }
    let c = BigUint::from_bytes_be(input);
    if &c >= k.n() {
        return Err(CryptoError::BadInput);
    }
    let mut r = RandAdapter(rng);
    let m = rsa::hazmat::rsa_decrypt_and_check(k, Some(&mut r), &c)
        .map_err(|_| CryptoError::BadInput)?;
    Ok(left_pad(&m.to_bytes_be(), 256))
}

fn left_pad(b: &[u8], n: usize) -> Vec<u8> {
    if b.len() >= n {
        return b.to_vec();
    }
    let mut v = vec![0u8; n - b.len()];
    v.extend_from_slice(b);
    v
}

/// One-block ECB encryption/decryption with the management key.
pub fn mgmt_cipher(alg: MgmtAlg, key: &[u8], block: &[u8], encrypt: bool) -> Option<Vec<u8>> {
    use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit, generic_array::GenericArray};
    fn run<C: KeyInit + BlockEncrypt + BlockDecrypt>(
        key: &[u8],
        block: &[u8],
        encrypt: bool,
    ) -> Option<Vec<u8>> {
        if block.len() != C::block_size() {
            return None;
        }
        let c = C::new_from_slice(key).ok()?;
        let mut b = GenericArray::clone_from_slice(block);
        if encrypt {
            c.encrypt_block(&mut b)
        } else {
            c.decrypt_block(&mut b)
        }
        Some(b.to_vec())
    }
    if block.len() != alg.block_len() || key.len() != alg.key_len() {
        return None;
    }
    match alg {
        MgmtAlg::Aes128 => run::<aes::Aes128>(key, block, encrypt),
        MgmtAlg::Aes192 => run::<aes::Aes192>(key, block, encrypt),
        MgmtAlg::Aes256 => run::<aes::Aes256>(key, block, encrypt),
        MgmtAlg::TripleDes => run::<des::TdesEde3>(key, block, encrypt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mgmt_cipher_round_trip() {
        for alg in [
            MgmtAlg::TripleDes,
            MgmtAlg::Aes128,
            MgmtAlg::Aes192,
            MgmtAlg::Aes256,
        ] {
            let key = vec![7u8; alg.key_len()];
            let block = vec![3u8; alg.block_len()];
            let c = mgmt_cipher(alg, &key, &block, true).unwrap();
            assert_ne!(c, block);
            assert_eq!(mgmt_cipher(alg, &key, &c, false).unwrap(), block);
            assert!(mgmt_cipher(alg, &key, &block[1..], true).is_none());
        }
    }

    #[test]
    fn p256_sign_verifies_with_ring() {
        let mut rng = TestRng(1);
        let (_, k) = generate(ALG_P256, &mut rng).unwrap();
        let LoadedKey::P256(sk) = &k else { panic!() };
        let msg = b"challenge";
        let digest = ring::digest::digest(&ring::digest::SHA256, msg);
        let sig = ecdsa_sign(sk, digest.as_ref()).unwrap();
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let pt = sk.public_key().to_encoded_point(false);
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            pt.as_bytes(),
        )
        .verify(msg, &sig)
        .unwrap();
        assert_eq!(ecdsa_sign(sk, &[0; 31]), Err(CryptoError::BadInput));
    }
}
