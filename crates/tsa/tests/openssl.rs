//! The TSA core against OpenSSL: queries made by `openssl ts -query`, answered by
//! [`Authority::respond`] with a software key certified by an OpenSSL-made CA, checked by
//! `openssl ts -reply -text` and `openssl ts -verify`; tokens made by `openssl ts -reply` are
//! accepted by [`verify_token`]; and every refusal and every forged token is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use cps_hsm::SoftwareSigner;
use cps_tsa::{
    Accuracy, Authority, FailInfo, HashAlg, Outcome, StampContext, TokenError, parse_response,
    verify_token,
};

const POLICY: &str = "1.3.6.1.4.1.32473.4.1";
const NOW: i64 = 1_796_515_200; // 2026-12-06T00:00:00Z

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(cps_trust_tests::peer("openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (ok, out) = openssl(dir, args);
    assert!(ok, "openssl {args:?}: {out}");
    out
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

/// A root CA and a TSA certificate for a key of `key_spec` (`ec` or `rsa`), with `eku` as the
/// extendedKeyUsage line.
fn pki(key_spec: &str, eku: &str) -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "root.key",
            "-out",
            "root.pem",
            "-subj",
            "/CN=Test Root/O=cps-trust/C=FR",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    let genkey: Vec<&str> = if key_spec == "rsa" {
        vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ]
    } else {
        vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ]
    };
    let mut args = genkey.clone();
    args.extend(["-out", "tsa.key"]);
    ok(d, &args);
    ok(
        d,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "tsa.key", "-outform", "DER", "-out", "tsa.p8",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        format!(
            "[tsa]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage={eku}\nsubjectKeyIdentifier=hash\n\
             authorityKeyIdentifier=keyid\n"
        ),
    )
    .unwrap();
    ok(
        d,
        &[
            "req",
            "-new",
            "-key",
            "tsa.key",
            "-subj",
            "/CN=Test TSA/O=cps-trust/C=FR",
            "-out",
            "tsa.csr",
        ],
    );
    ok(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "tsa.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-set_serial",
            "0x1234",
            "-days",
            "365",
            "-extfile",
            "ext.cnf",
            "-extensions",
            "tsa",
            "-outform",
            "DER",
            "-out",
            "tsa.der",
        ],
    );
    ok(
        d,
        &[
            "x509", "-inform", "DER", "-in", "tsa.der", "-out", "tsa.pem",
        ],
    );
    std::fs::write(d.join("data.txt"), b"a document to time-stamp\n").unwrap();
    std::fs::write(d.join("other.txt"), b"another document\n").unwrap();
    Pki { dir }
}

fn authority(p: &Pki) -> (Authority, SoftwareSigner) {
    let key = SoftwareSigner::from_pkcs8("tsa", &p.read("tsa.p8")).unwrap();
    let a = Authority::new(POLICY, p.read("tsa.der"), &key, true).unwrap();
    (a, key)
}

fn ctx(n: u8) -> StampContext {
    let mut serial = [0x5a; 16];
    serial[0] = 0x80 | n; // high bit set: the INTEGER needs a leading zero
    StampContext {
        now: NOW + i64::from(n),
        serial,
        accuracy: Some(Accuracy::from_micros(250_000)),
    }
}

fn now_ctx() -> StampContext {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    StampContext { now, ..ctx(1) }
}

