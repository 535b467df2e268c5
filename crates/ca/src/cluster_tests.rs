//! CRLs with two nodes over one store: two `CaService`s with the same CA keys and two node ids
//! over one sled store, as two appliance processes share one database.

use std::collections::BTreeMap;
use std::sync::Arc;

use cps_pki::crl::{ParsedCrl, parse_crl, verify_crl};
use cps_store::{CertificateRecord, SledStore, Store};
use parking_lot::Mutex;

use crate::crl::{CrlLease, LeaseRecord, Partition, shard_of};
use crate::tests::{auth_request, csr_for, key};
use crate::*;

const NOW: i64 = 1_790_000_000;
const LEASE: i64 = 60;
const VALIDITY: i64 = 86_400;

/// Every CRL a node handed to its publisher (what it served), in order.
#[derive(Default)]
struct Served(Mutex<Vec<(String, Vec<u8>)>>);

impl CrlPublisher for Served {
    fn publish(&self, name: &str, der: &[u8]) -> std::io::Result<()> {
        self.0.lock().push((name.into(), der.to_vec()));
        Ok(())
    }
}

struct Cluster {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    a: Arc<CaService>,
    b: Arc<CaService>,
    spki: BTreeMap<String, Vec<u8>>,
}

/// Nodes `node-a` and `node-b`; CA `personnes` with `shards_a` / `shards_b` shards.
fn cluster(shards_a: u16, shards_b: u16) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    let profiles = cps_pki::profile::builtin_profiles();
    let h = hierarchy::software(
        &profiles,
        &["personnes", "organisations"],
        "https://ca.test",
        NOW - 86_400,
    )
    .unwrap();
    let spki = h
        .authorities
        .iter()
        .map(|a| (a.id.clone(), a.key.public_key_der().to_vec()))
        .collect();
    // The second node has the same CA certificates and keys (a shared HSM token).
    let same: Vec<CaAuthority> = h
        .authorities
        .iter()
        .map(|a| CaAuthority::new(&a.id, a.cert_der.clone(), a.key.clone(), a.signature).unwrap())
        .collect();
    let config = |node: &str, shards: u16| CaConfig {
        public_base_url: "https://ca.test".into(),
        crl_validity_secs: VALIDITY,
        key_policy: cps_pki::KeyPolicy::default(),
        reserved_profiles: vec![],
        node_id: node.into(),
        crl_lease_secs: LEASE,
        crl_shards: [("personnes".to_string(), shards)].into(),
    };
    let node = |auths, node: &str, shards| {
        Arc::new(
            CaService::new(
                auths,
                store.clone(),
                profiles.clone(),
                Arc::new(OpenGate),
                config(node, shards),
            )
            .with_crl_publisher(Arc::new(Served::default())),
        )
    };
    let a = node(h.authorities, "node-a", shards_a);
    let b = node(same, "node-b", shards_b);
    Cluster {
        _dir: dir,
        store,
        a,
        b,
        spki,
    }
}

impl Cluster {
    fn issue(&self, on: &CaService, now: i64) -> CertificateRecord {
        on.issue(&auth_request(csr_for(&key()), "810002813839"), "a", now)
            .unwrap()
    }

    /// The CRL, its signature checked with the CA's key.
    fn parse(&self, ca: &str, der: &[u8]) -> ParsedCrl {
        verify_crl(der, &self.spki[ca]).unwrap();
        parse_crl(der).unwrap()
    }

    fn lease(&self) -> LeaseRecord {
        CrlLease::current(self.store.as_ref()).unwrap().unwrap().0
    }

    fn stored(&self, name: &str) -> crl::StoredCrl {
        crl::load_stored(self.store.as_ref(), name)
            .unwrap()
            .unwrap()
            .0
    }
}

fn serials(p: &ParsedCrl) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = p.entries.iter().map(|e| e.0.clone()).collect();
    v.sort();
    v
}

