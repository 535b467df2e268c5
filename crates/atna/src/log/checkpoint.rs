//! Signed checkpoints: `(seq, head hash, time, policy)` signed with the repository's key (an HSM
//! key in production). A checkpoint pins the chain up to `seq`: records cannot be changed,
//! removed or cut off at or before it without breaking a signature the attacker cannot make.
//! The policy is the promise under which the next checkpoint is due (after `every` more records
//! or `interval` of time): it is signed, so the verifier knows how long an unsigned tail may
//! legitimately be even when the configuration changed since.
//!
//! `checkpoints.log` is a sequence of
//!
//! ```text
//! "AC02" | u32 body length | body
//! body = u64 seq | head hash (32) | i64 time (Unix µs) | u64 every | u64 interval (ms)
//!        | signature algorithm name (u16 len) | SHA-256 of the signer's SubjectPublicKeyInfo (u16 len)
//!        | signature (u16 len)
//! signed message = "cps-atna checkpoint v2\n" | u64 seq | head hash | i64 time | u64 every | u64 interval
//! ```
//!
//! Entries of the first format (`"AC01"`, no policy; signed message `"cps-atna checkpoint v1\n" |
//! seq | head | time`) are still read. ECDSA signatures are DER-encoded.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use cps_hsm::{SigFormat, SignatureAlgorithm, Signer};
use ring::digest;

use super::codec::{Dec, DecError, Enc};

pub(crate) const MAGIC_V1: &[u8; 4] = b"AC01";
pub(crate) const MAGIC: &[u8; 4] = b"AC02";
const DOMAIN_V1: &[u8] = b"cps-atna checkpoint v1\n";
const DOMAIN: &[u8] = b"cps-atna checkpoint v2\n";
/// Largest checkpoint body accepted.
pub(crate) const MAX_BODY: usize = 1 << 16;

/// When the next checkpoint is due: after `every` more records, or `interval` after this one
/// when records arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Records between two checkpoints, at most.
    pub every: u64,
    /// Longest time between a checkpoint and the next while records arrive.
    pub interval: Duration,
}

/// One signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Sequence number of the last record it covers.
    pub seq: u64,
    /// Hash of that record.
    pub head: [u8; 32],
    /// When it was made (Unix µs).
    pub time: i64,
    /// The policy it was made under (`None` for the first format, which did not carry it).
    pub policy: Option<CheckpointPolicy>,
    /// Signature algorithm.
    pub algorithm: String,
    /// SHA-256 of the signer's SubjectPublicKeyInfo.
    pub key_id: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
}

fn interval_ms(p: &CheckpointPolicy) -> u64 {
    u64::try_from(p.interval.as_millis()).unwrap_or(u64::MAX)
}

fn signed_message(
    seq: u64,
    head: &[u8; 32],
    time: i64,
    policy: Option<&CheckpointPolicy>,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 64);
    m.extend_from_slice(if policy.is_some() { DOMAIN } else { DOMAIN_V1 });
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(head);
    m.extend_from_slice(&time.to_be_bytes());
    if let Some(p) = policy {
        m.extend_from_slice(&p.every.to_be_bytes());
        m.extend_from_slice(&interval_ms(p).to_be_bytes());
    }
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

/// The key identifier checkpoints carry: SHA-256 of the DER SubjectPublicKeyInfo.
pub fn key_id(spki_der: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, spki_der).as_ref().to_vec()
}

impl Checkpoint {
    /// Sign a checkpoint (pure apart from the signer).
    pub fn sign(
        seq: u64,
        head: [u8; 32],
        time: i64,
        policy: CheckpointPolicy,
        signer: &dyn Signer,
    ) -> Result<Self, cps_hsm::HsmError> {
        let alg = signer.key_algorithm().default_signature();
        let signature = signer.sign(
            alg,
            &signed_message(seq, &head, time, Some(&policy)),
            SigFormat::Der,
        )?;
        Ok(Checkpoint {
            seq,
            head,
            time,
            policy: Some(policy),
            algorithm: alg.name().to_owned(),
            key_id: key_id(signer.public_key_der()),
            signature,
        })
    }

    /// The message the signature covers.
    pub fn signed_message(&self) -> Vec<u8> {
        signed_message(self.seq, &self.head, self.time, self.policy.as_ref())
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
            &self.signed_message(),
            &self.signature,
            SigFormat::Der,
        )
        .map_err(|e| format!("signature does not verify: {e}"))
    }

    /// The entry exactly as `checkpoints.log` holds it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(200 + self.signature.len());
        self.encode(&mut out);
        out
    }

    /// One entry as written by [`to_bytes`](Checkpoint::to_bytes).
    pub fn from_bytes(entry: &[u8]) -> Result<Self, String> {
        match decode_all(entry) {
            Ok((mut v, None)) if v.len() == 1 => Ok(v.remove(0)),
            Ok(_) => Err("not exactly one complete checkpoint".into()),
            Err((offset, reason)) => Err(format!("at byte {offset}: {reason}")),
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(180 + self.signature.len());
        let mut e = Enc(&mut body);
        e.u64(self.seq);
        e.raw(&self.head);
        e.i64(self.time);
        if let Some(p) = &self.policy {
            e.u64(p.every);
            e.u64(interval_ms(p));
        }
        e.str16(&self.algorithm);
        e.bytes16(&self.key_id);
        e.bytes16(&self.signature);
        out.extend_from_slice(if self.policy.is_some() {
            MAGIC
        } else {
            MAGIC_V1
        });
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
    }

    pub(crate) fn decode(body: &[u8], with_policy: bool) -> Result<Self, DecError> {
        let mut d = Dec::new(body);
        let seq = d.u64("seq")?;
        let head = d.arr32("head")?;
        let time = d.i64("time")?;
        let policy = if with_policy {
            let every = d.u64("every")?;
            let interval = d.u64("interval")?;
            Some(CheckpointPolicy {
                every,
                interval: Duration::from_millis(interval),
            })
        } else {
            None
        };
        let c = Checkpoint {
            seq,
            head,
            time,
            policy,
            algorithm: d.str16("algorithm")?,
            key_id: d.bytes16("key id")?.to_vec(),
            signature: d.bytes16("signature")?.to_vec(),
        };
        d.done("checkpoint")?;
        Ok(c)
    }
}