#[test]
fn openssl_queries_get_tokens_openssl_verifies() {
    for key in ["ec", "rsa"] {
        let p = pki(key, "critical,timeStamping");
        let (tsa, signer) = authority(&p);
        let d = p.dir.path();
        for (i, extra) in [
            vec!["-sha256", "-cert"],
            vec!["-sha256", "-cert", "-no_nonce"],
            vec!["-sha512", "-cert"],
            vec!["-sha384"],
        ]
        .into_iter()
        .enumerate()
        {
            let mut args = vec!["ts", "-query", "-data", "data.txt", "-out", "q.tsq"];
            args.extend(&extra);
            ok(d, &args);
            let r = tsa.respond(&signer, &p.read("q.tsq"), &now_ctx());
            let Outcome::Granted(g) = &r.outcome else {
                panic!("{key} {extra:?}: {:?}", r.outcome)
            };
            std::fs::write(p.path("r.tsr"), &r.der).unwrap();
            let text = ok(d, &["ts", "-reply", "-in", "r.tsr", "-text"]);
            assert!(text.contains("Status: Granted."), "{text}");
            assert!(text.contains(&format!("Policy OID: {POLICY}")), "{text}");
            assert!(text.contains("Ordering: no"), "{text}");
            assert!(
                text.contains("Accuracy: unspecified seconds, 0xFA millis, unspecified micros"),
                "{text}"
            );
            assert!(
                text.contains("TSA: DirName:/CN=Test TSA/O=cps-trust/C=FR"),
                "{text}"
            );
            if extra.contains(&"-no_nonce") {
                assert!(text.contains("Nonce: unspecified"), "{text}");
            } else {
                assert!(!text.contains("Nonce: unspecified"), "{text}");
            }
            let untrusted: &[&str] = if extra.contains(&"-cert") {
                &[]
            } else {
                &["-untrusted", "tsa.pem"]
            };
            let mut verify = vec![
                "ts", "-verify", "-data", "data.txt", "-in", "r.tsr", "-CAfile", "root.pem",
            ];
            verify.extend(untrusted);
            let out = ok(d, &verify);
            assert!(out.contains("Verification: OK"), "{key} {extra:?}: {out}");
            // The same token over another document fails.
            let mut tampered = verify.clone();
            tampered[3] = "other.txt";
            let (good, out) = openssl(d, &tampered);
            assert!(!good, "{key} {extra:?}: tampered data verified: {out}");
            // Our verifier agrees when the token carries the certificate.
            let token = parse_response(&r.der).unwrap().token.unwrap();
            assert_eq!(token, g.token);
            match verify_token(&token) {
                Ok(t) => {
                    assert!(extra.contains(&"-cert"), "{extra:?}");
                    assert_eq!(t.policy, POLICY);
                    assert_eq!(t.signer_certificate, p.read("tsa.der"));
                    assert_eq!(t.imprint, g.imprint);
                    assert_eq!(t.serial, g.serial);
                    assert_eq!(t.serial[0], 0, "positive serial with its leading zero");
                    assert_eq!(
                        t.hash,
                        if extra.contains(&"-sha512") {
                            HashAlg::Sha512
                        } else {
                            HashAlg::Sha256
                        }
                    );
                    assert_eq!(t.nonce.is_some(), !extra.contains(&"-no_nonce"));
                }
                Err(e) => {
                    assert!(!extra.contains(&"-cert"), "{extra:?}: {e}");
                    assert_eq!(e, TokenError::SignerCertificateMissing);
                }
            }
            let _ = i;
        }
    }
}

#[test]
fn stamp_in_process_round_trip() {
    let p = pki("ec", "critical,timeStamping");
    let (tsa, signer) = authority(&p);
    let digest = HashAlg::Sha256.digest(b"a document to time-stamp\n");
    let g = tsa
        .stamp(
            &signer,
            HashAlg::Sha256,
            &digest,
            Some(&[0x01, 0x02]),
            &ctx(3),
        )
        .unwrap();
    let t = verify_token(&g.token).unwrap();
    assert_eq!(t.gen_time, NOW + 3);
    assert_eq!(t.imprint, digest);
    assert_eq!(t.nonce.as_deref(), Some(&[0x01, 0x02][..]));
    assert_eq!(t.certificates, vec![p.read("tsa.der")]);
    // openssl verifies the token against the digest.
    std::fs::write(p.path("t.der"), &g.token).unwrap();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let out = ok(
        p.dir.path(),
        &[
            "ts",
            "-verify",
            "-digest",
            &hex,
            "-token_in",
            "-in",
            "t.der",
            "-CAfile",
            "root.pem",
        ],
    );
    assert!(out.contains("Verification: OK"), "{out}");
    // Wrong lengths, SHA-1 and a non-minimal nonce are refused.
    assert!(
        tsa.stamp(&signer, HashAlg::Sha256, &digest[..31], None, &ctx(3))
            .is_err()
    );
    assert!(
        tsa.stamp(&signer, HashAlg::Sha1, &[0; 20], None, &ctx(3))
            .is_err()
    );
    assert!(
        tsa.stamp(&signer, HashAlg::Sha256, &digest, Some(&[0, 1]), &ctx(3))
            .is_err()
    );
    let zero = StampContext {
        serial: [0; 16],
        ..ctx(3)
    };
    assert!(
        tsa.stamp(&signer, HashAlg::Sha256, &digest, None, &zero)
            .is_err()
    );
}

