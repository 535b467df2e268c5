//! The enrolment form, an enrolment's progress and result with the PIN mailer, the registry
//! import form and an import's progress and report.

use cps_enrol::{Card, ImportReport, Professional, Step};
use maud::{Markup, html};

use crate::html::{Page, Tone, badge, day, notice, slot, thead};
use crate::{
    EnrolJobMeta, Job, Viewer, full_name, href_card, href_certificate, href_job, href_professional,
};

/// What the enrolment form shows and remembers.
pub struct EnrolForm<'a> {
    pub professional: &'a Professional,
    pub cards: &'a [Card],
    pub readers: &'a Result<Vec<(String, bool)>, String>,
    pub activity: Option<&'a str>,
    pub reader: Option<&'a str>,
    pub replaces: Option<&'a str>,
    pub error: Option<String>,
}

pub fn view_enrol_form(v: &Viewer, f: &EnrolForm<'_>) -> String {
    let p = f.professional;
    let mut page = v
        .page("Enrol a card")
        .crumb("Search", Some("/console/professionals".into()))
        .crumb(full_name(p), Some(href_professional(p.idnat_ps())))
        .crumb("Enrol a card", None);
    if let Some(e) = &f.error {
        page.notice(Tone::Error, "The enrolment was not started.", Some(e));
    }
    let active = p.status == cps_enrol::ProfessionalStatus::Active;
    if !active {
        page.notice(
            Tone::Warning,
            &format!("This professional is {}.", p.status.name()),
            Some("A card is enrolled only for an active professional: change the status first."),
        );
    }
    let in_service = |s: &str| {
        f.cards
            .iter()
            .any(|c| c.structure_id == s && !c.status.is_terminal())
    };
    let default_activity = f.activity.or_else(|| {
        p.data
            .activities
            .iter()
            .find(|a| !in_service(&a.structure_id))
            .or(p.data.activities.first())
            .map(|a| a.structure_id.as_str())
    });
    let can_submit = active && matches!(f.readers, Ok(l) if !l.is_empty());
    let replaceable: Vec<&Card> = f.cards.iter().filter(|c| !c.status.is_terminal()).collect();
    page.render(html! {
        p.lead {
            "A new CPS card for " strong { (full_name(p)) } " "
            span.muted { "(" (p.profession_label()) ", IdNat_PS " code { (p.idnat_ps()) } ")" }
            "."
        }
        form method="post" action={ (href_professional(p.idnat_ps())) "/enrol" } class="stack" id="enrol-form" {
            (v.csrf_field())
            fieldset {
                legend { "Activity the card is for" }
                @for (i, a) in p.data.activities.iter().enumerate() {
                    div.choice {
                        input type="radio" name="structure_id" id={ "activity-" (i) } value=(a.structure_id)
                            checked[Some(a.structure_id.as_str()) == default_activity] required;
                        label for={ "activity-" (i) } { (a.structure_name) " " code.muted { (a.structure_id) } }
                        p.hint {
                            (a.secteur_label().unwrap_or("?"))
                            @if in_service(&a.structure_id) { " · already has a card: choose it below as the card replaced" }
                        }
                    }
                }
            }
            fieldset {
                legend { "Card reader" }
                @match f.readers {
                    Ok(list) if list.is_empty() => p { "No card reader is connected to the appliance." },
                    Ok(list) => {
                        @let default_reader = f.reader
                            .or_else(|| list.iter().find(|r| r.1).map(|r| r.0.as_str()))
                            .or(list.first().map(|r| r.0.as_str()));
                        @for (i, (name, present)) in list.iter().enumerate() {
                            div.choice {
                                input type="radio" name="reader" id={ "reader-" (i) } value=(name)
                                    checked[Some(name.as_str()) == default_reader] required;
                                label for={ "reader-" (i) } { (name) } " "
                                @if *present { (badge("active", "card present")) } @else { (badge("neutral", "empty")) }
                            }
                        }
                    }
                    Err(e) => (notice(Tone::Warning, "The card readers cannot be listed.", Some(e))),
                }
            }
            @if !replaceable.is_empty() {
                div.field {
                    label for="replaces" { "Card replaced" }
                    select #replaces name="replaces" {
                        option value="" selected[f.replaces.is_none()] { "None: a first card for this activity" }
                        @for c in replaceable {
                            option value=(c.serial) selected[f.replaces == Some(c.serial.as_str())] {
                                (c.serial) " · " (c.structure_id) " · " (c.status.to_string())
                            }
                        }
                    }
                    p.hint { "The replaced card is retired at the end of the enrolment and its certificates are revoked as superseded." }
                }
            }
            p.hint {
                "Put a blank card in the reader and leave it there until the enrolment ends (a few seconds). \
                 The card's keys are generated on the card; the CPS authentication and signature certificates are then written to it."
            }
            p {
                button type="submit" disabled[!can_submit] { "Start the enrolment" } " "
                a href=(href_professional(p.idnat_ps())) class="button secondary" { "Cancel" }
            }
        }
    })
}

