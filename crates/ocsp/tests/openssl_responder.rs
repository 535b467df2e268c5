//! Responses made by `openssl ocsp` acting as the responder (over files: `-index`, `-reqin`,
//! `-respout`), read by our parser: delegated signer by name and by key hash, the CA as the
//! signer, revoked with a reason and a compromise time (invalidityDate), unknown; a signer
//! without id-kp-OCSPSigning or without id-pkix-ocsp-nocheck, and a foreign CA with the same
//! name, are refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use cps_ocsp::{
    CrlReason, LiveStatus, LongTermPolicy, LongTermQuery, LongTermRefusal, ResponseError,
    ResponseLimits, SignedBy, SingleCertStatus, decide, parse_response,
};

fn run(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl on PATH");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A CA `<name>` (P-256) with an OCSP signer, an end entity `ee` (serial 2002), another
/// `other` (serial 3003) and one without any index entry (serial 4004), all made by openssl.
fn make_ca(dir: &Path, name: &str) {
    std::fs::write(
        dir.join("ext.cnf"),
        "[o]\nextendedKeyUsage=OCSPSigning\nkeyUsage=critical,digitalSignature\nnoCheck=ignored\n\
         [n]\nextendedKeyUsage=OCSPSigning\nkeyUsage=critical,digitalSignature\n\
         [e]\nkeyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    let key = format!("{name}.key");
    let pem = format!("{name}.pem");
    args.extend([
        "-keyout",
        &key,
        "-out",
        &pem,
        "-subj",
        "/CN=Test OpenSSL CA",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(dir, &args);
    for (leaf, serial, ext) in [
        ("ocsp", "0x1001", "o"),
        ("ocsp-nocheck-less", "0x1002", "n"),
        ("ee", "0x2002", "e"),
        ("other", "0x3003", "e"),
        ("stranger", "0x4004", "e"),
    ] {
        let lk = format!("{name}-{leaf}.key");
        let csr = format!("{name}-{leaf}.csr");
        let lp = format!("{name}-{leaf}.pem");
        let subj = format!("/CN={leaf}");
        let mut args = vec!["req", "-new"];
        args.extend(ec);
        args.extend(["-keyout", &lk, "-out", &csr, "-subj", &subj]);
        run(dir, &args);
        run(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &pem,
                "-CAkey",
                &key,
                "-set_serial",
                serial,
                "-days",
                "20",
                "-extfile",
                "ext.cnf",
                "-extensions",
                ext,
                "-out",
                &lp,
            ],
        );
    }
}

fn der_of(dir: &Path, pem: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(dir.join(pem)).unwrap();
    cps_pki::pem_certificates(&text).remove(0)
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        make_ca(dir.path(), "ca");
        // ee: revoked, keyCompromise with a compromise time before the revocation time;
        // other: good (V); stranger: absent (unknown).
        std::fs::write(
            dir.path().join("index.txt"),
            "R\t301231000000Z\t250105120000Z,keyTime,20250101000000Z\t2002\tunknown\t/CN=ee\n\
             V\t301231000000Z\t\t3003\tunknown\t/CN=other\n",
        )
        .unwrap();
        Env { dir }
    }

    fn p(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, f: &str) -> PathBuf {
        self.p().join(f)
    }

    /// `openssl ocsp` request for `cert` (SHA-1 or SHA-256 CertID), answered by `openssl ocsp`
    /// signing with `signer` (`<name>.pem` / `<name>.key`); returns the response DER.
    fn respond(&self, cert: &str, digest: &str, signer: &str, extra: &[&str]) -> Vec<u8> {
        let req = format!("{cert}-{digest}-{signer}.req");
        let resp = format!("{cert}-{digest}-{signer}.resp");
        run(
            self.p(),
            &[
                "ocsp", digest, "-issuer", "ca.pem", "-cert", cert, "-reqout", &req,
            ],
        );
        let sp = format!("{signer}.pem");
        let sk = format!("{signer}.key");
        let mut args = vec![
            "ocsp",
            "-index",
            "index.txt",
            "-rsigner",
            &sp,
            "-rkey",
            &sk,
            "-CA",
            "ca.pem",
            "-reqin",
            &req,
            "-respout",
            &resp,
            "-ndays",
            "1",
        ];
        args.extend(extra);
        run(self.p(), &args);
        std::fs::read(self.path(&resp)).unwrap()
    }
}

fn limits() -> ResponseLimits {
    ResponseLimits::default()
}

#[test]
fn openssl_responses_parse_and_verify() {
    let env = Env::new();
    let ca = der_of(env.p(), "ca.pem");
    let ee = der_of(env.p(), "ca-ee.pem");
    let other = der_of(env.p(), "ca-other.pem");
    let stranger = der_of(env.p(), "ca-stranger.pem");
    let ocsp = der_of(env.p(), "ca-ocsp.pem");
    for digest in ["-sha1", "-sha256"] {
        // Delegated signer named by its subject (openssl's default) and by key hash.
        for extra in [&[][..], &["-resp_key_id"][..]] {
            let der = env.respond("ca-ee.pem", digest, "ca-ocsp", extra);
            let v = parse_response(&der, &limits())
                .unwrap()
                .verify(&ca)
                .unwrap();
            assert_eq!(v.signed_by, SignedBy::Delegated(ocsp.clone()));
            assert!(v.nonce().is_some(), "openssl sends a nonce by default");
            let s = v.status_of(&ee).unwrap();
            assert_eq!(
                s.status,
                SingleCertStatus::Revoked {
                    time: 1_736_078_400, // 2025-01-05T12:00:00Z
                    reason: Some(CrlReason::KeyCompromise),
                    invalidity_date: Some(1_735_689_600) // 2025-01-01T00:00:00Z
                },
                "{digest} {extra:?}"
            );
            assert!(s.next_update.is_some_and(|n| n > s.this_update));
            assert_eq!(
                v.status_of(&other).unwrap_err(),
                ResponseError::NotForCertificate
            );
        }
        let good = env.respond("ca-other.pem", digest, "ca-ocsp", &[]);
        let v = parse_response(&good, &limits())
            .unwrap()
            .verify(&ca)
            .unwrap();
        assert_eq!(v.status_of(&other).unwrap().status, SingleCertStatus::Good);
        let unknown = env.respond("ca-stranger.pem", digest, "ca-ocsp", &[]);
        let v = parse_response(&unknown, &limits())
            .unwrap()
            .verify(&ca)
            .unwrap();
        assert_eq!(
            v.status_of(&stranger).unwrap().status,
            SingleCertStatus::Unknown
        );
        // The CA key signing its own responses.
        let by_ca = env.respond("ca-other.pem", digest, "ca", &[]);
        let v = parse_response(&by_ca, &limits())
            .unwrap()
            .verify(&ca)
            .unwrap();
        assert_eq!(v.signed_by, SignedBy::Issuer);
    }
}

#[test]
fn openssl_responses_from_unauthorised_signers_are_refused() {
    let env = Env::new();
    let ca = der_of(env.p(), "ca.pem");
    // An end-entity certificate of the same CA, without id-kp-OCSPSigning, carried in the
    // response.
    let der = env.respond("ca-other.pem", "-sha256", "ca-other", &[]);
    assert!(matches!(
        parse_response(&der, &limits()).unwrap().verify(&ca),
        Err(ResponseError::UnauthorizedResponder(_))
    ));
    // A delegated responder of this CA without id-pkix-ocsp-nocheck.
    let der = env.respond("ca-other.pem", "-sha256", "ca-ocsp-nocheck-less", &[]);
    assert!(matches!(
        parse_response(&der, &limits()).unwrap().verify(&ca),
        Err(ResponseError::UnauthorizedResponder(m)) if m.contains("nocheck")
    ));
    // A foreign CA with the same name and an OCSP signer of its own.
    let foreign = tempfile::tempdir().unwrap();
    make_ca(foreign.path(), "ca");
    for f in ["ca-ocsp.pem", "ca-ocsp.key"] {
        std::fs::copy(foreign.path().join(f), env.path(&format!("foreign-{f}"))).unwrap();
    }
    let der = env.respond("ca-other.pem", "-sha256", "foreign-ca-ocsp", &[]);
    assert!(matches!(
        parse_response(&der, &limits()).unwrap().verify(&ca),
        Err(ResponseError::UnauthorizedResponder(_))
    ));
    // The foreign CA key itself (not carried: the responder is named, not found).
    for f in ["ca.pem", "ca.key"] {
        std::fs::copy(
            foreign.path().join(f),
            env.path(&format!("foreign-root-{f}")),
        )
        .unwrap();
    }
    std::fs::rename(env.path("foreign-root-ca.pem"), env.path("froot.pem")).unwrap();
    std::fs::rename(env.path("foreign-root-ca.key"), env.path("froot.key")).unwrap();
    let der = env.respond("ca-other.pem", "-sha256", "froot", &["-resp_no_certs"]);
    assert_eq!(
        parse_response(&der, &limits())
            .unwrap()
            .verify(&ca)
            .unwrap_err(),
        ResponseError::BadSignature,
        "same name as the issuer, another key"
    );
}

#[test]
fn an_openssl_compromise_time_before_the_proof_time_refuses() {
    let env = Env::new();
    let ca = der_of(env.p(), "ca.pem");
    let ee = der_of(env.p(), "ca-ee.pem");
    let der = env.respond("ca-ee.pem", "-sha256", "ca-ocsp", &[]);
    let this_update = parse_response(&der, &limits())
        .unwrap()
        .verify(&ca)
        .unwrap()
        .status_of(&ee)
        .unwrap()
        .this_update;
    let embedded = vec![der];
    // The revocation (2025-01-05) and its compromise time (2025-01-01) both predate a proof
    // time of now: refused at the compromise time.
    let q = LongTermQuery {
        proof_time: this_update,
        certificate: &ee,
        issuer: &ca,
        embedded: &embedded,
        live: None::<LiveStatus>,
    };
    assert_eq!(
        decide(&q, &LongTermPolicy::default()).unwrap_err(),
        LongTermRefusal::RevokedBeforeProof {
            effective_time: 1_735_689_600,
            reason: Some(CrlReason::KeyCompromise),
            proof_time: this_update,
            from: cps_ocsp::Evidence::Embedded(0),
        }
    );
}
