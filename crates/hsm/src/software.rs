//! An in-memory [`Signer`] for unit tests of the crates above the HSM layer.

use ring::rand::SystemRandom;
use ring::signature::{self as rs, KeyPair};

use crate::encoding::parse_spki;
use crate::{HsmError, KeyAlgorithm, SigFormat, SignatureAlgorithm, Signer};

enum Key {
    P256(rs::EcdsaKeyPair, rs::EcdsaKeyPair),
    P384(rs::EcdsaKeyPair, rs::EcdsaKeyPair),
    Rsa(rs::RsaKeyPair),
}

/// A software key pair (ring). Never used for the appliance's own keys: those live in the HSM.
pub struct SoftwareSigner {
    label: String,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
    key: Key,
    rng: SystemRandom,
}

impl SoftwareSigner {
    /// Generate an EC key (P-256 or P-384). RSA keys come from [`SoftwareSigner::from_pkcs8`].
    pub fn generate(label: &str, alg: KeyAlgorithm) -> Result<Self, HsmError> {
        let rng = SystemRandom::new();
        let fixed = match alg {
            KeyAlgorithm::EcP256 => &rs::ECDSA_P256_SHA256_FIXED_SIGNING,
            KeyAlgorithm::EcP384 => &rs::ECDSA_P384_SHA384_FIXED_SIGNING,
            other => {
                return Err(HsmError::UnsupportedKey(format!(
                    "software generation of {other} keys (use from_pkcs8)"
                )));
            }
        };
        let pkcs8 = rs::EcdsaKeyPair::generate_pkcs8(fixed, &rng)
            .map_err(|_| HsmError::Malformed("EC key generation failed".into()))?;
        Self::from_pkcs8(label, pkcs8.as_ref())
    }

    /// Load a PKCS#8 private key (EC P-256/P-384 or RSA ≥ 2048).
    pub fn from_pkcs8(label: &str, pkcs8: &[u8]) -> Result<Self, HsmError> {
        let rng = SystemRandom::new();
        let bad = |_| HsmError::Malformed("PKCS#8 key not usable".into());
        let (key, algorithm, spki) = if let Ok(k) =
            rs::EcdsaKeyPair::from_pkcs8(&rs::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
        {
            let spki = crate::encoding::ec_spki(KeyAlgorithm::EcP256, k.public_key().as_ref())?;
            let asn1 =
                rs::EcdsaKeyPair::from_pkcs8(&rs::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng)
                    .map_err(bad)?;
            (Key::P256(k, asn1), KeyAlgorithm::EcP256, spki)
        } else if let Ok(k) =
            rs::EcdsaKeyPair::from_pkcs8(&rs::ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8, &rng)
        {
            let spki = crate::encoding::ec_spki(KeyAlgorithm::EcP384, k.public_key().as_ref())?;
            let asn1 =
                rs::EcdsaKeyPair::from_pkcs8(&rs::ECDSA_P384_SHA384_ASN1_SIGNING, pkcs8, &rng)
                    .map_err(bad)?;
            (Key::P384(k, asn1), KeyAlgorithm::EcP384, spki)
        } else {
            let k = rs::RsaKeyPair::from_pkcs8(pkcs8)
                .map_err(|e| HsmError::Malformed(format!("PKCS#8 key: {e}")))?;
            let der = rsa_public_to_spki(k.public().as_ref())?;
            let alg = parse_spki(&der)?.algorithm;
            (Key::Rsa(k), alg, der)
        };
        Ok(SoftwareSigner {
            label: label.into(),
            algorithm,
            spki,
            key,
            rng,
        })
    }
}

/// ring exposes an RSA public key as DER `RSAPublicKey`; wrap it in a SPKI.
fn rsa_public_to_spki(rsa_public_key: &[u8]) -> Result<Vec<u8>, HsmError> {
    use der::Decode;
    #[derive(der::Sequence)]
    struct Rpk<'a> {
        n: der::asn1::UintRef<'a>,
        e: der::asn1::UintRef<'a>,
    }
    let k = Rpk::from_der(rsa_public_key).map_err(|e| HsmError::Malformed(e.to_string()))?;
    crate::encoding::rsa_spki(k.n.as_bytes(), k.e.as_bytes())
}

impl Signer for SoftwareSigner {
    fn label(&self) -> &str {
        &self.label
    }

    fn key_algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign(
        &self,
        alg: SignatureAlgorithm,
        message: &[u8],
        format: SigFormat,
    ) -> Result<Vec<u8>, HsmError> {
        if !alg.fits(self.algorithm) {
            return Err(HsmError::AlgorithmMismatch {
                key: self.algorithm,
                signature: alg,
            });
        }
        let fail = |_| HsmError::Malformed("software signing failed".into());
        match (&self.key, alg) {
            (Key::P256(fixed, asn1), SignatureAlgorithm::EcdsaSha256)
            | (Key::P384(fixed, asn1), SignatureAlgorithm::EcdsaSha384) => match format {
                SigFormat::Raw => Ok(fixed
                    .sign(&self.rng, message)
                    .map_err(fail)?
                    .as_ref()
                    .to_vec()),
                SigFormat::Der => Ok(asn1
                    .sign(&self.rng, message)
                    .map_err(fail)?
                    .as_ref()
                    .to_vec()),
            },
            (Key::P256(..) | Key::P384(..), _) => Err(HsmError::AlgorithmMismatch {
                key: self.algorithm,
                signature: alg,
            }),
            (Key::Rsa(k), _) => {
                let enc: &dyn rs::RsaEncoding = match alg {
                    SignatureAlgorithm::RsaPkcs1Sha256 => &rs::RSA_PKCS1_SHA256,
                    SignatureAlgorithm::RsaPkcs1Sha384 => &rs::RSA_PKCS1_SHA384,
                    SignatureAlgorithm::RsaPssSha256 => &rs::RSA_PSS_SHA256,
                    SignatureAlgorithm::RsaPssSha384 => &rs::RSA_PSS_SHA384,
                    _ => {
                        return Err(HsmError::AlgorithmMismatch {
                            key: self.algorithm,
                            signature: alg,
                        });
                    }
                };
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(enc, &self.rng, message, &mut sig).map_err(fail)?;
                Ok(sig)
            }
        }
    }
}