#[test]
fn tokens_made_by_openssl_verify() {
    let p = pki("ec", "critical,timeStamping");
    let d = p.dir.path();
    std::fs::write(
        p.path("ts.cnf"),
        format!(
            "[tsa]\ndefault_tsa = tsa1\n[tsa1]\nserial = {d}/serial\nsigner_cert = {d}/tsa.pem\n\
             certs = {d}/tsa.pem\nsigner_key = {d}/tsa.key\nsigner_digest = sha256\n\
             default_policy = 1.2.3.4.1\ndigests = sha256, sha512\ness_cert_id_alg = sha256\n\
             ess_cert_id_chain = no\naccuracy = secs:1\n",
            d = d.display()
        ),
    )
    .unwrap();
    std::fs::write(p.path("serial"), "01\n").unwrap();
    ok(
        d,
        &[
            "ts", "-query", "-data", "data.txt", "-sha256", "-cert", "-out", "q.tsq",
        ],
    );
    ok(
        d,
        &[
            "ts",
            "-reply",
            "-config",
            "ts.cnf",
            "-queryfile",
            "q.tsq",
            "-token_out",
            "-out",
            "t.der",
        ],
    );
    let t = verify_token(&p.read("t.der")).unwrap();
    assert_eq!(t.policy, "1.2.3.4.1");
    assert_eq!(
        t.imprint,
        HashAlg::Sha256.digest(b"a document to time-stamp\n")
    );
    assert_eq!(t.signer_certificate, p.read("tsa.der"));
}

#[test]
fn certificates_that_are_not_tsa_certificates_are_refused() {
    for eku in ["timeStamping", "critical,timeStamping,codeSigning"] {
        let p = pki("ec", eku);
        let key = SoftwareSigner::from_pkcs8("tsa", &p.read("tsa.p8")).unwrap();
        let e = Authority::new(POLICY, p.read("tsa.der"), &key, true).unwrap_err();
        assert!(
            e.to_string().contains("not a TSA certificate"),
            "{eku}: {e}"
        );
    }
    // A key the certificate does not certify.
    let p = pki("ec", "critical,timeStamping");
    let other = SoftwareSigner::generate("other", cps_hsm::KeyAlgorithm::EcP256).unwrap();
    assert!(Authority::new(POLICY, p.read("tsa.der"), &other, true).is_err());
    let key = SoftwareSigner::from_pkcs8("tsa", &p.read("tsa.p8")).unwrap();
    assert!(Authority::new("not an oid", p.read("tsa.der"), &key, true).is_err());
}

/// A DER TimeStampReq built by hand.
fn query(version: &[u8], alg: &[u8], imprint: &[u8], rest: &[&[u8]]) -> Vec<u8> {
    fn tlv(tag: u8, v: &[u8]) -> Vec<u8> {
        let mut o = vec![tag];
        if v.len() < 128 {
            o.push(v.len() as u8);
        } else {
            o.extend([0x82, (v.len() >> 8) as u8, v.len() as u8]);
        }
        o.extend_from_slice(v);
        o
    }
    let alg = tlv(0x30, &[tlv(0x06, alg), vec![0x05, 0x00]].concat());
    let mi = tlv(0x30, &[alg, tlv(0x04, imprint)].concat());
    let mut body = [tlv(0x02, version), mi].concat();
    for r in rest {
        body.extend_from_slice(r);
    }
    tlv(0x30, &body)
}

const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const MD5: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x05];

