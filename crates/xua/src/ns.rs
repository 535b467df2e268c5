//! Namespace URIs, algorithm identifiers and attribute names used by VIHF assertions.

/// SAML 2.0 assertion namespace.
pub const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// XML-DSig namespace.
pub const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// Exclusive XML canonicalization 1.0 (without comments); also the namespace of `InclusiveNamespaces`.
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
/// Exclusive XML canonicalization 1.0 with comments (refused).
pub const EXC_C14N_WITH_COMMENTS: &str = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments";
/// The enveloped-signature transform.
pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
/// SOAP 1.2 envelope namespace.
pub const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
/// SOAP 1.1 envelope namespace (recognised only to be refused with a precise reason).
pub const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// WS-Security secext namespace (`wsse:Security`).
pub const WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
/// WS-Security utility namespace (`wsu:Id`).
pub const WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
/// The `xml:` namespace.
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
/// HL7 v3 namespace (coded values `Role`, `PurposeOfUse`).
pub const HL7: &str = "urn:hl7-org:v3";
/// XML Schema instance namespace (`xsi:type`).
pub const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// `Issuer/@Format` of a VIHF: the signer certificate's subject DN.
pub const NAMEID_X509_SUBJECT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName";
/// Bearer subject confirmation (IHE generic flavour).
pub const CM_BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

/// Digest algorithm URIs.
pub mod digest {
    /// SHA-256.
    pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
    /// SHA-384.
    pub const SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#sha384";
    /// SHA-512.
    pub const SHA512: &str = "http://www.w3.org/2001/04/xmlenc#sha512";
    /// SHA-1 (refused).
    pub const SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
}

/// Signature algorithm URIs.
pub mod sig {
    /// RSA PKCS#1 v1.5 with SHA-256.
    pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
    /// RSA PKCS#1 v1.5 with SHA-384.
    pub const RSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384";
    /// RSA PKCS#1 v1.5 with SHA-512.
    pub const RSA_SHA512: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512";
    /// ECDSA with SHA-256 (P-256 keys here).
    pub const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
    /// ECDSA with SHA-384 (P-384 keys here).
    pub const ECDSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384";
    /// RSA with SHA-1 (refused).
    pub const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
    /// HMAC-SHA1 (refused).
    pub const HMAC_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#hmac-sha1";
    /// HMAC-SHA256 (refused).
    pub const HMAC_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256";
}

/// VIHF attribute names (ANS CI-SIS "Volet Synchrone pour Client Lourd", DMP mapping).
pub mod attr {
    /// `VIHF_Version` (`3.0`, `4.0`).
    pub const VIHF_VERSION: &str = "VIHF_Version";
    /// XSPA subject id: "Nom, Prénom" of the professional.
    pub const SUBJECT_ID: &str = "urn:oasis:names:tc:xspa:1.0:subject:subject-id";
    /// XACML subject role (HL7v3 CE `Role` values; the first is the profession).
    pub const ROLE: &str = "urn:oasis:names:tc:xacml:2.0:subject:role";
    /// `Secteur_Activite` (`code^OID`).
    pub const SECTEUR_ACTIVITE: &str = "Secteur_Activite";
    /// `Identifiant_Structure` (struct_IdNat).
    pub const IDENTIFIANT_STRUCTURE: &str = "Identifiant_Structure";
    /// `Authentification_Mode` (`DIRECTE`, `INDIRECTE`, `INDIRECTE_RENFORCEE`).
    pub const AUTHENTIFICATION_MODE: &str = "Authentification_Mode";
    /// XACML resource id: the patient's INS in HL7 CX form.
    pub const RESOURCE_ID: &str = "urn:oasis:names:tc:xacml:2.0:resource:resource-id";
    /// `Ressource_URN` (`urn:dmp`).
    pub const RESSOURCE_URN: &str = "Ressource_URN";
    /// XSPA purpose of use (HL7v3 CE `PurposeOfUse`, TRE_R248 codes).
    pub const PURPOSE_OF_USE: &str = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse";
    /// Confidentiality code of the patient's record (HL7v3 CE), optional.
    pub const CONFIDENTIALITY_CODE: &str =
        "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code";
    /// `LPS_ID` (optional).
    pub const LPS_ID: &str = "LPS_ID";
    /// `LPS_Nom`.
    pub const LPS_NOM: &str = "LPS_Nom";
    /// `LPS_Version` (optional).
    pub const LPS_VERSION: &str = "LPS_Version";
    /// `LPS_ID_HOMOLOGATION_DMP`.
    pub const LPS_HOMOLOGATION: &str = "LPS_ID_HOMOLOGATION_DMP";
    /// The justification of a break-glass access. The VIHF specification read for this crate
    /// names no attribute for it; this is the appliance's own attribute, required whenever the
    /// purpose of use is `bris_de_glace`.
    pub const BREAK_GLASS_JUSTIFICATION: &str = "Justification_Bris_De_Glace";
}

/// OID of the TRE_R248 "mode d'accès" code system (purpose of use).
pub const PURPOSE_OF_USE_CODE_SYSTEM: &str = "1.2.250.1.213.1.1.4.248";
