//! The store suite (`suite/ops.rs`) on PostgreSQL (one server for the test binary, a database per
//! test), and what only a shared database does: several store instances ("nodes") on one
//! database, a newer schema, a standby, a failover.

mod backend {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};

    use cps_testkit::postgres::Postgres;

    /// The store under test.
    pub type S = cps_store::PgStore;

    /// The server shared by the tests of this binary (stopped by its watchdog at exit).
    pub fn server() -> &'static Postgres {
        static SERVER: OnceLock<Postgres> = OnceLock::new();
        SERVER.get_or_init(Postgres::start)
    }

    /// A new, empty database.
    pub struct Db {
        pub url: String,
        pub name: String,
    }

    impl Db {
        pub fn fresh() -> Db {
            static N: AtomicU32 = AtomicU32::new(0);
            let name = format!(
                "t{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            );
            let url = server().create_database(&name);
            Db { url, name }
        }

        pub fn open(&self) -> S {
            cps_store::PgStore::open(&self.url, cps_store::PgOptions::default()).unwrap()
        }
    }

    /// After `total` concurrent single commits: nothing more to check (the server groups WAL
    /// flushes itself; the store keeps no statistics of it).
    pub fn after_concurrent_commits(_store: &S, _total: u64) {}
}

#[path = "suite/ops.rs"]
mod ops;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::{Db, server};
use cps_store::{PG_SCHEMA_VERSION, PgOptions, PgStore, Store, StoreError, WriteBatch, WriteOp};
use cps_testkit::postgres::Postgres;
use ops::{audit, cert, insert, one, revoked, set_status};

#[test]
fn two_nodes_on_one_database_keep_audit_seqs_gap_free_and_counters_unique() {
    let db = Db::fresh();
    let nodes: Vec<Arc<dyn Store>> = vec![Arc::new(db.open()), Arc::new(db.open())];
    const THREADS: u8 = 3;
    const EACH: u8 = 40;
    let mut handles = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for t in 0..THREADS {
            let node = node.clone();
            handles.push(std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..EACH {
                    let serial = [n as u8 + 1, t + 1, i + 1];
                    let r = node
                        .commit(
                            WriteBatch::new()
                                .with(WriteOp::AppendAudit(audit(u64::from(i))))
                                .with(WriteOp::InsertCertificate(cert("personnes", &serial, t)))
                                .with(WriteOp::BumpCounter {
                                    name: "crl".into(),
                                    min_next: None,
                                })
                                .with(WriteOp::AppendAudit(audit(u64::from(i)))),
                        )
                        .unwrap();
                    assert_eq!(r.audit_seqs.len(), 2);
                    assert_eq!(r.audit_seqs[1], r.audit_seqs[0] + 1, "one batch, adjacent");
                    got.push((r.counter_values[0], r.audit_seqs.clone()));
                }
                got
            }));
        }
    }
    let mut counters = Vec::new();
    let mut seqs = Vec::new();
    for h in handles {
        let got = h.join().unwrap();
        // Each writer sees its counter values strictly increase.
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        for (c, s) in got {
            counters.push(c);
            seqs.extend(s);
        }
    }
    let total = 2 * usize::from(THREADS) * usize::from(EACH);
    counters.sort_unstable();
    assert_eq!(counters, (1..=total as u64).collect::<Vec<_>>());
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=2 * total as u64).collect::<Vec<_>>());
    for node in &nodes {
        assert_eq!(node.audit_len().unwrap(), 2 * total as u64);
        assert_eq!(node.counter("crl").unwrap(), total as u64);
        let read: Vec<u64> = node
            .audit_range(1, 10_000)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(read, (1..=2 * total as u64).collect::<Vec<_>>());
    }
}

