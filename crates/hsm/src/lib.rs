//! PKCS#11 access for cps-trust.
//!
//! Every private key of the appliance lives in an HSM reached through PKCS#11 (SoftHSM2 by default,
//! a vendor HSM by configuration). This crate is the only place that talks to the module:
//!
//! * [`Hsm::open`] loads a module by path, calls `C_Initialize` with OS locking, finds the token by
//!   **label** (slot ids are not stable), logs in once with a PIN read from an environment variable or
//!   an owner-only file ([`PinSource`]) and keeps a pool of sessions ([`cryptoki::session::Session`]
//!   is `Send` but not `Sync`: one session per concurrent signer).
//! * [`Hsm::generate_key_pair`] creates signing key pairs with the mandated attributes
//!   (token, private, sensitive, never extractable, sign only).
//! * [`HsmKey`] implements [`Signer`]: RSA PKCS#1 v1.5 and PSS, ECDSA with a software pre-hash when
//!   the token lacks the combined mechanism (SoftHSM 2.6.1 has no `CKM_ECDSA_SHA256`).
//! * [`Hsm::self_check`] refuses keys that are missing, extractable or not sensitive.
//! * [`Hsm::generate_mac_key`] / [`Hsm::mac_key`]: non-extractable generic secrets that compute
//!   HMAC-SHA256 ([`MacKey`]), to derive per-card secrets inside the token.
//!
//! The rest of the appliance signs only through the small [`Signer`] trait; [`SoftwareSigner`] is an
//! in-memory implementation for unit tests of the crates above this one.

mod encoding;
mod error;
mod mac;
pub mod metrics;
mod pin;
mod pkcs11;
mod software;

pub use encoding::{ecdsa_der_to_raw, ecdsa_raw_to_der};
pub use error::{HsmError, hint_for_rv};
pub use mac::{MAC_KEY_LEN, MacKey, SoftwareMacKey};
pub use pin::PinSource;
pub use pkcs11::{
    Hsm, HsmConfig, HsmKey, HsmMacKey, KeyAttributes, KeyCheck, SelfCheckReport, TokenSummary,
    init_token_on_free_slot,
};
pub use software::SoftwareSigner;

/// Algorithms of the key pairs the appliance creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EcP256,
    EcP384,
}

impl KeyAlgorithm {
    /// Name used in configuration files and reports (`rsa2048`, `p256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa2048 => "rsa2048",
            KeyAlgorithm::Rsa3072 => "rsa3072",
            KeyAlgorithm::Rsa4096 => "rsa4096",
            KeyAlgorithm::EcP256 => "p256",
            KeyAlgorithm::EcP384 => "p384",
        }
    }

    /// Parse the configuration name.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "rsa2048" => KeyAlgorithm::Rsa2048,
            "rsa3072" => KeyAlgorithm::Rsa3072,
            "rsa4096" => KeyAlgorithm::Rsa4096,
            "p256" | "ecdsa-p256" => KeyAlgorithm::EcP256,
            "p384" | "ecdsa-p384" => KeyAlgorithm::EcP384,
            _ => return None,
        })
    }

    pub fn is_rsa(self) -> bool {
        matches!(
            self,
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096
        )
    }

    /// RSA modulus size in bits, or the EC field size.
    pub fn bits(self) -> u32 {
        match self {
            KeyAlgorithm::Rsa2048 => 2048,
            KeyAlgorithm::Rsa3072 => 3072,
            KeyAlgorithm::Rsa4096 => 4096,
            KeyAlgorithm::EcP256 => 256,
            KeyAlgorithm::EcP384 => 384,
        }
    }

    /// The signature algorithm used by default with a key of this kind.
    pub fn default_signature(self) -> SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcP256 => SignatureAlgorithm::EcdsaSha256,
            KeyAlgorithm::EcP384 => SignatureAlgorithm::EcdsaSha384,
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => SignatureAlgorithm::RsaPkcs1Sha256,
            KeyAlgorithm::Rsa4096 => SignatureAlgorithm::RsaPkcs1Sha384,
        }
    }
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Signature algorithms a [`Signer`] can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureAlgorithm {
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    /// RSASSA-PSS, MGF1 with the same hash, salt length = hash length.
    RsaPssSha256,
    RsaPssSha384,
    EcdsaSha256,
    EcdsaSha384,
}

impl SignatureAlgorithm {
    pub fn is_ecdsa(self) -> bool {
        matches!(
            self,
            SignatureAlgorithm::EcdsaSha256 | SignatureAlgorithm::EcdsaSha384
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            SignatureAlgorithm::RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
            SignatureAlgorithm::RsaPkcs1Sha384 => "rsa-pkcs1-sha384",
            SignatureAlgorithm::RsaPssSha256 => "rsa-pss-sha256",
            SignatureAlgorithm::RsaPssSha384 => "rsa-pss-sha384",
            SignatureAlgorithm::EcdsaSha256 => "ecdsa-sha256",
            SignatureAlgorithm::EcdsaSha384 => "ecdsa-sha384",
        }
    }

