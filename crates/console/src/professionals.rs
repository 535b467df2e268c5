//! Home, professional search and the professional page.

use cps_enrol::{Card, Enrolment, Professional, ProfessionalStatus};
use maud::{Markup, html};

use crate::html::{Tone, badge, day, notice, thead, when};
use crate::{Viewer, done_notice, form, full_name, href_card, href_professional};

pub fn search_form(q: &str, autofocus: bool) -> Markup {
    html! {
        form.search action="/console/professionals" method="get" role="search" {
            label for="q" { "IdNat_PS, RPPS number or name" }
            div.row {
                input #q name="q" type="search" value=(q) autocomplete="off" spellcheck="false"
                    maxlength="200" aria-describedby="q-hint" autofocus[autofocus];
                button type="submit" { "Search" }
            }
            p.hint #q-hint {
                "Names match from their start; case and accents do not matter (" kbd { "le gall j" }
                "). An empty search lists everyone."
            }
        }
    }
}

/// The readers with their state.
pub fn readers_list(readers: &Result<Vec<(String, bool)>, String>) -> Markup {
    html! {
        @match readers {
            Ok(list) if list.is_empty() => p { "No card reader is connected to the appliance." },
            Ok(list) => ul.readers {
                @for (name, present) in list {
                    li {
                        span.reader-name { (name) } " "
                        @if *present { (badge("active", "card present")) } @else { (badge("neutral", "empty")) }
                    }
                }
            },
            Err(e) => (notice(Tone::Warning, "The card readers cannot be listed.", Some(e))),
        }
    }
}

pub fn view_home(
    v: &Viewer,
    readers: &Result<Vec<(String, bool)>, String>,
    open: &[Enrolment],
) -> String {
    v.page("Card issuing console").render(html! {
        p.lead { "Find a health professional to see their cards, enrol a new CPS card or act on a card." }
        (search_form("", true))
        div.columns {
            section.panel aria-labelledby="readers-h" {
                h2 #readers-h { "Card readers" }
                (readers_list(readers))
            }
            section.panel aria-labelledby="you-h" {
                h2 #you-h { "Your access" }
                @if v.can_write {
                    p { "You may enrol cards, act on their lifecycle and change the registry." }
                    p {
                        a.button.secondary href="/console/professionals/new" { "Register a professional" } " "
                        a.button.secondary href="/console/import" { "Import a registry file" }
                    }
                } @else {
                    p { "You may read the registry and the cards. Enrolment and card actions need the role " code { "ra-officer" } "." }
                }
            }
        }
        @if !open.is_empty() {
            section aria-labelledby="open-h" {
                h2 #open-h { "Unfinished enrolments" }
                p.hint { "Interrupted enrolments have had their certificates revoked; they are resumed with the same card or aborted." }
                table {
                    (thead(&["Enrolment", "Professional", "Card", "State", "Since"]))
                    tbody {
                        @for e in open {
                            tr {
                                td { code { (e.id) } }
                                td { a href=(href_professional(&e.idnat_ps)) { (e.idnat_ps) } }
                                td { code { (e.card_serial) } }
                                td {
                                    @match &e.status {
                                        cps_enrol::EnrolmentStatus::Interrupted { step, error, .. } => {
                                            (badge("failed", "interrupted")) " at “" (step.label()) "”: " (error)
                                        }
                                        _ => (badge("running", "running")),
                                    }
                                }
                                td { (when(e.started_at)) }
                            }
                        }
                    }
                }
            }
        }
    })
}

pub fn view_search(
    v: &Viewer,
    q: &str,
    found: Result<&cps_enrol::Page<Professional>, &str>,
) -> String {
    let title = if q.is_empty() {
        "All professionals".to_owned()
    } else {
        format!("Professionals matching “{q}”")
    };
    let mut page = v.page(title).crumb("Search", None);
    let found = match found {
        Ok(f) => f,
        Err(detail) => {
            page.notice(Tone::Error, "The search was refused.", Some(detail));
            return page.render(search_form(q, false));
        }
    };
    page.render(html! {
        (search_form(q, false))
        @if found.items.is_empty() {
            p.empty #no-results { "No professional matches this search." }
        } @else {
            table.results {
                caption.visually-hidden { "Search results" }
                (thead(&["Name", "IdNat_PS", "Profession", "Activities", "Status"]))
                tbody {
                    @for p in &found.items {
                        tr {
                            th scope="row" { a href=(href_professional(p.idnat_ps())) { (full_name(p)) } }
                            td { code { (p.idnat_ps()) } }
                            td { (p.profession_label()) }
                            td {
                                @for (i, a) in p.data.activities.iter().enumerate() {
                                    @if i > 0 { br; }
                                    (a.structure_name)
                                }
                            }
                            td { (badge(p.status.name(), p.status.name())) }
                        }
                    }
                }
            }
            @if let Some(next) = &found.next {
                p.pager {
                    a.button.secondary href={
                        "/console/professionals?q=" (form::url_encode(q)) "&after=" (form::url_encode(&next.0))
                    } { "Next results" }
                }
            }
        }
    })
}

pub fn number_line(idnat: &str) -> Option<(&'static str, String)> {
    let id = cps_pki::IdNatPs::parse(idnat).ok()?;
    match id.kind() {
        cps_pki::idnat::IdNatKind::Rpps => Some(("RPPS", id.number().to_owned())),
        cps_pki::idnat::IdNatKind::Adeli => Some(("ADELI", id.number().to_owned())),
        cps_pki::idnat::IdNatKind::StructureBased(_) => None,
    }
}