/// The state of each enrolment step after the job's events: (state, detail).
pub fn step_states(view: &Job) -> Vec<(Step, &'static str, Option<String>)> {
    Step::ALL
        .iter()
        .map(|s| {
            let last = view.events.iter().rev().find(|e| e.step == s.name());
            let (state, detail) = match last {
                None => ("waiting", None),
                Some(e) => (
                    match e.state.as_str() {
                        "started" => "started",
                        "done" => "done",
                        "skipped" => "skipped",
                        "failed" => "failed",
                        _ => "waiting",
                    },
                    e.detail.clone(),
                ),
            };
            (*s, state, detail)
        })
        .collect()
}

pub fn state_text(state: &str) -> &'static str {
    match state {
        "started" => "in progress",
        "done" => "done",
        "skipped" => "skipped",
        "failed" => "failed",
        _ => "waiting",
    }
}

/// Where the PIN mailer's codes go in the page: markers that escaped text cannot contain (maud
/// never writes a raw `<` from a value), filled into the answer's own buffer
/// (`cps_enrol::jobs::fill_slots`).
pub const PIN_SLOT: &str = "<cps-trust-slot pin>";
pub const PUK_SLOT: &str = "<cps-trust-slot puk>";

/// Where the initial PIN and PUK went, when the page does not show them.
pub fn secrets_note(mine: bool) -> Markup {
    html! {
        p.notice.info role="status" {
            @if mine {
                "The initial PIN and PUK were shown once, when this page first opened after the enrolment, and are not kept anywhere."
            } @else {
                "The initial PIN and PUK are shown only to the officer who enrolled the card, with the certificate they enrolled it with."
            }
        }
    }
}

/// What an enrolment job's page says about the card's initial PIN and PUK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// Nothing (no card yet).
    Nothing,
    /// Where they went: shown once already (`mine`), or only to the officer who enrolled.
    Note {
        /// The request comes from the certificate that started the enrolment.
        mine: bool,
    },
    /// The PIN mailer, with [`PIN_SLOT`] and [`PUK_SLOT`] where the codes go.
    Mailer,
}

/// An enrolment job's page.
pub fn view_enrol_job(v: &Viewer, job: &EnrolJob<'_>, secrets: Secrets) -> String {
    let (page, body) = enrol_job_view(v, job);
    page.render(html! {
        (body)
        @match (secrets, job.card) {
            (Secrets::Note { mine }, _) => (secrets_note(mine)),
            (Secrets::Mailer, Some(c)) => (pin_mailer(c, job.professional)),
            _ => {}
        }
    })
}

/// What an enrolment job's page shows.
pub struct EnrolJob<'a> {
    pub view: &'a Job,
    pub meta: Option<&'a EnrolJobMeta>,
    pub professional: Option<&'a Professional>,
    pub card: Option<&'a Card>,
}

