//! The few DER structures this crate needs: `SubjectPublicKeyInfo` and ECDSA signatures.

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912::{ID_EC_PUBLIC_KEY, RSA_ENCRYPTION, SECP_256_R_1, SECP_384_R_1};
use der::asn1::{AnyRef, BitString, UintRef};
use der::{Decode, Encode, Sequence};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::{HsmError, KeyAlgorithm};

#[derive(Sequence)]
struct EcdsaSig<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

fn malformed(e: impl std::fmt::Display) -> HsmError {
    HsmError::Malformed(e.to_string())
}

/// Fixed-width `r ‖ s` → DER `SEQUENCE { r, s }`.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, HsmError> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 132 {
        return Err(malformed(format!(
            "raw ECDSA signature of {} bytes",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let sig = EcdsaSig {
        r: UintRef::new(r).map_err(malformed)?,
        s: UintRef::new(s).map_err(malformed)?,
    };
    sig.to_der().map_err(malformed)
}

/// DER `SEQUENCE { r, s }` → fixed-width `r ‖ s` with `width` bytes per integer.
pub fn ecdsa_der_to_raw(der_sig: &[u8], width: usize) -> Result<Vec<u8>, HsmError> {
    let sig = EcdsaSig::from_der(der_sig).map_err(malformed)?;
    let mut out = vec![0u8; width * 2];
    for (i, v) in [sig.r.as_bytes(), sig.s.as_bytes()].into_iter().enumerate() {
        if v.len() > width {
            return Err(malformed("ECDSA integer wider than the curve"));
        }
        out[i * width + width - v.len()..(i + 1) * width].copy_from_slice(v);
    }
    Ok(out)
}

/// DER of the named-curve OID, as `CKA_EC_PARAMS` wants it.
pub(crate) fn ec_params(alg: KeyAlgorithm) -> Vec<u8> {
    curve_oid(alg)
        .and_then(|o| o.to_der().ok())
        .unwrap_or_default()
}

fn curve_oid(alg: KeyAlgorithm) -> Option<ObjectIdentifier> {
    match alg {
        KeyAlgorithm::EcP256 => Some(SECP_256_R_1),
        KeyAlgorithm::EcP384 => Some(SECP_384_R_1),
        _ => None,
    }
}

pub(crate) fn ec_coordinate_len(alg: KeyAlgorithm) -> usize {
    match alg {
        KeyAlgorithm::EcP384 => 48,
        _ => 32,
    }
}

/// Curve from `CKA_EC_PARAMS`.
pub(crate) fn ec_alg_from_params(params: &[u8]) -> Result<KeyAlgorithm, HsmError> {
    let oid = ObjectIdentifier::from_der(params)
        .map_err(|_| HsmError::UnsupportedKey("EC parameters are not a named curve".into()))?;
    if oid == SECP_256_R_1 {
        Ok(KeyAlgorithm::EcP256)
    } else if oid == SECP_384_R_1 {
        Ok(KeyAlgorithm::EcP384)
    } else {
        Err(HsmError::UnsupportedKey(format!("EC curve {oid}")))
    }
}

/// SPKI for an EC public key. `ec_point` is `CKA_EC_POINT`: a DER OCTET STRING holding the
/// uncompressed point (PKCS#11 2.40), or the bare point (some vendor modules).
pub(crate) fn ec_spki(alg: KeyAlgorithm, ec_point: &[u8]) -> Result<Vec<u8>, HsmError> {
    let width = ec_coordinate_len(alg);
    let point: Vec<u8> = if ec_point.len() == 2 * width + 1 && ec_point[0] == 4 {
        ec_point.to_vec()
    } else {
        der::asn1::OctetString::from_der(ec_point)
            .map_err(malformed)?
            .as_bytes()
            .to_vec()
    };
    if point.len() != 2 * width + 1 || point[0] != 4 {
        return Err(malformed(
            "EC point is not an uncompressed point of the expected curve",
        ));
    }
    let oid = curve_oid(alg).ok_or_else(|| HsmError::UnsupportedKey(alg.to_string()))?;
    let spki = SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: ID_EC_PUBLIC_KEY,
            parameters: Some(der::Any::from(&oid)),
        },
        subject_public_key: BitString::from_bytes(&point).map_err(malformed)?,
    };
    spki.to_der().map_err(malformed)
}

