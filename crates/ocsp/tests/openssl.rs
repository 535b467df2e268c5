//! Interoperability with real peers (PEERS.md §3 and §4): requests made by `openssl ocsp`,
//! answered by our `Responder`, verified by `openssl ocsp` and linted by pkilint's
//! `lint_ocsp_response`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use cps_ocsp::{CertStatusAnswer, NotIssuedPolicy, Responder, ResponseStatusKind};
use cps_pki::pem_encode;
use cps_trust_tests::pkilint::{self, Linter};

struct Env {
    dir: tempfile::TempDir,
    pki: TestPki,
}

impl Env {
    fn new() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let pki = build_pki(now, 3);
        let mut dir = tempfile::tempdir().unwrap();
        if std::env::var_os("CPS_OCSP_KEEP_TMP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        let env = Env { dir, pki };
        env.write("root.pem", &env.pki.root_der);
        for ca in &env.pki.cas {
            env.write(&format!("{}.pem", ca.id), &ca.cert_der);
            env.write(&format!("{}-ocsp.pem", ca.id), &ca.ocsp_cert_der);
            for (n, ee) in ca.ee.iter().enumerate() {
                env.write(&format!("{}-ee{n}.pem", ca.id), &ee.cert_der);
            }
        }
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, der: &[u8]) {
        std::fs::write(self.path(name), pem_encode("CERTIFICATE", der)).unwrap();
    }

    fn responder(&self, policy: NotIssuedPolicy) -> Responder {
        let mut cfg = config(policy);
        cfg.validity_secs = 86400;
        responder(&self.pki, cfg).0
    }

    /// `openssl ocsp <args> -reqout <name>`; returns the request DER.
    fn request(&self, name: &str, args: &[&str]) -> Vec<u8> {
        let out = self.path(name);
        let o = Command::new("openssl")
            .arg("ocsp")
            .args(args)
            .arg("-reqout")
            .arg(&out)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl on PATH");
        assert!(
            o.status.success(),
            "openssl ocsp {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::read(out).unwrap()
    }

    /// Answer `req` with `r`, write `<req_name>.resp.der`, lint it with pkilint and verify it
    /// with openssl twice; returns openssl's output.
    ///
    /// * `openssl ocsp -reqin REQ -respin RESP -CAfile root.pem -verify_other CA -resp_text`
    ///   checks the signature chain and the nonce of *this* request. (With `-cert`, openssl
    ///   ignores `-reqin` for the nonce check and compares against a fresh nonce of its own.)
    /// * `openssl ocsp -respin RESP -CAfile root.pem -issuer CA -no_nonce <ids>` prints the
    ///   per-certificate summary ("x.pem: good", "Reason: ...").
    fn verify(&self, r: &Responder, req_name: &str, req: &[u8], ca: &str, ids: &[&str]) -> String {
        let reply = r.respond(req, self.pki.now);
        assert_eq!(
            reply.status,
            ResponseStatusKind::Successful,
            "{:?}",
            reply.detail
        );
        let resp = format!("{req_name}.resp.der");
        std::fs::write(self.path(&resp), &reply.der).unwrap();
        lint(&self.path(&resp));
        let with_reqin = self.openssl_ok(&[
            "ocsp",
            "-reqin",
            req_name,
            "-respin",
            &resp,
            "-CAfile",
            "root.pem",
            "-verify_other",
            ca,
            "-resp_text",
        ]);
        let summary = self.openssl_ok(
            &[
                &[
                    "ocsp",
                    "-respin",
                    &resp,
                    "-CAfile",
                    "root.pem",
                    "-issuer",
                    ca,
                    "-no_nonce",
                ][..],
                ids,
            ]
            .concat(),
        );
        format!("{with_reqin}\n{summary}")
    }

    /// Run openssl, require success and "Response verify OK" without any warning or error.
    fn openssl_ok(&self, args: &[&str]) -> String {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "openssl {args:?} failed:\n{text}");
        assert!(
            text.contains("Response verify OK"),
            "openssl {args:?}:\n{text}"
        );
        assert!(!text.contains("WARNING"), "openssl {args:?}:\n{text}");
        assert!(
            !text.to_lowercase().contains("error"),
            "openssl {args:?}:\n{text}"
        );
        text
    }
}