#[test]
fn the_follower_serves_the_leaders_bytes_and_never_signs() {
    let c = cluster(1, 1);
    let first = c.a.crl("personnes", NOW).unwrap();
    assert_eq!(c.lease().holder, "node-a");
    let n1 = c.parse("personnes", &first).crl_number.unwrap();
    // B: the same bytes, from the store; B signed nothing.
    let on_b = c.b.crl("personnes", NOW + 1).unwrap();
    assert_eq!(*on_b, *first);
    assert_eq!(c.stored("personnes").signer, "node-a");
    assert_eq!(c.lease().holder, "node-a");

    // A revocation committed on B makes the CRL stale cluster-wide.
    let cert = c.issue(&c.a, NOW);
    c.b.revoke(
        "personnes",
        &cert.serial,
        RevocationReason::KeyCompromise,
        None,
        "o",
        NOW + 10,
    )
    .unwrap();
    // B is not the signer: it serves the current stored CRL (valid until its nextUpdate) and
    // does not sign a CRL of its own.
    let still = c.b.crl("personnes", NOW + 11).unwrap();
    assert_eq!(*still, *first);
    assert_eq!(c.stored("personnes").number, n1);
    // The leader's next CRL has it, and B then serves exactly those bytes.
    let second = c.a.crl("personnes", NOW + 12).unwrap();
    let p2 = c.parse("personnes", &second);
    assert!(p2.crl_number.unwrap() > n1);
    assert_eq!(serials(&p2), vec![cert.serial.clone()]);
    assert_eq!(*c.b.crl("personnes", NOW + 13).unwrap(), *second);
    assert_eq!(c.stored("personnes").signer, "node-a");

    // The leader goes quiet: its lease runs out; a revocation on B, and B takes the lease over
    // (a new epoch) and signs the next CRL, which A then serves.
    let epoch = c.lease().epoch;
    let later = NOW + 3 * LEASE;
    let cert2 = c.issue(&c.b, later);
    c.b.revoke(
        "personnes",
        &cert2.serial,
        RevocationReason::Superseded,
        None,
        "o",
        later,
    )
    .unwrap();
    let third = c.b.crl("personnes", later + 1).unwrap();
    let lease = c.lease();
    assert_eq!(lease.holder, "node-b");
    assert!(lease.epoch > epoch);
    let p3 = c.parse("personnes", &third);
    assert!(p3.crl_number > p2.crl_number);
    let mut want = vec![cert.serial.clone(), cert2.serial.clone()];
    want.sort();
    assert_eq!(serials(&p3), want);
    assert_eq!(*c.a.crl("personnes", later + 2).unwrap(), *third);
    assert_eq!(c.stored("personnes").signer, "node-b");
}

#[test]
fn a_paused_leader_cannot_publish() {
    let c = cluster(1, 1);
    let first = c.a.crl("personnes", NOW).unwrap();
    let n1 = c.parse("personnes", &first).crl_number.unwrap();
    let cert = c.issue(&c.a, NOW);
    c.a.revoke(
        "personnes",
        &cert.serial,
        RevocationReason::KeyCompromise,
        None,
        "o",
        NOW + 1,
    )
    .unwrap();
    // A signs the next CRL, then "pauses" before its commit: meanwhile its lease runs out and
    // B takes it over (B publishes the organisations CRL, so the personnes records A expects
    // are untouched: only the lease fences A out).
    let signed_by_a: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let (b, seen) = (c.b.clone(), signed_by_a.clone());
    *c.a.before_publish.lock() = Some(Box::new(move |der: &[u8]| {
        *seen.lock() = Some(der.to_vec());
        b.crl("organisations", NOW + LEASE + 5).unwrap();
    }));
    let served = c.a.crl("personnes", NOW + 2).unwrap();
    *c.a.before_publish.lock() = None;
    let dropped = signed_by_a.lock().clone().expect("A signed a CRL");
    let dropped_number = c.parse("personnes", &dropped).crl_number.unwrap();
    assert!(dropped_number > n1);
    // Not published: the store still holds the first CRL, and A serves that, not its own.
    assert_eq!(c.stored("personnes").number, n1);
    assert_eq!(*served, *first);
    assert_ne!(*served, dropped);
    assert_eq!(c.lease().holder, "node-b");
    // A, no longer the signer, signs nothing more while B's lease runs.
    let again = c.a.crl("personnes", NOW + LEASE + 6).unwrap();
    assert_eq!(*again, *first);
    // B signs the personnes CRL: a number above the dropped one (numbers are reserved before
    // signing, never given twice), with the revocation.
    let by_b = c.b.crl("personnes", NOW + LEASE + 7).unwrap();
    let pb = c.parse("personnes", &by_b);
    assert!(pb.crl_number.unwrap() > dropped_number);
    assert_eq!(serials(&pb), vec![cert.serial.clone()]);
    assert_eq!(*c.a.crl("personnes", NOW + LEASE + 8).unwrap(), *by_b);
}