/// The frame and content of an enrolment job's page, without what is said about the initial
/// PIN and PUK.
pub fn enrol_job_view<'v>(v: &'v Viewer, job: &EnrolJob<'_>) -> (Page<'v>, Markup) {
    let view = job.view;
    let title = match view.status.as_str() {
        "running" => "Enrolling a card",
        "done" => "Card enrolled",
        _ => "Enrolment failed",
    };
    let mut page = v.page(title);
    if let Some(p) = job.professional {
        page = page
            .crumb("Search", Some("/console/professionals".into()))
            .crumb(full_name(p), Some(href_professional(p.idnat_ps())));
    }
    page = page.crumb(title, None);
    page.class = "job";
    if view.status == "running" {
        page.refresh = Some(1);
    }
    let states = step_states(view);
    match view.status.as_str() {
        "done" => {
            let serial = job.card.map(|c| c.serial.as_str()).unwrap_or("?");
            page.notice(
                Tone::Success,
                &format!("Card {serial} is enrolled and registered."),
                None,
            );
        }
        "failed" => {
            let title = match states.iter().find(|s| s.1 == "failed") {
                Some((step, _, _)) => format!("The enrolment stopped at “{}”.", step.label()),
                None => "The enrolment could not start.".to_owned(),
            };
            page.notice(Tone::Error, &title, view.error.as_deref());
        }
        _ => {}
    }
    let body = html! {
        dl.facts.compact {
            @if let Some(p) = job.professional {
                dt { "Professional" }
                dd { a href=(href_professional(p.idnat_ps())) { (full_name(p)) } " " code.muted { (p.idnat_ps()) } }
            }
            @if let Some(m) = job.meta {
                @let activity = job.professional
                    .and_then(|p| p.activity(&m.structure_id))
                    .map(|a| a.structure_name.clone())
                    .unwrap_or_default();
                dt { "Activity" } dd { (activity) " " code.muted { (m.structure_id) } }
                dt { "Reader" } dd { (m.reader) }
            }
            dt { "Started by" } dd { (view.actor.strip_prefix("operator:").unwrap_or(&view.actor)) }
        }
        h2 #steps-h { "Steps" }
        ol.steps aria-labelledby="steps-h" aria-live="polite"
            data-job-status={ (href_job(&view.id)) "/status" } data-job-state=(view.status) {
            @for (step, state, detail) in &states {
                li class={ "step step-" (state) } data-step=(step.name()) {
                    span.step-icon aria-hidden="true" {}
                    span.step-label { (step.label()) } " "
                    span.step-state { (state_text(state)) }
                    span.step-detail { (detail.as_deref().unwrap_or("")) }
                }
            }
        }
        @if view.status == "running" {
            p.hint #live-hint { "This page follows the enrolment as it runs. Keep the card in the reader." }
        }
        @if view.status == "failed" {
            p {
                "Certificates issued before the failure are revoked (the message above says what happened to them). \
                 Check the card and the reader, then start the enrolment again."
            }
            @if let Some(p) = job.professional {
                p {
                    a.button href={ (href_professional(p.idnat_ps())) "/enrol" } { "Enrol again" } " "
                    a.button.secondary href=(href_professional(p.idnat_ps())) { "Back to the professional" }
                }
            }
        }
        @if let Some(c) = job.card { (card_summary(c)) }
    };
    (page, body)
}

pub fn card_summary(c: &Card) -> Markup {
    html! {
        section aria-labelledby="card-h" {
            h2 #card-h { "The card" }
            dl.facts.compact {
                dt { "Card serial" } dd { a href=(href_card(&c.serial)) #card-link { code { (c.serial) } } }
                dt { "Token id" } dd { code { (c.token_id) } }
            }
            table.certs #card-certificates {
                caption { "Certificates written to the card" }
                (thead(&["Use", "Profile", "Serial", "Valid until"]))
                tbody {
                    @for x in &c.certificates {
                        tr {
                            th scope="row" { (crate::slot_label(x.slot)) }
                            td { code { (x.profile) } }
                            td { a href=(href_certificate(&x.cert.issuer, &x.cert.serial)) { code { (x.cert.serial) } } }
                            td { (day(x.not_after)) }
                        }
                    }
                }
            }
        }
    }
}

