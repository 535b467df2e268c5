//! CRLs in a cluster: partitions (shards), the CRLs as the store keeps them, and the signer lease.
//!
//! # Partitions
//!
//! A CA with `shards = 1` has one full CRL at `<base>/crl/<ca>.crl`, without an
//! issuingDistributionPoint. A CA with `shards = N > 1` gives each new certificate a serial that
//! carries its shard ([`sharded_serial`]: `0x5C ‖ shard (u16, big-endian) ‖ 16 random bytes`, 19
//! octets, which no unsharded serial of this CA has: those are 16 octets), and a CRL distribution
//! point `<base>/crl/<ca>/<shard>.crl`. Shard `k`'s CRL lists the revoked certificates whose serial
//! carries `k`, and names its URL in a critical issuingDistributionPoint. The CA's URL
//! `<base>/crl/<ca>.crl` stays: it then lists the certificates without a shard (issued before the
//! CA was sharded) and names itself in its own issuingDistributionPoint, so each CRL's scope is
//! exactly the certificates that point at it. The shard of a certificate is read from its serial,
//! so it never changes; the shard count may grow, never shrink (a shard beyond the count would
//! have no CRL).
//!
//! # Stored CRLs (named tables)
//!
//! | table | key | value |
//! |---|---|---|
//! | `crl` | `<ca>` or `<ca>/<shard>` | [`StoredCrl`] (JSON): number, times, revision, length, SHA-256, chunks |
//! | `crl-chunk` | `<ca>[/<shard>]/<number, 20 digits>/<index, 6 digits>` | up to [`CHUNK_LEN`] bytes of the DER |
//! | `crl-number` | `<ca>` | the CA's last CRL number, u64 big-endian |
//! | `crl-lease` | `crl-signer` | [`LeaseRecord`] (JSON) |
//!
//! and the counter `crl-revision:<ca>[/<shard>]`, bumped by every revocation, hold and release
//! in its own commit: a stored CRL built at a lower revision is stale on every node.
//!
//! A CRL's number is reserved before it is signed, by a commit fenced by the lease that moves the
//! CA's `crl-number` on with a compare-and-swap (so no two signed CRLs ever share a number, not
//! even one that is then dropped). The CRL is then published by one commit that checks the lease
//! still holds this node's record (fencing) and that the number is still the last one reserved,
//! writes the chunks and the `crl` record, and deletes the chunks of the CRL before the previous
//! one (a reader that has just read the previous record still finds its chunks).

use serde::{Deserialize, Serialize};

use cps_pki::crl::{CrlEntry, RevocationReason};
use cps_store::{Expect, RevokedEntry, Store, WriteOp};

use crate::CaError;

/// First octet of a serial that carries a shard.
pub const SHARD_TAG: u8 = 0x5C;
/// Default length of the CRL signer lease, seconds.
pub const DEFAULT_LEASE_SECS: i64 = 60;
/// Largest shard count of a CA.
pub const MAX_SHARDS: u16 = 4096;
/// Bytes of DER per `crl-chunk` record (below the store's value limit).
pub const CHUNK_LEN: usize = 60_000;
/// Named table of the stored CRLs.
pub const CRL_TABLE: &str = "crl";
/// Named table of the stored CRLs' bytes.
pub const CHUNK_TABLE: &str = "crl-chunk";
/// Named table of the CAs' last CRL numbers.
pub const NUMBER_TABLE: &str = "crl-number";
/// Named table of the CRL signer lease.
pub const LEASE_TABLE: &str = "crl-lease";
/// Key of the CRL signer lease (one signer for every CA of the cluster).
pub const LEASE_KEY: &[u8] = b"crl-signer";

/// A serial number that carries `shard`: `0x5C ‖ shard ‖ random` (19 octets, positive, minimal).
pub fn sharded_serial(random: [u8; 16], shard: u16) -> cps_pki::Serial {
    let mut b = Vec::with_capacity(19);
    b.push(SHARD_TAG);
    b.extend_from_slice(&shard.to_be_bytes());
    b.extend_from_slice(&random);
    // Positive (0x5C < 0x80), minimal (first octet not zero), 19 <= 20 octets.
    cps_pki::Serial::from_bytes(&b).unwrap_or_else(|_| cps_pki::serial_from_random(random))
}