#[test]
fn crl_numbers_strictly_increase_and_never_repeat_across_nodes() {
    let c = cluster(1, 1);
    // number -> bytes of every CRL either node served; per CA, what each node served in order.
    let mut by_number: BTreeMap<(String, u64), Vec<u8>> = BTreeMap::new();
    let mut last_served: BTreeMap<(&str, String), u64> = BTreeMap::new();
    let mut last_lease = (String::new(), 0u64);
    let mut holders = std::collections::BTreeSet::new();
    let mut t = NOW;
    for round in 0..12i64 {
        let (actor, other) = if round % 2 == 0 {
            (&c.a, &c.b)
        } else {
            (&c.b, &c.a)
        };
        let cert = c.issue(actor, t);
        actor
            .revoke(
                "personnes",
                &cert.serial,
                RevocationReason::Superseded,
                None,
                "o",
                t,
            )
            .unwrap();
        // Every third round the time jumps past the lease: the other node may take over.
        t += if round % 3 == 2 { 2 * LEASE } else { 7 };
        for (who, node) in [("a", actor), ("b", other), ("a", &c.a), ("b", &c.b)] {
            for ca in ["personnes", "organisations"] {
                let der = node.crl(ca, t).unwrap();
                let n = c.parse(ca, &der).crl_number.unwrap();
                // Never two different CRLs with one number.
                let prev = by_number.insert((ca.to_string(), n), der.to_vec());
                assert!(
                    prev.is_none_or(|p| p == *der),
                    "two CRLs of {ca} numbered {n}"
                );
                // What a node serves never goes back.
                let last = last_served.entry((who, ca.to_string())).or_insert(0);
                assert!(n >= *last, "{who} served {ca} number {n} after {last}");
                *last = n;
            }
            let l = c.lease();
            if l.holder != last_lease.0 {
                assert!(l.epoch > last_lease.1, "epoch did not grow: {l:?}");
            }
            holders.insert(l.holder.clone());
            last_lease = (l.holder, l.epoch);
        }
        // The leader's CRL lists every revocation so far.
        let p = c.parse("personnes", &c.a.crl("personnes", t).unwrap());
        assert_eq!(p.entries.len(), round as usize + 1);
        t += 1;
    }
    // Both nodes led at some point; the personnes CRL was re-signed after each revocation.
    assert_eq!(holders.len(), 2, "{holders:?}");
    let numbers: Vec<u64> = by_number
        .keys()
        .filter(|(ca, _)| ca == "personnes")
        .map(|k| k.1)
        .collect();
    assert!(numbers.len() >= 12, "{numbers:?}");
}

#[test]
fn sharded_certificates_name_the_shard_that_lists_them() {
    // A still runs with one full CRL (its certificates predate sharding); B has 4 shards.
    let c = cluster(1, 4);
    let old = c.issue(&c.a, NOW);
    assert_eq!(shard_of(&old.serial), None);
    // B is the signer from the start.
    c.b.crl("personnes", NOW).unwrap();
    let mut by_shard: BTreeMap<Partition, Vec<Vec<u8>>> = BTreeMap::new();
    let mut certs = vec![old.clone()];
    for _ in 0..16 {
        certs.push(c.issue(&c.b, NOW));
    }
    for (i, cert) in certs.iter().enumerate() {
        let part = shard_of(&cert.serial);
        let want = c.b.crl_url("personnes", part);
        // The certificate's CRL distribution point is its shard's URL (or the CA's, for the
        // certificate issued before sharding).
        let text = x509_parser::parse_x509_certificate(&cert.der)
            .unwrap()
            .1
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::CRLDistributionPoints(p) => {
                    Some(format!("{p:?}"))
                }
                _ => None,
            })
            .expect("a CRL distribution point");
        assert!(
            text.contains(&format!("\"{want}\"")),
            "{want} not in {text}"
        );
        if i % 2 == 0 {
            let on = if i % 4 == 0 { &c.a } else { &c.b };
            on.revoke(
                "personnes",
                &cert.serial,
                RevocationReason::Superseded,
                None,
                "o",
                NOW + 1,
            )
            .unwrap();
            by_shard.entry(part).or_default().push(cert.serial.clone());
        }
    }
    assert!(by_shard.len() >= 2, "shards used: {:?}", by_shard.keys());
    let parts = c.b.crl_partitions("personnes");
    assert_eq!(parts, vec![None, Some(0), Some(1), Some(2), Some(3)]);
    for part in parts {
        let der = c.b.crl_partition("personnes", part, NOW + 2).unwrap();
        let p = c.parse("personnes", &der);
        // Each CRL names its own URL, and lists exactly the revoked certificates that name it.
        assert_eq!(
            p.distribution_point.as_deref(),
            Some(c.b.crl_url("personnes", part).as_str())
        );
        let mut want = by_shard.get(&part).cloned().unwrap_or_default();
        want.sort();
        assert_eq!(serials(&p), want, "partition {part:?}");
    }
    // The old certificate's revocation is on the CA's own URL.
    assert_eq!(by_shard[&None], vec![old.serial.clone()]);
    // A shard the CA does not have is no CRL.
    assert!(matches!(
        c.b.crl_partition("personnes", Some(4), NOW),
        Err(CaError::UnknownCa(_))
    ));
}