#[test]
fn a_claim_race_between_two_nodes_lets_exactly_one_through() {
    let db = Db::fresh();
    let nodes: Vec<Arc<dyn Store>> = vec![Arc::new(db.open()), Arc::new(db.open())];
    const KEYS: usize = 200;
    let now = 1_700_000_000;
    let mut handles = Vec::new();
    for node in &nodes {
        for t in 0..3 {
            let node = node.clone();
            handles.push(std::thread::spawn(move || {
                let mut won = Vec::new();
                // Batches of 10 keys, in a different order per thread.
                let mut order: Vec<usize> = (0..KEYS).collect();
                order.rotate_left(t * 37);
                for chunk in order.chunks(10) {
                    let keys: Vec<(Vec<u8>, i64)> = chunk
                        .iter()
                        .map(|k| (format!("assertion-{k}").into_bytes(), now + 300))
                        .collect();
                    let answers = node.claim("xua-replay", &keys, now).unwrap();
                    for (k, ok) in chunk.iter().zip(answers) {
                        if ok {
                            won.push(*k);
                        }
                    }
                }
                won
            }));
        }
    }
    let mut winners: Vec<usize> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    winners.sort_unstable();
    assert_eq!(
        winners,
        (0..KEYS).collect::<Vec<_>>(),
        "each key won exactly once"
    );

    // Unexpired everywhere; once expired, claimable again, by one node only.
    let key = b"assertion-7".to_vec();
    assert_eq!(
        nodes[1]
            .claim("xua-replay", &[(key.clone(), now + 600)], now + 10)
            .unwrap(),
        vec![false]
    );
    assert_eq!(
        nodes[1]
            .claim("other-table", &[(key.clone(), now + 600)], now + 10)
            .unwrap(),
        vec![true],
        "tables are separate"
    );
    let later = now + 300;
    assert_eq!(
        nodes[0]
            .claim(
                "xua-replay",
                &[(key.clone(), later + 60), (key.clone(), later + 60)],
                later
            )
            .unwrap(),
        vec![true, false],
        "an expired claim is taken again, a repeated key at most once"
    );
    assert_eq!(
        nodes[1]
            .claim("xua-replay", &[(key.clone(), later + 60)], later)
            .unwrap(),
        vec![false]
    );
    // Bad input records nothing.
    for bad in [
        vec![(Vec::new(), later + 1)],
        vec![(b"k".to_vec(), later)],
        vec![(vec![1; 513], later + 1)],
    ] {
        let err = nodes[0].claim("xua-replay", &bad, later).unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    }
    assert!(matches!(
        nodes[0].claim("", &[(b"k".to_vec(), later + 1)], later),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn a_revocation_on_one_node_moves_the_other_nodes_certificates_version() {
    let db = Db::fresh();
    let (a, b) = (db.open(), db.open());
    insert(&a, &cert("personnes", &[1], 1));
    let v = b.certificates_version().unwrap();
    assert_eq!(
        b.get_certificate("personnes", &[1])
            .unwrap()
            .unwrap()
            .status,
        cps_store::CertStatus::Valid
    );
    a.commit(one(set_status(
        "personnes",
        &[1],
        revoked(1_750_000_000, 1),
    )))
    .unwrap();
    // Read after the commit returned: never the old value.
    assert_ne!(b.certificates_version(), Some(v));
    assert_eq!(
        b.get_certificate("personnes", &[1])
            .unwrap()
            .unwrap()
            .status,
        revoked(1_750_000_000, 1)
    );
    // Many concurrent readers share queries but each sees a value at least as new as its call.
    let b = Arc::new(b);
    let a = Arc::new(a);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (a, stop) = (a.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 2u8;
            let mut acked = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && n < 60 {
                insert(&*a, &cert("personnes", &[n], n));
                acked.push((Instant::now(), a.certificates_version().unwrap()));
                n += 1;
            }
            acked
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                for _ in 0..100 {
                    let start = Instant::now();
                    seen.push((start, b.certificates_version().unwrap()));
                }
                seen
            })
        })
        .collect();
    let seen: Vec<(Instant, u64)> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = writer.join().unwrap();
    // A read that started after a version was acknowledged returns at least that version.
    for (start, got) in &seen {
        for (acked_at, v) in &acked {
            if acked_at < start {
                assert!(
                    got >= v,
                    "read started after version {v} was acknowledged saw {got}"
                );
            }
        }
    }
}

#[test]
fn a_newer_schema_is_refused_and_left_untouched() {
    let db = Db::fresh();
    let store = db.open();
    store.commit(one(WriteOp::AppendAudit(audit(1)))).unwrap();
    drop(store);
    let newer = PG_SCHEMA_VERSION + 1;
    server()
        .psql(
            &db.name,
            &format!("UPDATE schema_version SET version = {newer}"),
        )
        .unwrap();
    let err = PgStore::open(&db.url, PgOptions::default()).unwrap_err();
    match &err {
        StoreError::SchemaTooNew {
            found, supported, ..
        } => assert_eq!((*found, *supported), (newer, PG_SCHEMA_VERSION)),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&format!("schema version {newer}")),
        "{err}"
    );
    assert_eq!(
        server()
            .psql(&db.name, "SELECT version FROM schema_version")
            .unwrap()
            .trim(),
        newer.to_string()
    );
    assert_eq!(
        server()
            .psql(&db.name, "SELECT count(*) FROM audit")
            .unwrap()
            .trim(),
        "1"
    );
}

