//! The appliance's HTTPS router in process: the real [`authz::router`] over a real
//! [`ApiState`] — a CA service with software keys behind a signing gate, a temporary
//! [`SledStore`], the live [`Identities`] check, the node registry, the card service (software
//! card master key), the XUA and login services, an audit log and an audit writer in a temporary directory — and operators
//! with certificates of that CA, one per role.
//!
//! A request goes through the router exactly as the accept loop of `serve.rs` hands it over:
//! with the connection's client certificate ([`ClientCert`], parsed against the issuing CAs),
//! the peer address and the connection control ([`Connection`]). Nothing is mocked but the
//! transport: TLS and the socket are the end-to-end suites' business (`tests/tests/authz.rs`).
//!
//! The disk guard is real too, in front of the router and on the store's commits as `serve.rs`
//! wires them; [`InProcess::fill_disk`] swaps in a guard whose reserve is larger than any disk
//! (the real "below the reserve" state), [`InProcess::free_disk`] one without a reserve.
//!
//! The XUA service has a software seal (an `org-cachet` certificate of the harness's CA) and the
//! login service reads the real registry. Not wired (the route answers as an appliance without
//! them does): the card readers (PC/SC).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use cps_appliance::api::{ApiState, ClientCert};
use cps_appliance::authz::Role;
use cps_appliance::ca::CaService;
use cps_appliance::clock::{SharedClock, SigningClock};
use cps_appliance::conn::{Connection, PeerAddr};
use cps_appliance::disk::DiskGuard;
use cps_appliance::identity::PeerCertificate;
use cps_hsm::{KeyAlgorithm, SigFormat, Signer, SoftwareSigner};
use cps_store::{SledStore, Store};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// The in-process appliance.
pub struct InProcess {
    pub store: Arc<dyn Store>,
    pub ca: Arc<CaService>,
    pub cards: Arc<cps_enrol::CardService>,
    pub audit_log: cps_atna::AuditLog,
    /// Where the audit writer's records go (one JSON record a line).
    pub audit_file: std::path::PathBuf,
    state: ApiState,
    router: Mutex<Router>,
    disk: Arc<Mutex<Arc<DiskGuard>>>,
    /// `(CA id, subject DER)` of the issuing CAs: how the accept loop reads client certificates.
    issuers: Vec<(String, Vec<u8>)>,
    dir: tempfile::TempDir,
}

/// A client: a certificate of this appliance's CA, as a TLS handshake would have verified it.
#[derive(Clone)]
pub struct Caller {
    pub name: String,
    pub cert: Arc<PeerCertificate>,
    pub serial_hex: String,
}

/// An answer of the router.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The connection control the request was sent on (closed when an identity is refused).
    pub connection: Arc<Connection>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.status, self.text()))
    }

    /// Whether this is an API error: `{"error": "<non-empty message>"}` as JSON.
    pub fn is_json_error(&self) -> bool {
        self.headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
            && serde_json::from_slice::<serde_json::Value>(&self.body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .is_some_and(|m| !m.is_empty())
    }
}

pub fn now() -> i64 {
    cps_appliance::unix_now()
}

/// A software key and a PKCS#10 request for it (PEM), subject `subject` (`CN=...`).
pub fn csr(subject: &str) -> (SoftwareSigner, String) {
    let key = SoftwareSigner::generate("client", KeyAlgorithm::EcP256).unwrap();
    let dn = cps_pki::DistinguishedName::parse(subject).unwrap();
    let alg = key.key_algorithm().default_signature();
    let der = cps_pki::build_csr(&dn, key.public_key_der(), alg, |tbs| {
        key.sign(alg, tbs, SigFormat::Der)
    })
    .unwrap();
    (key, cps_pki::pem_encode("CERTIFICATE REQUEST", &der))
}

/// A disk guard over the harness's directory with a reserve of `min_free_mb`, its state measured.
fn guard(dir: &std::path::Path, min_free_mb: u64) -> Arc<DiskGuard> {
    let g = DiskGuard::new(vec![("store", dir.to_path_buf())], min_free_mb);
    let _ = g.check_now();
    g
}

/// The HTTPS router as `serve.rs` assembles it: the route table, then the disk guard.
fn router(state: &ApiState, disk: &Arc<DiskGuard>) -> Router {
    cps_appliance::authz::router(state.clone()).layer(axum::middleware::from_fn_with_state(
        disk.clone(),
        cps_appliance::disk::refuse_new_work_when_full,
    ))
}

impl InProcess {
    /// A fresh appliance (call it inside a Tokio runtime: the audit writer is a task).
    pub fn new() -> InProcess {
        InProcess::with_xua(cps_login::XuaSettings::default())
    }

