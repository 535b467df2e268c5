//! Import of a generated 100 000-professional file into a sled store on disk (target: < 30 s),
//! then the same file again (everything unchanged).
//!
//! `cargo bench -p cps-enrol --bench import`

use std::sync::Arc;
use std::time::{Duration, Instant};

use cps_enrol::{ImportOptions, ImportOutcome, ImportPhase, Registry};
use cps_store::{SledStore, Store};
use criterion::{Criterion, criterion_group, criterion_main};

const N: u64 = 100_000;
const NOW: i64 = 1_790_000_000;

fn rpps(n: u64) -> String {
    let payload = format!("{:010}", 1_000_000_000 + n);
    let d = cps_pki::idnat::luhn_check_digit(&payload).expect("digits");
    format!("8{payload}{d}")
}

/// 100 000 professionals; one in five has a second activity (120 000 lines).
fn file() -> Vec<u8> {
    let mut s = String::from(
        "Type d'identifiant PP|Identifiant PP|Identification nationale PP|Nom d'exercice|Prénom d'exercice|Code profession|Code savoir-faire|Identifiant technique de la structure|Raison sociale site|Code secteur d'activité|\n",
    );
    let professions = ["10", "21", "60", "70", "40", "50"];
    for i in 0..N {
        let id = rpps(i);
        let prof = professions[(i % 6) as usize];
        let sf = if prof == "10" { "SM26" } else { "" };
        s.push_str(&format!(
            "8|{}|{id}|NOM{i:06}|Prénom Élodie|{prof}|{sf}|S{i:08}|Cabinet {i}|SA07|\n",
            &id[1..]
        ));
        if i % 5 == 0 {
            s.push_str(&format!(
                "8|{}|{id}|NOM{i:06}|Prénom Élodie|{prof}|{sf}|F{:08}|Centre hospitalier {}|SA01|\n",
                &id[1..],
                i % 997,
                i % 997
            ));
        }
    }
    s.into_bytes()
}

fn import(reg: &Registry, bytes: &[u8], now: i64) -> (cps_enrol::ImportReport, usize) {
    let mut calls = 0;
    let r = reg
        .import_csv(bytes, ImportOptions::default(), "bench", now, &mut |p| {
            calls += 1;
            if p.phase == ImportPhase::Writing && p.done == p.total {
                assert!(p.total > 0);
            }
        })
        .expect("import");
    (r, calls)
}

fn bench(c: &mut Criterion) {
    let bytes = file();
    // One measured run first, with the numbers the benchmark report quotes.
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("store"));
        let reg = Registry::new(store);
        let t = Instant::now();
        let (r, calls) = import(&reg, &bytes, NOW);
        let first = t.elapsed();
        assert_eq!(r.outcome, ImportOutcome::Imported, "{:?}", r.errors.first());
        assert_eq!(r.created as u64, N);
        let t = Instant::now();
        let (r2, _) = import(&reg, &bytes, NOW + 1);
        let again = t.elapsed();
        assert_eq!(r2.outcome, ImportOutcome::Unchanged);
        eprintln!(
            "import of {N} professionals ({} lines, {} MB): {:.2} s ({calls} progress calls); re-import (unchanged): {:.2} s",
            r.lines,
            bytes.len() / 1_000_000,
            first.as_secs_f64(),
            again.as_secs_f64()
        );
        assert!(first < Duration::from_secs(30), "import took {first:?}");
    }
    let mut g = c.benchmark_group("import");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.bench_function("100k_professionals_new_store", |b| {
        b.iter_with_setup(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("store"));
                (dir, Registry::new(store))
            },
            |(dir, reg)| {
                let (r, _) = import(&reg, &bytes, NOW);
                assert_eq!(r.created as u64, N);
                drop(reg);
                drop(dir);
            },
        )
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("store"));
    let reg = Registry::new(store);
    import(&reg, &bytes, NOW);
    g.bench_function("100k_professionals_reimport_unchanged", |b| {
        b.iter(|| {
            let (r, _) = import(&reg, &bytes, NOW + 1);
            assert_eq!(r.unchanged as u64, N);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