#[test]
fn hostile_queries_get_one_failure_bit_and_no_token() {
    let p = pki("ec", "critical,timeStamping");
    let (tsa, signer) = authority(&p);
    let good = query(&[1], SHA256, &[7; 32], &[]);
    assert!(matches!(
        tsa.respond(&signer, &good, &ctx(1)).outcome,
        Outcome::Granted(_)
    ));
    let mut trailing = good.clone();
    trailing.push(0);
    let mut indefinite = good.clone();
    indefinite[1] = 0x80;
    indefinite.extend([0, 0]);
    let other_policy = [0x06, 0x03, 0x2a, 0x03, 0x04];
    let our_policy = {
        let oid = const_oid::ObjectIdentifier::new_unwrap(POLICY);
        [&[0x06, oid.as_bytes().len() as u8][..], oid.as_bytes()].concat()
    };
    let cases: Vec<(&str, Vec<u8>, FailInfo)> = vec![
        ("empty", vec![], FailInfo::BadDataFormat),
        (
            "garbage",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            FailInfo::BadDataFormat,
        ),
        (
            "truncated",
            good[..good.len() - 3].to_vec(),
            FailInfo::BadDataFormat,
        ),
        ("trailing bytes", trailing, FailInfo::BadDataFormat),
        ("indefinite length", indefinite, FailInfo::BadDataFormat),
        (
            "huge",
            query(
                &[1],
                SHA256,
                &[7; 32],
                &[&[0x04, 0x82, 0x08, 0x00], &[0; 2048]],
            ),
            FailInfo::BadRequest,
        ),
        (
            "version 2",
            query(&[2], SHA256, &[7; 32], &[]),
            FailInfo::BadRequest,
        ),
        (
            "non-minimal version",
            query(&[0, 1], SHA256, &[7; 32], &[]),
            FailInfo::BadDataFormat,
        ),
        (
            "short imprint",
            query(&[1], SHA256, &[7; 31], &[]),
            FailInfo::BadDataFormat,
        ),
        (
            "long imprint",
            query(&[1], SHA256, &[7; 64], &[]),
            FailInfo::BadDataFormat,
        ),
        ("SHA-1", query(&[1], SHA1, &[7; 20], &[]), FailInfo::BadAlg),
        ("MD5", query(&[1], MD5, &[7; 16], &[]), FailInfo::BadAlg),
        (
            "other policy",
            query(&[1], SHA256, &[7; 32], &[&other_policy]),
            FailInfo::UnacceptedPolicy,
        ),
        (
            "non-minimal nonce",
            query(&[1], SHA256, &[7; 32], &[&[0x02, 0x02, 0x00, 0x01]]),
            FailInfo::BadDataFormat,
        ),
        (
            "huge nonce",
            query(
                &[1],
                SHA256,
                &[7; 32],
                &[&[&[0x02u8, 0x41, 0x01][..], &[0; 64]].concat()],
            ),
            FailInfo::BadDataFormat,
        ),
        (
            "certReq FALSE encoded",
            query(&[1], SHA256, &[7; 32], &[&[0x01, 0x01, 0x00]]),
            FailInfo::BadDataFormat,
        ),
        (
            "certReq 0x01",
            query(&[1], SHA256, &[7; 32], &[&[0x01, 0x01, 0x01]]),
            FailInfo::BadDataFormat,
        ),
        (
            "extensions",
            query(&[1], SHA256, &[7; 32], &[&[0xa0, 0x00]]),
            FailInfo::UnacceptedExtension,
        ),
        (
            "fields out of order",
            query(
                &[1],
                SHA256,
                &[7; 32],
                &[&[0x01, 0x01, 0xff], &[0x02, 0x01, 0x05]],
            ),
            FailInfo::BadDataFormat,
        ),
        (
            "not a sequence",
            vec![0x04, 0x01, 0x00],
            FailInfo::BadDataFormat,
        ),
    ];
    for (name, der, fail) in cases {
        let r = tsa.respond(&signer, &der, &ctx(1));
        match &r.outcome {
            Outcome::Rejected(refusal) => assert_eq!(refusal.fail, fail, "{name}: {refusal}"),
            other => panic!("{name}: {other:?}"),
        }
        let parsed = parse_response(&r.der).unwrap();
        assert_eq!(parsed.status, 2, "{name}");
        assert_eq!(parsed.fail_info, vec![fail], "{name}");
        assert!(parsed.token.is_none(), "{name}");
        // OpenSSL reads the rejection too.
        std::fs::write(p.path("rej.tsr"), &r.der).unwrap();
        let text = ok(p.dir.path(), &["ts", "-reply", "-in", "rej.tsr", "-text"]);
        assert!(text.contains("Status: Rejected"), "{name}: {text}");
        assert!(
            text.contains(&format!("Failure info: {}", openssl_fail_name(fail))),
            "{name}: {text}"
        );
    }
    // Our own policy requested is served; certReq TRUE carries the certificate.
    let r = tsa.respond(
        &signer,
        &query(
            &[1],
            SHA256,
            &[7; 32],
            &[&our_policy, &[0x02, 0x01, 0x05], &[0x01, 0x01, 0xff]],
        ),
        &ctx(2),
    );
    let Outcome::Granted(g) = r.outcome else {
        panic!("{:?}", r.outcome)
    };
    let t = verify_token(&g.token).unwrap();
    assert_eq!(t.nonce.as_deref(), Some(&[5][..]));
}

