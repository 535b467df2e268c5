//! Namespaces and algorithm identifiers of XAdES for IHE DSG.

pub use cps_xua::ns::DS;
/// XAdES 1.3.2.
pub const XADES: &str = "http://uri.etsi.org/01903/v1.3.2#";
/// Canonical XML 1.1.
pub const C14N11: &str = "http://www.w3.org/2006/12/xml-c14n11";
/// Canonical XML 1.1 with comments (the DSG profile's choice for `SignedInfo`).
pub const C14N11_WITH_COMMENTS: &str = "http://www.w3.org/2006/12/xml-c14n11#WithComments";
/// The base64 transform, and the `Encoding` of an enveloping object.
pub const BASE64: &str = "http://www.w3.org/2000/09/xmldsig#base64";
/// `Reference/@Type` of a manifest.
pub const TYPE_MANIFEST: &str = "http://www.w3.org/2000/09/xmldsig#Manifest";
/// `Reference/@Type` of XAdES signed properties.
pub const TYPE_SIGNED_PROPERTIES: &str = "http://uri.etsi.org/01903#SignedProperties";
/// The fixed ID of the DSG detached manifest.
pub const MANIFEST_ID: &str = "IHEManifest";