/// The PIN mailer, with [`PIN_SLOT`] and [`PUK_SLOT`] where the codes go.
pub fn pin_mailer(c: &Card, p: Option<&Professional>) -> Markup {
    html! {
        section.pin-mailer aria-labelledby="mailer-h" {
            h2 #mailer-h .no-print { "PIN mailer" }
            p.no-print.mailer-warning { "Shown once: print the mailer or hand the codes over now. They are not stored anywhere and this page will not show them again." }
            div.mailer-sheet {
                p.mailer-head { "Personal and confidential" }
                p.mailer-title { "Codes of your CPS card" }
                dl.facts.compact {
                    @if let Some(p) = p {
                        dt { "Holder" } dd { (full_name(p)) }
                        dt { "IdNat_PS" } dd { code { (p.idnat_ps()) } }
                    }
                    dt { "Card" } dd { code { (c.serial) } " (token " code { (c.token_id) } ")" }
                }
                dl.codes {
                    div { dt { "PIN" } dd #pin { (slot(PIN_SLOT)) } }
                    div { dt { "PUK" } dd #puk { (slot(PUK_SLOT)) } }
                }
                p.mailer-note {
                    "Keep this letter apart from your card and destroy it once you know the codes. \
                     The PIN protects your authentication and signature; after three wrong PINs the card is blocked and \
                     your registration office unblocks it with the PUK."
                }
            }
            p.no-print {
                button type="button" data-print hidden { "Print the PIN mailer" } " "
                span.hint { "Your browser's Print command prints the mailer alone." }
            }
        }
    }
}

pub fn phase_label(phase: &str) -> &'static str {
    match phase {
        "validating" => "Checking lines",
        "comparing" => "Comparing with the registry",
        "writing" => "Writing professionals",
        _ => "Working",
    }
}

/// An import's page: its progress, then its report (`None` if it ended without one).
pub fn view_import_job(v: &Viewer, view: &Job, report: Option<&ImportReport>) -> String {
    let title = match (view.status.as_str(), report.map(|r| r.outcome)) {
        ("running", _) => "Importing the registry",
        (_, Some(cps_enrol::ImportOutcome::Imported)) => "Registry imported",
        (_, Some(cps_enrol::ImportOutcome::Unchanged)) => "Registry already up to date",
        (_, Some(cps_enrol::ImportOutcome::DryRun)) => "Registry file checked",
        _ => "Import refused",
    };
    let mut page = v
        .page(title)
        .crumb("Import registry", Some("/console/import".into()))
        .crumb(title, None);
    page.class = "job";
    let running = view.status == "running";
    if running {
        page.refresh = Some(1);
    }
    let (phase, done, total) = view
        .progress
        .clone()
        .unwrap_or_else(|| ("validating".into(), 0, 0));
    let pct = done.saturating_mul(100).checked_div(total).unwrap_or(0);
    page.render(html! {
        div.import-progress data-job-status={ (href_job(&view.id)) "/status" } data-job-state=(view.status) {
            p #import-phase { span.phase { (phase_label(&phase)) } ": " span.count { (done) " of " (total) } }
            progress #import-bar max=(total.max(1)) value=(if running { done } else { total.max(1) })
                aria-labelledby="import-phase" { (pct) "%" }
        }
        @if !running {
            @match report {
                Some(r) => (import_report(r)),
                None => (notice(Tone::Error, "The import failed.", view.error.as_deref())),
            }
            p { a.button.secondary href="/console/import" { "Import another file" } }
        }
    })
}

pub fn issues_table(id: &str, caption: &str, issues: &[cps_enrol::LineIssue]) -> Markup {
    html! {
        table.issues id=(id) {
            caption { (caption) }
            (thead(&["Line", "Column", "Problem"]))
            tbody {
                @for i in issues {
                    tr {
                        th scope="row" { @if i.line == 0 { "file" } @else { (i.line) } }
                        td { (i.column.as_deref().unwrap_or("")) }
                        td { (i.message) }
                    }
                }
            }
        }
    }
}

pub fn import_report(r: &ImportReport) -> Markup {
    let (kind, text, detail) = match r.outcome {
        cps_enrol::ImportOutcome::Rejected => (
            Tone::Error,
            format!("{} error(s): nothing was imported.", r.error_count),
            Some("Correct the lines below and upload the file again."),
        ),
        cps_enrol::ImportOutcome::Unchanged => (
            Tone::Success,
            "The registry already holds exactly this file: nothing was written.".to_owned(),
            None,
        ),
        cps_enrol::ImportOutcome::Imported => (
            Tone::Success,
            format!(
                "{} created, {} updated, {} unchanged.",
                r.created, r.updated, r.unchanged
            ),
            None,
        ),
        cps_enrol::ImportOutcome::DryRun => (
            Tone::Info,
            format!(
                "The file is valid: {} would be created, {} updated, {} unchanged.",
                r.created, r.updated, r.unchanged
            ),
            Some("Nothing was written (check only)."),
        ),
    };
    let counts = [
        ("Data lines", r.lines),
        ("Professionals", r.professionals),
        ("Activities", r.activities),
        ("Created", r.created),
        ("Updated", r.updated),
        ("Unchanged", r.unchanged),
        ("Errors", r.error_count),
        ("Warnings", r.warnings.len()),
    ];
    html! {
        (notice(kind, &text, detail))
        dl.facts.compact #import-counts {
            @for (label, n) in counts { dt { (label) } dd { (n) } }
            dt { "File SHA-256" } dd { code.wrap { (r.file_sha256) } }
        }
        @if !r.errors.is_empty() {
            (issues_table("import-errors", "Errors, line by line", &r.errors))
            @if r.error_count > r.errors.len() {
                p.hint { (r.error_count - r.errors.len()) " more error(s) are not listed." }
            }
        }
        @if !r.warnings.is_empty() {
            (issues_table("import-warnings", "Warnings (accepted)", &r.warnings))
        }
    }
}

