//! Kill -9 test of `Store::claim`: a child process claims keys from several threads and prints
//! each key only after `claim` answered `true`; it is killed at a random moment, several times
//! over on the same store. After each kill, every key the child saw claimed must still be claimed
//! (a new claim of it is `false`): an accepted assertion ID or login challenge stays used after
//! the accepting node crashes.
//!
//! The child is this test binary itself, run with `CLAIM_CRASH_CHILD` set.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cps_store::{SledStore, Store};
use rand::Rng;

const TABLE: &str = "xua.replay";
const ROUNDS: u64 = 6;
const THREADS: u64 = 4;
/// Expiry of every claim (far ahead of `NOW`).
const NOW: i64 = 1_800_000_000;
const EXPIRES: i64 = NOW + 3600;

fn key(round: u64, thread: u64, i: u64) -> Vec<u8> {
    format!("r{round}-t{thread}-{i}").into_bytes()
}

/// The child: claims distinct keys until killed, printing `claimed <round> <thread> <i>` after
/// each `true`. Does nothing when run as an ordinary test.
#[test]
fn claim_crash_child() {
    let Ok(spec) = std::env::var("CLAIM_CRASH_CHILD") else {
        return;
    };
    let (dir, round) = spec.split_once('|').expect("dir|round");
    let round: u64 = round.parse().expect("round");
    let store = Arc::new(SledStore::open(dir).expect("open the store"));
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let store = store.clone();
            s.spawn(move || {
                for i in 0.. {
                    // Claims in small groups, as the batcher sends them.
                    let keys: Vec<_> = (0..3)
                        .map(|j| (key(round, t, 3 * i + j), EXPIRES))
                        .collect();
                    let answers = store.claim(TABLE, &keys, NOW).expect("claim");
                    for (j, first) in answers.into_iter().enumerate() {
                        assert!(first, "a new key was already claimed");
                        println!("claimed {round} {t} {}", 3 * i + j as u64);
                    }
                }
            });
        }
    });
}

#[test]
fn every_claim_acknowledged_before_a_kill_is_still_claimed_after_it() {
    if std::env::var("CLAIM_CRASH_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(SledStore::open(&path).unwrap());
    let mut rng = rand::thread_rng();
    let mut total = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "claim_crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                "CLAIM_CRASH_CHILD",
                format!("{}|{round}", path.to_str().unwrap()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut claimed = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let f: Vec<&str> = line.split(' ').collect();
                if let ["claimed", r, t, i] = f[..] {
                    claimed.push((r.parse().unwrap(), t.parse().unwrap(), i.parse().unwrap()));
                }
            }
            claimed
        });
        // Let it run a random while (after the store is open and claims flow), then kill -9.
        let deadline = Instant::now() + Duration::from_millis(rng.gen_range(300..1200));
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let claimed: Vec<(u64, u64, u64)> = reader.join().unwrap();
        let store = SledStore::open(&path).unwrap();
        for &(r, t, i) in &claimed {
            assert_eq!(
                store
                    .claim(TABLE, &[(key(r, t, i), EXPIRES)], NOW + 1)
                    .unwrap(),
                vec![false],
                "round {round}: key r{r}-t{t}-{i} was acknowledged but is not claimed after the kill"
            );
        }
        total += claimed.len();
        drop(store);
    }
    assert!(total > 0, "the child never acknowledged a claim");
}
