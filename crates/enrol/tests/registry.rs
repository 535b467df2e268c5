//! Registry: create, edit, search; CSV import with its line-by-line report, all-or-nothing
//! validation, idempotent re-import and completion of an interrupted import.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cps_enrol::import::parse_csv;
use cps_enrol::{
    EnrolError, ImportOptions, ImportOutcome, ImportPhase, ProfessionalStatus, Registry,
};
use cps_store::{SledStore, Store, StoreError, WriteBatch};
use support::*;

const EXAMPLE: &[u8] = include_bytes!("../examples/professionals.csv");

fn fixture() -> (tempfile::TempDir, Arc<dyn Store>, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("s")).unwrap());
    let reg = Registry::new(store.clone());
    (dir, store, reg)
}

#[test]
fn create_edit_search() {
    let (_d, store, reg) = fixture();
    let p = reg.create(professional(1, "10"), ACTOR, NOW).unwrap();
    assert_eq!(p.status, ProfessionalStatus::Active);
    assert_eq!(p.revision, 1);
    assert!(matches!(
        reg.create(professional(1, "10"), ACTOR, NOW),
        Err(EnrolError::ProfessionalExists(_))
    ));
    // Invalid input: every problem named.
    let mut bad = professional(2, "10");
    bad.idnat_ps = "810000000010".into();
    bad.profession_code = "11".into();
    bad.activities[0].secteur_activite = "SA11".into();
    let e = reg.create(bad, ACTOR, NOW).unwrap_err().to_string();
    for want in [
        "idnat_ps: RPPS check digit",
        "unknown profession code '11'",
        "unknown secteur d'activité 'SA11'",
    ] {
        assert!(e.contains(want), "{want} in {e}");
    }
    let mut sf = professional(3, "60");
    sf.savoir_faire = Some("SM26".into());
    assert!(
        reg.create(sf, ACTOR, NOW)
            .unwrap_err()
            .to_string()
            .contains("only médecins")
    );

    // Edit with the revision read; a stale revision is refused.
    let mut d = p.data.clone();
    d.surname = "Éléonore-Dupont".into();
    let p2 = reg.update(d.clone(), 1, "officer:bob", NOW + 5).unwrap();
    assert_eq!(p2.revision, 2);
    assert!(matches!(
        reg.update(d, 1, ACTOR, NOW),
        Err(EnrolError::Stale(_))
    ));

    for n in 10..40 {
        reg.create(professional(n, "60"), ACTOR, NOW).unwrap();
    }
    // Name prefix, case- and accent-insensitive; the old name is gone from the index.
    for q in ["eleonore", "ÉLÉONORE", "eleonore dupont", "Eléonore-Dup"] {
        let page = reg.search(q, None, 10).unwrap();
        assert_eq!(page.items.len(), 1, "{q}");
        assert_eq!(page.items[0].data.idnat_ps, p.data.idnat_ps);
    }
    assert!(
        reg.search("dupont-1 ", None, 10)
            .unwrap()
            .items
            .iter()
            .all(|x| x.data.idnat_ps != p.data.idnat_ps)
    );
    // Paging through 30 "DUPONT-n".
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = reg.search("dupont", cursor.as_ref(), 7).unwrap();
        seen.extend(page.items.iter().map(|x| x.data.idnat_ps.clone()));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 30);
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 30);
    // IdNat_PS: exact and prefix.
    let exact = reg.search(&rpps(12), None, 10).unwrap();
    assert_eq!(exact.items.len(), 1);
    assert_eq!(reg.search("810000000", None, 100).unwrap().items.len(), 31);
    assert!(reg.search("!!!", None, 10).is_err());
    assert_eq!(reg.count().unwrap(), 31);
    // Audit of each change with its actor.
    let audit = store.audit_range(1, 1000).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.record.kind == "professional.update" && e.record.actor == "officer:bob")
    );
}

