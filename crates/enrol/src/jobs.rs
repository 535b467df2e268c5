//! Card issuance work that takes time — enrolling a card in a PC/SC reader, importing a
//! registry file — runs as a background job whose progress the console and the CLI follow.
//!
//! An enrolment's initial PIN and PUK are handed out once, and only to the operator
//! *certificate* that started the enrolment (its SHA-256 fingerprint, [`Owner`], not the
//! operator's name: another certificate never takes them, whatever name or roles it carries).
//! They stay in [`InitialSecrets`] (zeroed when dropped) from the card service to the one answer
//! that carries them, and that answer is built in one buffer of its final size that is zeroed
//! once the last piece of the answer is dropped ([`secret_body`]); their delivery is durably
//! audited before they leave ([`Jobs::deliver_secrets`]).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use cps_card::{Pcsc, Piv};
use parking_lot::Mutex;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::{CardService, EnrolRequest, ImportOptions, InitialSecrets, Progress, StepState};

/// The SHA-256 fingerprint (of the DER) of the client certificate that started a job.
pub type Owner = [u8; 32];

/// Why a job's answer could not be built (nothing of the secrets is in it then).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The job view did not serialise as a JSON object.
    #[error("job view: {0}")]
    View(String),
    /// The initial PIN or PUK holds something else than ASCII digits.
    #[error("the initial PIN or PUK is not made of digits")]
    NotDigits,
    /// A slot of the page is missing or present more than once.
    #[error("the page must hold the slot {0} exactly once")]
    Slot(String),
    /// Two slots of the page overlap.
    #[error("overlapping slots")]
    OverlappingSlots,
}

/// One line of a job's progress.
#[derive(Debug, Clone, Serialize)]
pub struct JobEvent {
    /// Step name (`detect_card`, `generate_keys`...), or the import phase.
    pub step: String,
    /// Human label of the step.
    pub label: String,
    /// `started`, `done`, `skipped`, `failed`.
    pub state: String,
    /// Why it was skipped or failed.
    pub detail: Option<String>,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    /// Random, hexadecimal.
    pub id: String,
    /// `enrol` or `import`.
    pub kind: String,
    /// Who started it (`operator:<name>`).
    pub actor: String,
    /// `running`, `done`, `failed`.
    pub status: String,
    /// The steps so far (enrolments).
    pub events: Vec<JobEvent>,
    /// For imports: units done and total in the current phase.
    pub progress: Option<(String, usize, usize)>,
    /// Why it failed.
    pub error: Option<String>,
    /// What it made: the card (enrolments) or the import report.
    pub result: Option<serde_json::Value>,
    /// The certificate that started the job.
    #[serde(skip)]
    pub owner: Owner,
    /// Whether the job still holds an initial PIN and PUK for its owner.
    #[serde(skip)]
    pub secrets_held: bool,
}

struct Job {
    view: JobView,
    secrets: Option<InitialSecrets>,
}

/// The jobs of this process (in memory: a restart ends them, and an interrupted enrolment is
/// then rolled back by the card service's recovery). On a node of a cluster a job's id starts
/// with the node's id (`<node>.<16 hex digits>`): a job runs where the card reader is, and
/// another node asked about it says which node that is ([`Jobs::elsewhere`]).
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Mutex<HashMap<String, Job>>>,
    /// The time (Unix seconds) the jobs' operations are recorded at.
    now: fn() -> i64,
    /// This node's id, when the jobs run on a node of a cluster.
    node: Option<String>,
}

const MAX_JOBS: usize = 1000;

impl Jobs {
    /// No jobs yet; `now` gives the time the enrolments and imports are recorded at.
    pub fn new(now: fn() -> i64) -> Jobs {
        Jobs {
            inner: Arc::default(),
            now,
            node: None,
        }
    }

    /// No jobs yet, on node `node` of a cluster: the ids of its jobs name it.
    pub fn for_node(node: &str, now: fn() -> i64) -> Jobs {
        Jobs {
            node: Some(node.to_owned()),
            ..Jobs::new(now)
        }
    }