pub fn cards_cell(cards: &[&Card]) -> Markup {
    html! {
        @if cards.is_empty() {
            span.muted { "no card" }
        } @else {
            ul.plain {
                @for c in cards {
                    li { a href=(href_card(&c.serial)) { code { (c.serial) } } " " (badge(c.status.name(), &c.status.to_string())) }
                }
            }
        }
    }
}

/// The status choices: (value, label, hint).
pub const STATUSES: [(&str, &str, &str); 3] = [
    (
        "active",
        "Active",
        "may hold and receive cards; cards suspended with the professional are released",
    ),
    (
        "suspended",
        "Suspended",
        "every card is suspended (certificates on hold) and no card can be enrolled",
    ),
    (
        "left",
        "Left the profession",
        "every card is revoked for good; this cannot be undone",
    ),
];

pub fn view_professional(v: &Viewer, p: &Professional, list: &[Card], f: &form::Fields) -> String {
    let mut page = v
        .page(full_name(p))
        .crumb("Search", Some("/console/professionals".into()))
        .crumb(full_name(p), None);
    page.class = "professional";
    done_notice(&mut page, f);
    let href = href_professional(p.idnat_ps());
    page.render(html! {
        p.lead { (p.profession_label()) " · " (badge(p.status.name(), p.status.name())) }
        section.panel aria-labelledby="id-h" {
            h2 #id-h { "Identity" }
            @if v.can_write {
                p.panel-action { a.button.secondary href={ (href) "/edit" } { "Edit the identity and activities" } }
            }
            dl.facts {
                dt { "IdNat_PS" } dd { code #idnat { (p.idnat_ps()) } }
                @if let Some((kind, n)) = number_line(p.idnat_ps()) {
                    dt { (kind) } dd { code { (n) } }
                }
                dt { "Surname" } dd { (p.data.surname) }
                dt { "Given names" } dd { (p.data.given_names) }
                dt { "Profession" } dd { (p.profession_label()) " " span.muted { "(TRE_G15 " (p.data.profession_code) ")" } }
                @if let Some(sf) = &p.data.savoir_faire {
                    dt { "Savoir-faire" } dd { code { (sf) } }
                }
                dt { "Status" } dd #professional-status { (badge(p.status.name(), p.status.name())) }
                dt { "Last change" } dd { (when(p.updated_at)) " " span.muted { "(revision " (p.revision) ")" } }
            }
        }
        // Activities, each with its cards and the way to enrol one.
        section aria-labelledby="act-h" {
            h2 #act-h { "Activities" }
            table.activities {
                thead { tr {
                    th scope="col" { "Structure" } th scope="col" { "Secteur d'activité" } th scope="col" { "Cards" }
                    @if v.can_write { th scope="col" { span.visually-hidden { "Actions" } } }
                } }
                tbody {
                    @for a in &p.data.activities {
                        @let of_activity: Vec<&Card> = list.iter().filter(|c| c.structure_id == a.structure_id).collect();
                        tr {
                            th scope="row" { (a.structure_name) br; code.muted { (a.structure_id) } }
                            td { (a.secteur_label().unwrap_or("?")) " " span.muted { "(" (a.secteur_activite) ")" } }
                            td { (cards_cell(&of_activity)) }
                            @if v.can_write {
                                @if p.status == ProfessionalStatus::Active {
                                    td { a.button href={ (href) "/enrol?activity=" (form::url_encode(&a.structure_id)) }
                                        aria-label={ "Enrol a card for " (a.structure_name) } { "Enrol a card" } }
                                } @else {
                                    td { span.muted { "enrolment needs an active professional" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        // Every card, with its history.
        section aria-labelledby="cards-h" {
            h2 #cards-h { "Cards" }
            @if list.is_empty() {
                p.empty { "No card has been enrolled for this professional." }
            } @else {
                table.cards {
                    (thead(&["Card serial", "Token id", "Activity", "Status", "Valid until", "Enrolled"]))
                    tbody {
                        @for c in list {
                            @let until = c.certificates.iter().map(|x| x.not_after).min().map(day).unwrap_or_else(|| "—".into());
                            tr {
                                th scope="row" { a href=(href_card(&c.serial)) { code { (c.serial) } } }
                                td { code { (c.token_id) } }
                                td { code { (c.structure_id) } }
                                td { (badge(c.status.name(), &c.status.to_string())) }
                                td { (until) }
                                td { (when(c.enrolled_at)) " " span.muted { "by " (c.enrolled_by) } }
                            }
                        }
                    }
                }
            }
        }
        @if v.can_write {
            section.panel aria-labelledby="status-h" {
                h2 #status-h { "Change the status" }
                form method="post" action={ (href) "/status" } class="stack" {
                    (v.csrf_field())
                    fieldset {
                        legend { "New status" }
                        @for (value, label, hint) in STATUSES {
                            div.choice {
                                input type="radio" name="status" id={ "status-" (value) } value=(value) checked[p.status.name() == value];
                                label for={ "status-" (value) } { (label) }
                                p.hint { (hint) }
                            }
                        }
                    }
                    div.choice {
                        input type="checkbox" name="confirm" id="status-confirm" value="yes";
                        label for="status-confirm" { "I confirm the change (required for “Left the profession”)" }
                    }
                    p { button type="submit" class="secondary" { "Change the status" } }
                }
            }
        }
    })
}