    /// Whether a key of algorithm `key` can produce this signature.
    pub fn fits(self, key: KeyAlgorithm) -> bool {
        if self.is_ecdsa() {
            !key.is_rsa()
        } else {
            key.is_rsa()
        }
    }

    pub(crate) fn digest(self) -> &'static ring::digest::Algorithm {
        match self {
            SignatureAlgorithm::RsaPkcs1Sha256
            | SignatureAlgorithm::RsaPssSha256
            | SignatureAlgorithm::EcdsaSha256 => &ring::digest::SHA256,
            SignatureAlgorithm::RsaPkcs1Sha384
            | SignatureAlgorithm::RsaPssSha384
            | SignatureAlgorithm::EcdsaSha384 => &ring::digest::SHA384,
        }
    }
}

impl std::fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How an ECDSA signature is returned. RSA signatures are the same in both formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigFormat {
    /// `SEQUENCE { r INTEGER, s INTEGER }`, as X.509, CRLs and OCSP want it.
    Der,
    /// Fixed-width `r ‖ s`, as XML-DSig wants it.
    Raw,
}

/// The one way the rest of the appliance signs. Implemented by [`HsmKey`] (PKCS#11) and
/// [`SoftwareSigner`] (in memory, for unit tests).
pub trait Signer: Send + Sync {
    /// Label of the key (the PKCS#11 `CKA_LABEL`, or a name for software keys).
    fn label(&self) -> &str;
    /// Algorithm of the key pair.
    fn key_algorithm(&self) -> KeyAlgorithm;
    /// DER `SubjectPublicKeyInfo` of the public key.
    fn public_key_der(&self) -> &[u8];
    /// Sign `message` (the whole message: hashing is part of the operation).
    fn sign(
        &self,
        alg: SignatureAlgorithm,
        message: &[u8],
        format: SigFormat,
    ) -> Result<Vec<u8>, HsmError>;
}

/// The algorithm of the key in a DER `SubjectPublicKeyInfo` (EC P-256 / P-384, RSA 2048 to 4096).
pub fn key_algorithm_of_spki(spki_der: &[u8]) -> Result<KeyAlgorithm, HsmError> {
    encoding::parse_spki(spki_der).map(|s| s.algorithm)
}

/// Verify a signature with `ring`, against a DER `SubjectPublicKeyInfo`. Used by tests and by the
/// appliance's own round-trip checks (a key proves it works once after generation).
pub fn verify_signature(
    spki_der: &[u8],
    alg: SignatureAlgorithm,
    message: &[u8],
    signature: &[u8],
    format: SigFormat,
) -> Result<(), HsmError> {
    use ring::signature as rs;
    let spki = encoding::parse_spki(spki_der)?;
    let verifier: &dyn rs::VerificationAlgorithm = match (alg, format) {
        (SignatureAlgorithm::EcdsaSha256, SigFormat::Der) => &rs::ECDSA_P256_SHA256_ASN1,
        (SignatureAlgorithm::EcdsaSha256, SigFormat::Raw) => &rs::ECDSA_P256_SHA256_FIXED,
        (SignatureAlgorithm::EcdsaSha384, SigFormat::Der) => &rs::ECDSA_P384_SHA384_ASN1,
        (SignatureAlgorithm::EcdsaSha384, SigFormat::Raw) => &rs::ECDSA_P384_SHA384_FIXED,
        (SignatureAlgorithm::RsaPkcs1Sha256, _) => &rs::RSA_PKCS1_2048_8192_SHA256,
        (SignatureAlgorithm::RsaPkcs1Sha384, _) => &rs::RSA_PKCS1_2048_8192_SHA384,
        (SignatureAlgorithm::RsaPssSha256, _) => &rs::RSA_PSS_2048_8192_SHA256,
        (SignatureAlgorithm::RsaPssSha384, _) => &rs::RSA_PSS_2048_8192_SHA384,
    };
    // ECDSA over P-384 with SHA-256 (or P-256 with SHA-384) is legal but not offered by ring's
    // verifier set; the appliance never produces those combinations.
    if alg.is_ecdsa() == spki.algorithm.is_rsa() {
        return Err(HsmError::AlgorithmMismatch {
            key: spki.algorithm,
            signature: alg,
        });
    }
    rs::UnparsedPublicKey::new(verifier, &spki.key_bytes)
        .verify(message, signature)
        .map_err(|_| HsmError::BadSignature)
}