pub fn view_import_form(v: &Viewer) -> String {
    v.page("Import the registry")
        .crumb("Import registry", None)
        .render(html! {
            p.lead {
                "Upload an extraction of the professional registry: the file is checked as a whole, \
                 and imported only if every line is valid."
            }
            form method="post" action="/console/import" enctype="multipart/form-data" class="stack" id="import-form" {
                (v.csrf_field())
                div.field {
                    label for="file" { "Registry file (CSV)" }
                    input type="file" #file name="file" accept=".csv,.txt,text/csv,text/plain" required aria-describedby="file-hint";
                    p.hint #file-hint {
                        "UTF-8 text close to the Annuaire Santé “personne-activité” extraction: a header line, then \
                         one line per activity, columns separated by " kbd { "|" } " or " kbd { ";" } ". Required columns: \
                         Identification nationale PP, Nom d'exercice, Prénom d'exercice, Code profession, Identifiant \
                         technique de la structure, Raison sociale site, Code secteur d'activité (Code savoir-faire optional)."
                    }
                }
                div.choice {
                    input type="checkbox" #dry_run name="dry_run" value="1";
                    label for="dry_run" { "Check only: validate and compare with the registry, write nothing" }
                }
                p { button type="submit" { "Upload and import" } }
            }
            p.hint { "Importing the same file again changes nothing; professionals are never deleted and their status is never changed by an import." }
        })
}
