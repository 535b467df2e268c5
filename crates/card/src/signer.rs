//! [`CardSigner`]: a professional's document-signature key on the card, as a [`cps_hsm::Signer`].
//!
//! The key is always the PIV **digital signature** key (slot 9C); no constructor takes a slot, so
//! a signer over the authentication key (9A, `cps-auth`) cannot be made. At construction the
//! certificate of slot 9C is read and must be a `cps-sign` certificate
//! ([`SignCertificateRule`]); before **each** signature the PIN is verified (PIV gives the 9C
//! key a PIN-always policy; it is done explicitly here too, so a card that does not enforce it
//! still never signs without the PIN), and the verified state is dropped after it. Each
//! signature is checked against the certificate's key before it is returned, so a card whose
//! 9C key is not the certified one signs nothing.
//!
//! What makes a certificate `cps-sign` (see `certs/cps-sign.toml` against `certs/cps-auth.toml`):
//!
//! * keyUsage **nonRepudiation** (contentCommitment): the signature-with-commitment bit, which
//!   `cps-auth` (digitalSignature only) never carries;
//! * **no extendedKeyUsage**: `cps-auth` carries clientAuth, and any EKU means the key was
//!   certified for something else;
//! * one of the `cps-sign` **certificate policies**: the profile's own identity, which no other
//!   profile writes.
//!
//! All three are required; the policy alone would already separate the two card keys, the key
//! usage and EKU checks refuse a certificate made for another purpose under the same policy.

use std::sync::Mutex;

use const_oid::ObjectIdentifier;
use der::Decode;
use zeroize::Zeroizing;

use crate::error::CardError;
use crate::piv::{Piv, Slot, pad_pin};
use crate::{KeyAlgorithm as CardAlgorithm, Transport};
use cps_hsm::{HsmError, KeyAlgorithm, SigFormat, SignatureAlgorithm, Signer};

const ID_CE_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const ID_CE_CERTIFICATE_POLICIES: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.32");
const ID_CE_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");

/// Which certificates count as `cps-sign`: the policy OIDs of the profile (the other two
/// properties, nonRepudiation and no EKU, are fixed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignCertificateRule {
    policies: Vec<ObjectIdentifier>,
}

