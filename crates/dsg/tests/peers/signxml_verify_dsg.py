"""Verify an IHE DSG XAdES signature with signxml's XAdESVerifier, then its manifest.

usage: signxml_verify_dsg.py <signature.xml> <signer-cert.pem> <policy-urn> [uniqueId=path ...]
signxml checks the XML-DSig core and the XAdES signed properties (signing certificate digest,
signature policy). XML-DSig leaves manifest references to the application: each manifest
reference is checked here against the file given for its URI (a submission set reference,
digest one zero byte, needs no file). Prints "ok" and exits 0 only if everything holds.
"""
import base64
import hashlib
import sys

from signxml import DigestAlgorithm
from signxml.xades import XAdESSignatureConfiguration, XAdESSignaturePolicy, XAdESVerifier

DS = "{http://www.w3.org/2000/09/xmldsig#}"

sig_path, cert_path, policy = sys.argv[1], sys.argv[2], sys.argv[3]
files = dict(a.split("=", 1) for a in sys.argv[4:])
with open(sig_path, "rb") as f:
    data = f.read()
with open(cert_path) as f:
    pem = f.read()
expected_policy = XAdESSignaturePolicy(
    Identifier=policy,
    Description="",
    DigestMethod=DigestAlgorithm.SHA256,
    DigestValue=base64.b64encode(hashlib.sha256(policy.encode()).digest()).decode(),
)
results = XAdESVerifier().verify(
    data,
    x509_cert=pem,
    expect_signature_policy=expected_policy,
    expect_config=XAdESSignatureConfiguration(expect_references=2, location="./"),
)
manifests = [r.signed_xml for r in results if r.signed_xml is not None and r.signed_xml.tag == DS + "Manifest"]
if policy.endswith("detached:2014"):
    assert len(manifests) == 1, "the manifest is not among the signed references"
    checked = 0
    for ref in manifests[0].findall(DS + "Reference"):
        uri = ref.get("URI")
        assert ref.find(DS + "DigestMethod").get("Algorithm") == "http://www.w3.org/2001/04/xmlenc#sha256"
        value = base64.b64decode(ref.find(DS + "DigestValue").text)
        if value == b"\x00" and uri not in files:
            continue
        with open(files[uri], "rb") as f:
            actual = hashlib.sha256(f.read()).digest()
        assert actual == value, f"document {uri} does not match the manifest"
        checked += 1
    assert checked == len(files), "not every supplied document is in the manifest"
else:
    # The base64 transform: the signed data of the object reference is the document itself.
    signed = [r.signed_data for r in results]
    for p in files.values():
        with open(p, "rb") as f:
            assert f.read() in signed, "enveloped document differs"
print("ok")