fn openssl_fail_name(f: FailInfo) -> &'static str {
    match f {
        FailInfo::BadAlg => "unrecognized or unsupported algorithm identifier",
        FailInfo::BadRequest => "transaction not permitted or supported",
        FailInfo::BadDataFormat => "the data submitted has the wrong format",
        FailInfo::UnacceptedPolicy => "the requested TSA policy is not supported by the TSA",
        FailInfo::UnacceptedExtension => "the requested extension is not supported by the TSA",
        FailInfo::SystemFailure => "the request cannot be handled due to system failure",
    }
}

#[test]
fn forged_tokens_are_refused() {
    let p = pki("ec", "critical,timeStamping");
    let (tsa, signer) = authority(&p);
    let digest = HashAlg::Sha256.digest(b"x");
    let token = tsa
        .stamp(&signer, HashAlg::Sha256, &digest, None, &ctx(4))
        .unwrap()
        .token;
    verify_token(&token).unwrap();
    let find = |needle: &[u8]| {
        token
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("needle in token")
    };
    // A changed imprint: the message digest no longer matches.
    let mut t = token.clone();
    let at = find(&digest);
    t[at] ^= 1;
    assert_eq!(
        verify_token(&t).unwrap_err(),
        TokenError::MessageDigestMismatch
    );
    // A changed signature.
    let mut t = token.clone();
    let sig_at = token.len() - 5;
    t[sig_at] ^= 1;
    assert!(matches!(
        verify_token(&t).unwrap_err(),
        TokenError::BadSignature | TokenError::Malformed { .. }
    ));
    // Another certificate in place of the signer's (same length, one byte of its signature
    // changed): the ESSCertIDv2 hash no longer names it.
    let cert = p.read("tsa.der");
    let mut t = token.clone();
    let at = find(&cert) + cert.len() - 3;
    t[at] ^= 1;
    assert_eq!(
        verify_token(&t).unwrap_err(),
        TokenError::SigningCertificateMismatch
    );
    // Trailing data, truncation, garbage.
    let mut t = token.clone();
    t.push(0);
    assert!(matches!(
        verify_token(&t).unwrap_err(),
        TokenError::Malformed { .. }
    ));
    assert!(matches!(
        verify_token(&token[..token.len() - 1]).unwrap_err(),
        TokenError::Malformed { .. }
    ));
    assert!(verify_token(b"not a token").is_err());
    // A response is not a token.
    assert!(verify_token(&cps_tsa::granted(&token)).is_err());
}

/// `build_query` writes, byte for byte, the query `openssl ts -query -cert -no_nonce` writes for
/// the same digest; with a nonce it parses back with the nonce, and openssl reads it.
#[test]
fn our_query_is_the_one_openssl_builds() {
    let dir = tempfile::tempdir().unwrap();
    let digest = [0x5Au8; 32];
    let hex_digest = hex::encode(digest);
    ok(
        dir.path(),
        &[
            "ts",
            "-query",
            "-digest",
            &hex_digest,
            "-sha256",
            "-cert",
            "-no_nonce",
            "-out",
            "q.tsq",
        ],
    );
    let theirs = std::fs::read(dir.path().join("q.tsq")).unwrap();
    let ours = cps_tsa::build_query(cps_tsa::HashAlg::Sha256, &digest, None, true);
    assert_eq!(hex::encode(&ours), hex::encode(&theirs));
    let nonce = [0x80u8, 1, 2, 3, 4, 5, 6, 7];
    let with_nonce = cps_tsa::build_query(cps_tsa::HashAlg::Sha256, &digest, Some(&nonce), false);
    let q = cps_tsa::parse_query(&with_nonce).unwrap();
    assert_eq!(q.imprint, digest);
    assert!(!q.cert_req);
    assert_eq!(q.nonce.as_deref(), Some(&[&[0u8][..], &nonce].concat()[..]));
    std::fs::write(dir.path().join("n.tsq"), &with_nonce).unwrap();
    let text = ok(dir.path(), &["ts", "-query", "-in", "n.tsq", "-text"]);
    assert!(text.contains("Nonce: 0x8001020304050607"), "{text}");
}