    /// The node that runs job `id`, if that is another node than this one (the id names it).
    pub fn elsewhere<'a>(&self, id: &'a str) -> Option<&'a str> {
        let (node, rest) = id.rsplit_once('.')?;
        let mine = self.node.as_deref()?;
        (rest.len() == 16
            && rest.bytes().all(|b| b.is_ascii_hexdigit())
            && node != mine
            && cps_store::valid_node_id(node))
        .then_some(node)
    }

    fn create(&self, kind: &str, actor: &str, owner: Owner) -> String {
        use ring::rand::SecureRandom;
        let mut id = [0u8; 8];
        let _ = ring::rand::SystemRandom::new().fill(&mut id);
        let id = match &self.node {
            Some(node) => format!("{node}.{}", hex::encode(id)),
            None => hex::encode(id),
        };
        let mut map = self.inner.lock();
        if map.len() >= MAX_JOBS {
            map.retain(|_, j| j.view.status == "running");
        }
        map.insert(
            id.clone(),
            Job {
                view: JobView {
                    id: id.clone(),
                    kind: kind.into(),
                    actor: actor.into(),
                    status: "running".into(),
                    events: vec![],
                    progress: None,
                    error: None,
                    result: None,
                    owner,
                    secrets_held: false,
                },
                secrets: None,
            },
        );
        id
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Job)) {
        if let Some(j) = self.inner.lock().get_mut(id) {
            f(j);
        }
    }

    /// The job, without its secrets.
    pub fn peek(&self, id: &str) -> Option<JobView> {
        self.inner.lock().get(id).map(|j| j.view.clone())
    }

    /// Moves the initial PIN and PUK of job `id` out of it, if `caller` is the certificate that
    /// started it and nobody took them before: after this, the appliance holds them nowhere.
    pub fn take_secrets(&self, id: &str, caller: &Owner) -> Option<InitialSecrets> {
        let mut map = self.inner.lock();
        let job = map.get_mut(id)?;
        if job.view.owner != *caller {
            return None;
        }
        let s = job.secrets.take();
        job.view.secrets_held = false;
        s
    }

    /// Hands the initial PIN and PUK of job `id` to `caller`, as [`take_secrets`](Jobs::take_secrets)
    /// does, once their delivery is durably audited in `store`: a `card.secrets_delivered` record
    /// naming the card, its holder, the operator and the receiving certificate. If the record
    /// cannot be written the secrets stay in the job for a later attempt and the error is
    /// returned: no card secret leaves without its record. Blocking (a store commit).
    pub fn deliver_secrets(
        &self,
        id: &str,
        caller: &Owner,
        actor: &str,
        store: &dyn cps_store::Store,
        now: i64,
    ) -> Result<Option<InitialSecrets>, cps_store::StoreError> {
        let Some(secrets) = self.take_secrets(id, caller) else {
            return Ok(None);
        };
        let result = self.peek(id).and_then(|v| v.result);
        let field = |k: &str| {
            result
                .as_ref()
                .and_then(|r| r.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let record = cps_audit::AuditEvent::CardSecretsDelivered {
            card: field("serial"),
            idnat_ps: field("idnat_ps"),
            job: id.into(),
            certificate_sha256: hex::encode(caller),
        }
        .record(now, actor);
        match store
            .commit(cps_store::WriteBatch::new().with(cps_store::WriteOp::AppendAudit(record)))
        {
            Ok(_) => Ok(Some(secrets)),
            Err(e) => {
                if let Some(job) = self.inner.lock().get_mut(id) {
                    job.secrets = Some(secrets);
                    job.view.secrets_held = true;
                }
                Err(e)
            }
        }
    }

    /// Enrol the blank card in `reader` in the background.
    pub fn start_enrolment(
        &self,
        cards: Arc<CardService>,
        reader: String,
        req: EnrolRequest,
        actor: String,
        owner: Owner,
    ) -> String {
        let id = self.create("enrol", &actor, owner);
        let jobs = self.clone();
        let job = id.clone();
        std::thread::spawn(move || {
            let mut on_progress = |p: &Progress| {
                let (state, detail) = match &p.state {
                    StepState::Started => ("started", None),
                    StepState::Done => ("done", None),
                    StepState::Skipped(why) => ("skipped", Some(why.clone())),
                    StepState::Failed(why) => ("failed", Some(why.clone())),
                };
                jobs.update(&job, |j| {
                    j.view.events.push(JobEvent {
                        step: p.step.name().into(),
                        label: p.step.label().into(),
                        state: state.into(),
                        detail,
                    })
                });
            };
            let outcome = (|| {
                let pcsc = Pcsc::establish().map_err(|e| e.to_string())?;
                let name = pcsc
                    .resolve_reader(Some(&reader))
                    .map_err(|e| e.to_string())?;
                let card = pcsc.connect(&name).map_err(|e| e.to_string())?;
                let mut piv = Piv::select(card).map_err(|e| e.to_string())?;
                cards
                    .enrol(&mut piv, &req, &actor, (jobs.now)(), &mut on_progress)
                    .map_err(|e| e.to_string())
            })();
            jobs.update(&job, |j| match outcome {
                Ok(o) => {
                    j.view.status = "done".into();
                    j.view.result = serde_json::to_value(&o.card).ok();
                    j.view.secrets_held = o.initial_secrets.is_some();
                    j.secrets = o.initial_secrets;
                }
                Err(e) => {
                    j.view.status = "failed".into();
                    j.view.error = Some(e);
                }
            });
        });
        id
    }

    /// Import a registry CSV in the background.
    pub fn start_import(
        &self,
        cards: Arc<CardService>,
        csv: Vec<u8>,
        dry_run: bool,
        actor: String,
        owner: Owner,
    ) -> String {
        let id = self.create("import", &actor, owner);
        let jobs = self.clone();
        let job = id.clone();
        std::thread::spawn(move || {
            let mut last = std::time::Instant::now();
            let r = cards.registry().import_csv(
                &csv,
                ImportOptions {
                    dry_run,
                    ..ImportOptions::default()
                },
                &actor,
                (jobs.now)(),
                &mut |p| {
                    // Progress is polled: updating it a few times per second is enough.
                    if p.done == p.total || last.elapsed().as_millis() > 100 {
                        last = std::time::Instant::now();
                        let phase = format!("{:?}", p.phase).to_lowercase();
                        jobs.update(&job, |j| j.view.progress = Some((phase, p.done, p.total)));
                    }
                },
            );
            jobs.update(&job, |j| match r {
                Ok(report) => {
                    let rejected = report.error_count > 0;
                    j.view.status = if rejected { "failed" } else { "done" }.into();
                    if rejected {
                        j.view.error = Some(format!(
                            "{} error(s): nothing was imported",
                            report.error_count
                        ));
                    }
                    j.view.result = serde_json::to_value(&report).ok();
                }
                Err(e) => {
                    j.view.status = "failed".into();
                    j.view.error = Some(e.to_string());
                }
            });
        });
        id
    }
}

/// An answer that carries one-time secrets: `parts` concatenated into one buffer allocated at
/// its final size (it never grows, so no reallocation leaves a copy behind) and zeroed when the
/// last reference to it is dropped, i.e. once the connection has written it.
pub fn secret_body(parts: &[&[u8]]) -> Bytes {
    let len = parts.iter().map(|p| p.len()).sum();
    let mut buf = Zeroizing::new(Vec::with_capacity(len));
    for p in parts {
        buf.extend_from_slice(p);
    }
    debug_assert_eq!(buf.len(), len);
    owned_bytes(buf)
}

/// Bytes over `owner`'s, without copying them; `owner` is dropped with the last of them.
fn owned_bytes<T: AsRef<[u8]> + Send + 'static>(owner: T) -> Bytes {
    Bytes::from_owner(owner)
}

