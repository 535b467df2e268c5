//! The XML-DSig algorithms this crate produces and accepts.

use cps_hsm::SignatureAlgorithm;

use crate::ns;

/// A `SignatureMethod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XmlSignatureAlgorithm {
    /// RSA PKCS#1 v1.5 with SHA-256.
    RsaSha256,
    /// RSA PKCS#1 v1.5 with SHA-384.
    RsaSha384,
    /// RSA PKCS#1 v1.5 with SHA-512.
    RsaSha512,
    /// ECDSA P-256 with SHA-256 (`SignatureValue` is the raw `r ‖ s`).
    EcdsaSha256,
    /// ECDSA P-384 with SHA-384.
    EcdsaSha384,
}

impl XmlSignatureAlgorithm {
    /// Every algorithm, in preference order.
    pub const ALL: [XmlSignatureAlgorithm; 5] = [
        XmlSignatureAlgorithm::RsaSha256,
        XmlSignatureAlgorithm::EcdsaSha256,
        XmlSignatureAlgorithm::RsaSha384,
        XmlSignatureAlgorithm::EcdsaSha384,
        XmlSignatureAlgorithm::RsaSha512,
    ];

    /// The algorithm URI.
    pub fn uri(self) -> &'static str {
        match self {
            XmlSignatureAlgorithm::RsaSha256 => ns::sig::RSA_SHA256,
            XmlSignatureAlgorithm::RsaSha384 => ns::sig::RSA_SHA384,
            XmlSignatureAlgorithm::RsaSha512 => ns::sig::RSA_SHA512,
            XmlSignatureAlgorithm::EcdsaSha256 => ns::sig::ECDSA_SHA256,
            XmlSignatureAlgorithm::EcdsaSha384 => ns::sig::ECDSA_SHA384,
        }
    }

    /// Recognise an algorithm URI.
    pub fn from_uri(uri: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.uri() == uri)
    }

    /// Whether this is ECDSA.
    pub fn is_ecdsa(self) -> bool {
        matches!(
            self,
            XmlSignatureAlgorithm::EcdsaSha256 | XmlSignatureAlgorithm::EcdsaSha384
        )
    }

    /// The HSM operation producing this signature, when the HSM layer offers it.
    pub fn hsm_algorithm(self) -> Option<SignatureAlgorithm> {
        match self {
            XmlSignatureAlgorithm::RsaSha256 => Some(SignatureAlgorithm::RsaPkcs1Sha256),
            XmlSignatureAlgorithm::RsaSha384 => Some(SignatureAlgorithm::RsaPkcs1Sha384),
            XmlSignatureAlgorithm::EcdsaSha256 => Some(SignatureAlgorithm::EcdsaSha256),
            XmlSignatureAlgorithm::EcdsaSha384 => Some(SignatureAlgorithm::EcdsaSha384),
            XmlSignatureAlgorithm::RsaSha512 => None,
        }
    }

    /// The default XML signature for a key algorithm.
    pub fn for_key(key: cps_hsm::KeyAlgorithm) -> Self {
        match key {
            cps_hsm::KeyAlgorithm::EcP256 => XmlSignatureAlgorithm::EcdsaSha256,
            cps_hsm::KeyAlgorithm::EcP384 => XmlSignatureAlgorithm::EcdsaSha384,
            _ => XmlSignatureAlgorithm::RsaSha256,
        }
    }
}

/// A `DigestMethod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XmlDigestAlgorithm {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl XmlDigestAlgorithm {
    /// Every algorithm.
    pub const ALL: [XmlDigestAlgorithm; 3] = [
        XmlDigestAlgorithm::Sha256,
        XmlDigestAlgorithm::Sha384,
        XmlDigestAlgorithm::Sha512,
    ];

    /// The algorithm URI.
    pub fn uri(self) -> &'static str {
        match self {
            XmlDigestAlgorithm::Sha256 => ns::digest::SHA256,
            XmlDigestAlgorithm::Sha384 => ns::digest::SHA384,
            XmlDigestAlgorithm::Sha512 => ns::digest::SHA512,
        }
    }

    /// Recognise an algorithm URI.
    pub fn from_uri(uri: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.uri() == uri)
    }

    pub(crate) fn ring(self) -> &'static ring::digest::Algorithm {
        match self {
            XmlDigestAlgorithm::Sha256 => &ring::digest::SHA256,
            XmlDigestAlgorithm::Sha384 => &ring::digest::SHA384,
            XmlDigestAlgorithm::Sha512 => &ring::digest::SHA512,
        }
    }
}
