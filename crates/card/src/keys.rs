//! Card public keys: parsed from GENERATE ASYMMETRIC KEY PAIR, encoded as SubjectPublicKeyInfo,
//! used to verify what the card signed (ring).

use crate::error::{CardError, Result};
use crate::tlv;

/// Key algorithms the card generates (SP 800-78-4 identifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    EccP256,
    Rsa2048,
}

impl KeyAlgorithm {
    pub fn id(self) -> u8 {
        match self {
            KeyAlgorithm::EccP256 => 0x11,
            KeyAlgorithm::Rsa2048 => 0x07,
        }
    }
    pub fn parse(s: &str) -> Option<KeyAlgorithm> {
        match s.to_ascii_lowercase().as_str() {
            "p256" | "ecc-p256" | "ec:prime256v1" => Some(KeyAlgorithm::EccP256),
            "rsa2048" | "rsa-2048" | "rsa:2048" => Some(KeyAlgorithm::Rsa2048),
            _ => None,
        }
    }
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyAlgorithm::EccP256 => "ECC P-256",
            KeyAlgorithm::Rsa2048 => "RSA-2048",
        })
    }
}

/// A public key held by the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Uncompressed SEC1 point (65 bytes).
    EccP256 { point: Vec<u8> },
    /// Modulus and public exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];

fn der(tag: u8, v: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    tlv::put_len(&mut out, v.len());
    out.extend_from_slice(v);
    out
}

fn der_uint(v: &[u8]) -> Vec<u8> {
    let v = strip(v);
    let mut body = Vec::with_capacity(v.len() + 1);
    if v.first().is_none_or(|b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(v);
    der(0x02, &body)
}

fn strip(v: &[u8]) -> &[u8] {
    let i = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    &v[i..]
}

impl PublicKey {
    /// Parses the `7F49` template answered by GENERATE ASYMMETRIC KEY PAIR.
    pub fn from_template(b: &[u8], alg: KeyAlgorithm) -> Result<PublicKey> {
        let bad = |d: &str| CardError::Malformed {
            what: "GENERATE ASYMMETRIC KEY PAIR",
            detail: d.to_string(),
        };
        let t = tlv::read_single(b).map_err(|_| bad("not one TLV"))?;
        if t.tag != 0x7F49 {
            return Err(bad("no 7F49 template"));
        }
        let items = tlv::read_all(t.value, 4).map_err(|_| bad("template"))?;
        let get = |tag| {
            items
                .iter()
                .find(|i| i.tag == tag)
                .map(|i| i.value.to_vec())
        };
        match alg {
            KeyAlgorithm::EccP256 => {
                let point = get(0x86).ok_or_else(|| bad("no 86 point"))?;
                if point.len() != 65 || point[0] != 0x04 {
                    return Err(bad("point is not an uncompressed P-256 point"));
                }
                Ok(PublicKey::EccP256 { point })
            }
            KeyAlgorithm::Rsa2048 => {
                let n = strip(&get(0x81).ok_or_else(|| bad("no 81 modulus"))?).to_vec();
                let e = strip(&get(0x82).ok_or_else(|| bad("no 82 exponent"))?).to_vec();
                if n.len() != 256 || e.is_empty() || e.len() > 4 {
                    return Err(bad("not an RSA-2048 key"));
                }
                Ok(PublicKey::Rsa { n, e })
            }
        }
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            PublicKey::EccP256 { .. } => KeyAlgorithm::EccP256,
            PublicKey::Rsa { .. } => KeyAlgorithm::Rsa2048,
        }
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        let (alg, key) = match self {
            PublicKey::EccP256 { point } => {
                let mut a = der(0x06, OID_EC_PUBLIC_KEY);
                a.extend(der(0x06, OID_P256));
                (der(0x30, &a), point.clone())
            }
            PublicKey::Rsa { n, e } => {
                let mut a = der(0x06, OID_RSA);
                a.extend([0x05, 0x00]);
                let mut k = der_uint(n);
                k.extend(der_uint(e));
                (der(0x30, &a), der(0x30, &k))
            }
        };
        let mut bits = vec![0u8];
        bits.extend(key);
        let mut body = alg;
        body.extend(der(0x03, &bits));
        der(0x30, &body)
    }

    /// PEM SubjectPublicKeyInfo ("PUBLIC KEY").
    pub fn spki_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki_der())
    }

    /// Verifies a signature made by the card over `message` with SHA-256 (ECDSA: DER
    /// signature; RSA: PKCS#1 v1.5).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        use ring::signature as rs;
        let ok = match self {
            PublicKey::EccP256 { point } => {
                rs::UnparsedPublicKey::new(&rs::ECDSA_P256_SHA256_ASN1, point)
                    .verify(message, signature)
            }
            PublicKey::Rsa { n, e } => rs::RsaPublicKeyComponents { n, e }.verify(
                &rs::RSA_PKCS1_2048_8192_SHA256,
                message,
                signature,
            ),
        };
        ok.map_err(|_| CardError::BadSignature)
    }
}

/// PEM armour (64-column base64).
pub fn pem(label: &str, der: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for c in der.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                b64.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or(""));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// EMSA-PKCS1-v1_5 encoding of a SHA-256 digest for a 2048-bit modulus (what the host does
/// before asking the card for a raw RSA operation).
pub fn pkcs1_v15_sha256(digest: &[u8; 32]) -> Vec<u8> {
    const PREFIX: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let mut block = vec![0x00, 0x01];
    block.resize(256 - PREFIX.len() - 32 - 1, 0xFF);
    block.push(0x00);
    block.extend_from_slice(&PREFIX);
    block.extend_from_slice(digest);
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_matches_known_base64() {
        assert!(pem("X", b"hello").contains("aGVsbG8=\n"));
        assert!(pem("X", b"hell").contains("aGVsbA==\n"));
        assert!(pem("X", b"hel").contains("aGVs\n"));
    }

    #[test]
    fn spki_p256_prefix() {
        let k = PublicKey::EccP256 {
            point: [vec![4u8], vec![1u8; 64]].concat(),
        };
        let d = k.spki_der();
        assert_eq!(
            hex(&d[..26]),
            "3059301306072a8648ce3d020106082a8648ce3d030107034200"
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