/// pkilint's `lint_ocsp_response` must report no finding at WARNING or above (its JSON
/// findings are the verdict, not its stderr: `cps_trust_tests::pkilint`).
fn lint(resp: &Path) {
    pkilint::assert_clean(Linter::OcspResponse, resp);
}

/// The status block openssl prints for `cert`: "<cert>: <status>" and the lines below it.
fn status_block<'a>(text: &'a str, cert: &str) -> &'a str {
    let start = text
        .find(&format!("{cert}: "))
        .unwrap_or_else(|| panic!("no status for {cert} in:\n{text}"));
    let rest = &text[start..];
    let end = rest[cert.len() + 2..]
        .find(".pem: ")
        .map_or(rest.len(), |e| e + cert.len() + 2);
    &rest[..end]
}

#[test]
fn openssl_verifies_good_revoked_and_unknown() {
    let env = Env::new();
    let r = env.responder(NotIssuedPolicy::Unknown);
    let ca = "personnes.pem";

    // Good, no nonce (the RFC 5019 / pre-signed path), SHA-1 CertID.
    let ids = ["-cert", "personnes-ee0.pem"];
    let req = env.request(
        "good.der",
        &[&["-issuer", ca, "-no_nonce"][..], &ids].concat(),
    );
    let text = env.verify(&r, "good.der", &req, ca, &ids);
    let block = status_block(&text, "personnes-ee0.pem");
    assert!(block.starts_with("personnes-ee0.pem: good"), "{text}");
    assert!(
        block.contains("This Update:") && block.contains("Next Update:"),
        "{text}"
    );
    assert!(text.contains("Responder Id: "), "{text}");
    // The second identical request is a cache hit: the same bytes.
    let again = r.respond(&req, env.pki.now);
    assert!(again.from_cache);
    assert_eq!(
        again.der,
        std::fs::read(env.path("good.der.resp.der")).unwrap()
    );

    // Revoked, with a nonce (openssl adds one by default; the -reqin run checks the echo).
    let ids = ["-cert", "personnes-ee1.pem"];
    let req = env.request("revoked.der", &[&["-issuer", ca][..], &ids].concat());
    let text = env.verify(&r, "revoked.der", &req, ca, &ids);
    assert!(text.contains("OCSP Nonce"), "{text}");
    let block = status_block(&text, "personnes-ee1.pem");
    assert!(block.starts_with("personnes-ee1.pem: revoked"), "{text}");
    assert!(block.contains("Reason: keyCompromise"), "{text}");
    assert!(block.contains("Revocation Time:"), "{text}");
    // The nonce check has teeth: the same response against another request's nonce fails.
    env.request("other-nonce.der", &[&["-issuer", ca][..], &ids].concat());
    let o = Command::new("openssl")
        .args([
            "ocsp",
            "-reqin",
            "other-nonce.der",
            "-respin",
            "revoked.der.resp.der",
        ])
        .args(["-CAfile", "root.pem", "-verify_other", ca])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && text.contains("Nonce Verify error"),
        "{text}"
    );

    // Unknown: a serial we never issued (openssl -serial builds the CertID from the issuer).
    let ids = ["-serial", "0x0123456789"];
    let req = env.request("unknown.der", &[&["-issuer", ca][..], &ids].concat());
    let text = env.verify(&r, "unknown.der", &req, ca, &ids);
    assert!(text.contains("0x0123456789: unknown"), "{text}");
}