/// The initial PIN and PUK as they go into an answer: ASCII digits (what the derivation makes),
/// so that neither JSON nor HTML needs to escape, and so copy, them.
pub fn secret_digits(s: &InitialSecrets) -> Result<(&[u8], &[u8]), AnswerError> {
    let (pin, puk) = (s.pin.as_bytes(), s.puk.as_bytes());
    let ok = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_digit);
    if ok(pin) && ok(puk) {
        Ok((pin, puk))
    } else {
        Err(AnswerError::NotDigits)
    }
}

/// The job as JSON: the [`JobView`] and `"secrets"`, the initial PIN and PUK in the one answer
/// that carries them (`{"pin": "…", "puk": "…"}`), `null` in every other.
pub fn job_json(view: &JobView, secrets: Option<&InitialSecrets>) -> Result<Bytes, AnswerError> {
    let mut head = serde_json::to_vec(view).map_err(|e| AnswerError::View(e.to_string()))?;
    if head.pop() != Some(b'}') {
        return Err(AnswerError::View("not a JSON object".into()));
    }
    match secrets {
        None => {
            head.extend_from_slice(b",\"secrets\":null}");
            Ok(Bytes::from(head))
        }
        Some(s) => {
            let (pin, puk) = secret_digits(s)?;
            Ok(secret_body(&[
                &head,
                b",\"secrets\":{\"pin\":\"",
                pin,
                b"\",\"puk\":\"",
                puk,
                b"\"}}",
            ]))
        }
    }
}