#[test]
fn a_large_crl_is_stored_in_chunks_read_back_whole_and_old_chunks_go() {
    let c = cluster(1, 1);
    // 30 000 revoked certificates written straight into the store in big batches (the CRL is
    // then ~1.3 MB: about 22 chunks).
    let mut n: u64 = 0;
    for _ in 0..6 {
        let batch: Vec<cps_store::WriteOp> = (0..5_000)
            .map(|_| {
                n += 1;
                let mut serial = vec![0x40];
                serial.extend_from_slice(&n.to_be_bytes());
                cps_store::WriteOp::InsertCertificate(CertificateRecord {
                    issuer: "personnes".into(),
                    serial,
                    subject: "CN=x".into(),
                    profile: "cps-auth".into(),
                    holder: None,
                    spki_sha256: [7; 32],
                    not_before: NOW - 10,
                    not_after: NOW + 365 * 86_400,
                    der: vec![0x30, 0x00],
                    status: cps_store::CertStatus::Revoked {
                        time: NOW - 5,
                        reason: 4,
                        invalidity_date: None,
                    },
                    issued_at: NOW - 10,
                })
            })
            .collect();
        c.store.commit(batch.into()).unwrap();
    }
    let chunks = |store: &dyn Store| {
        store
            .scan_records(crl::CHUNK_TABLE, b"personnes/", None, 10_000)
            .unwrap()
            .len()
    };
    let first = c.a.crl("personnes", NOW).unwrap();
    assert_eq!(c.parse("personnes", &first).entries.len(), 30_000);
    let stored = c.stored("personnes");
    assert!(stored.chunks > 10, "{stored:?}");
    assert_eq!(chunks(c.store.as_ref()), stored.chunks as usize);
    // The other node reads it back from the chunks, byte for byte.
    assert_eq!(*c.b.crl("personnes", NOW + 1).unwrap(), *first);
    // Re-signed at half-life twice: the previous CRL's chunks stay (for readers in flight),
    // the ones before go.
    let second = c.a.crl("personnes", NOW + VALIDITY / 2).unwrap();
    assert_ne!(*second, *first);
    let after_two = chunks(c.store.as_ref());
    let third = c.a.crl("personnes", NOW + VALIDITY).unwrap();
    let s3 = c.stored("personnes");
    let (prev_number, prev_chunks) = s3.previous.unwrap();
    assert_eq!(
        prev_number,
        c.parse("personnes", &second).crl_number.unwrap()
    );
    assert_eq!(
        chunks(c.store.as_ref()),
        (s3.chunks + prev_chunks) as usize,
        "before: {after_two}"
    );
    assert_eq!(*c.b.crl("personnes", NOW + VALIDITY + 1).unwrap(), *third);
    // A stored CRL whose bytes do not match its digest is an error, never served.
    let key = format!("personnes/{:020}/{:06}", s3.number, 0).into_bytes();
    c.store
        .commit(
            cps_store::WriteBatch::new().with(cps_store::WriteOp::PutRecord {
                table: crl::CHUNK_TABLE.into(),
                key,
                value: vec![0; 10],
                expect: cps_store::Expect::Present,
            }),
        )
        .unwrap();
    let fresh = cluster_node(&c, "node-c");
    assert!(matches!(
        fresh.crl("personnes", NOW + VALIDITY + 2),
        Err(CaError::Internal(_))
    ));
}

/// Another node over the cluster's store and keys, with nothing cached.
fn cluster_node(c: &Cluster, node: &str) -> CaService {
    let auths = c
        .a
        .authorities()
        .map(|a| CaAuthority::new(&a.id, a.cert_der.clone(), a.key.clone(), a.signature).unwrap())
        .collect();
    CaService::new(
        auths,
        c.store.clone(),
        cps_pki::profile::builtin_profiles(),
        Arc::new(OpenGate),
        CaConfig {
            public_base_url: "https://ca.test".into(),
            crl_validity_secs: VALIDITY,
            key_policy: cps_pki::KeyPolicy::default(),
            reserved_profiles: vec![],
            node_id: node.into(),
            crl_lease_secs: LEASE,
            crl_shards: BTreeMap::new(),
        },
    )
}