/// SPKI for an RSA public key from its modulus and public exponent (big-endian, unsigned).
pub(crate) fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, HsmError> {
    let key = RsaPublicKey {
        modulus: UintRef::new(modulus).map_err(malformed)?,
        public_exponent: UintRef::new(exponent).map_err(malformed)?,
    }
    .to_der()
    .map_err(malformed)?;
    let spki = SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: RSA_ENCRYPTION,
            parameters: Some(der::Any::from(der::asn1::Null)),
        },
        subject_public_key: BitString::from_bytes(&key).map_err(malformed)?,
    };
    spki.to_der().map_err(malformed)
}

pub(crate) fn rsa_alg_from_bits(bits: usize) -> Result<KeyAlgorithm, HsmError> {
    Ok(match bits {
        2048 => KeyAlgorithm::Rsa2048,
        3072 => KeyAlgorithm::Rsa3072,
        4096 => KeyAlgorithm::Rsa4096,
        other => {
            return Err(HsmError::UnsupportedKey(format!(
                "RSA modulus of {other} bits"
            )));
        }
    })
}

/// What `ring` needs to verify: the algorithm and the raw key bytes (EC point or RSAPublicKey).
pub(crate) struct ParsedSpki {
    pub algorithm: KeyAlgorithm,
    pub key_bytes: Vec<u8>,
}

pub(crate) fn parse_spki(spki_der: &[u8]) -> Result<ParsedSpki, HsmError> {
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der).map_err(malformed)?;
    let key_bytes = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| malformed("public key bit string has unused bits"))?
        .to_vec();
    let algorithm = if spki.algorithm.oid == ID_EC_PUBLIC_KEY {
        let params = spki
            .algorithm
            .parameters
            .as_ref()
            .ok_or_else(|| malformed("EC key without curve"))?;
        let oid: ObjectIdentifier = params.decode_as().map_err(malformed)?;
        ec_alg_from_params(&oid.to_der().map_err(malformed)?)?
    } else if spki.algorithm.oid == RSA_ENCRYPTION {
        let key = RsaPublicKey::from_der(&key_bytes).map_err(malformed)?;
        let m = key.modulus.as_bytes();
        let bits = m.len() * 8 - m.first().map(|b| b.leading_zeros() as usize).unwrap_or(0);
        rsa_alg_from_bits(bits)?
    } else {
        return Err(HsmError::UnsupportedKey(format!(
            "public key algorithm {}",
            spki.algorithm.oid
        )));
    };
    let _: Option<AnyRef<'_>> = None;
    Ok(ParsedSpki {
        algorithm,
        key_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_raw_der_round_trip() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // high bit: needs a leading zero in DER
        raw[63] = 1;
        raw[32] = 0; // s with leading zeros
        let der_sig = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(der_sig[0], 0x30);
        assert_eq!(ecdsa_der_to_raw(&der_sig, 32).unwrap(), raw);
    }

    #[test]
    fn ecdsa_bad_input_is_an_error() {
        assert!(ecdsa_raw_to_der(&[]).is_err());
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
        assert!(ecdsa_der_to_raw(&[0x30, 0x05, 1], 32).is_err());
        assert!(ecdsa_der_to_raw(b"garbage", 32).is_err());
        let wide = ecdsa_raw_to_der(&[0x7f; 96]).unwrap();
        assert!(ecdsa_der_to_raw(&wide, 32).is_err());
    }

    #[test]
    fn ec_params_round_trip() {
        for alg in [KeyAlgorithm::EcP256, KeyAlgorithm::EcP384] {
            assert_eq!(ec_alg_from_params(&ec_params(alg)).unwrap(), alg);
        }
        assert!(ec_alg_from_params(&[0x05, 0x00]).is_err());
    }
}
