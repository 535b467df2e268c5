//! Registering a professional and editing their identity, profession and activities.
//!
//! The form has one row per activity plus empty rows to add more (without a script, a saved
//! form comes back with new empty rows). A problem is shown next to its field, with the same
//! rules as an import line and the CA ([`cps_enrol::ProfessionalData::normalise`]).

use cps_enrol::{Activity, Professional, ProfessionalData};
use maud::{Markup, html};

use crate::html::{Tone, thead};
use crate::{Viewer, form, full_name, href_professional};

/// Empty activity rows offered below the existing ones.
pub const SPARE_ROWS: usize = 2;

/// A form being filled: the values typed and the problems found.
pub struct Draft {
    pub data: ProfessionalData,
    /// Edit: the revision the officer read.
    pub revision: Option<u64>,
    pub problems: Vec<(String, String)>,
    /// A problem not tied to a field.
    pub general: Option<String>,
}

impl Draft {
    fn problem(&self, field: &str) -> Option<&str> {
        self.problems
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, r)| r.as_str())
    }
}

/// The problem of field `id` above it, if any; the field's `aria-describedby` points at it.
pub fn field_error(id: &str, problem: Option<&str>) -> Markup {
    html! {
        @if let Some(p) = problem { p.field-error id={ (id) "-error" } { (p) } }
    }
}

pub fn error_ref(id: &str, problem: Option<&str>) -> Option<String> {
    problem.map(|_| format!("{id}-error"))
}

/// Attributes of a text input beyond its name and value.
pub struct Limits {
    required: bool,
    maxlength: u32,
    plain: bool,
}

pub fn text_input(d: &Draft, name: &str, label: &str, value: &str, l: Limits) -> Markup {
    let problem = d.problem(name);
    html! {
        div.field {
            label for=(name) { (label) }
            (field_error(name, problem))
            input type="text" id=(name) name=(name) value=(value)
                aria-invalid=[problem.map(|_| "true")] aria-describedby=[error_ref(name, problem)]
                required[l.required] maxlength=(l.maxlength)
                spellcheck=[l.plain.then_some("false")] autocomplete=[(l.plain && l.required).then_some("off")];
        }
    }
}

pub fn view_form(v: &Viewer, d: &Draft, existing: Option<&Professional>) -> String {
    let editing = existing.is_some();
    let title = match existing {
        Some(p) => format!("Edit {}", full_name(p)),
        None => "Register a professional".to_owned(),
    };
    let mut page = v.page(title.clone());
    if let Some(p) = existing {
        page = page.crumb(full_name(p), Some(href_professional(p.idnat_ps())));
    }
    page = page.crumb(title, None);
    if !d.problems.is_empty() || d.general.is_some() {
        let detail = d
            .general
            .clone()
            .unwrap_or_else(|| "Correct the fields marked below.".to_owned());
        page.notice(
            Tone::Error,
            "The professional was not saved.",
            Some(&detail),
        );
    }
    let action = match existing {
        Some(p) => format!("{}/edit", href_professional(p.idnat_ps())),
        None => "/console/professionals/new".to_owned(),
    };
    let cancel = existing
        .map(|p| href_professional(p.idnat_ps()))
        .unwrap_or_else(|| "/console/".to_owned());
    let pc = d.problem("profession_code");
    let plain = |maxlength| Limits {
        required: true,
        maxlength,
        plain: false,
    };
    page.render(html! {
        form method="post" action=(action) class="stack" id="professional-form" {
            (v.csrf_field())
            @if let Some(r) = d.revision { input type="hidden" name="revision" value=(r); }
            fieldset {
                legend { "Identity" }
                @if editing {
                    div.field {
                        span.label { "IdNat_PS" } " " code { (d.data.idnat_ps) }
                        input type="hidden" name="idnat_ps" value=(d.data.idnat_ps);
                    }
                } @else {
                    (text_input(d, "idnat_ps", "IdNat_PS (8 + RPPS, or 0 + ADELI…)", &d.data.idnat_ps,
                        Limits { required: true, maxlength: 64, plain: true }))
                }
                (text_input(d, "surname", "Surname (nom d'exercice)", &d.data.surname, plain(64)))
                (text_input(d, "given_names", "Given names (prénom d'exercice)", &d.data.given_names, plain(64)))
            }
            fieldset {
                legend { "Profession" }
                div.field {
                    label for="profession_code" { "Profession (TRE_G15)" }
                    (field_error("profession_code", pc))
                    select #profession_code name="profession_code" required
                        aria-invalid=[pc.map(|_| "true")] aria-describedby=[error_ref("profession_code", pc)] {
                        @if d.data.profession_code.is_empty() { option value="" selected { "Choose…" } }
                        @for (code, label) in cps_pki::subject::PROFESSIONS {
                            option value=(code) selected[d.data.profession_code == *code] { (label) " (" (code) ")" }
                        }
                    }
                }
                (text_input(d, "savoir_faire", "Savoir-faire (TRE_R01, médecins and pharmaciens; optional)",
                    d.data.savoir_faire.as_deref().unwrap_or(""),
                    Limits { required: false, maxlength: 10, plain: true }))
            }
            fieldset {
                legend { "Activities" }
                @if let Some(p) = d.problem("activities") { p.field-error { (p) } }
                p.hint { "One row per activity; a card belongs to one activity. Empty rows are ignored; clear a row to remove its activity." }
                table.activity-rows {
                    (thead(&["Structure identifier", "Structure name", "Secteur d'activité (TRE_R02)"]))
                    tbody {
                        @for i in 0..d.data.activities.len() + SPARE_ROWS {
                            (activity_row(d, i))
                        }
                    }
                }
            }
            p {
                button type="submit" { @if editing { "Save the changes" } @else { "Register" } } " "
                a.button.secondary href=(cancel) { "Cancel" }
            }
        }
    })
}

