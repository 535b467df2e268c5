//! Signed checkpoints: `(seq, head hash, time)` signed with the repository's key (an HSM key in
//! production). A checkpoint pins the chain up to `seq`: records cannot be changed, removed or
//! cut off at or before it without breaking a signature the attacker cannot make.
//!
//! `checkpoints.log` is a sequence of
//!
//! ```text
//! "AC01" | u32 body length | body
//! body = u64 seq | head hash (32) | i64 time (Unix µs) | signature algorithm name (u16 len)
//!        | SHA-256 of the signer's SubjectPublicKeyInfo (u16 len) | signature (u16 len)
//! signed message = "cps-atna checkpoint v1\n" | u64 seq | head hash | i64 time
//! ```
//!
//! ECDSA signatures are DER-encoded.

use cps_hsm::{SigFormat, SignatureAlgorithm, Signer};
use ring::digest;

use super::codec::{Dec, DecError, Enc};

pub(crate) const MAGIC: &[u8; 4] = b"AC01";
const DOMAIN: &[u8] = b"cps-atna checkpoint v1\n";

/// One signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Sequence number of the last record it covers.
    pub seq: u64,
    /// Hash of that record.
    pub head: [u8; 32],
    /// When it was made (Unix µs).
    pub time: i64,
    /// Signature algorithm.
    pub algorithm: String,
    /// SHA-256 of the signer's SubjectPublicKeyInfo.
    pub key_id: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
}

fn signed_message(seq: u64, head: &[u8; 32], time: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 48);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(head);
    m.extend_from_slice(&time.to_be_bytes());
    m
}

/// Parse a signature algorithm name as written by [`SignatureAlgorithm::name`].
pub(crate) fn algorithm_from_name(n: &str) -> Option<SignatureAlgorithm> {
    Some(match n {
        "rsa-pkcs1-sha256" => SignatureAlgorithm::RsaPkcs1Sha256,
        "rsa-pkcs1-sha384" => SignatureAlgorithm::RsaPkcs1Sha384,
        "rsa-pss-sha256" => SignatureAlgorithm::RsaPssSha256,
        "rsa-pss-sha384" => SignatureAlgorithm::RsaPssSha384,
        "ecdsa-sha256" => SignatureAlgorithm::EcdsaSha256,
        "ecdsa-sha384" => SignatureAlgorithm::EcdsaSha384,
        _ => return None,
    })
}

pub(crate) fn key_id(spki_der: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, spki_der).as_ref().to_vec()
}

impl Checkpoint {
    /// Sign a checkpoint (pure apart from the signer).
    pub fn sign(
        seq: u64,
        head: [u8; 32],
        time: i64,
        signer: &dyn Signer,
    ) -> Result<Self, cps_hsm::HsmError> {
        let alg = signer.key_algorithm().default_signature();
        let signature = signer.sign(alg, &signed_message(seq, &head, time), SigFormat::Der)?;
        Ok(Checkpoint {
            seq,
            head,
            time,
            algorithm: alg.name().to_owned(),
            key_id: key_id(signer.public_key_der()),
            signature,
        })
    }

    /// Check the signature against a trusted public key (DER SubjectPublicKeyInfo).
    pub fn verify(&self, trusted_spki_der: &[u8]) -> Result<(), String> {
        if self.key_id != key_id(trusted_spki_der) {
            return Err("signed by a different key than the trusted one".into());
        }
        let alg = algorithm_from_name(&self.algorithm)
            .ok_or_else(|| format!("unknown signature algorithm {:?}", self.algorithm))?;
        cps_hsm::verify_signature(
            trusted_spki_der,
            alg,
            &signed_message(self.seq, &self.head, self.time),
            &self.signature,
            SigFormat::Der,
        )
        .map_err(|e| format!("signature does not verify: {e}"))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(160 + self.signature.len());
        let mut e = Enc(&mut body);
        e.u64(self.seq);
        e.raw(&self.head);
        e.i64(self.time);
        e.str16(&self.algorithm);
        e.bytes16(&self.key_id);
        e.bytes16(&self.signature);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecError> {
        let mut d = Dec::new(body);
        let c = Checkpoint {
            seq: d.u64("seq")?,
            head: d.arr32("head")?,
            time: d.i64("time")?,
            algorithm: d.str16("algorithm")?,
            key_id: d.bytes16("key id")?.to_vec(),
            signature: d.bytes16("signature")?.to_vec(),
        };
        d.done("checkpoint")?;
        Ok(c)
    }
}

/// Decode a whole `checkpoints.log`. A torn last entry (crash while appending) is ignored and
/// reported by its offset; anything else malformed is an error with its offset.
pub(crate) fn decode_all(data: &[u8]) -> Result<(Vec<Checkpoint>, Option<u64>), (u64, String)> {
    let mut out = Vec::new();
    let mut i = 0usize;
    while i < data.len() {
        let rest = &data[i..];
        if rest.len() < 8 {
            return Ok((out, Some(i as u64)));
        }
        if &rest[..4] != MAGIC {
            return Err((i as u64, "bad checkpoint magic".into()));
        }
        let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        if len > 1 << 16 {
            return Err((i as u64, format!("checkpoint length {len}")));
        }
        if rest.len() < 8 + len {
            return Ok((out, Some(i as u64)));
        }
        let c = Checkpoint::decode(&rest[8..8 + len]).map_err(|e| (i as u64, e.0))?;
        out.push(c);
        i += 8 + len;
    }
    Ok((out, None))
}
