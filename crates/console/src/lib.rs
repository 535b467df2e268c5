//! The web console of cps-trust, as pure views: every page and fragment is a maud template
//! (checked at compile time, every value escaped by the engine) rendered from its data and a
//! [`Viewer`]; the form codecs ([`form`]) and the anti-forgery tokens ([`csrf`]) are here too.
//!
//! **Invariant: no value reaches a page unescaped.** No page is built from strings; the one
//! pre-escaped piece of markup is the PIN mailer's constant slot markers ([`html::slot`]), and
//! every view is rendered with hostile data in `hostile_tests.rs`.
//!
//! The appliance (`cps-appliance`) owns the HTTP side: it routes and authorizes the console's
//! requests (`authz::ROUTES`), resolves the operator, checks the tokens of posted forms, runs the
//! card service and the jobs, and hands the results to these views. This crate knows nothing
//! of the appliance, of HTTP or of the store.

#![forbid(unsafe_code)]

pub mod cards;
pub mod csrf;
pub mod form;
pub mod html;
pub mod jobs;
pub mod professionals;
pub mod registry;

#[cfg(test)]
mod hostile_tests;

use maud::Markup;

use html::{Page, Tone};

/// The signed-in operator, as the pages show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// Operator name (the actor of audit records).
    pub name: String,
    /// Roles, as configured.
    pub roles: Vec<String>,
}

/// A background job as its page shows it.
#[derive(Debug, Clone)]
pub struct Job {
    /// Identifier.
    pub id: String,
    /// Who started it (`operator:<name>`).
    pub actor: String,
    /// `running`, `done`, `failed`.
    pub status: String,
    /// Steps reached, in order.
    pub events: Vec<JobStep>,
    /// For imports: phase, units done and total in the phase.
    pub progress: Option<(String, usize, usize)>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One event of a job.
#[derive(Debug, Clone)]
pub struct JobStep {
    /// Step name (`detect_card`...).
    pub step: String,
    /// `started`, `done`, `skipped`, `failed`.
    pub state: String,
    /// Why it was skipped or failed.
    pub detail: Option<String>,
}

/// A certificate as its page shows it.
#[derive(Debug, Clone)]
pub struct CertificateFacts {
    /// Issuing CA name.
    pub ca: String,
    /// Serial, hex.
    pub serial: String,
    /// Subject DN.
    pub subject: String,
    /// Profile name.
    pub profile: String,
    /// IdNat_PS of the holder, for card certificates.
    pub holder: Option<String>,
    /// Validity start, Unix seconds.
    pub not_before: i64,
    /// Validity end, Unix seconds.
    pub not_after: i64,
    /// `valid`, `on-hold`, `revoked`...
    pub status: String,
    /// Revocation time, Unix seconds.
    pub revocation_time: Option<i64>,
    /// Revocation reason name.
    pub revocation_reason: Option<String>,
    /// The certificate, PEM.
    pub pem: String,
}

/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The stylesheet, served at `/console/assets/console.css`.
pub const CSS: &str = include_str!("../assets/console/console.css");
/// The script, served at `/console/assets/console.js`.
pub const JS: &str = include_str!("../assets/console/console.js");

/// What the console remembers about the enrolment jobs it started (for their pages).
#[derive(Debug, Clone)]
pub struct EnrolJobMeta {
    /// The professional.
    pub idnat_ps: String,
    /// The activity the card is for.
    pub structure_id: String,
    /// The reader holding the card.
    pub reader: String,
}

/// What a page's view needs to know about the operator looking at it: views are plain
/// functions of their data and a viewer, so they are tested without a request.
pub struct Viewer {
    /// The signed-in operator.
    pub op: Operator,
    /// Whether the operator may act (forms are shown).
    pub can_write: bool,
    /// The anti-forgery token of the operator's forms.
    pub token: String,
}

impl Viewer {
    /// A page frame for this operator.
    pub fn page(&self, title: impl Into<String>) -> Page<'_> {
        Page::new(title, Some(&self.op))
    }

