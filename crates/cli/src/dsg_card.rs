//! `cps-trust dsg sign --reader R --pin-env VAR …`: a professional's signature made on the
//! workstation with the card's `cps-sign` key (slot 9C, the PIN verified before each
//! signature). The appliance is asked only for what a long-term signature needs besides the
//! card: the timestamp (`POST /tsa`), the certificates (`/ca/…`) and a fresh OCSP answer
//! (`POST /ocsp`), all on its public listener.

use std::process::ExitCode;

use cps_card::{CardSigner, Pcsc, Piv, SignCertificateRule};
use zeroize::Zeroizing;

use crate::dsg_files::{DocumentArg, parse_document, read, write_out};
use crate::{CliResult, EXIT_REFUSED, fail};

/// The appliance's public listener (plain HTTP: everything asked is public or signed).
pub(crate) struct PublicClient {
    base: String,
    http: reqwest::blocking::Client,
}

impl PublicClient {
    pub fn new(config: &cps_appliance::config::Config) -> Result<PublicClient, (u8, String)> {
        let http = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| fail(format!("HTTP client: {e}")))?;
        Ok(PublicClient {
            base: format!("http://{}", config.listen.http),
            http,
        })
    }

    fn get(&self, path: &str) -> Result<Vec<u8>, String> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .map_err(|e| format!("cannot reach the appliance at {} ({e})", self.base))?;
        let status = r.status();
        let body = r.bytes().map_err(|e| e.to_string())?.to_vec();
        if !status.is_success() {
            return Err(format!("GET {path}: {status}"));
        }
        Ok(body)
    }

    fn post(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .map_err(|e| format!("cannot reach the appliance at {} ({e})", self.base))?;
        let status = r.status().as_u16();
        Ok((status, r.bytes().map_err(|e| e.to_string())?.to_vec()))
    }
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "no randomness".to_owned())?;
    Ok(b)
}

/// The appliance's TSA over HTTP: a query with a nonce and certReq, the answer checked (token
/// valid, imprint and nonce ours) before it is used.
struct HttpTsa<'a>(&'a PublicClient);

impl cps_dsg::TimestampSource for HttpTsa<'_> {
    fn timestamp(&self, data: &[u8]) -> Result<Vec<u8>, cps_dsg::BoxError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, data);
        let nonce = random::<8>()?;
        let query = cps_tsa::build_query(
            cps_tsa::HashAlg::Sha256,
            digest.as_ref(),
            Some(&nonce),
            true,
        );
        let (status, body) = self.0.post("/tsa", "application/timestamp-query", query)?;
        let reply = cps_tsa::parse_response(&body)
            .map_err(|e| format!("the TSA's answer ({status}): {e}"))?;
        let Some(token) = reply.token else {
            return Err(format!(
                "the TSA granted no token ({status}): {} {:?}",
                reply.status_text.unwrap_or_default(),
                reply.fail_info
            )
            .into());
        };
        let t = cps_tsa::verify_token(&token).map_err(|e| format!("the TSA's token: {e}"))?;
        if t.imprint != digest.as_ref() {
            return Err("the TSA's token is over another hash".into());
        }
        let expected = cps_tsa::parse_query(&cps_tsa::build_query(
            cps_tsa::HashAlg::Sha256,
            digest.as_ref(),
            Some(&nonce),
            true,
        ))
        .map_err(|e| e.to_string())?
        .nonce;
        if t.nonce != expected {
            return Err("the TSA's token does not echo our nonce".into());
        }
        Ok(token)
    }
}

/// The issuing CA of `cert` among the appliance's published CA certificates, then the root.
fn chain_of(
    public: &PublicClient,
    config: &cps_appliance::config::Config,
    cert: &[u8],
) -> Result<Vec<Vec<u8>>, String> {
    let issuer_name = cps_pki::parse_certificate(cert)
        .map_err(|e| e.to_string())?
        .issuer
        .to_string();
    for id in config.ca.issuing.keys() {
        let der = public.get(&format!("/ca/{id}.der"))?;
        let subject = cps_pki::parse_certificate(&der)
            .map_err(|e| e.to_string())?
            .subject
            .to_string();
        if subject == issuer_name {
            let root = public.get("/ca/root.der")?;
            return Ok(vec![cert.to_vec(), der, root]);
        }
    }
    Err(format!(
        "no CA of the appliance issued the card's certificate ({issuer_name})"
    ))
}

