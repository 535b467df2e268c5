//! End-to-end enrolment of a simulated card in memory (firmware-sim applet behind a
//! `Transport`), with the software CA and a sled store on disk (every step durable): target
//! < 1 s per card.
//!
//! `cargo bench -p cps-enrol --bench enrolment`

use std::sync::Arc;
use std::time::{Duration, Instant};

use cps_card::{Piv, Transport};
use cps_enrol::{
    Activity, CardSecrets, CardService, CardServiceConfig, EnrolRequest, ProfessionalData, Registry,
};
use cps_hsm::SoftwareMacKey;
use cps_store::{SledStore, Store};
use criterion::{Criterion, criterion_group, criterion_main};
use firmware_sim::applet::Card;
use firmware_sim::crypto::OsRng;
use firmware_sim::state::{CardState, MgmtAlg};

const NOW: i64 = 1_790_000_000;

struct Sim(Card);

impl Transport for Sim {
    fn transmit(&mut self, apdu: &[u8]) -> cps_card::Result<Vec<u8>> {
        Ok(self.0.process(apdu, &mut OsRng).response)
    }
}

fn rpps(n: u64) -> String {
    let payload = format!("{:010}", 1_000_000_000 + n);
    let d = cps_pki::idnat::luhn_check_digit(&payload).expect("digits");
    format!("8{payload}{d}")
}

struct Env {
    _dir: tempfile::TempDir,
    reg: Registry,
    cards: CardService,
    n: u64,
}

impl Env {
    fn new(alg: cps_card::KeyAlgorithm) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("store"));
        let ca = Arc::new(cps_ca::hierarchy::software_ca(store.clone(), NOW - 3600).expect("CA"));
        let cards = CardService::new(
            store.clone(),
            ca,
            CardSecrets::new(Arc::new(SoftwareMacKey::new("master", b"bench"))),
            CardServiceConfig {
                key_algorithm: alg,
                ..CardServiceConfig::default()
            },
        );
        Env {
            _dir: dir,
            reg: Registry::new(store),
            cards,
            n: 0,
        }
    }

    /// One professional, one blank card, one enrolment.
    fn enrol_one(&mut self) {
        self.n += 1;
        let idnat = rpps(self.n);
        self.reg
            .create(
                ProfessionalData {
                    idnat_ps: idnat.clone(),
                    surname: format!("NOM{}", self.n),
                    given_names: "Marie".into(),
                    profession_code: "10".into(),
                    savoir_faire: Some("SM26".into()),
                    activities: vec![Activity {
                        structure_id: "1340785161".into(),
                        structure_name: "CHU".into(),
                        secteur_activite: "SA01".into(),
                    }],
                },
                "bench",
                NOW,
            )
            .expect("professional");
        let mut guid = [0u8; 16];
        guid[..8].copy_from_slice(&self.n.to_be_bytes());
        guid[15] = 1;
        let mut piv = Piv::select(Sim(Card::new(CardState::blank(
            guid,
            "20301231",
            MgmtAlg::Aes192,
        ))))
        .expect("select");
        let out = self
            .cards
            .enrol(
                &mut piv,
                &EnrolRequest {
                    idnat_ps: idnat,
                    structure_id: "1340785161".into(),
                    replaces: None,
                },
                "bench",
                NOW,
                &mut |_| {},
            )
            .expect("enrolment");
        assert!(out.initial_secrets.is_some());
    }
}

fn bench(c: &mut Criterion) {
    for (name, alg) in [
        ("p256", cps_card::KeyAlgorithm::EccP256),
        ("rsa2048", cps_card::KeyAlgorithm::Rsa2048),
    ] {
        let mut env = Env::new(alg);
        let t = Instant::now();
        env.enrol_one();
        let once = t.elapsed();
        eprintln!(
            "one enrolment ({name}): {:.1} ms",
            once.as_secs_f64() * 1000.0
        );
        if alg == cps_card::KeyAlgorithm::Rsa2048 {
            // Dominated by the simulator's RSA-2048 key generation (two prime searches per
            // key pair, in software): measured once, reported, not sampled.
            continue;
        }
        assert!(once < Duration::from_secs(1), "{name}: {once:?}");
        let mut g = c.benchmark_group("enrolment");
        g.sample_size(20);
        g.bench_function(format!("simulated_card_end_to_end_{name}"), |b| {
            b.iter(|| env.enrol_one())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