    /// The hidden anti-forgery field.
    pub fn csrf_field(&self) -> Markup {
        html::csrf_field(&self.token)
    }
}

/// A professional's name as the console shows it.
pub fn full_name(p: &cps_enrol::Professional) -> String {
    format!("{} {}", p.data.surname, p.data.given_names)
}

/// The page of a professional.
pub fn href_professional(idnat: &str) -> String {
    format!("/console/professionals/{}", form::url_encode(idnat))
}

/// The page of a card.
pub fn href_card(serial: &str) -> String {
    format!("/console/cards/{}", form::url_encode(serial))
}

/// The page of a certificate.
pub fn href_certificate(ca: &str, serial: &str) -> String {
    format!(
        "/console/certificates/{}/{}",
        form::url_encode(ca),
        form::url_encode(serial)
    )
}

/// The page of a job.
pub fn href_job(id: &str) -> String {
    format!("/console/jobs/{}", form::url_encode(id))
}

/// The notices for a `done=` code after a redirect (a fixed set: nothing from the URL is
/// shown), with `pending` certificate changes the CA has not confirmed yet.
pub fn done_notice(page: &mut Page<'_>, fields: &form::Fields) {
    let msg = match fields.get("done") {
        Some("suspended") => "The card is suspended: its certificates are on hold.",
        Some("resumed") => "The card is active again: its certificates are released from hold.",
        Some("opposed") => "The card is opposed: its certificates are revoked for good.",
        Some("unblocked") => "The PIN is unblocked and set to the new value.",
        Some("renewed") => {
            "The card has new keys and certificates; the previous certificates are revoked as superseded."
        }
        Some("status") => "The professional's status was changed.",
        Some("created") => "The professional is registered.",
        Some("updated") => "The changes are saved.",
        _ => return,
    };
    page.notice(Tone::Success, msg, None);
    if let Some(n) = fields
        .get("pending")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        page.notice(
            Tone::Warning,
            &format!("The certificate authority did not confirm {n} certificate change(s) yet."),
            Some(
                "They stay in the revocation outbox and are retried; the card page shows the state the CA reports.",
            ),
        );
    }
}

/// What a certificate slot of a CPS card is for.
pub fn slot_label(s: cps_enrol::CertSlot) -> &'static str {
    match s {
        cps_enrol::CertSlot::Authentication => "Authentication",
        cps_enrol::CertSlot::Signature => "Signature",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An operator who may act.
    pub(crate) fn officer() -> Operator {
        Operator {
            name: "officer".into(),
            roles: vec!["ra-officer".into()],
        }
    }

    /// The officer looking, with a fixed anti-forgery token.
    pub(crate) fn viewer() -> Viewer {
        Viewer {
            op: officer(),
            can_write: true,
            token: "TOKEN".into(),
        }
    }

    /// Every form of `page` carries the anti-forgery field.
    pub(crate) fn assert_forms_have_csrf(page: &str) {
        let forms = page.matches("<form method=\"post\"").count();
        let tokens = page
            .matches("<input type=\"hidden\" name=\"csrf\" value=\"TOKEN\">")
            .count();
        assert!(forms > 0, "no form in the page");
        assert_eq!(forms, tokens, "a form without its token:\n{page}");
    }

    #[test]
    fn done_notices_come_from_a_fixed_set() {
        let op = officer();
        let mut p = Page::new("t", Some(&op));
        done_notice(
            &mut p,
            &form::parse_urlencoded(b"done=<script>&pending=1").unwrap(),
        );
        assert!(p.notices.is_empty());
        done_notice(
            &mut p,
            &form::parse_urlencoded(b"done=suspended&pending=2").unwrap(),
        );
        let h = p.render(maud::html! {});
        assert!(h.contains("on hold") && h.contains("2 certificate change(s)"));
    }
}