pub fn activity_row(d: &Draft, i: usize) -> Markup {
    let a = d.data.activities.get(i);
    let texts = [
        (
            "structure_id",
            "Structure identifier",
            a.map(|a| a.structure_id.as_str()),
        ),
        (
            "structure_name",
            "Structure name",
            a.map(|a| a.structure_name.as_str()),
        ),
    ];
    let sid = format!("act{i}_secteur");
    let sp = d.problem(&format!("activities[{i}].secteur_activite"));
    let current = a.map(|a| a.secteur_activite.as_str()).unwrap_or("");
    html! {
        tr {
            @for (key, label, value) in texts {
                @let id = format!("act{i}_{key}");
                @let problem = d.problem(&format!("activities[{i}].{key}"));
                td {
                    (field_error(&id, problem))
                    input type="text" id=(id) name=(id) value=(value.unwrap_or(""))
                        aria-label={ (label) ", row " (i + 1) }
                        aria-invalid=[problem.map(|_| "true")] aria-describedby=[error_ref(&id, problem)];
                }
            }
            td {
                (field_error(&sid, sp))
                select id=(sid) name=(sid) aria-label={ "Secteur d'activité, row " (i + 1) }
                    aria-invalid=[sp.map(|_| "true")] aria-describedby=[error_ref(&sid, sp)] {
                    option value="" { "—" }
                    @for (code, label) in cps_enrol::codes::SECTEURS {
                        @if cps_enrol::codes::secteur_label(code).is_some() {
                            option value=(code) selected[current == *code] { (label) " (" (code) ")" }
                        }
                    }
                }
            }
        }
    }
}

/// The professional a posted form describes (blank activity rows dropped; rows keep their
/// order so that problems point at the right row).
pub fn draft_of(f: &form::Fields) -> Draft {
    let text = |k: &str| f.get(k).unwrap_or("").trim().to_owned();
    let mut activities = Vec::new();
    let mut i = 0;
    while f.get(&format!("act{i}_structure_id")).is_some() {
        let a = Activity {
            structure_id: text(&format!("act{i}_structure_id")),
            structure_name: text(&format!("act{i}_structure_name")),
            secteur_activite: text(&format!("act{i}_secteur")),
        };
        if !(a.structure_id.is_empty()
            && a.structure_name.is_empty()
            && a.secteur_activite.is_empty())
        {
            activities.push(a);
        }
        i += 1;
    }
    let sf = text("savoir_faire");
    Draft {
        data: ProfessionalData {
            idnat_ps: text("idnat_ps"),
            surname: text("surname"),
            given_names: text("given_names"),
            profession_code: text("profession_code"),
            savoir_faire: (!sf.is_empty()).then_some(sf),
            activities,
        },
        revision: f.get("revision").and_then(|r| r.parse().ok()),
        problems: Vec::new(),
        general: None,
    }
}

/// Checks a draft. `normalise` reports activity problems by position before it sorts, so
/// `activities[i]` is row `i` of the form as shown again (blank rows dropped); the draft keeps
/// the officer's order.
pub fn check(d: &mut Draft) {
    let problems = d.data.clone().normalise();
    d.problems
        .extend(problems.into_iter().map(|p| (p.field, p.reason)));
    if d.data.activities.is_empty() {
        d.problems.push((
            "activities".into(),
            "at least one activity is required".into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> form::Fields {
        form::Fields(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn blank_rows_are_dropped_and_problems_point_at_the_row_shown() {
        let f = fields(&[
            ("idnat_ps", "810002813839"),
            ("surname", " DONNAT-GADY "),
            ("given_names", "ISABELLE"),
            ("profession_code", "10"),
            ("savoir_faire", ""),
            // Shown first, sorts last; its secteur is unknown.
            ("act0_structure_id", "Z1"),
            ("act0_structure_name", "CABINET"),
            ("act0_secteur", "SA99"),
            ("act1_structure_id", ""),
            ("act1_structure_name", ""),
            ("act1_secteur", ""),
            ("act2_structure_id", "A1"),
            ("act2_structure_name", "CHU"),
            ("act2_secteur", "SA01"),
        ]);
        let mut d = draft_of(&f);
        assert_eq!(d.data.surname, "DONNAT-GADY");
        assert_eq!(d.data.savoir_faire, None);
        assert_eq!(d.data.activities.len(), 2);
        check(&mut d);
        assert_eq!(
            d.problems.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
            ["activities[0].secteur_activite"],
            "{:?}",
            d.problems
        );
        // The rows keep the officer's order.
        assert_eq!(d.data.activities[0].structure_id, "Z1");
    }

    #[test]
    fn a_professional_needs_an_activity_and_valid_fields() {
        let mut d = draft_of(&fields(&[
            ("idnat_ps", "810002813838"),
            ("surname", ""),
            ("given_names", "X"),
            ("profession_code", "10"),
        ]));
        check(&mut d);
        let names: Vec<&str> = d.problems.iter().map(|p| p.0.as_str()).collect();
        for want in ["idnat_ps", "surname", "activities"] {
            assert!(names.contains(&want), "{want} not in {names:?}");
        }
        assert_eq!(
            d.problem("idnat_ps").map(|r| r.contains("check digit")),
            Some(true)
        );
    }
}