/// A fresh OCSP answer (nonce) for `cert` from the appliance, which must say good.
fn ocsp_of(public: &PublicClient, cert: &[u8], issuer: &[u8]) -> Result<Vec<u8>, String> {
    let serial = cps_pki::parse_certificate(cert)
        .map_err(|e| e.to_string())?
        .serial
        .as_bytes()
        .to_vec();
    let nonce = random::<16>()?;
    let req = cps_ocsp::request::request_with_nonce(issuer, &serial, &nonce)
        .map_err(|e| e.to_string())?;
    let (status, body) = public.post("/ocsp", "application/ocsp-request", req)?;
    let verified = cps_ocsp::parse_response(&body, &Default::default())
        .and_then(|r| r.verify(issuer))
        .map_err(|e| format!("the appliance's OCSP answer ({status}): {e}"))?;
    let single = verified
        .status_of(cert)
        .map_err(|e| format!("the appliance's OCSP answer: {e}"))?;
    if single.status != cps_ocsp::SingleCertStatus::Good {
        return Err(format!(
            "the card's signature certificate is not valid: {:?}",
            single.status
        ));
    }
    Ok(body)
}

pub struct CardSignArgs {
    pub reader: Option<String>,
    pub pin: Zeroizing<String>,
    pub purpose: String,
    pub enveloping: bool,
    pub submission_set: Option<String>,
    pub documents: Vec<String>,
    pub out: Option<std::path::PathBuf>,
}

pub fn sign(config: &cps_appliance::config::Config, a: CardSignArgs) -> CliResult {
    let refused = |m: String| (EXIT_REFUSED, m);
    let purpose = cps_dsg::Purpose::parse(&a.purpose).ok_or_else(|| {
        fail(format!(
            "purpose '{}': not an ASTM E1762 commitment type",
            a.purpose
        ))
    })?;
    let docs: Vec<DocumentArg> = a
        .documents
        .iter()
        .map(|d| parse_document(d))
        .collect::<Result<_, _>>()?;
    let bytes: Vec<Vec<u8>> = docs
        .iter()
        .map(|d| read(&d.path))
        .collect::<Result<_, _>>()?;
    let public = PublicClient::new(config)?;
    let card = |e: cps_card::CardError| refused(format!("card: {e}"));
    let pcsc = Pcsc::establish().map_err(card)?;
    let reader = pcsc.resolve_reader(a.reader.as_deref()).map_err(card)?;
    let piv = Piv::select(pcsc.connect(&reader).map_err(card)?).map_err(card)?;
    let rule = SignCertificateRule::builtin().map_err(|e| fail(e.to_string()))?;
    // Slot 9C only, and only a cps-sign certificate: the card's authentication key never signs
    // a document.
    let signer = CardSigner::open(piv, a.pin, &rule).map_err(|e| refused(format!("card: {e}")))?;
    let chain = chain_of(&public, config, signer.certificate()).map_err(fail)?;
    let ocsp = ocsp_of(&public, &chain[0], &chain[1]).map_err(refused)?;
    let signed: Vec<cps_dsg::SignedDocument<'_>> = docs
        .iter()
        .zip(&bytes)
        .map(|(d, b)| cps_dsg::SignedDocument {
            unique_id: &d.unique_id,
            digest: cps_dsg::DocumentDigest::Bytes(b),
            mime_type: d.mime_type.as_deref().unwrap_or("text/xml"),
        })
        .collect();
    let content = if a.enveloping {
        if signed.len() != 1 || a.submission_set.is_some() {
            return Err(fail(
                "an enveloping signature is over exactly one document, without a submission set",
            ));
        }
        cps_dsg::Content::Enveloping {
            document: &bytes[0],
            mime_type: signed[0].mime_type,
        }
    } else {
        cps_dsg::Content::Detached {
            submission_set: a.submission_set.as_deref(),
            documents: &signed,
        }
    };
    let id = format!("S{}", hex::encode(random::<12>().map_err(fail)?));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let xml = cps_dsg::sign(
        &cps_dsg::Seal {
            signer: &signer,
            chain: &chain,
        },
        &cps_dsg::SignRequest {
            content,
            purpose,
            signing_time: now,
            id: &id,
            ocsp_responses: &[ocsp],
        },
        &HttpTsa(&public),
    )
    .map_err(|e| refused(format!("signature not made: {e}")))?;
    let xml = String::from_utf8(xml).map_err(|_| fail("the signature is not UTF-8"))?;
    write_out(a.out, &xml)?;
    let subject = cps_pki::parse_certificate(&chain[0])
        .map(|c| c.subject.to_string())
        .unwrap_or_default();
    eprintln!(
        "signed by {subject} with the card in '{reader}' ({}, purpose {})",
        if a.enveloping {
            "enveloping"
        } else {
            "detached"
        },
        purpose.keyword()
    );
    Ok(ExitCode::SUCCESS)
}
