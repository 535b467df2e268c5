//! Kill -9 test: a child process commits from several threads and is killed at a random moment,
//! many times over on the same store. After each kill, every write the child saw acknowledged must
//! be there, intact, and the store must hold whole batches only, with a gap-free audit sequence.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cps_store::{AuditEntry, SledStore, Store, StoreError};
use rand::Rng;

mod support {
    pub mod fixture;
}
use support::fixture;

const ROUNDS: u64 = 25;
const MIN_ROUNDS: u64 = 10;
const WRITER_THREADS: u64 = 4;
/// No new round starts after this; the whole test stays around a minute.
const BUDGET: Duration = Duration::from_secs(50);

#[derive(Debug, Clone, Copy)]
struct Ack {
    id: u64,
    seq: u64,
    counter: u64,
}

fn parse(line: &str) -> Option<Ack> {
    let mut parts = line.strip_suffix('\n')?.split(' ');
    if parts.next()? != "ack" {
        return None;
    }
    let ack = Ack {
        id: parts.next()?.parse().ok()?,
        seq: parts.next()?.parse().ok()?,
        counter: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(ack)
}

/// Runs one child until killed; returns the writes it saw acknowledged.
fn run_child(dir: &std::path::Path, round: u64, rng: &mut impl Rng) -> Vec<Ack> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_store-crash-child"))
        .arg(dir)
        .arg(round.to_string())
        .arg(WRITER_THREADS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn store-crash-child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let mut acks = Vec::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    // A line cut by the kill has no newline and is not an acknowledgement the
                    // child finished printing; `parse` drops it.
                    if let Some(ack) = parse(&line) {
                        if acks.is_empty() {
                            let _ = tx.send(());
                        }
                        acks.push(ack);
                    } else {
                        assert!(
                            !line.ends_with('\n'),
                            "unexpected line from the child: {line:?}"
                        );
                    }
                }
            }
        }
        acks
    });

    if rng.gen_bool(0.2) {
        // Sometimes kill it early, possibly while it opens or recovers the store.
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..80)));
    } else {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the child acknowledged nothing within 30 s");
        if round.is_multiple_of(5) {
            // While the child has the store open, nobody else may open it (this waits out
            // `open`'s one-second grace period, so only some rounds check it).
            match SledStore::open(dir) {
                Err(StoreError::Locked { .. }) => {}
                other => {
                    panic!("opening a store held by another process gave {other:?}, not Locked")
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
    }
    if let Some(status) = child.try_wait().unwrap() {
        panic!("the child exited by itself before being killed: {status}");
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().unwrap();
    assert!(!status.success());
    reader.join().unwrap()
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let start = Instant::now();
    let mut rounds = 0;
    let mut total_acked = 0;
    let mut last_counter = 0;

    for round in 0..ROUNDS {
        if start.elapsed() > BUDGET {
            break;
        }
        let acks = run_child(dir.path(), round, &mut rng);
        total_acked += acks.len();
        rounds += 1;

        let store = SledStore::open(dir.path())
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));

        // Every acknowledged write is there, intact.
        for ack in &acks {
            let cert = fixture::certificate(ack.id);
            let got = store
                .get_certificate(fixture::ISSUER, &cert.serial)
                .unwrap();
            assert_eq!(
                got.as_ref(),
                Some(&cert),
                "round {round}: acknowledged certificate {} lost or damaged",
                ack.id
            );
            let entry = store.audit_range(ack.seq, 1).unwrap();
            assert_eq!(
                entry,
                vec![AuditEntry {
                    seq: ack.seq,
                    record: fixture::audit(ack.id)
                }],
                "round {round}: acknowledged audit record {} lost or damaged",
                ack.seq
            );
        }

        // Only whole batches, and a gap-free audit sequence: each batch wrote one certificate,
        // one audit record and one counter bump.
        let n = store.audit_len().unwrap();
        let entries = store.audit_range(1, usize::MAX).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=n).collect::<Vec<_>>(),
            "round {round}: audit sequence has a gap or extra entries"
        );
        let page = store
            .list_certificates(Some(fixture::ISSUER), None, usize::MAX)
            .unwrap();
        assert_eq!(
            page.certificates.len() as u64,
            n,
            "round {round}: certificates and audit records disagree"
        );
        for e in &entries {
            let id = e.record.detail["id"]
                .as_u64()
                .expect("audit detail has the id");
            assert_eq!(e.record, fixture::audit(id));
            let cert = store
                .get_certificate(fixture::ISSUER, &fixture::serial(id))
                .unwrap();
            assert_eq!(
                cert,
                Some(fixture::certificate(id)),
                "round {round}: batch {id} half applied"
            );
        }
        let counter = store.counter(fixture::COUNTER).unwrap();
        assert_eq!(
            counter, n,
            "round {round}: counter and audit records disagree"
        );
        assert!(
            counter >= last_counter,
            "round {round}: counter went back from {last_counter} to {counter}"
        );
        if let Some(max) = acks.iter().map(|a| a.counter).max() {
            assert!(
                counter >= max,
                "round {round}: counter {counter} is below acknowledged value {max}"
            );
        }
        last_counter = counter;
        drop(store);
    }

    eprintln!(
        "crash test: {rounds} rounds, {total_acked} acknowledged commits, {last_counter} in the store, {:.1?}",
        start.elapsed()
    );
    assert!(
        rounds >= MIN_ROUNDS,
        "only {rounds} rounds ran within the time budget"
    );
    assert!(total_acked > 0, "the child never acknowledged a write");
}