#[test]
fn example_file_imports_and_reimports_unchanged() {
    let (_d, store, reg) = fixture();
    let mut phases = Vec::new();
    let r = reg
        .import_csv(EXAMPLE, ImportOptions::default(), ACTOR, NOW, &mut |p| {
            phases.push(p)
        })
        .unwrap();
    assert_eq!(r.outcome, ImportOutcome::Imported, "{:?}", r.errors);
    assert_eq!((r.lines, r.professionals, r.activities), (5, 4, 5));
    // Every activity of the example can be used for card login: no warning at all.
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!((r.created, r.updated, r.unchanged), (4, 0, 0));
    assert!(
        phases
            .iter()
            .any(|p| p.phase == ImportPhase::Writing && p.done == p.total)
    );
    let p = reg.get("810002813839").unwrap().unwrap();
    assert_eq!(p.data.activities.len(), 2);
    assert_eq!(p.data.savoir_faire.as_deref(), Some("SM26"));
    assert_eq!(p.profession_label(), "Médecin");
    let m = reg.search("muller", None, 5).unwrap();
    assert_eq!(
        m.items[0].data.activities[0].structure_name,
        "CABINET MÜLLER | KINÉ"
    );
    assert_eq!(m.items[0].data.given_names, "Ève");

    // Same file again: nothing changes.
    let seq = store.audit_len().unwrap();
    let r2 = reg
        .import_csv(
            EXAMPLE,
            ImportOptions::default(),
            ACTOR,
            NOW + 10,
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(r2.outcome, ImportOutcome::Unchanged);
    assert_eq!((r2.created, r2.updated, r2.unchanged), (0, 0, 4));
    assert_eq!(reg.get("810002813839").unwrap().unwrap(), p);
    assert_eq!(
        store.audit_len().unwrap(),
        seq + 1,
        "one audit event, nothing else"
    );

    // One change: one professional updated, status kept.
    let edited = String::from_utf8(EXAMPLE.to_vec())
        .unwrap()
        .replace("Solenne", "Solène");
    let r3 = reg
        .import_csv(
            edited.as_bytes(),
            ImportOptions::default(),
            ACTOR,
            NOW + 20,
            &mut |_| {},
        )
        .unwrap();
    assert_eq!((r3.created, r3.updated, r3.unchanged), (0, 1, 3));
    assert_eq!(
        reg.get("810110323986").unwrap().unwrap().data.given_names,
        "Solène"
    );
    assert!(reg.interrupted_imports().unwrap().is_empty());
}

#[test]
fn bad_input_gets_a_line_by_line_report_and_nothing_is_imported() {
    let header = "Identification nationale PP;Nom d'exercice;Prénom d'exercice;Code profession;Code savoir-faire;Identifiant technique de la structure;Raison sociale site;Code secteur d'activité";
    let lines = [
        "810002813839;DONNAT;ISABELLE;10;SM26;F1;CHU;SA01", // 2 ok
        "81000281383;DUPONT;Jean;10;;F1;CHU;SA01",          // 3 RPPS length
        "810002813838;DUPONT;Jean;10;;F1;CHU;SA01",         // 4 Luhn
        "X10002813839;DUPONT;Jean;10;;F1;CHU;SA01",         // 5 prefix
        "810003456786;LE GALL;Jean;11;;F1;CHU;SA01",        // 6 profession
        "810110323986;BRUN;Solenne;60;;F1;CHU;SA99",        // 7 secteur
        "810002813839;DONNAT;ISABELLE;10;SM26;F1;CHU;SA01", // 8 duplicate of 2
        "810002813839;DONNAT;ISABELLE;10;SM26;F1;CHU NORD;SA01", // 9 conflicting activity
        "810002813839;DONNAT;ISA;10;SM26;F2;CHU;SA01",      // 10 given names differ
        "810110323986;BRUN;Solenne;60;;F1;CHU",             // 11 column count
        "810110323986;BRUN;;60;;F1;CHU;SA01",               // 12 empty given name
        "810110323986;BRUN;Solenne;60;;F 1;CHU;SA01",       // 13 structure id
        "810110323986;BRUN;Solenne;60;S1;F1;\"CHU;SA01",    // 14 unterminated quote
    ];
    let mut file = format!("{header}\n{}\n", lines.join("\n")).into_bytes();
    // 15: Latin-1 bytes.
    file.extend_from_slice(b"810110323986;BRUN;H\xe9l\xe8ne;60;;F1;CHU;SA01\n");
    let (_d, store, reg) = fixture();
    let r = reg
        .import_csv(&file, ImportOptions::default(), ACTOR, NOW, &mut |_| {})
        .unwrap();
    assert_eq!(r.outcome, ImportOutcome::Rejected);
    let by_line = |l: usize| -> Vec<String> {
        r.errors
            .iter()
            .filter(|e| e.line == l)
            .map(|e| e.to_string())
            .collect()
    };
    let expect: &[(usize, &str)] = &[
        (3, "RPPS must be 11 digits"),
        (4, "RPPS check digit is 9, not 8"),
        (5, "unknown type prefix 'X'"),
        (6, "unknown profession code '11'"),
        (7, "unknown secteur d'activité 'SA99'"),
        (
            8,
            "duplicate line: same professional and activity as line 2",
        ),
        (
            9,
            "structure 'F1' is already given for 810002813839 on line 2, with other data",
        ),
        (10, "'ISA' differs from line 2 ('ISABELLE')"),
        (11, "7 columns, the header has 8"),
        (12, "column 'Prénom d'exercice': empty"),
        (13, "column 'Identifiant technique de la structure'"),
        (14, "quoted field is not closed"),
        (15, "not valid UTF-8: byte 0xE9"),
    ];
    for (line, want) in expect {
        let got = by_line(*line);
        assert!(
            got.iter().any(|g| g.contains(want)),
            "line {line}: want '{want}', got {got:?}"
        );
    }
    assert!(by_line(2).is_empty(), "{:?}", by_line(2));
    assert_eq!(r.error_count, r.errors.len());
    assert!(r.errors.iter().all(|e| e.line > 0));
    // Nothing imported, the valid line included; the rejection is audited.
    assert_eq!(reg.count().unwrap(), 0);
    let audit = store.audit_range(1, 10).unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].record.outcome, "rejected");

    // File-level problems.
    for (bytes, want) in [
        (&b""[..], "the file is empty"),
        (&b"\xff\xfeI\x00d\x00"[..], "UTF-16"),
        (
            &b"Identification nationale PP,Nom\n"[..],
            "no '|' or ';' separator",
        ),
        (
            &b"Identification nationale PP|Nom d'exercice\n"[..],
            "required column missing",
        ),
        (
            &b"Identification nationale PP|Nom d'exercice|Pr\xe9nom\n"[..],
            "not valid UTF-8",
        ),
    ] {
        let r = parse_csv(bytes, &mut |_| {}).unwrap_err();
        assert!(
            r.errors.iter().any(|e| e.to_string().contains(want)),
            "{want}: {:?}",
            r.errors
        );
    }
    let only_header = format!("{header}\n\n");
    assert!(
        parse_csv(only_header.as_bytes(), &mut |_| {})
            .unwrap_err()
            .errors[0]
            .message
            .contains("no data line")
    );
    // Savoir-faire on another profession: accepted with a warning, dropped.
    let ok = format!("{header}\n810110323986;BRUN;Solenne;60;SM26;1340785161;CHU;SA01\n");
    let p = parse_csv(ok.as_bytes(), &mut |_| {}).unwrap();
    assert_eq!(p.report.warnings.len(), 1, "{:?}", p.report.warnings);
    assert!(p.report.warnings[0].message.contains("savoir-faire"));
    assert!(p.professionals["810110323986"].1.savoir_faire.is_none());
    // A structure identifier that is not a struct_IdNat (the Annuaire Santé's technical one):
    // imported, and flagged as unusable for login, line by line.
    let technical = format!(
        "{header}\n810110323986;BRUN;Solenne;60;;F340785161;CHU;SA01\n\
         810110323986;BRUN;Solenne;60;;1340785161;CHU;SA01\n"
    );
    let p = parse_csv(technical.as_bytes(), &mut |_| {}).unwrap();
    assert_eq!(p.report.error_count, 0);
    assert_eq!(p.report.warnings.len(), 1, "{:?}", p.report.warnings);
    let w = p.report.warnings[0].to_string();
    for want in [
        "line 2, column 'Identifiant technique de la structure'",
        "'F340785161' cannot be used for login",
        "unknown type prefix 'F'",
    ] {
        assert!(w.contains(want), "{want}: {w}");
    }
    assert_eq!(p.professionals["810110323986"].1.activities.len(), 2);
}

