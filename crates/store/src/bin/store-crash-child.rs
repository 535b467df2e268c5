//! Child process of the crash test (`tests/crash.rs`): writes through `Store::commit` from several
//! threads until it is killed, printing `ack <id> <audit seq> <counter>` for each commit only after
//! `commit` returned `Ok`.
//!
//! Usage: `store-crash-child <store dir> <round> <threads>`.
#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::Arc;

use cps_store::{SledStore, Store};

#[path = "../../tests/support/fixture.rs"]
mod fixture;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, round, threads] = &args[..] else {
        eprintln!("usage: store-crash-child <store dir> <round> <threads>");
        std::process::exit(2);
    };
    let (Ok(round), Ok(threads)) = (round.parse::<u64>(), threads.parse::<u64>()) else {
        eprintln!("round and threads must be integers");
        std::process::exit(2);
    };
    let store = match SledStore::open(dir) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("store-crash-child: {e}");
            std::process::exit(1);
        }
    };
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let id = (round << 32) | (t << 24) | i;
                    match store.commit(fixture::batch(id)) {
                        Ok(r) => {
                            let line =
                                format!("ack {id} {} {}\n", r.audit_seqs[0], r.counter_values[0]);
                            let mut out = std::io::stdout().lock();
                            if out
                                .write_all(line.as_bytes())
                                .and_then(|()| out.flush())
                                .is_err()
                            {
                                std::process::exit(0);
                            }
                        }
                        Err(e) => {
                            eprintln!("store-crash-child: commit {id} failed: {e}");
                            std::process::exit(1);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}
