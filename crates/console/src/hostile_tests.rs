//! Every page and fragment of the console rendered with hostile registry, card, job and query
//! data in every field that reaches it: the values come out escaped (text and attributes), the
//! forms carry their anti-forgery field, and no page has inline script or style (the CSP).

use cps_enrol::{
    Activity, Card, CardCertificate, CardStatus, CertRef, CertSlot, CertState, Cursor, Enrolment,
    EnrolmentKind, EnrolmentStatus, ImportOutcome, ImportReport, LineIssue, ManagementKeyState,
    Professional, ProfessionalData, ProfessionalStatus, Step,
};

use crate::html::tests::{HOSTILE, assert_escaped};
use crate::tests::{assert_forms_have_csrf, viewer};
use crate::{
    CertificateFacts, EnrolJobMeta, Job, JobStep, cards, form, jobs, professionals, registry,
};

/// No inline script or style: the CSP `default-src 'self'` would block them.
fn assert_no_inline(page: &str) {
    assert!(!page.contains(" style="), "inline style:\n{page}");
    assert!(!page.contains("<style"), "style element:\n{page}");
    for (i, _) in page.match_indices("<script") {
        assert!(
            page[i..].starts_with("<script src=\"/console/assets/console.js\" defer></script>"),
            "inline script:\n{page}"
        );
    }
}

fn check(page: &str) {
    assert_escaped(page);
    assert_no_inline(page);
}

fn h() -> String {
    HOSTILE.to_owned()
}

fn professional(status: ProfessionalStatus) -> Professional {
    Professional {
        data: ProfessionalData {
            idnat_ps: h(),
            surname: h(),
            given_names: h(),
            profession_code: h(),
            savoir_faire: Some(h()),
            activities: vec![Activity {
                structure_id: h(),
                structure_name: h(),
                secteur_activite: h(),
            }],
        },
        status,
        updated_at: 1_750_000_000,
        revision: 3,
    }
}

fn certificate() -> CardCertificate {
    CardCertificate {
        slot: CertSlot::Authentication,
        cert: CertRef {
            issuer: h(),
            serial: h(),
        },
        profile: h(),
        not_after: 1_800_000_000,
        spki_sha256: h(),
    }
}

fn card(status: CardStatus) -> Card {
    Card {
        serial: h(),
        token_id: h(),
        idnat_ps: h(),
        structure_id: h(),
        status,
        key_algorithm: h(),
        certificates: vec![certificate()],
        previous_certificates: vec![certificate()],
        management_key: ManagementKeyState::PerCard {
            master_key: h(),
            algorithm: h(),
        },
        enrolment: h(),
        enrolled_at: 1_750_000_000,
        enrolled_by: h(),
        updated_at: 1_750_000_000,
    }
}

fn readers() -> Result<Vec<(String, bool)>, String> {
    Ok(vec![(h(), true), ("empty reader".into(), false)])
}

#[test]
fn home_escapes_readers_and_unfinished_enrolments() {
    let open = [Enrolment {
        node: None,
        id: h(),
        kind: EnrolmentKind::New,
        card_serial: h(),
        token_id: h(),
        idnat_ps: h(),
        structure_id: h(),
        key_algorithm: h(),
        started_by: h(),
        started_at: 0,
        updated_at: 0,
        done: None,
        status: EnrolmentStatus::Interrupted {
            step: Step::ALL[0],
            error: h(),
            at: 0,
        },
        auth_spki: None,
        sign_spki: None,
        auth_csr: None,
        sign_csr: None,
        certificates: vec![],
        rolled_back: vec![],
        management_key: ManagementKeyState::Default,
        secret_nonce: None,
        pin_set: false,
    }];
    let page = professionals::view_home(&viewer(), &readers(), &open);
    check(&page);
    // A reader listing failure shows its message escaped too.
    check(&professionals::view_home(&viewer(), &Err(h()), &[]));
}

#[test]
fn search_escapes_the_query_echoed_back_and_the_results() {
    let found = cps_enrol::Page {
        items: vec![professional(ProfessionalStatus::Active)],
        next: Some(Cursor(h())),
    };
    let page = professionals::view_search(&viewer(), HOSTILE, Ok(&found));
    check(&page);
    // The query is in the search box (an attribute) and the next-page link (URL-encoded).
    assert!(page.contains(&format!(
        "/console/professionals?q={0}&amp;after={0}",
        form::url_encode(HOSTILE)
    )));
    check(&professionals::view_search(
        &viewer(),
        HOSTILE,
        Err(HOSTILE),
    ));
    let none = cps_enrol::Page {
        items: vec![],
        next: None,
    };
    check(&professionals::view_search(&viewer(), HOSTILE, Ok(&none)));
}

#[test]
fn the_professional_page_escapes_every_field_and_its_form_has_a_token() {
    for status in [ProfessionalStatus::Active, ProfessionalStatus::Suspended] {
        let p = professional(status);
        let page = professionals::view_professional(
            &viewer(),
            &p,
            &[card(CardStatus::Active)],
            &form::parse_urlencoded(b"done=status&pending=1").unwrap(),
        );
        check(&page);
        assert_forms_have_csrf(&page);
        assert!(page.contains("The professional's status was changed."));
    }
}