/// The shard a serial carries, if it is a sharded serial (leading zero octets ignored).
pub fn shard_of(serial: &[u8]) -> Option<u16> {
    let start = serial.iter().position(|&b| b != 0)?;
    match &serial[start..] {
        [SHARD_TAG, hi, lo, rest @ ..] if rest.len() == 16 => Some(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

/// Which CRL of a CA: `None` is the CA's own URL (`/crl/<ca>.crl`), `Some(k)` shard `k`.
pub type Partition = Option<u16>;

/// The partition whose CRL lists `serial` when the CA has `shards` shards.
pub fn partition_of(serial: &[u8], shards: u16) -> Partition {
    if shards > 1 { shard_of(serial) } else { None }
}

/// The URL of a partition's CRL.
pub fn crl_url(base: &str, ca: &str, part: Partition) -> String {
    match part {
        None => format!("{base}/crl/{ca}.crl"),
        Some(k) => format!("{base}/crl/{ca}/{k}.crl"),
    }
}

/// The name of a partition in store keys, counters and the publisher (`<ca>` or `<ca>/<k>`).
pub fn partition_name(ca: &str, part: Partition) -> String {
    match part {
        None => ca.to_owned(),
        Some(k) => format!("{ca}/{k}"),
    }
}

/// The counter every revocation of the partition bumps.
pub fn revision_counter(ca: &str, part: Partition) -> String {
    format!("crl-revision:{}", partition_name(ca, part))
}

/// The entries of partition `part`'s CRL among `revoked` (a CA with `shards` shards), dropping
/// the certificates expired more than `validity` seconds before `now`.
pub fn partition_entries(
    revoked: Vec<RevokedEntry>,
    part: Partition,
    shards: u16,
    now: i64,
    validity: i64,
) -> Vec<CrlEntry> {
    revoked
        .into_iter()
        .filter(|r| r.not_after + validity >= now)
        .filter(|r| shards <= 1 || shard_of(&r.serial) == part)
        .map(|r| CrlEntry {
            serial: r.serial,
            revocation_time: r.time,
            reason: RevocationReason::from_code(r.reason),
            invalidity_date: r.invalidity_date,
        })
        .collect()
}

/// A CRL as the store keeps it (the `crl` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCrl {
    /// Its CRL number.
    pub number: u64,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// The partition's revision counter when its entries were read.
    pub revision: u64,
    /// Length of the DER.
    pub len: usize,
    /// SHA-256 of the DER, hex.
    pub sha256: String,
    /// Number of `crl-chunk` records.
    pub chunks: u32,
    /// The previous CRL's number and chunk count (its chunks are kept for readers in flight).
    pub previous: Option<(u64, u32)>,
    /// The node that signed it.
    pub signer: String,
}

impl StoredCrl {
    /// Half-way between thisUpdate and nextUpdate: a CRL is re-signed from then on.
    pub fn half_life(&self) -> i64 {
        self.this_update + (self.next_update - self.this_update) / 2
    }
}

fn chunk_key(name: &str, number: u64, index: u32) -> Vec<u8> {
    format!("{name}/{number:020}/{index:06}").into_bytes()
}

fn sha256_hex(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

fn corrupt(what: String) -> CaError {
    CaError::internal(std::io::Error::new(std::io::ErrorKind::InvalidData, what))
}

/// The stored record of a partition, with its raw bytes (for a compare-and-swap).
pub fn load_stored(store: &dyn Store, name: &str) -> Result<Option<(StoredCrl, Vec<u8>)>, CaError> {
    match store.get_record(CRL_TABLE, name.as_bytes())? {
        None => Ok(None),
        Some(raw) => {
            let rec = serde_json::from_slice(&raw)
                .map_err(|e| corrupt(format!("stored CRL record {name}: {e}")))?;
            Ok(Some((rec, raw)))
        }
    }
}

/// The DER of a stored CRL, checked against its length and SHA-256.
pub fn load_der(store: &dyn Store, name: &str, rec: &StoredCrl) -> Result<Vec<u8>, CaError> {
    let mut der = Vec::with_capacity(rec.len);
    for i in 0..rec.chunks {
        let chunk = store
            .get_record(CHUNK_TABLE, &chunk_key(name, rec.number, i))?
            .ok_or_else(|| {
                corrupt(format!(
                    "CRL {name} number {}: chunk {i} missing",
                    rec.number
                ))
            })?;
        der.extend_from_slice(&chunk);
    }
    if der.len() != rec.len || sha256_hex(&der) != rec.sha256 {
        return Err(corrupt(format!(
            "CRL {name} number {}: stored bytes do not match their digest",
            rec.number
        )));
    }
    Ok(der)
}

/// The next CRL number of `ca` (from the `crl-number` record and the older `crl-number:<ca>`
/// counter, whichever is higher) and the precondition that it is still the next one.
pub fn next_number(store: &dyn Store, ca: &str) -> Result<(u64, Expect), CaError> {
    let (last, expect) = match store.get_record(NUMBER_TABLE, ca.as_bytes())? {
        None => (0, Expect::Absent),
        Some(raw) => {
            let n = <[u8; 8]>::try_from(raw.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| corrupt(format!("CRL number record of {ca}")))?;
            (n, Expect::Value(raw))
        }
    };
    let legacy = store.counter(&format!("crl-number:{ca}"))?;
    Ok((last.max(legacy) + 1, expect))
}

fn fence(lease: &HeldLease) -> WriteOp {
    WriteOp::PutRecord {
        table: LEASE_TABLE.into(),
        key: LEASE_KEY.to_vec(),
        value: lease.raw.clone(),
        expect: Expect::Value(lease.raw.clone()),
    }
}

/// The reservation of CRL number `number` for `ca` before it is signed, fenced by the lease:
/// a number is taken once, even by a CRL that is then dropped. The older `crl-number:<ca>`
/// counter follows it.
pub fn reserve_ops(ca: &str, number: u64, expect: Expect, lease: &HeldLease) -> Vec<WriteOp> {
    vec![
        fence(lease),
        WriteOp::PutRecord {
            table: NUMBER_TABLE.into(),
            key: ca.as_bytes().to_vec(),
            value: number.to_be_bytes().to_vec(),
            expect,
        },
        WriteOp::BumpCounter {
            name: format!("crl-number:{ca}"),
            min_next: Some(number),
        },
    ]
}

/// What one publication writes, all or nothing: (a) the fence on the lease, (b) the check that
/// the CA's CRL number is still the one reserved for this CRL, (c) the chunks and the `crl`
/// record; and the removal of the chunks two CRLs back.
#[allow(clippy::too_many_arguments)]
pub fn publish_ops(
    ca: &str,
    name: &str,
    der: &[u8],
    number: u64,
    times: (i64, i64),
    revision: u64,
    previous: Option<&(StoredCrl, Vec<u8>)>,
    lease: &HeldLease,
) -> Result<Vec<WriteOp>, CaError> {
    let chunks: Vec<&[u8]> = der.chunks(CHUNK_LEN).collect();
    let rec = StoredCrl {
        number,
        this_update: times.0,
        next_update: times.1,
        revision,
        len: der.len(),
        sha256: sha256_hex(der),
        chunks: u32::try_from(chunks.len())
            .map_err(|_| corrupt(format!("CRL {name} too large")))?,
        previous: previous.map(|(p, _)| (p.number, p.chunks)),
        signer: lease.holder.clone(),
    };
    let n = number.to_be_bytes().to_vec();
    let mut ops = vec![
        // (a) fencing: the lease is still exactly the one this node holds.
        fence(lease),
        // (b) no later number was reserved since this one.
        WriteOp::PutRecord {
            table: NUMBER_TABLE.into(),
            key: ca.as_bytes().to_vec(),
            value: n.clone(),
            expect: Expect::Value(n),
        },
    ];
    // (c) the CRL itself.
    for (i, c) in chunks.iter().enumerate() {
        ops.push(WriteOp::PutRecord {
            table: CHUNK_TABLE.into(),
            key: chunk_key(name, number, i as u32),
            value: c.to_vec(),
            expect: Expect::Absent,
        });
    }
    ops.push(WriteOp::PutRecord {
        table: CRL_TABLE.into(),
        key: name.as_bytes().to_vec(),
        value: serde_json::to_vec(&rec).map_err(CaError::internal)?,
        expect: match previous {
            Some((_, raw)) => Expect::Value(raw.clone()),
            None => Expect::Absent,
        },
    });
    if let Some((old_number, old_chunks)) = previous.and_then(|(p, _)| p.previous) {
        for i in 0..old_chunks {
            ops.push(WriteOp::DeleteRecord {
                table: CHUNK_TABLE.into(),
                key: chunk_key(name, old_number, i),
                expect: Expect::Any,
            });
        }
    }
    Ok(ops)
}

/// The CRL signer lease as stored (the `crl-lease` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The node that may sign CRLs.
    pub holder: String,
    /// Grows by one at every change of holder.
    pub epoch: u64,
    /// Until when, Unix seconds (the signing clock).
    pub expires: i64,
}

/// The lease as this node holds it: the record and its exact stored bytes (the fence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    /// This node.
    pub holder: String,
    /// The epoch of this holding.
    pub epoch: u64,
    /// Until when.
    pub expires: i64,
    /// The stored bytes, which every publication expects unchanged.
    pub raw: Vec<u8>,
}

/// Who signs CRLs: the lease taken and renewed with compare-and-swap on one record.
pub struct CrlLease {
    node: String,
    secs: i64,
}

/// The outcome of [`CrlLease::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// This node holds the lease.
    Held(HeldLease),
    /// Another node holds a live lease.
    Other(LeaseRecord),
}

