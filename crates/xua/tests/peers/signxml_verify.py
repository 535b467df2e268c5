"""Verify an enveloped XML signature with signxml and print what it says was signed.

usage: signxml_verify.py <document.xml> <signer-cert.pem> rsa|ecdsa
Prints "<tag> <ID>" of the element signxml returns as signed; exits non-zero on failure.
"""
import sys

from signxml import DigestAlgorithm, SignatureConfiguration, SignatureMethod, XMLVerifier

doc, cert, kind = sys.argv[1], sys.argv[2], sys.argv[3]
method = SignatureMethod.RSA_SHA256 if kind == "rsa" else SignatureMethod.ECDSA_SHA256
config = SignatureConfiguration(
    signature_methods=frozenset({method}),
    digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
)
with open(doc, "rb") as f:
    data = f.read()
with open(cert) as f:
    pem = f.read()
result = XMLVerifier().verify(data, x509_cert=pem, expect_config=config)
signed = result.signed_xml
print(signed.tag, signed.get("ID"))
