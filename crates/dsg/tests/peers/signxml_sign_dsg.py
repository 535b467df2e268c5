"""Make an IHE DSG detached signature with signxml's XAdESSigner.

usage: signxml_sign_dsg.py <key.pem> <chain.pem> <out.xml> <purpose-urn> uniqueId=path ...
The manifest (ds:Manifest Id="IHEManifest", one SHA-256 reference per document) is signed as
a detached reference; annotators give that reference the Manifest type, place the manifest in
a ds:Object of the signature and add the CommitmentTypeIndication, before SignedInfo is
signed. The signature is XAdES-BES (signxml adds no time-stamp).
"""
import base64
import hashlib
import sys

from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod, methods
from signxml.xades import XAdESSignaturePolicy, XAdESSigner

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
NSMAP = {"ds": DS_NS, "xades": XADES_NS}

key_path, chain_path, out_path, purpose = sys.argv[1:5]
docs = [a.split("=", 1) for a in sys.argv[5:]]
with open(key_path, "rb") as f:
    key = f.read()
with open(chain_path) as f:
    chain = f.read()

manifest = etree.Element(etree.QName(DS_NS, "Manifest"), nsmap=NSMAP, Id="IHEManifest")
for uid, path in docs:
    ref = etree.SubElement(manifest, etree.QName(DS_NS, "Reference"), URI=uid)
    etree.SubElement(ref, etree.QName(DS_NS, "DigestMethod"), Algorithm="http://www.w3.org/2001/04/xmlenc#sha256")
    with open(path, "rb") as f:
        etree.SubElement(ref, etree.QName(DS_NS, "DigestValue")).text = base64.b64encode(
            hashlib.sha256(f.read()).digest()
        ).decode()

policy = "urn:ihe:iti:dsg:detached:2014"


class DsgSigner(XAdESSigner):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.signed_data_object_properties_annotators.append(self.add_commitment)
        # After KeyInfo, before the XAdES annotator digests anything: type the manifest
        # reference and place the manifest inside the signature.
        self.signature_annotators.insert(1, self.place_manifest)

    def place_manifest(self, sig_root, signing_settings):
        ref = sig_root.find(f"{{{DS_NS}}}SignedInfo/{{{DS_NS}}}Reference")
        ref.set("Type", "http://www.w3.org/2000/09/xmldsig#Manifest")
        obj = etree.SubElement(sig_root, etree.QName(DS_NS, "Object"), nsmap=NSMAP)
        obj.append(manifest)

    def add_commitment(self, sdop, sig_root, signing_settings):
        cti = etree.SubElement(sdop, etree.QName(XADES_NS, "CommitmentTypeIndication"), nsmap=NSMAP)
        cid = etree.SubElement(cti, etree.QName(XADES_NS, "CommitmentTypeId"), nsmap=NSMAP)
        etree.SubElement(cid, etree.QName(XADES_NS, "Identifier"), nsmap=NSMAP).text = purpose
        etree.SubElement(cti, etree.QName(XADES_NS, "AllSignedDataObjects"), nsmap=NSMAP)


signer = DsgSigner(
    method=methods.detached,
    signature_algorithm=SignatureMethod.ECDSA_SHA256,
    digest_algorithm=DigestAlgorithm.SHA256,
    c14n_algorithm=CanonicalizationMethod.CANONICAL_XML_1_1_WITH_COMMENTS,
    signature_policy=XAdESSignaturePolicy(
        Identifier=policy,
        Description="IHE DSG detached",
        DigestMethod=DigestAlgorithm.SHA256,
        DigestValue=base64.b64encode(hashlib.sha256(policy.encode()).digest()).decode(),
    ),
)
sig = signer.sign(manifest, key=key, cert=chain)
with open(out_path, "wb") as f:
    f.write(etree.tostring(sig))
