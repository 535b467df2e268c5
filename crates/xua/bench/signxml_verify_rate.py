"""In-process signxml verification rate over one assertion, for comparison with cps-xua.

usage: signxml_verify_rate.py <assertion.xml> <signer-cert.pem> rsa|ecdsa [seconds]
Prints the number of verifications per second on one thread (the GIL makes more threads
pointless), after checking that signxml returns the Assertion element.
"""
import sys
import time

from signxml import DigestAlgorithm, SignatureConfiguration, SignatureMethod, XMLVerifier

doc, cert, kind = sys.argv[1], sys.argv[2], sys.argv[3]
seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
method = SignatureMethod.RSA_SHA256 if kind == "rsa" else SignatureMethod.ECDSA_SHA256
config = SignatureConfiguration(
    signature_methods=frozenset({method}),
    digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
)
with open(doc, "rb") as f:
    data = f.read()
with open(cert) as f:
    pem = f.read()

verifier = XMLVerifier()
signed = verifier.verify(data, x509_cert=pem, expect_config=config).signed_xml
assert signed.tag == "{urn:oasis:names:tc:SAML:2.0:assertion}Assertion", signed.tag

n = 0
start = time.perf_counter()
cpu0 = time.thread_time()
while time.perf_counter() - start < seconds:
    XMLVerifier().verify(data, x509_cert=pem, expect_config=config)
    n += 1
wall = time.perf_counter() - start
cpu = time.thread_time() - cpu0
print(f"{n / wall:.0f} {n / cpu:.0f}")