#[test]
fn a_standby_serves_reads_and_refuses_writes_clearly() {
    let primary = Postgres::start();
    let url = primary.create_database("cps");
    let store = PgStore::open(&url, PgOptions::default()).unwrap();
    assert!(!store.opened_on_standby());
    assert!(store.accepts_writes().unwrap());
    insert(&store, &cert("personnes", &[5], 5));
    let standby = Postgres::standby_of(&primary);
    // Synchronous: what the primary acknowledges from now on is on the standby.
    store.commit(one(WriteOp::AppendAudit(audit(1)))).unwrap();

    let ro = PgStore::open(&standby.url_of("cps"), PgOptions::default()).unwrap();
    assert!(ro.opened_on_standby());
    assert!(!ro.accepts_writes().unwrap());
    assert_eq!(ro.audit_len().unwrap(), 1);
    assert_eq!(
        ro.get_certificate("personnes", &[5]).unwrap(),
        Some(cert("personnes", &[5], 5))
    );
    let err = ro.commit(one(WriteOp::AppendAudit(audit(2)))).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("refuses writes") && msg.contains("nothing of the batch was written"),
        "{msg}"
    );
    assert_eq!(store.audit_len().unwrap(), 1);
    // A standby of an uninitialised database is refused with the same clear reason.
    primary.create_database("empty");
    std::thread::sleep(Duration::from_millis(500));
    let err = PgStore::open(&standby.url_of("empty"), PgOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly(_)), "{err:?}");
}

#[test]
fn after_kill_9_of_the_primary_and_promotion_the_store_reconnects_and_lost_nothing() {
    let mut primary = Postgres::start();
    primary.create_database("cps");
    // The schema exists before the standby is cloned.
    drop(PgStore::open(&primary.url_of("cps"), PgOptions::default()).unwrap());
    let standby = Postgres::standby_of(&primary);
    let url = format!(
        "postgresql://postgres@{},{}/cps?target_session_attrs=read-write&connect_timeout=2",
        primary.host_port(),
        standby.host_port()
    );
    let store: Arc<dyn Store> = Arc::new(
        PgStore::open(
            &url,
            PgOptions {
                pool_size: 4,
                wait: Duration::from_secs(3),
            },
        )
        .unwrap(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3u8)
        .map(|t| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut errors = Vec::new();
                let mut i = 0u16;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    i += 1;
                    let serial = [t + 1, (i >> 8) as u8, i as u8];
                    let batch = WriteBatch::new()
                        .with(WriteOp::InsertCertificate(cert("personnes", &serial, t)))
                        .with(WriteOp::AppendAudit(audit(u64::from(i))));
                    match store.commit(batch) {
                        Ok(r) => acked.push((serial, r.audit_seqs[0])),
                        Err(e) => {
                            errors.push(e.to_string());
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
                (acked, errors)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    primary.kill9();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    standby.promote();
    // The same store instance writes again, by itself, on the promoted standby.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first_write = loop {
        match store.commit(one(WriteOp::PutMeta {
            key: "probe".into(),
            value: b"after failover".to_vec(),
        })) {
            Ok(_) => break killed.elapsed(),
            Err(e) => {
                assert!(Instant::now() < deadline, "no write after failover: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    for w in writers {
        let (a, e) = w.join().unwrap();
        acked.extend(a);
        errors.extend(e);
    }
    eprintln!(
        "failover: {} commits acknowledged, {} refused meanwhile, first write {first_write:?} after \
         the kill",
        acked.len(),
        errors.len()
    );
    assert!(acked.len() > 10, "the load ran");
    for e in &errors {
        assert!(
            e.contains("unavailable") || e.contains("refuses writes"),
            "a failover error says what it is: {e}"
        );
    }
    // Everything acknowledged is on the promoted standby, read through a fresh store.
    let after = PgStore::open(&standby.url_of("cps"), PgOptions::default()).unwrap();
    assert!(!after.opened_on_standby());
    let seqs: HashSet<u64> = after
        .audit_range(1, 1_000_000)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    for (serial, seq) in &acked {
        assert_eq!(
            after.get_certificate("personnes", serial).unwrap(),
            Some(cert("personnes", serial, serial[0] - 1)),
            "acknowledged certificate {serial:?} lost"
        );
        assert!(seqs.contains(seq), "acknowledged audit record {seq} lost");
    }
    // Gap-free still.
    let len = after.audit_len().unwrap();
    assert_eq!(seqs.len() as u64, len);
    assert_eq!(
        after.get_meta("probe").unwrap(),
        Some(b"after failover".to_vec())
    );
}