#[test]
fn openssl_sha256_certid_and_multi_request() {
    let env = Env::new();
    let r = env.responder(NotIssuedPolicy::Unknown);
    let ca = "organisations.pem";
    let ids = [
        "-sha256",
        "-cert",
        "organisations-ee0.pem",
        "-cert",
        "organisations-ee1.pem",
        "-cert",
        "organisations-ee2.pem",
    ];
    let req = env.request("multi.der", &[&["-issuer", ca][..], &ids].concat());
    let reply = r.respond(&req, env.pki.now);
    let (_, basic) = decode(&reply.der);
    let basic = basic.unwrap();
    assert_eq!(basic.tbs_response_data.responses.len(), 3);
    for s in &basic.tbs_response_data.responses {
        assert_eq!(
            s.cert_id.hash_algorithm.oid, SHA256,
            "SHA-256 CertID echoed"
        );
    }
    let text = env.verify(&r, "multi.der", &req, ca, &ids);
    let block = |c| status_block(&text, c);
    assert!(
        block("organisations-ee0.pem").starts_with("organisations-ee0.pem: good"),
        "{text}"
    );
    let revoked = block("organisations-ee1.pem");
    assert!(
        revoked.starts_with("organisations-ee1.pem: revoked"),
        "{text}"
    );
    assert!(revoked.contains("Reason: keyCompromise"), "{text}");
    assert!(
        block("organisations-ee2.pem").starts_with("organisations-ee2.pem: good"),
        "{text}"
    );

    // SHA-256 without nonce, single: pre-signed and cached.
    let ids = ["-sha256", "-cert", "organisations-ee2.pem"];
    let req = env.request(
        "sha256.der",
        &[&["-issuer", ca, "-no_nonce"][..], &ids].concat(),
    );
    let text = env.verify(&r, "sha256.der", &req, ca, &ids);
    assert!(text.contains("organisations-ee2.pem: good"), "{text}");
    assert!(r.respond(&req, env.pki.now).from_cache);
}

#[test]
fn openssl_mixed_issuers_in_one_request() {
    // personnes' signer answers; the organisations certificate gets "unknown". openssl then
    // refuses the signature as a whole: the delegated signer is not authorised for the
    // other CA's CertID (ocsp_check_issuer checks every SingleResponse).
    let env = Env::new();
    let r = env.responder(NotIssuedPolicy::Unknown);
    let args = [
        "-issuer",
        "personnes.pem",
        "-cert",
        "personnes-ee0.pem",
        "-issuer",
        "organisations.pem",
        "-cert",
        "organisations-ee0.pem",
        "-no_nonce",
    ];
    let req = env.request("mixed.der", &args);
    let reply = r.respond(&req, env.pki.now);
    assert_eq!(reply.status, ResponseStatusKind::Successful);
    std::fs::write(env.path("mixed.resp.der"), &reply.der).unwrap();
    lint(&env.path("mixed.resp.der"));
    let o = Command::new("openssl")
        .args([
            "ocsp",
            "-respin",
            "mixed.resp.der",
            "-CAfile",
            "root.pem",
            "-no_nonce",
        ])
        .args(&args[..8])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.contains("personnes-ee0.pem: good"), "{text}");
    assert!(text.contains("organisations-ee0.pem: unknown"), "{text}");
    assert!(text.contains("Response Verify Failure"), "{text}");
}

#[test]
fn openssl_reads_revoked_extended_for_non_issued_serials() {
    let env = Env::new();
    let r = env.responder(NotIssuedPolicy::RevokedExtended);
    let ca = "personnes.pem";
    let ids = ["-serial", "0x4242"];
    let req = env.request("nonissued.der", &[&["-issuer", ca][..], &ids].concat());
    let text = env.verify(&r, "nonissued.der", &req, ca, &ids);
    let block = status_block(&text, "0x4242");
    assert!(block.starts_with("0x4242: revoked"), "{text}");
    assert!(block.contains("Reason: certificateHold"), "{text}");
    assert!(
        block.contains("Revocation Time: Jan  1 00:00:00 1970 GMT"),
        "{text}"
    );
    // The extension shows in the -resp_text dump. OpenSSL 3.0 names 1.3.6.1.5.5.7.48.1.9
    // "valid" (id-pkix-OCSP-valid, from a pre-RFC 6960 draft), not "extended revoke".
    let exts = &text[text
        .find("Response Extensions:")
        .expect("responseExtensions")..];
    assert!(
        exts.contains("OCSP Nonce:") && exts.contains("valid: "),
        "{text}"
    );
}