/// A store that fails every commit after the first `ok` ones (a crash between batches).
struct FailingStore {
    inner: SledStore,
    ok: AtomicUsize,
}

impl Store for FailingStore {
    fn commit(&self, batch: WriteBatch) -> Result<cps_store::CommitReceipt, StoreError> {
        if self.ok.load(Ordering::SeqCst) == 0 {
            return Err(StoreError::Backend {
                path: "/x".into(),
                detail: "disk gone".into(),
            });
        }
        self.ok.fetch_sub(1, Ordering::SeqCst);
        self.inner.commit(batch)
    }
    fn get_certificate(
        &self,
        i: &str,
        s: &[u8],
    ) -> Result<Option<cps_store::CertificateRecord>, StoreError> {
        self.inner.get_certificate(i, s)
    }
    fn certificates_by_spki(
        &self,
        k: &[u8; 32],
    ) -> Result<Vec<cps_store::CertificateRecord>, StoreError> {
        self.inner.certificates_by_spki(k)
    }
    fn list_certificates(
        &self,
        i: Option<&str>,
        a: Option<&cps_store::CertCursor>,
        l: usize,
    ) -> Result<cps_store::CertificatePage, StoreError> {
        self.inner.list_certificates(i, a, l)
    }
    fn revoked_certificates(&self, i: &str) -> Result<Vec<cps_store::RevokedEntry>, StoreError> {
        self.inner.revoked_certificates(i)
    }
    fn blocked_key(&self, k: &[u8; 32]) -> Result<Option<cps_store::BlockedKey>, StoreError> {
        self.inner.blocked_key(k)
    }
    fn counter(&self, n: &str) -> Result<u64, StoreError> {
        self.inner.counter(n)
    }
    fn audit_range(&self, f: u64, l: usize) -> Result<Vec<cps_store::AuditEntry>, StoreError> {
        self.inner.audit_range(f, l)
    }
    fn audit_len(&self) -> Result<u64, StoreError> {
        self.inner.audit_len()
    }
    fn get_meta(&self, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_meta(k)
    }
    fn get_record(&self, t: &str, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_record(t, k)
    }
    fn scan_records(
        &self,
        t: &str,
        p: &[u8],
        a: Option<&[u8]>,
        l: usize,
    ) -> Result<Vec<cps_store::RecordRow>, StoreError> {
        self.inner.scan_records(t, p, a, l)
    }
    fn claim(&self, t: &str, k: &[(Vec<u8>, i64)], n: i64) -> Result<Vec<bool>, StoreError> {
        self.inner.claim(t, k, n)
    }
}

