//! Deterministic records for the crash test, its child process and the benchmark.
//!
//! Shared by `tests/crash.rs`, `src/bin/store-crash-child.rs` and `benches/store_writes.rs`
//! through `#[path]`, so the test can recompute exactly what the child wrote.
#![allow(dead_code)]

use cps_store::{AuditRecord, CertStatus, CertificateRecord, WriteBatch, WriteOp};

/// Issuer of the crash test's certificates.
pub const ISSUER: &str = "crash";
/// Counter bumped by every crash-test commit.
pub const COUNTER: &str = "crash-commits";
/// Size of the synthetic DER.
pub const DER_LEN: usize = 800;

/// xorshift64*, seeded by `id`.
fn bytes(id: u64, len: usize) -> Vec<u8> {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// The serial of certificate `id`: positive, 9 bytes, unique per id.
pub fn serial(id: u64) -> Vec<u8> {
    let mut s = vec![0x01];
    s.extend_from_slice(&id.to_be_bytes());
    s
}

/// The certificate of `id`.
pub fn certificate(id: u64) -> CertificateRecord {
    let spki: [u8; 32] = bytes(id ^ 0x5555, 32).try_into().unwrap();
    CertificateRecord {
        issuer: ISSUER.into(),
        serial: serial(id),
        subject: format!("CN=Professionnel {id},O=Test"),
        profile: "cps-auth".into(),
        holder: Some(format!("8{id:010}")),
        spki_sha256: spki,
        not_before: 1_700_000_000 + id as i64,
        not_after: 1_800_000_000 + id as i64,
        der: bytes(id, DER_LEN),
        status: CertStatus::Valid,
        issued_at: 1_700_000_000 + id as i64,
    }
}

/// The audit record of `id`.
pub fn audit(id: u64) -> AuditRecord {
    AuditRecord {
        time: 1_700_000_000 + id as i64,
        kind: "cert.issue".into(),
        actor: "crash-test".into(),
        outcome: "success".into(),
        detail: serde_json::json!({ "id": id, "serial": format!("{:x}", id) }),
        node: None,
    }
}

/// One commit of the crash test: a certificate, its audit record, and a counter bump.
pub fn batch(id: u64) -> WriteBatch {
    WriteBatch::new()
        .with(WriteOp::InsertCertificate(certificate(id)))
        .with(WriteOp::AppendAudit(audit(id)))
        .with(WriteOp::BumpCounter {
            name: COUNTER.into(),
            min_next: None,
        })
}
