//! Object identifiers used by the responder.

use const_oid::ObjectIdentifier;

const fn oid(s: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(s)
}

pub(crate) const SHA1: ObjectIdentifier = oid("1.3.14.3.2.26");
pub(crate) const SHA256: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.1");
pub(crate) const SHA384: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.2");
pub(crate) const SHA512: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.3");

/// id-pkix-ocsp-basic
pub(crate) const OCSP_BASIC: ObjectIdentifier = oid("1.3.6.1.5.5.7.48.1.1");
/// id-pkix-ocsp-nonce (RFC 6960 §4.4.1, RFC 8954)
pub(crate) const NONCE: ObjectIdentifier = oid("1.3.6.1.5.5.7.48.1.2");
/// id-pkix-ocsp-response (acceptable response types, RFC 6960 §4.4.3)
pub(crate) const ACCEPTABLE_RESPONSES: ObjectIdentifier = oid("1.3.6.1.5.5.7.48.1.4");
/// id-pkix-ocsp-service-locator (RFC 6960 §4.4.6)
pub(crate) const SERVICE_LOCATOR: ObjectIdentifier = oid("1.3.6.1.5.5.7.48.1.7");
/// id-pkix-ocsp-pref-sig-algs (RFC 6960 §4.4.7)
pub(crate) const PREFERRED_SIGNATURE_ALGORITHMS: ObjectIdentifier = oid("1.3.6.1.5.5.7.48.1.8");
/// id-pkix-ocsp-extended-revoke (RFC 6960 §4.4.8)
pub(crate) const EXTENDED_REVOKE: ObjectIdentifier = oid("1.3.6.1.5.5.7.48.1.9");
/// id-kp-OCSPSigning
pub(crate) const KP_OCSP_SIGNING: ObjectIdentifier = oid("1.3.6.1.5.5.7.3.9");
/// id-ce-extKeyUsage
pub(crate) const EXT_KEY_USAGE: ObjectIdentifier = oid("2.5.29.37");
