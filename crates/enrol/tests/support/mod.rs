//! Test fixture: a sled store, a software CA, a software master key, and simulated cards in
//! memory (the firmware-sim applet behind a `Transport`).
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use cps_ca::CaService;
use cps_card::{CardError, Piv, Transport};
use cps_enrol::{
    Activity, CardSecrets, CardService, CardServiceConfig, CertificateAuthority, ProfessionalData,
    Registry,
};
use cps_hsm::SoftwareMacKey;
use cps_store::{SledStore, Store};
use firmware_sim::applet::Card;
use firmware_sim::crypto::OsRng;
use firmware_sim::state::{CardState, MgmtAlg};

pub const NOW: i64 = 1_790_000_000;
pub const ACTOR: &str = "officer:alice";

/// The simulated card and what the harness does around it.
pub struct SimState {
    pub card: Card,
    /// APDUs sent so far.
    pub count: usize,
    /// After this many APDUs, the card "leaves the reader": every transmit fails.
    pub fail_after: Option<usize>,
    /// Answer SET MANAGEMENT KEY with "instruction not supported", as older PIV cards do.
    pub refuse_set_mgmt_key: bool,
}

#[derive(Clone)]
pub struct SimCard(pub Rc<RefCell<SimState>>);

impl SimCard {
    pub fn blank(guid_byte: u8) -> SimCard {
        let mut guid = [guid_byte; 16];
        guid[0] = 0x5A;
        guid[15] = guid_byte.wrapping_mul(7).wrapping_add(1);
        SimCard(Rc::new(RefCell::new(SimState {
            card: Card::new(CardState::blank(guid, "20301231", MgmtAlg::Aes192)),
            count: 0,
            fail_after: None,
            refuse_set_mgmt_key: false,
        })))
    }

    pub fn piv(&self) -> Piv<SimCard> {
        Piv::select(self.clone()).expect("select PIV")
    }

    /// Re-insert: the session (PIN, management key authentication) is lost, failures stop.
    pub fn reinsert(&self) {
        let mut s = self.0.borrow_mut();
        s.card.reset();
        s.fail_after = None;
    }

    pub fn fail_after(&self, n: usize) {
        let mut s = self.0.borrow_mut();
        s.count = 0;
        s.fail_after = Some(n);
    }

    pub fn count(&self) -> usize {
        self.0.borrow().count
    }

    pub fn refuse_set_mgmt_key(&self) {
        self.0.borrow_mut().refuse_set_mgmt_key = true;
    }

    pub fn mgmt_key(&self) -> Vec<u8> {
        self.0.borrow().card.state().mgmt_key.clone()
    }
}

impl Transport for SimCard {
    fn transmit(&mut self, apdu: &[u8]) -> cps_card::Result<Vec<u8>> {
        let mut s = self.0.borrow_mut();
        if let Some(n) = s.fail_after
            && s.count >= n
        {
            s.card.reset();
            return Err(CardError::CardRemoved);
        }
        s.count += 1;
        // An older card without SET MANAGEMENT KEY (fault injection).
        if s.refuse_set_mgmt_key && apdu.len() > 1 && apdu[1] == 0xFF {
            return Ok(vec![0x6D, 0x00]);
        }
        let out = s.card.process(apdu, &mut OsRng).response;
        Ok(out)
    }
}

/// Professional data of test professional `n` (valid RPPS with Luhn check digit).
pub fn rpps(n: u64) -> String {
    let payload = format!("{:010}", 1_000_000_000 + n);
    let d = cps_pki::idnat::luhn_check_digit(&payload).unwrap();
    format!("8{payload}{d}")
}

pub fn professional(n: u64, profession: &str) -> ProfessionalData {
    ProfessionalData {
        idnat_ps: rpps(n),
        surname: format!("DUPONT-{n}"),
        given_names: "Marie Élise".into(),
        profession_code: profession.into(),
        savoir_faire: (profession == "10").then(|| "SM26".into()),
        activities: vec![
            Activity {
                structure_id: "1340785161".into(),
                structure_name: "CHU de Montpellier".into(),
                secteur_activite: "SA01".into(),
            },
            Activity {
                structure_id: "410002813839001".into(),
                structure_name: "Cabinet Dupont".into(),
                secteur_activite: "SA07".into(),
            },
        ],
    }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub ca: Arc<CaService>,
    pub registry: Registry,
    pub cards: CardService,
}

pub fn config() -> CardServiceConfig {
    CardServiceConfig::default()
}

impl Fixture {
    pub fn new() -> Fixture {
        Self::with(config(), None)
    }

    /// With a CA wrapped by `wrap` (fault injection).
    pub fn with(
        config: CardServiceConfig,
        wrap: Option<&dyn Fn(Arc<CaService>) -> Arc<dyn CertificateAuthority>>,
    ) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
        let ca = Arc::new(cps_ca::hierarchy::software_ca(store.clone(), NOW - 86_400).unwrap());
        let ca_dyn: Arc<dyn CertificateAuthority> = match wrap {
            Some(w) => w(ca.clone()),
            None => ca.clone(),
        };
        let secrets = CardSecrets::new(Arc::new(SoftwareMacKey::new(
            "card-master",
            b"test master key",
        )));
        let cards = CardService::new(store.clone(), ca_dyn, secrets, config);
        Fixture {
            registry: Registry::new(store.clone()),
            dir,
            store,
            ca,
            cards,
        }
    }

    /// A second service on the same store and CA, as after a restart of the appliance.
    pub fn restarted(&self, config: CardServiceConfig) -> CardService {
        let secrets = CardSecrets::new(Arc::new(SoftwareMacKey::new(
            "card-master",
            b"test master key",
        )));
        CardService::new(self.store.clone(), self.ca.clone(), secrets, config)
    }

    pub fn add(&self, n: u64, profession: &str) -> String {
        self.registry
            .create(professional(n, profession), ACTOR, NOW)
            .unwrap()
            .data
            .idnat_ps
    }

    /// Certificates the CA holds as valid (or on hold) that no active card holds: must be empty
    /// whenever no enrolment is being driven.
    pub fn orphan_certificates(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut held = std::collections::HashSet::new();
        let page = self
            .store
            .list_certificates(Some("personnes"), None, 10_000)
            .unwrap();
        for (_, v) in self.store.scan_records("cards", b"", None, 10_000).unwrap() {
            let c: cps_enrol::Card = serde_json::from_slice(&v).unwrap();
            if c.status == cps_enrol::CardStatus::Active {
                for cc in c.certificates {
                    held.insert(cc.cert.serial);
                }
            }
        }
        for rec in page.certificates {
            let serial = hex::encode_upper(&rec.serial);
            if rec.status == cps_store::CertStatus::Valid && !held.contains(&serial) {
                out.push(serial);
            }
        }
        out
    }
}

pub fn no_progress() -> impl FnMut(&cps_enrol::Progress) {
    |_| {}
}