#[test]
fn the_registration_form_escapes_values_and_problems() {
    let p = professional(ProfessionalStatus::Active);
    let d = registry::Draft {
        data: p.data.clone(),
        revision: Some(1),
        problems: vec![
            ("surname".into(), h()),
            ("profession_code".into(), h()),
            ("activities".into(), h()),
            ("activities[0].structure_name".into(), h()),
            ("activities[0].secteur_activite".into(), h()),
        ],
        general: Some(h()),
    };
    for existing in [None, Some(&p)] {
        let page = registry::view_form(&viewer(), &d, existing);
        check(&page);
        assert_forms_have_csrf(&page);
        assert!(page.contains("aria-describedby=\"surname-error\""));
        assert!(page.contains("id=\"act0_secteur-error\""));
    }
}

#[test]
fn the_card_page_escapes_card_holder_and_certificates_and_its_forms_have_tokens() {
    for status in [
        CardStatus::Active,
        CardStatus::Suspended {
            by_professional: false,
            at: 0,
        },
    ] {
        let data: cards::CardData = (
            card(status),
            Some(professional(ProfessionalStatus::Active)),
            vec![(certificate(), Some(CertState::Valid))],
            vec![(certificate(), None)],
        );
        let page = cards::view_card(
            &viewer(),
            &data,
            &readers(),
            &form::parse_urlencoded(b"").unwrap(),
        );
        check(&page);
        assert_forms_have_csrf(&page);
    }
    // Without the holder's record, the IdNat_PS stands for the holder; reader errors escaped.
    let data: cards::CardData = (card(CardStatus::Active), None, vec![], vec![]);
    let page = cards::view_card(&viewer(), &data, &Err(h()), &form::Fields(vec![]));
    check(&page);
}

#[test]
fn the_certificate_page_escapes_its_fields() {
    let v = CertificateFacts {
        ca: h(),
        serial: h(),
        subject: h(),
        profile: h(),
        holder: Some(h()),
        not_before: 0,
        not_after: 0,
        status: h(),
        revocation_time: Some(0),
        revocation_reason: Some(h()),
        pem: h(),
    };
    check(&cards::view_certificate(&viewer(), &v));
}

#[test]
fn the_enrolment_form_escapes_activities_readers_cards_and_errors() {
    let p = professional(ProfessionalStatus::Active);
    let list = [card(CardStatus::Active)];
    let r = readers();
    let f = jobs::EnrolForm {
        professional: &p,
        cards: &list,
        readers: &r,
        activity: Some(HOSTILE),
        reader: Some(HOSTILE),
        replaces: Some(HOSTILE),
        error: Some(h()),
    };
    let page = jobs::view_enrol_form(&viewer(), &f);
    check(&page);
    assert_forms_have_csrf(&page);
    // The activity and reader asked for in the query are the ones checked.
    assert!(page.contains("checked"));
}

fn job(status: &str) -> Job {
    Job {
        id: h(),
        actor: format!("operator:{HOSTILE}"),
        status: status.into(),
        events: vec![JobStep {
            step: Step::ALL[0].name().into(),
            state: "failed".into(),
            detail: Some(h()),
        }],
        progress: Some((h(), 3, 10)),
        error: Some(h()),
    }
}

#[test]
fn the_enrolment_job_page_escapes_job_messages_and_the_pin_mailer_has_its_slots() {
    let p = professional(ProfessionalStatus::Active);
    let c = card(CardStatus::Active);
    let meta = EnrolJobMeta {
        idnat_ps: h(),
        structure_id: h(),
        reader: h(),
    };
    for status in ["running", "failed", "done"] {
        let view = job(status);
        let j = jobs::EnrolJob {
            view: &view,
            meta: Some(&meta),
            professional: Some(&p),
            card: Some(&c),
        };
        let html = jobs::view_enrol_job(&viewer(), &j, jobs::Secrets::Mailer);
        check(&html);
        // Exactly one of each slot: escaped data never forms one.
        for slot in [jobs::PIN_SLOT, jobs::PUK_SLOT] {
            assert_eq!(html.matches(slot).count(), 1, "{html}");
        }
        assert!(html.contains("data-job-state=\"") && html.contains("data-step=\""));
        for mine in [true, false] {
            let html = jobs::view_enrol_job(&viewer(), &j, jobs::Secrets::Note { mine });
            check(&html);
            assert!(!html.contains(jobs::PIN_SLOT) && html.contains("The initial PIN and PUK"));
        }
    }
}

#[test]
fn the_import_pages_escape_line_issues_and_errors_and_the_form_has_a_token() {
    let issue = LineIssue {
        line: 2,
        column: Some(h()),
        message: h(),
    };
    let report = ImportReport {
        file_sha256: h(),
        lines: 1,
        professionals: 1,
        activities: 1,
        errors: vec![issue.clone()],
        error_count: 2,
        warnings: vec![issue],
        created: 0,
        updated: 0,
        unchanged: 0,
        outcome: ImportOutcome::Rejected,
    };
    let page = jobs::view_import_job(&viewer(), &job("done"), Some(&report));
    check(&page);
    assert!(page.contains("id=\"import-errors\"") && page.contains("1 more error(s)"));
    // A failed import without a report shows the job's error.
    check(&jobs::view_import_job(&viewer(), &job("failed"), None));
    let form = jobs::view_import_form(&viewer());
    assert_no_inline(&form);
    assert_forms_have_csrf(&form);
}