impl CrlLease {
    /// The lease of node `node`, taken for `secs` seconds at a time.
    pub fn new(node: &str, secs: i64) -> CrlLease {
        CrlLease {
            node: node.to_owned(),
            secs: secs.max(1),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The current lease record, if any.
    pub fn current(store: &dyn Store) -> Result<Option<(LeaseRecord, Vec<u8>)>, CaError> {
        match store.get_record(LEASE_TABLE, LEASE_KEY)? {
            None => Ok(None),
            Some(raw) => {
                let rec = serde_json::from_slice(&raw)
                    .map_err(|e| corrupt(format!("CRL lease record: {e}")))?;
                Ok(Some((rec, raw)))
            }
        }
    }

    /// Take the lease (absent, expired, or already this node's), renew it when less than half
    /// of it is left, or report the live holder. A change of holder increments the epoch.
    pub fn acquire(&self, store: &dyn Store, now: i64) -> Result<LeaseState, CaError> {
        // Two rounds: a compare-and-swap lost to another node is read again once.
        for _ in 0..2 {
            let current = Self::current(store)?;
            let (next, expect) = match &current {
                Some((r, raw)) if r.holder == self.node => {
                    if r.expires - now > self.secs / 2 {
                        return Ok(LeaseState::Held(HeldLease {
                            holder: r.holder.clone(),
                            epoch: r.epoch,
                            expires: r.expires,
                            raw: raw.clone(),
                        }));
                    }
                    (r.epoch, Expect::Value(raw.clone()))
                }
                Some((r, _)) if r.expires > now => return Ok(LeaseState::Other(r.clone())),
                Some((r, raw)) => (r.epoch + 1, Expect::Value(raw.clone())),
                None => (1, Expect::Absent),
            };
            let rec = LeaseRecord {
                holder: self.node.clone(),
                epoch: next,
                expires: now + self.secs,
            };
            let raw = serde_json::to_vec(&rec).map_err(CaError::internal)?;
            let op = WriteOp::PutRecord {
                table: LEASE_TABLE.into(),
                key: LEASE_KEY.to_vec(),
                value: raw.clone(),
                expect,
            };
            match store.commit(cps_store::WriteBatch::new().with(op)) {
                Ok(_) => {
                    return Ok(LeaseState::Held(HeldLease {
                        holder: rec.holder,
                        epoch: rec.epoch,
                        expires: rec.expires,
                        raw,
                    }));
                }
                Err(cps_store::StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        match Self::current(store)? {
            Some((r, _)) => Ok(LeaseState::Other(r)),
            None => Err(CaError::Conflict(
                "the CRL signer lease keeps changing".into(),
            )),
        }
    }
}