/// Where each of `markers` is in `page` (each exactly once, none overlapping): (offset, index
/// of the marker), in page order.
fn slot_positions(page: &str, markers: &[&str]) -> Result<Vec<(usize, usize)>, AnswerError> {
    let mut at = Vec::with_capacity(markers.len());
    for (k, marker) in markers.iter().enumerate() {
        let mut found = page.match_indices(marker);
        match (found.next(), found.next()) {
            (Some((i, _)), None) => at.push((i, k)),
            _ => return Err(AnswerError::Slot((*marker).to_owned())),
        }
    }
    at.sort_unstable();
    for w in at.windows(2) {
        if w[0].0 + markers[w[0].1].len() > w[1].0 {
            return Err(AnswerError::OverlappingSlots);
        }
    }
    Ok(at)
}

/// Checks that [`fill_slots`] will accept `page` (before the values are taken from anywhere).
pub fn check_slots(page: &str, markers: &[&str]) -> Result<(), AnswerError> {
    slot_positions(page, markers).map(|_| ())
}

/// `page` with each slot (a marker that escaped text cannot contain, present exactly once)
/// replaced by its value, as a [`secret_body`].
pub fn fill_slots(page: &str, slots: &[(&str, &[u8])]) -> Result<Bytes, AnswerError> {
    let markers: Vec<&str> = slots.iter().map(|(m, _)| *m).collect();
    let at = slot_positions(page, &markers)?;
    let mut parts: Vec<&[u8]> = Vec::with_capacity(2 * at.len() + 1);
    let mut pos = 0;
    for (i, k) in at {
        parts.push(&page.as_bytes()[pos..i]);
        parts.push(slots[k].1);
        pos = i + markers[k].len();
    }
    parts.push(&page.as_bytes()[pos..]);
    Ok(secret_body(&parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprint of a certificate's DER.
    fn fingerprint(der: &[u8]) -> Owner {
        let d = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    fn fixed_clock() -> i64 {
        1_700_000_000
    }

    fn secrets(pin: &str, puk: &str) -> InitialSecrets {
        InitialSecrets {
            pin: Zeroizing::new(pin.into()),
            puk: Zeroizing::new(puk.into()),
        }
    }

    /// A finished enrolment job started by the officer's certificate and holding `pin` / `puk`,
    /// as the enrolment thread leaves it: (jobs, the officer's fingerprint, job id).
    fn finished(pin: &str, puk: &str) -> (Jobs, Owner, String) {
        let jobs = Jobs::new(fixed_clock);
        let officer = fingerprint(b"officer certificate");
        let id = jobs.create("enrol", "operator:officer", officer);
        let s = secrets(pin, puk);
        jobs.update(&id, |j| {
            j.view.status = "done".into();
            j.view.secrets_held = true;
            j.secrets = Some(s);
        });
        (jobs, officer, id)
    }

    fn body_bytes(b: Bytes) -> Vec<u8> {
        b.to_vec()
    }

    #[test]
    fn only_the_starting_certificate_takes_the_secrets_and_only_once() {
        let (jobs, officer, id) = finished("314159", "27182818");
        // Another certificate of an operator with the same name and roles (re-issued, or a
        // second credential): the name is not what the secrets are bound to.
        let same_name = fingerprint(b"another certificate named officer");
        let seen = jobs.peek(&id).unwrap();
        assert!(seen.secrets_held);
        assert_eq!(seen.actor, "operator:officer");
        assert!(jobs.take_secrets(&id, &same_name).is_none());
        assert!(jobs.take_secrets("no-such-job", &officer).is_none());
        // Refusing another caller left them in place for the owner.
        assert!(jobs.peek(&id).unwrap().secrets_held);
        let s = jobs
            .take_secrets(&id, &officer)
            .expect("the owner takes them");
        assert_eq!((s.pin.as_str(), s.puk.as_str()), ("314159", "27182818"));
        assert!(!jobs.peek(&id).unwrap().secrets_held);
        assert!(jobs.take_secrets(&id, &officer).is_none(), "only once");
        assert!(jobs.take_secrets(&id, &same_name).is_none());
    }

    /// The delivery is audited before the secrets leave; a store that refuses the record keeps
    /// them in the job, and they are delivered (once) when it accepts.
    #[test]
    fn the_secrets_leave_only_with_their_durable_audit_record() {
        use cps_store::Store;
        let dir = tempfile::tempdir().unwrap();
        let store = cps_store::SledStore::open(dir.path()).unwrap();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = open.clone();
        store
            .set_write_gate(Box::new(move || {
                if gate.load(std::sync::atomic::Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err("disk full".into())
                }
            }))
            .unwrap();
        let (jobs, officer, id) = finished("314159", "27182818");
        jobs.update(&id, |j| {
            j.view.result =
                Some(serde_json::json!({ "serial": "C0FFEE", "idnat_ps": "810002813839" }));
        });
        let stranger = fingerprint(b"someone else");
        assert!(matches!(
            jobs.deliver_secrets(&id, &stranger, "operator:eve", &store, 10),
            Ok(None)
        ));
        assert!(
            jobs.deliver_secrets(&id, &officer, "operator:officer", &store, 10)
                .is_err()
        );
        assert!(
            jobs.peek(&id).unwrap().secrets_held,
            "kept when the record is refused"
        );
        assert_eq!(store.audit_len().unwrap(), 0);
        open.store(true, std::sync::atomic::Ordering::SeqCst);
        let s = jobs
            .deliver_secrets(&id, &officer, "operator:officer", &store, 11)
            .unwrap()
            .expect("delivered");
        assert_eq!(s.pin.as_str(), "314159");
        let rec = &store.audit_range(1, 10).unwrap()[0].record;
        assert_eq!(rec.kind, "card.secrets_delivered");
        assert_eq!(rec.actor, "operator:officer");
        assert_eq!(rec.detail["card"], "C0FFEE");
        assert_eq!(rec.detail["idnat_ps"], "810002813839");
        assert_eq!(rec.detail["certificate_sha256"], hex::encode(officer));
        assert!(rec.detail.get("pin").is_none() && !rec.detail.to_string().contains("314159"));
        assert!(matches!(
            jobs.deliver_secrets(&id, &officer, "operator:officer", &store, 12),
            Ok(None)
        ));
        assert_eq!(store.audit_len().unwrap(), 1, "one delivery, one record");
    }

    /// On a node, a job's id names the node; another node recognises it as not its own and
    /// names the node that runs it; an unknown id of its own, or a malformed one, is nobody's.
    #[test]
    fn job_ids_name_their_node() {
        let a = Jobs::for_node("node-a", fixed_clock);
        let b = Jobs::for_node("node-b", fixed_clock);
        let id = a.create("import", "operator:x", [1; 32]);
        assert!(id.starts_with("node-a."), "{id}");
        assert!(a.peek(&id).is_some());
        assert_eq!(a.elsewhere(&id), None);
        assert!(b.peek(&id).is_none());
        assert_eq!(b.elsewhere(&id), Some("node-a"));
        for other in [
            "node-b.0123456789abcdef",
            "0123456789abcdef",
            "x.y",
            "node a.0123456789abcdef",
        ] {
            assert_eq!(b.elsewhere(other), None, "{other}");
        }
        assert_eq!(Jobs::new(fixed_clock).elsewhere(&id), None);
    }

    #[test]
    fn an_import_job_has_an_owner_and_no_secrets() {
        let jobs = Jobs::new(fixed_clock);
        let owner = fingerprint(b"x");
        let id = jobs.create("import", "operator:x", owner);
        assert_eq!(jobs.peek(&id).unwrap().owner, owner);
        assert!(jobs.take_secrets(&id, &owner).is_none());
    }

    #[test]
    fn the_json_answer_carries_the_secrets_once_and_null_otherwise() {
        let (jobs, owner, id) = finished("902741", "55019384");
        let view = jobs.peek(&id).unwrap();
        let s = jobs.take_secrets(&id, &owner).unwrap();
        let first: serde_json::Value =
            serde_json::from_slice(&body_bytes(job_json(&view, Some(&s)).unwrap())).unwrap();
        assert_eq!(first["secrets"]["pin"], "902741");
        assert_eq!(first["secrets"]["puk"], "55019384");
        assert_eq!(first["id"], id.as_str());
        assert_eq!(first["status"], "done");
        assert!(first.get("owner").is_none() && first.get("secrets_held").is_none());
        let again: serde_json::Value =
            serde_json::from_slice(&body_bytes(job_json(&view, None).unwrap())).unwrap();
        assert!(again["secrets"].is_null());
        assert_eq!(again["id"], id.as_str());
        // Anything but digits is refused rather than escaped into the answer.
        assert_eq!(
            job_json(&view, Some(&secrets("12\"456", "12345678"))).err(),
            Some(AnswerError::NotDigits)
        );
    }

    #[test]
    fn slots_are_filled_once_each_in_one_buffer() {
        let page = "<p>PIN <b>@PIN@</b> PUK <b>@PUK@</b></p>";
        let body = fill_slots(page, &[("@PUK@", b"87654321"), ("@PIN@", b"123987")]).unwrap();
        assert_eq!(
            body_bytes(body),
            b"<p>PIN <b>123987</b> PUK <b>87654321</b></p>"
        );
        assert_eq!(
            fill_slots("no slot", &[("@PIN@", b"1")]).err(),
            Some(AnswerError::Slot("@PIN@".into()))
        );
        assert_eq!(
            fill_slots("@PIN@ @PIN@", &[("@PIN@", b"1")]).err(),
            Some(AnswerError::Slot("@PIN@".into()))
        );
        assert_eq!(
            check_slots("@PIN@", &["@PIN@", "PIN@"]),
            Err(AnswerError::OverlappingSlots)
        );
        assert!(check_slots(page, &["@PIN@", "@PUK@"]).is_ok());
    }

    #[test]
    fn a_secret_body_is_its_parts_and_its_buffer_is_dropped_with_the_response() {
        let b = secret_body(&[b"ab", b"", b"cde"]);
        assert_eq!(body_bytes(b), b"abcde");
        // The owner of the buffer (for secret_body, the Zeroizing<Vec<u8>> that wipes itself) is
        // dropped when the last piece of the answer is: after the response, not before.
        struct Probe(Vec<u8>, Arc<std::sync::atomic::AtomicBool>);
        impl AsRef<[u8]> for Probe {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }
        impl Drop for Probe {
            fn drop(&mut self) {
                self.1.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = owned_bytes(Probe(b"123456".to_vec(), dropped.clone()));
        let piece = sent.slice(1..3);
        drop(sent);
        assert_eq!(&piece[..], b"23");
        assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));
        drop(piece);
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    }
}
