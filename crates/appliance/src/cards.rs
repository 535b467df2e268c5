//! Card issuance work that takes time — enrolling a card in one of the appliance's readers,
//! importing a registry file — runs as a background job whose progress the console and the CLI
//! follow. A job's initial PIN and PUK are handed out once: the first read after completion
//! takes them, and they are then forgotten.

use std::collections::HashMap;
use std::sync::Arc;

use cps_card::{Pcsc, Piv};
use cps_enrol::{CardService, EnrolRequest, ImportOptions, Progress, StepState};
use parking_lot::Mutex;
use serde::Serialize;

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
    pub id: String,
    pub kind: String,
    pub actor: String,
    /// `running`, `done`, `failed`.
    pub status: String,
    pub events: Vec<JobEvent>,
    /// For imports: units done and total in the current phase.
    pub progress: Option<(String, usize, usize)>,
    pub error: Option<String>,
    pub result: Option<serde_json::Value>,
    /// Initial PIN and PUK of an enrolled card: present in exactly one answer.
    pub secrets: Option<serde_json::Value>,
}

struct Job {
    view: JobView,
    secrets: Option<serde_json::Value>,
}

/// The jobs of this appliance process (in memory: a restart ends them, and an interrupted
/// enrolment is then rolled back by the card service's recovery).
#[derive(Clone, Default)]
pub struct Jobs {
    inner: Arc<Mutex<HashMap<String, Job>>>,
}

const MAX_JOBS: usize = 1000;

impl Jobs {
    fn create(&self, kind: &str, actor: &str) -> String {
        use ring::rand::SecureRandom;
        let mut id = [0u8; 8];
        let _ = ring::rand::SystemRandom::new().fill(&mut id);
        let id = hex::encode(id);
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
                    secrets: None,
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

    /// The job; its secrets are moved into this answer if it is the first read after they
    /// became available.
    pub fn take(&self, id: &str) -> Option<JobView> {
        let mut map = self.inner.lock();
        let job = map.get_mut(id)?;
        let mut view = job.view.clone();
        view.secrets = job.secrets.take();
        Some(view)
    }

    /// The job without consuming its secrets.
    pub fn peek(&self, id: &str) -> Option<JobView> {
        self.inner.lock().get(id).map(|j| j.view.clone())
    }

    /// Enrol the blank card in `reader` in the background.
    pub fn start_enrolment(
        &self,
        cards: Arc<CardService>,
        reader: String,
        req: EnrolRequest,
        actor: String,
    ) -> String {
        let id = self.create("enrol", &actor);
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
                    .enrol(&mut piv, &req, &actor, crate::unix_now(), &mut on_progress)
                    .map_err(|e| e.to_string())
            })();
            jobs.update(&job, |j| match outcome {
                Ok(o) => {
                    j.view.status = "done".into();
                    j.view.result = serde_json::to_value(&o.card).ok();
                    j.secrets = o.initial_secrets.map(
                        |s| serde_json::json!({ "pin": s.pin.as_str(), "puk": s.puk.as_str() }),
                    );
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
    ) -> String {
        let id = self.create("import", &actor);
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
                crate::unix_now(),
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