#[test]
fn openssl_get_form_and_invalidation() {
    let env = Env::new();
    let (r, source) = {
        let mut cfg = config(NotIssuedPolicy::Unknown);
        cfg.validity_secs = 86400;
        responder(&env.pki, cfg)
    };
    let ca = "personnes.pem";
    let ids = ["-cert", "personnes-ee2.pem"];
    let req = env.request(
        "get.der",
        &[&["-issuer", ca, "-no_nonce"][..], &ids].concat(),
    );
    // RFC 5019 GET: URL-encoded base64 of the request, decoded back to the same bytes.
    let b64 = {
        use base64ct::Encoding;
        base64ct::Base64::encode_string(&req)
    };
    let url = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let from_get = r.decode_get(&url).unwrap();
    assert_eq!(from_get, req);
    let text = env.verify(&r, "get.der", &from_get, ca, &ids);
    assert!(text.contains("personnes-ee2.pem: good"), "{text}");
    assert!(r.respond(&req, env.pki.now).from_cache);

    // Revoke it: store, then invalidate; the next answer to the same request says revoked.
    source.set(
        "personnes",
        &env.pki.cas[0].ee[2].serial,
        CertStatusAnswer::Revoked {
            time: env.pki.now - 5,
            reason: Some(cps_ocsp::CrlReason::KeyCompromise),
        },
    );
    r.invalidate("personnes", &env.pki.cas[0].ee[2].serial);
    let text = env.verify(&r, "get.der", &req, ca, &ids);
    let block = status_block(&text, "personnes-ee2.pem");
    assert!(block.starts_with("personnes-ee2.pem: revoked"), "{text}");
    assert!(block.contains("Reason: keyCompromise"), "{text}");
}

#[test]
fn pkilint_accepts_error_responses() {
    let env = Env::new();
    let r = env.responder(NotIssuedPolicy::Unknown);
    let malformed = r.respond(b"\x30\x00", env.pki.now);
    assert_eq!(malformed.status, ResponseStatusKind::MalformedRequest);
    let path = env.dir.path().join("malformed.resp.der");
    std::fs::write(&path, &malformed.der).unwrap();
    lint(&path);
    let o = Command::new("openssl")
        .args(["ocsp", "-respin"])
        .arg(&path)
        .arg("-resp_text")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("malformedrequest (1)"), "{text}");
}

/// `cps_ocsp::request::request_for` builds, byte for byte, the request `openssl ocsp -sha256
/// -no_nonce` builds for the same certificate, and our responder answers it.
#[test]
fn our_request_is_the_one_openssl_builds() {
    let env = Env::new();
    let r = env.responder(NotIssuedPolicy::Unknown);
    let ca = env
        .pki
        .cas
        .iter()
        .find(|c| c.id == "organisations")
        .expect("organisations CA");
    let req = env.request(
        "ours.der",
        &[
            "-issuer",
            "organisations.pem",
            "-no_nonce",
            "-sha256",
            "-cert",
            "organisations-ee0.pem",
        ],
    );
    let ours = cps_ocsp::request::request_for(&ca.cert_der, &ca.ee[0].serial).unwrap();
    assert_eq!(hex::encode(&ours), hex::encode(&req));
    let reply = r.respond(&ours, env.pki.now);
    let (status, basic) = decode(&reply.der);
    assert_eq!(status, 0, "{:?}", reply.detail);
    assert_eq!(basic.unwrap().tbs_response_data.responses.len(), 1);
    // Another certificate's serial gives another request.
    let other = cps_ocsp::request::request_for(&ca.cert_der, &ca.ee[1].serial).unwrap();
    assert_ne!(other, ours);
    assert_eq!(
        cps_ocsp::request::request_for(&ca.cert_der, &[]),
        Err(cps_ocsp::request::RequestError::Serial)
    );
    assert!(cps_ocsp::request::request_for(b"not a certificate", &[1]).is_err());
    // With a nonce: openssl reads it, and our responder signs a fresh answer echoing it.
    let nonced =
        cps_ocsp::request::request_with_nonce(&ca.cert_der, &ca.ee[0].serial, &[7u8; 16]).unwrap();
    std::fs::write(env.path("nonced.der"), &nonced).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["ocsp", "-req_text", "-reqin"])
        .arg(env.path("nonced.der"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("OCSP Nonce"),
        "{text}"
    );
    let reply = r.respond(&nonced, env.pki.now);
    assert!(!reply.from_cache);
    let nonce_ext = hex::encode([&[0x04, 0x10][..], &[7u8; 16]].concat());
    assert!(hex::encode(&reply.der).contains(&nonce_ext), "nonce echoed");
}