/// One step of decoding a byte buffer of checkpoint entries.
pub(crate) enum Step {
    /// A complete entry and its length in bytes.
    Entry(Checkpoint, usize),
    /// The buffer ends inside an entry.
    Incomplete,
    /// Not an entry.
    Bad(String),
}

/// Decode the entry at the start of `rest`.
pub(crate) fn decode_one(rest: &[u8]) -> Step {
    if rest.len() < 8 {
        return Step::Incomplete;
    }
    let with_policy = match &rest[..4] {
        m if m == MAGIC => true,
        m if m == MAGIC_V1 => false,
        _ => return Step::Bad("bad checkpoint magic".into()),
    };
    let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
    if len > MAX_BODY {
        return Step::Bad(format!("checkpoint length {len}"));
    }
    if rest.len() < 8 + len {
        return Step::Incomplete;
    }
    match Checkpoint::decode(&rest[8..8 + len], with_policy) {
        Ok(c) => Step::Entry(c, 8 + len),
        Err(e) => Step::Bad(e.0),
    }
}

/// Decode a whole `checkpoints.log`. A torn last entry (crash while appending) is ignored and
/// reported by its offset; anything else malformed is an error with its offset.
pub(crate) fn decode_all(data: &[u8]) -> Result<(Vec<Checkpoint>, Option<u64>), (u64, String)> {
    let mut out = Vec::new();
    let mut i = 0usize;
    while i < data.len() {
        match decode_one(&data[i..]) {
            Step::Entry(c, n) => {
                out.push(c);
                i += n;
            }
            Step::Incomplete => return Ok((out, Some(i as u64))),
            Step::Bad(reason) => return Err((i as u64, reason)),
        }
    }
    Ok((out, None))
}

/// Why the next entry of a `checkpoints.log` cannot be read.
#[derive(Debug)]
pub(crate) enum EntryError {
    Io(std::io::Error),
    /// Not an entry: at this byte offset, the entry with this index.
    Bad {
        offset: u64,
        index: usize,
        reason: String,
    },
}

/// Reads a `checkpoints.log` one entry at a time, in bounded memory. At the end of the file it
/// returns `None`; called again, it returns what was appended since (a log being written).
pub(crate) struct EntryReader {
    file: Option<File>,
    existed: bool,
    /// Bytes of the file returned as complete entries.
    consumed: u64,
    buf: Vec<u8>,
    start: usize,
    count: usize,
}

const READ_CHUNK: usize = 64 << 10;

impl EntryReader {
    /// The file at `path`; a missing file reads as empty.
    pub fn open(path: &Path) -> std::io::Result<EntryReader> {
        let file = match File::open(path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(EntryReader {
            existed: file.is_some(),
            file,
            consumed: 0,
            buf: Vec::new(),
            start: 0,
            count: 0,
        })
    }

    /// The next complete entry, or `None` at the end of the file as it is now.
    pub fn next_entry(&mut self) -> Result<Option<Checkpoint>, EntryError> {
        loop {
            match decode_one(&self.buf[self.start..]) {
                Step::Entry(c, n) => {
                    self.start += n;
                    self.consumed += n as u64;
                    self.count += 1;
                    if self.start >= READ_CHUNK {
                        self.buf.drain(..self.start);
                        self.start = 0;
                    }
                    return Ok(Some(c));
                }
                Step::Bad(reason) => {
                    return Err(EntryError::Bad {
                        offset: self.consumed,
                        index: self.count,
                        reason,
                    });
                }
                Step::Incomplete => {
                    let Some(f) = self.file.as_mut() else {
                        return Ok(None);
                    };
                    let have = self.buf.len();
                    self.buf.resize(have + READ_CHUNK, 0);
                    let n = loop {
                        match f.read(&mut self.buf[have..]) {
                            Ok(n) => break n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                self.buf.truncate(have);
                                return Err(EntryError::Io(e));
                            }
                        }
                    };
                    self.buf.truncate(have + n);
                    if n == 0 {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Whether the file existed when opened.
    pub fn existed(&self) -> bool {
        self.existed
    }

    /// Bytes after the last complete entry (a torn entry, or one being written).
    pub fn pending(&self) -> u64 {
        (self.buf.len() - self.start) as u64
    }

    /// Bytes of complete entries read.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Entries read.
    pub fn count(&self) -> usize {
        self.count
    }
}