    /// A fresh appliance with these `[xua]` settings (e.g. the replay record in the store).
    pub fn with_xua(xua_settings: cps_login::XuaSettings) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(Mutex::new(guard(dir.path(), 0)));
        let sled = SledStore::open(dir.path().join("store")).unwrap();
        let gate = disk.clone();
        sled.set_write_gate(Box::new(move || gate.lock().unwrap().check_now()))
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(sled);
        // A synchronised clock: the gate is real and audits its transitions in the store.
        let clock = Arc::new(SigningClock::new(
            SharedClock(Arc::new(cps_ct::FixedClock(
                cps_ct::ClockStatus::synchronized(1_000, 500),
            ))),
            "fixed",
            cps_ct::TrustPolicy {
                max_error_us: 100_000,
            },
            Some(store.clone()),
        ));
        let profiles = cps_pki::profile::builtin_profiles();
        let base = "http://127.0.0.1:8080";
        let hierarchy =
            cps_ca::hierarchy::software(&profiles, &["personnes", "organisations"], base, now())
                .unwrap();
        let core = cps_ca::CaService::new(
            hierarchy.authorities,
            store.clone(),
            profiles,
            Arc::new(cps_appliance::ca::ClockGate(clock.clone())),
            cps_ca::CaConfig {
                public_base_url: base.into(),
                crl_validity_secs: 86_400,
                key_policy: cps_pki::KeyPolicy::default(),
                reserved_profiles: cps_appliance::ca::APPLIANCE_ONLY_PROFILES
                    .iter()
                    .map(|p| p.to_string())
                    .collect(),
                node_id: "node-1".into(),
                crl_lease_secs: cps_ca::crl::DEFAULT_LEASE_SECS,
                crl_shards: Default::default(),
            },
        );
        let ca = Arc::new(CaService::from_parts(Arc::new(core), clock));
        let cards = Arc::new(cps_enrol::CardService::new(
            store.clone(),
            ca.core().clone(),
            cps_enrol::CardSecrets::new(Arc::new(
                cps_hsm::SoftwareMacKey::generate("card-master").unwrap(),
            )),
            cps_enrol::CardServiceConfig::default(),
        ));
        let audit_log = cps_atna::AuditLog::open(
            &dir.path().join("audit-log"),
            None,
            cps_atna::LogOptions::default(),
        )
        .unwrap();
        let audit_file = dir.path().join("audit-writer.jsonl");
        let sink_file = audit_file.clone();
        let audit_writer = cps_appliance::audit::AuditWriter::spawn(Arc::new(
            move |records: Vec<cps_store::AuditRecord>| {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&sink_file)
                    .map_err(|e| e.to_string())?;
                for r in &records {
                    let line = serde_json::to_string(r).map_err(|e| e.to_string())?;
                    writeln!(f, "{line}").map_err(|e| e.to_string())?;
                }
                f.sync_data().map_err(|e| e.to_string())
            },
        ));
        let issuers: Vec<(String, Vec<u8>)> = ca
            .authorities()
            .filter(|a| a.id != "root")
            .map(|a| (a.id.clone(), a.name.to_der().unwrap()))
            .collect();
        // The XUA seal (an `org-cachet` certificate for a software key, the appliance's own
        // profile) and the login service over the real registry, as `serve` wires them.
        let seal_key = SoftwareSigner::generate("xua-cachet", KeyAlgorithm::EcP256).unwrap();
        let alg = seal_key.key_algorithm().default_signature();
        let seal_csr = cps_pki::build_csr(
            &cps_pki::DistinguishedName::parse("CN=ignored").unwrap(),
            seal_key.public_key_der(),
            alg,
            |tbs| seal_key.sign(alg, tbs, SigFormat::Der),
        )
        .unwrap();
        let seal = ca
            .core()
            .issue_reserved(
                &cps_ca::IssueRequest {
                    profile: "org-cachet".into(),
                    csr: seal_csr,
                    subject: cps_ca::SubjectRequest::Organisation(cps_pki::OrganisationIdentity {
                        state: "Paris (75)".into(),
                        name: "cps-trust".into(),
                        structure_id: "10B0000001".into(),
                        common_name: "cps-trust XUA".into(),
                    }),
                    sans: vec![],
                    holder: "appliance:xua-cachet".into(),
                },
                "test",
                now() - 60,
            )
            .unwrap();
        let chain = vec![
            seal.der.clone(),
            ca.authority("organisations").unwrap().cert_der.clone(),
        ];
        let xua = Arc::new(
            cps_login::XuaService::new(
                &xua_settings,
                cps_login::Seal {
                    signer: Arc::new(seal_key),
                    chain,
                },
                ca.core(),
                Arc::new(cps_appliance::enrolment::RegistryDirectory(
                    cps_enrol::Registry::new(store.clone()),
                )),
            )
            .unwrap(),
        );
        let challenges = cps_login::challenge::Challenges::new(
            b"in-process challenge key, 32 b.",
            xua.seal_sha256(),
            std::time::Duration::from_secs(120),
        );
        let challenges = match xua_settings.replay_record.unwrap_or_default() {
            cps_login::ReplayRecord::Memory => challenges,
            cps_login::ReplayRecord::Store => {
                challenges.with_shared_record(Arc::new(cps_login::StoreNonces::new(store.clone())))
            }
        };
        let login = Arc::new(cps_appliance::login::LoginService::new(
            ca.core().clone(),
            xua.clone(),
            Arc::new(cps_appliance::enrolment::EnrolDirectory(cards.clone())),
            challenges,
            "cps-trust".into(),
            Arc::new(|_, _, _| {}),
        ));
        let state = ApiState {
            console_key: None,
            node: "test-node".into(),
            identities: Arc::new(cps_appliance::identity::https_identities(store.clone())),
            ca: ca.clone(),
            nodes: cps_appliance::nodes::Nodes::new(store.clone()),
            xua: Some(xua),
            login: Some(login),
            cards: Some(cards.clone()),
            jobs: cps_enrol::Jobs::for_node("test-node", cps_appliance::clock::unix_now),
            audit_log: Some(audit_log.clone()),
            audit_writer,
            dsg: None,
        };
        let router = Mutex::new(router(&state, &disk.lock().unwrap()));
        InProcess {
            store,
            ca,
            cards,
            audit_log,
            audit_file,
            state,
            router,
            disk,
            issuers,
            dir,
        }
    }

    /// The XUA service (issues with the appliance's seal, validates behind the API).
    pub fn xua(&self) -> Arc<cps_login::XuaService> {
        self.state
            .xua
            .clone()
            .expect("the harness has an XUA service")
    }

    /// The disk is below its reserve from now on: a guard whose reserve no disk has.
    pub fn fill_disk(&self) {
        self.set_disk(guard(self.dir.path(), u64::MAX >> 20));
    }

    /// The disk has room again.
    pub fn free_disk(&self) {
        self.set_disk(guard(self.dir.path(), 0));
    }

    fn set_disk(&self, g: Arc<DiskGuard>) {
        *self.router.lock().unwrap() = router(&self.state, &g);
        *self.disk.lock().unwrap() = g;
    }

    /// The temporary directory of this appliance.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A client certificate as the accept loop reads it (`None` if not one of our CAs').
    pub fn peer(&self, der: &[u8]) -> Option<Arc<PeerCertificate>> {
        PeerCertificate::parse(der, &self.issuers).map(Arc::new)
    }

    /// An operator `name` with `roles`, certified by the CA (the operator keeps its key).
    pub fn operator(&self, name: &str, roles: &[Role]) -> Caller {
        let (_key, pem) = csr(&format!("CN={name}, O=cps-trust tests, C=FR"));
        let roles: Vec<String> = roles.iter().map(|r| r.as_str().to_owned()).collect();
        let rec = self
            .ca
            .create_operator(name, &roles, pem.as_bytes(), "harness", now())
            .unwrap();
        Caller {
            name: name.into(),
            cert: self
                .peer(&rec.der)
                .expect("an operator certificate of our CA"),
            serial_hex: hex::encode_upper(&rec.serial),
        }
    }

    /// One operator per role, named after it.
    pub fn operator_per_role(&self) -> Vec<(Role, Caller)> {
        Role::ALL
            .iter()
            .map(|r| (*r, self.operator(r.as_str(), &[*r])))
            .collect()
    }

    /// Send `req` on a new connection, as `caller` (`None`: no client certificate).
    pub async fn send(&self, mut req: Request<Body>, caller: Option<&Caller>) -> Reply {
        let connection = Connection::new();
        let ext = req.extensions_mut();
        ext.insert(ClientCert(caller.map(|c| c.cert.clone())));
        ext.insert(PeerAddr(SocketAddr::from(([127, 0, 0, 1], 40_000))));
        ext.insert(connection.clone());
        let router = self.router.lock().unwrap().clone();
        let resp = router.oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
            connection,
        }
    }

    /// `method path` with `headers` and `body`, as `caller`.
    pub async fn call(
        &self,
        caller: Option<&Caller>,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "cps-trust.localhost:8443");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(body.into()).unwrap(), caller).await
    }

    pub async fn get(&self, caller: Option<&Caller>, path: &str) -> Reply {
        self.call(caller, Method::GET, path, &[], Body::empty())
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(
        &self,
        caller: Option<&Caller>,
        path: &str,
        body: &serde_json::Value,
    ) -> Reply {
        self.call(
            caller,
            Method::POST,
            path,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    /// Everything a request could have changed: the store's audit table, certificates
    /// (serial and status), the registry's professionals, the node registry, and the audit
    /// writer's file.
    pub fn snapshot(&self) -> String {
        let mut out = format!("audit={:?}\n", self.store.audit_len().unwrap());
        let page = self.store.list_certificates(None, None, 10_000).unwrap();
        for c in &page.certificates {
            out.push_str(&format!(
                "cert {} {} {:?}\n",
                c.issuer,
                hex::encode(&c.serial),
                c.status
            ));
        }
        let pros = cps_enrol::Registry::new(self.store.clone())
            .search("", None, 10_000)
            .map(|p| format!("{:?}\n", p.items))
            .unwrap_or_else(|e| format!("registry: {e}"));
        out.push_str(&pros);
        let nodes = cps_appliance::nodes::Nodes::new(self.store.clone())
            .list()
            .map(|n| format!("{n:?}"))
            .unwrap_or_else(|e| format!("nodes: {e}"));
        out.push_str(&nodes);
        out.push_str(&std::fs::read_to_string(&self.audit_file).unwrap_or_default());
        out
    }
}