fn generated(n: u64) -> Vec<u8> {
    let mut s = String::from(
        "Identification nationale PP|Nom d'exercice|Prénom d'exercice|Code profession|Identifiant technique de la structure|Raison sociale site|Code secteur d'activité\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "{}|NOM{i}|Prénom|60|S{i}|Cabinet {i}|SA07\n",
            rpps(i)
        ));
    }
    s.into_bytes()
}

#[test]
fn an_interrupted_import_is_completed_by_running_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(FailingStore {
        inner: SledStore::open(dir.path().join("s")).unwrap(),
        ok: AtomicUsize::new(2),
    });
    let store: Arc<dyn Store> = failing.clone();
    let reg = Registry::new(store.clone());
    let file = generated(250);
    let opts = ImportOptions {
        dry_run: false,
        batch_size: 100,
    };
    let e = reg
        .import_csv(&file, opts, ACTOR, NOW, &mut |_| {})
        .unwrap_err();
    assert!(e.to_string().contains("disk gone"), "{e}");
    // Two batches of 100 written, the third lost; the import is listed as interrupted.
    assert_eq!(reg.count().unwrap(), 200);
    assert_eq!(reg.interrupted_imports().unwrap().len(), 1);

    failing.ok.store(usize::MAX, Ordering::SeqCst);
    let r = reg
        .import_csv(&file, opts, ACTOR, NOW + 60, &mut |_| {})
        .unwrap();
    assert_eq!((r.created, r.updated, r.unchanged), (50, 0, 200));
    assert_eq!(reg.count().unwrap(), 250);
    // Dry run writes nothing.
    let r = reg
        .import_csv(
            &generated(260),
            ImportOptions {
                dry_run: true,
                batch_size: 100,
            },
            ACTOR,
            NOW,
            &mut |_| {},
        )
        .unwrap();
    assert_eq!((r.outcome, r.created), (ImportOutcome::DryRun, 10));
    assert_eq!(reg.count().unwrap(), 250);
}