impl SignCertificateRule {
    /// The policies of `profile` (the appliance's `cps-sign`).
    pub fn from_profile(profile: &cps_pki::profile::Profile) -> Result<Self, CardSignerError> {
        let policies = profile
            .policies
            .iter()
            .map(|p| {
                ObjectIdentifier::new(p.as_str())
                    .map_err(|e| CardSignerError::Rule(format!("policy {}: {e}", p.as_str())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if policies.is_empty() {
            return Err(CardSignerError::Rule(format!(
                "profile '{}' writes no certificate policy",
                profile.name
            )));
        }
        Ok(SignCertificateRule { policies })
    }

    /// The built-in `cps-sign` profile.
    pub fn builtin() -> Result<Self, CardSignerError> {
        let profiles = cps_pki::profile::builtin_profiles();
        let p = profiles
            .get("cps-sign")
            .ok_or_else(|| CardSignerError::Rule("no built-in cps-sign profile".into()))?;
        Self::from_profile(p)
    }

    /// Why `der` is not a `cps-sign` certificate, if it is not.
    pub fn check(&self, der: &[u8]) -> Result<(), CardSignerError> {
        let not = |why: &str| CardSignerError::NotSignCertificate(why.to_owned());
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| CardSignerError::Certificate(e.to_string()))?;
        let exts = cert
            .tbs_certificate()
            .extensions()
            .cloned()
            .unwrap_or_default();
        let value = |oid: ObjectIdentifier| {
            let mut it = exts.iter().filter(|e| e.extn_id == oid);
            match (it.next(), it.next()) {
                (_, Some(_)) => Err(CardSignerError::Certificate(format!(
                    "extension {oid} appears twice"
                ))),
                (e, None) => Ok(e.map(|e| e.extn_value.as_bytes())),
            }
        };
        let bad = |e: der::Error| CardSignerError::Certificate(e.to_string());
        if let Some(bc) = value(ID_CE_BASIC_CONSTRAINTS)?
            && x509_cert::ext::pkix::BasicConstraints::from_der(bc)
                .map_err(bad)?
                .ca
        {
            return Err(not("it is a CA certificate"));
        }
        let ku = value(ID_CE_KEY_USAGE)?
            .ok_or_else(|| not("it has no key usage"))
            .and_then(|v| x509_cert::ext::pkix::KeyUsage::from_der(v).map_err(bad))?;
        if !ku.non_repudiation() {
            return Err(not("its key usage lacks nonRepudiation"));
        }
        if value(ID_CE_EXT_KEY_USAGE)?.is_some() {
            return Err(not(
                "it has an extended key usage (a cps-sign certificate has none)",
            ));
        }
        let policies = match value(ID_CE_CERTIFICATE_POLICIES)? {
            Some(v) => x509_cert::ext::pkix::CertificatePolicies::from_der(v).map_err(bad)?,
            None => return Err(not("it has no certificate policy")),
        };
        if !policies
            .0
            .iter()
            .any(|p| self.policies.contains(&p.policy_identifier))
        {
            return Err(not("it does not carry the cps-sign certificate policy"));
        }
        Ok(())
    }
}

/// Why a [`CardSigner`] cannot be made or cannot sign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CardSignerError {
    #[error(transparent)]
    Card(#[from] CardError),
    #[error("the card holds no certificate in slot 9C (digital signature)")]
    NoCertificate,
    #[error("the certificate of slot 9C cannot be read: {0}")]
    Certificate(String),
    /// The 9C certificate is not a `cps-sign` certificate.
    #[error("the certificate of slot 9C is not a cps-sign certificate: {0}")]
    NotSignCertificate(String),
    #[error("the card's signature key cannot sign here: {0}")]
    Unsupported(String),
    /// The card's 9C key did not make a signature that the certificate's key verifies.
    #[error("the card's signature key does not match the certificate of slot 9C")]
    KeyMismatch,
    #[error("cps-sign rule: {0}")]
    Rule(String),
    #[error("the card connection is unusable after a failure in another thread")]
    Poisoned,
}

/// The professional's signature key (slot 9C) of a PIV card, as a [`Signer`].
pub struct CardSigner<T: Transport + Send> {
    piv: Mutex<Piv<T>>,
    pin: Zeroizing<String>,
    certificate: Vec<u8>,
    spki: Vec<u8>,
    key: KeyAlgorithm,
    card_algorithm: CardAlgorithm,
    label: String,
}

impl<T: Transport + Send> CardSigner<T> {
    /// The signer of the card behind `piv` (the PIV application selected), with the PIN that
    /// will be verified before each signature (its format is checked now; the card is not asked
    /// until the first signature). Refused unless slot 9C holds a certificate that `rule` accepts
    /// and whose key the card can use (P-256 or RSA-2048).
    pub fn open(
        mut piv: Piv<T>,
        pin: Zeroizing<String>,
        rule: &SignCertificateRule,
    ) -> Result<Self, CardSignerError> {
        pad_pin("PIN", &pin)?;
        let certificate = piv
            .read_certificate(Slot::Signature)?
            .ok_or(CardSignerError::NoCertificate)?;
        rule.check(&certificate)?;
        let parsed = cps_pki::parse_certificate(&certificate)
            .map_err(|e| CardSignerError::Certificate(e.to_string()))?;
        let key = cps_hsm::key_algorithm_of_spki(&parsed.spki)
            .map_err(|e| CardSignerError::Unsupported(e.to_string()))?;
        let card_algorithm = match key {
            KeyAlgorithm::EcP256 => CardAlgorithm::EccP256,
            KeyAlgorithm::Rsa2048 => CardAlgorithm::Rsa2048,
            other => {
                return Err(CardSignerError::Unsupported(format!(
                    "{other} keys are not supported by the card"
                )));
            }
        };
        let label = format!("card {} 9C ({})", piv.label(), parsed.subject);
        Ok(CardSigner {
            piv: Mutex::new(piv),
            pin,
            certificate,
            spki: parsed.spki,
            key,
            card_algorithm,
            label,
        })
    }

    /// The `cps-sign` certificate of slot 9C (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// The signature algorithm the card makes with this key (SHA-256 hashing on the host).
    pub fn signature_algorithm(&self) -> SignatureAlgorithm {
        match self.card_algorithm {
            CardAlgorithm::EccP256 => SignatureAlgorithm::EcdsaSha256,
            CardAlgorithm::Rsa2048 => SignatureAlgorithm::RsaPkcs1Sha256,
        }
    }

    /// PIN, then a signature over `message` with the 9C key (ECDSA: DER; RSA: PKCS#1 v1.5),
    /// checked against the certificate's key; the PIN state is reset afterwards.
    pub fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, CardSignerError> {
        let mut piv = self.piv.lock().map_err(|_| CardSignerError::Poisoned)?;
        piv.verify_pin(&self.pin)?;
        let signed = piv.sign(Slot::Signature, self.card_algorithm, message);
        // A PIN-always key forgets the verification by itself; this also covers a card that
        // does not. A failure here does not void the signature (the card is reset when the
        // connection is dropped).
        let _ = piv.logout();
        let signature = signed?;
        cps_hsm::verify_signature(
            &self.spki,
            self.signature_algorithm(),
            message,
            &signature,
            SigFormat::Der,
        )
        .map_err(|_| CardSignerError::KeyMismatch)?;
        Ok(signature)
    }

    /// Give the card back.
    pub fn into_piv(self) -> Result<Piv<T>, CardSignerError> {
        self.piv.into_inner().map_err(|_| CardSignerError::Poisoned)
    }
}

impl<T: Transport + Send> Signer for CardSigner<T> {
    fn label(&self) -> &str {
        &self.label
    }

    fn key_algorithm(&self) -> KeyAlgorithm {
        self.key
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
        if alg != self.signature_algorithm() {
            return Err(HsmError::AlgorithmMismatch {
                key: self.key,
                signature: alg,
            });
        }
        let der = self.sign_message(message).map_err(|e| match e {
            CardSignerError::KeyMismatch => HsmError::BadSignature,
            e => HsmError::Card(e.to_string()),
        })?;
        match (alg.is_ecdsa(), format) {
            (true, SigFormat::Raw) => cps_hsm::ecdsa_der_to_raw(&der, 32),
            _ => Ok(der),
        }
    }
}
