"""Sign an assertion with signxml, the independent XML-DSig implementation.

usage: signxml_sign.py <document.xml> <key.pem> <cert.pem> [<chain.pem>...]

The document carries an empty `<ds:Signature Id="placeholder"/>` where the signature goes (right
after `Issuer`, as SAML requires). The signature is enveloped, over the root element's `ID`, with
exclusive c14n, SHA-256 and RSA-SHA256 (or ECDSA-SHA256 for an EC key); `KeyInfo` holds the
certificates given. The signed document goes to stdout, without an XML declaration.
"""
import sys

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from lxml import etree
from signxml import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConstructionMethod,
    SignatureMethod,
    XMLSigner,
)

doc, key_file, cert_files = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(key_file, "rb") as f:
    key_pem = f.read()
key = load_pem_private_key(key_pem, password=None)
method = (
    SignatureMethod.ECDSA_SHA256
    if isinstance(key, ec.EllipticCurvePrivateKey)
    else SignatureMethod.RSA_SHA256
)
certs = []
for c in cert_files:
    with open(c) as f:
        certs.append(f.read())
parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False)
with open(doc, "rb") as f:
    root = etree.fromstring(f.read(), parser)
signer = XMLSigner(
    method=SignatureConstructionMethod.enveloped,
    signature_algorithm=method,
    digest_algorithm=DigestAlgorithm.SHA256,
    c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
)
signed = signer.sign(root, key=key_pem, cert=certs)
sys.stdout.buffer.write(etree.tostring(signed))
