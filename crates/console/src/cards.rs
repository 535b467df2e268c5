//! The card page with its lifecycle forms; the certificate page.

use cps_enrol::{Card, CardCertificate, CardStatus, CertState, Professional};
use maud::{Markup, html};

use crate::html::{Tone, badge, day, notice, thead, when};
use crate::{
    CertificateFacts, Viewer, done_notice, form, full_name, href_card, href_certificate,
    href_professional, slot_label,
};

pub fn cert_state_badge(s: Option<CertState>) -> Markup {
    match s {
        Some(CertState::Valid) => badge("valid", "valid"),
        Some(CertState::OnHold) => badge("on-hold", "on hold"),
        Some(CertState::Revoked(r)) => badge("revoked", &format!("revoked ({})", r.name())),
        None => badge("neutral", "unknown to the CA"),
    }
}

pub fn certs_table(
    id: &str,
    caption: &str,
    certs: &[(CardCertificate, Option<CertState>)],
) -> Markup {
    html! {
        table.certs id=(id) {
            caption { (caption) }
            (thead(&["Use", "Profile", "Issuer", "Serial", "Valid until", "Status at the CA"]))
            tbody {
                @for (c, state) in certs {
                    tr {
                        th scope="row" { (slot_label(c.slot)) }
                        td { code { (c.profile) } }
                        td { code { (c.cert.issuer) } }
                        td { a href=(href_certificate(&c.cert.issuer, &c.cert.serial)) { code { (c.cert.serial) } } }
                        td { (day(c.not_after)) }
                        td.cert-status { (cert_state_badge(*state)) }
                    }
                }
            }
        }
    }
}

pub type Readers = Result<Vec<(String, bool)>, String>;

pub fn reader_choices(prefix: &str, readers: &Readers) -> Markup {
    html! {
        @match readers {
            Ok(list) if !list.is_empty() => {
                @let first_present = list.iter().position(|r| r.1);
                div.field {
                    label for={ (prefix) "-reader" } { "Card reader" }
                    select id={ (prefix) "-reader" } name="reader" required {
                        @for (i, (name, present)) in list.iter().enumerate() {
                            option value=(name) selected[Some(i) == first_present] {
                                (name) @if *present { " (card present)" } @else { " (empty)" }
                            }
                        }
                    }
                }
            }
            Ok(_) => p.hint { "No card reader is connected to the appliance." },
            Err(e) => p.hint { "The card readers cannot be listed: " (e) },
        }
    }
}

/// The card, its holder's record and its certificates with their state at the CA.
pub type CardData = (
    Card,
    Option<Professional>,
    Vec<(CardCertificate, Option<CertState>)>,
    Vec<(CardCertificate, Option<CertState>)>,
);

pub fn view_card(v: &Viewer, data: &CardData, readers: &Readers, f: &form::Fields) -> String {
    let (card, p, current, previous) = data;
    let holder = p
        .as_ref()
        .map(full_name)
        .unwrap_or_else(|| card.idnat_ps.clone());
    let mut page = v
        .page(format!("Card {}", card.serial))
        .crumb("Search", Some("/console/professionals".into()))
        .crumb(holder.clone(), Some(href_professional(&card.idnat_ps)))
        .crumb(format!("Card {}", card.serial), None);
    page.class = "card";
    done_notice(&mut page, f);
    let activity = p
        .as_ref()
        .and_then(|p| p.activity(&card.structure_id))
        .map(|a| a.structure_name.clone())
        .unwrap_or_default();
    page.render(html! {
        dl.facts {
            dt { "Holder" } dd { a href=(href_professional(&card.idnat_ps)) { (holder) } " " code.muted { (card.idnat_ps) } }
            dt { "Activity" } dd { (activity) " " code.muted { (card.structure_id) } }
            dt { "Status" } dd #card-status data-status=(card.status.name()) { (badge(card.status.name(), &card.status.to_string())) }
            dt { "Card serial" } dd { code { (card.serial) } }
            dt { "Token id" } dd { code { (card.token_id) } }
            dt { "Card keys" } dd { (card.key_algorithm) }
            dt { "Card management key" } dd {
                @match &card.management_key {
                    cps_enrol::ManagementKeyState::PerCard { master_key, algorithm } => {
                        "per-card key (" (algorithm) ") derived in the HSM from " code { (master_key) }
                    }
                    cps_enrol::ManagementKeyState::Default => {
                        strong { "the well-known default key" } " (this card could not change it)"
                    }
                }
            }
            dt { "Enrolled" } dd { (when(card.enrolled_at)) " " span.muted { "by " (card.enrolled_by) } }
            dt { "Last change" } dd { (when(card.updated_at)) }
        }
        (certs_table("certificates", "Certificates on the card", current))
        @if !previous.is_empty() {
            (certs_table("previous-certificates", "Earlier certificates (renewed)", previous))
        }
        @if card.status.is_terminal() {
            (notice(Tone::Info, "This card is out of service for good.",
                Some("Its certificates are revoked. Enrol a new card for the activity if the professional needs one.")))
        } @else if v.can_write {
            (actions(v, card, readers))
        }
    })
}

pub fn pin_field(id: &str, name: &str, label: &str, new: bool) -> Markup {
    html! {
        div.field {
            label for=(id) { (label) }
            @if new {
                input type="password" id=(id) name=(name) inputmode="numeric" autocomplete="new-password" required minlength="4" maxlength="8";
            } @else {
                input type="password" id=(id) name=(name) inputmode="numeric" autocomplete="off" required maxlength="8";
            }
        }
    }
}

pub fn actions(v: &Viewer, card: &Card, readers: &Readers) -> Markup {
    let base = href_card(&card.serial);
    let csrf = v.csrf_field();
    html! {
        section aria-labelledby="actions-h" {
            h2 #actions-h { "Actions" }
            div.actions {
                @match &card.status {
                    CardStatus::Active => {
                        form method="post" action={ (base) "/suspend" } class="action panel" id="suspend-form" {
                            (csrf)
                            h3 { "Suspend" }
                            p.hint { "Both certificates are put on hold (certificateHold) until the card is resumed." }
                            p { button type="submit" class="secondary" { "Suspend the card" } }
                        }
                    }
                    CardStatus::Suspended { by_professional: false, .. } => {
                        form method="post" action={ (base) "/resume" } class="action panel" id="resume-form" {
                            (csrf)
                            h3 { "Resume" }
                            p.hint { "Both certificates are released from hold." }
                            p { button type="submit" { "Resume the card" } }
                        }
                    }
                    CardStatus::Suspended { .. } => {
                        div.action.panel {
                            h3 { "Resume" }
                            p.hint { "This card was suspended with the professional: it is resumed when the professional is active again." }
                        }
                    }
                    _ => {}
                }
                form method="post" action={ (base) "/oppose" } class="action panel danger-zone" id="oppose-form" {
                    (csrf)
                    h3 { "Oppose" }
                    p.hint { "For a lost, stolen or destroyed card: its certificates are revoked for good." }
                    fieldset {
                        legend { "Reason" }
                        @for (v, l) in [("lost", "Lost"), ("stolen", "Stolen"), ("destroyed", "Destroyed")] {
                            div.choice {
                                input type="radio" name="reason" id={ "oppose-" (v) } value=(v) required;
                                label for={ "oppose-" (v) } { (l) }
                            }
                        }
                    }
                    div.choice {
                        input type="checkbox" name="confirm" id="oppose-confirm" value="yes" required;
                        label for="oppose-confirm" { "I understand that an opposed card never comes back" }
                    }
                    p { button type="submit" class="danger" { "Oppose the card" } }
                }
                form method="post" action={ (base) "/unblock" } class="action panel" id="unblock-form" autocomplete="off" {
                    (csrf)
                    h3 { "Unblock the PIN" }
                    p.hint { "With the card in a reader of the appliance and the holder's PUK." }
                    (reader_choices("unblock", readers))
                    (pin_field("puk", "puk", "PUK", false))
                    (pin_field("new_pin", "new_pin", "New PIN", true))
                    (pin_field("new_pin2", "new_pin2", "New PIN again", true))
                    p { button type="submit" class="secondary" { "Unblock the PIN" } }
                }
                @if card.status == CardStatus::Active {
                    form method="post" action={ (base) "/renew" } class="action panel" id="renew-form" autocomplete="off" {
                        (csrf)
                        h3 { "Renew the certificates" }
                        p.hint { "New keys and certificates on the same card; the holder types their PIN." }
                        (reader_choices("renew", readers))
                        (pin_field("renew-pin", "pin", "Holder's PIN", false))
                        p { button type="submit" class="secondary" { "Renew" } }
                    }
                }
            }
        }
    }
}

pub fn view_certificate(viewer: &Viewer, v: &CertificateFacts) -> String {
    let status = match (&v.status[..], &v.revocation_reason) {
        ("valid", _) => badge("valid", "valid"),
        (s, Some(r)) => badge(s, &format!("{s} ({r})")),
        (s, None) => badge(s, s),
    };
    viewer
        .page(format!("Certificate {}", v.serial))
        .crumb(format!("Certificate {}", v.serial), None)
        .render(html! {
            dl.facts {
                dt { "Subject" } dd { code.wrap { (v.subject) } }
                dt { "Issuing CA" } dd { code { (v.ca) } }
                dt { "Serial" } dd { code { (v.serial) } }
                dt { "Profile" } dd { code { (v.profile) } }
                @if let Some(h) = &v.holder {
                    dt { "Holder" } dd { a href=(href_professional(h)) { code { (h) } } }
                }
                dt { "Valid" } dd { (when(v.not_before)) " to " (when(v.not_after)) }
                dt { "Status" } dd { (status) }
                @if let Some(t) = v.revocation_time {
                    dt { "Since" } dd { (when(t)) }
                }
            }
            p { a.button.secondary href={ (href_certificate(&v.ca, &v.serial)) "/pem" } download { "Download (PEM)" } }
            pre.pem { (v.pem) }
        })
}
