//! The web console for card-issuing staff, end to end: a private pcscd with two simulated
//! blank cards, an appliance whose readers are that pcscd, operator credentials made by the
//! CLI, and
//! * curl: no client certificate → 401; an auditor reads but gets 403 on every action; a form
//!   without, with a wrong, with another operator's anti-forgery token, or from another origin →
//!   403 and nothing happens; security headers; registry data is HTML-escaped; a bad registry
//!   file uploaded through the console gets its line-by-line report;
//! * Playwright (playwright-core driving Debian's Chromium with the officer's client
//!   certificate): sign in, find the professional, enrol the card in slot 0 with live progress,
//!   see its two certificates and the PIN mailer (once), suspend the card; one screenshot per
//!   step under `<target>/console-screenshots/`;
//! * the card in slot 1 is pulled in the middle of its enrolment: the console names the step
//!   that failed and why, and no certificate of that enrolment stays valid.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cps_trust_tests::pcsc::{PcscStack, blank_card, registry_csv_with};
use cps_trust_tests::*;

const IDNAT: &str = "810002813839";
/// The activity enrolled through the browser (slot 0).
const STRUCTURE: &str = "10B0152872";
/// The activity whose card is pulled mid-enrolment (slot 1).
const STRUCTURE_PULLED: &str = "1340785161";
/// A professional whose registry names carry markup.
const HOSTILE_IDNAT: &str = "810110323986";

fn registry_csv(dir: &Path) -> PathBuf {
    registry_csv_with(
        dir,
        "8|10110323986|810110323986|<SCRIPT>ZOLA</SCRIPT>|Émile & Co|60|Infirmier||F340785161|CHU <b>DE</b> MONTPELLIER|SA01|Etablissement public de santé|\n",
    )
}

/// A registry file with three bad lines (wrong Luhn digit, unknown profession, duplicate).
fn bad_csv(dir: &Path) -> PathBuf {
    let p = dir.join("bad.csv");
    std::fs::write(
        &p,
        "Identification nationale PP|Nom d'exercice|Prénom d'exercice|Code profession|Code savoir-faire|Identifiant technique de la structure|Raison sociale site|Code secteur d'activité\n\
         810003456786|LE GALL|Jean-Noël|21||P290001234|PHARMACIE DU PORT|SA33\n\
         810003456787|MARTIN|Paul|10||P290001234|PHARMACIE DU PORT|SA33\n\
         810110323986|BRUN|Solenne|99||F340785161|CHU DE MONTPELLIER|SA01\n\
         810003456786|LE GALL|Jean-Noël|21||P290001234|PHARMACIE DU PORT|SA33\n",
    )
    .unwrap();
    p
}

/// An HTTP answer seen by curl.
struct Answer {
    code: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        let want = format!("{}:", name.to_ascii_lowercase());
        self.headers
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&want))
            .map(|l| l[want.len()..].trim().to_owned())
    }
}

/// curl against the appliance's mutual-TLS listener, as an operator or without a certificate.
struct Client {
    base: String,
    cred: Option<(PathBuf, PathBuf)>,
}

impl Client {
    fn new(app: &Appliance, home: &Home, operator: Option<&str>) -> Client {
        Client {
            base: format!("https://{}", app.https),
            cred: operator.map(|n| {
                (
                    home.join(&format!("operator/{n}-cert.pem")),
                    home.join(&format!("operator/{n}-key.pem")),
                )
            }),
        }
    }

    fn run(&self, path: &str, args: &[&str]) -> Answer {
        let dir = tempfile::tempdir().unwrap();
        let (h, b) = (dir.path().join("h"), dir.path().join("b"));
        let mut cmd = Command::new(peer("curl"));
        cmd.args(["-skS", "--max-time", "30", "-D"])
            .arg(&h)
            .arg("-o")
            .arg(&b)
            .args(["-w", "%{http_code}"]);
        if let Some((cert, key)) = &self.cred {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        cmd.args(args).arg(format!("{}{path}", self.base));
        let out = cmd.output().expect("curl");
        let code = text(&out.stdout).trim().parse().unwrap_or(0);
        let mut body = String::from_utf8_lossy(&std::fs::read(&b).unwrap_or_default()).into_owned();
        if code == 0 {
            // No HTTP answer: say what curl saw.
            body = format!("curl {:?}: {}{body}", out.status.code(), text(&out.stderr));
        }
        Answer {
            code,
            headers: std::fs::read_to_string(&h).unwrap_or_default(),
            body,
        }
    }

    fn get(&self, path: &str) -> Answer {
        self.run(path, &[])
    }

    fn post(&self, path: &str, form: &[(&str, &str)], headers: &[&str]) -> Answer {
        let mut args: Vec<String> = vec!["-X".into(), "POST".into()];
        for h in headers {
            args.push("-H".into());
            args.push((*h).into());
        }
        if form.is_empty() {
            args.push("-d".into());
            args.push(String::new());
        }
        for (k, v) in form {
            args.push("--data-urlencode".into());
            args.push(format!("{k}={v}"));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(path, &refs)
    }

    /// The anti-forgery token of the form on page `path`.
    fn token(&self, path: &str) -> String {
        let a = self.get(path);
        assert_eq!(a.code, 200, "{path}: {}", a.body);
        let i = a
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no form token on {path}:\n{}", a.body))
            + "name=\"csrf\" value=\"".len();
        a.body[i..].split('"').next().unwrap().to_owned()
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let a = self.get(path);
        assert_eq!(a.code, 200, "{path}: {}", a.body);
        serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", a.body))
    }
}

fn enrol_path() -> String {
    format!("/console/professionals/{IDNAT}/enrol")
}

/// Posts the enrolment form (with `token` when given, and extra request headers).
fn enrol(
    c: &Client,
    reader: &str,
    structure: &str,
    token: Option<&str>,
    headers: &[&str],
) -> Answer {
    let mut form = vec![("structure_id", structure), ("reader", reader)];
    if let Some(t) = token {
        form.push(("csrf", t));
    }
    c.post(&enrol_path(), &form, headers)
}

fn job_of(a: &Answer) -> String {
    assert_eq!(a.code, 303, "expected a redirect to the job: {}", a.body);
    let loc = a.header("location").expect("Location");
    loc.strip_prefix("/console/jobs/")
        .unwrap_or_else(|| panic!("unexpected Location {loc}"))
        .to_owned()
}

fn wait_job(c: &Client, id: &str) -> serde_json::Value {
    wait_for("console job", Duration::from_secs(60), || {
        let j = c.json(&format!("/console/jobs/{id}/status"));
        (j["status"] != "running").then_some(j)
    })
}

/// `<target>/console-screenshots`, emptied.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .parent()
        .and_then(|p| p.parent())
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf();
    let dir = target.join("console-screenshots");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn certificates_of(c: &Client, holder: &str) -> Vec<serde_json::Value> {
    let list = c.json("/api/v1/certificates?ca=personnes&limit=1000");
    list["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["holder"] == holder)
        .cloned()
        .collect()
}

#[test]
fn console_signs_in_by_certificate_enrols_suspends_and_refuses_forgeries() {
    let stack = PcscStack::start("console");
    let dir = stack.dir.path().to_path_buf();
    let (card0, card1) = (dir.join("card0.json"), dir.join("card1.json"));
    blank_card(&card0);
    blank_card(&card1);
    let _sim0 = stack.simulator(&[(0, &card0)], &[]);
    // Slot 1 writes its memory slowly, so that the card can be pulled in the middle.
    let sim1 = stack.simulator(&[(1, &card1)], &["--persist-pause-ms", "700"]);
    let (reader0, reader1) = (stack.reader(0), stack.reader(1));
    let (home, app) =
        Appliance::fresh_in(Home::new().with_env("PCSCLITE_CSOCK_NAME", &stack.socket));
    for (name, role) in [
        ("officer", "ra-officer"),
        ("officer2", "ra-officer"),
        ("reader", "auditor"),
    ] {
        let out = home.cps(&["operator", "add", "--name", name, "--role", role]);
        assert_success(&out, &format!("operator add {name}"));
        assert!(home.join(&format!("operator/{name}.p12")).exists());
    }
    let csv = registry_csv(&dir);
    let out = home.cps(&["professional", "import", csv.to_str().unwrap()]);
    assert_success(&out, "professional import");

    let anonymous = Client::new(&app, &home, None);
    let officer = Client::new(&app, &home, Some("officer"));
    let officer2 = Client::new(&app, &home, Some("officer2"));
    let auditor = Client::new(&app, &home, Some("reader"));

    // Without a client certificate the console cannot be reached.
    for path in [
        "/console/",
        &format!("/console/professionals/{IDNAT}"),
        "/console/assets/console.css",
    ] {
        let a = anonymous.get(path);
        assert_eq!(a.code, 401, "{path}: {}", a.body);
        assert!(!a.body.contains("DONNAT"), "{}", a.body);
    }
    let a = anonymous.post(&enrol_path(), &[("reader", &reader0)], &[]);
    assert_eq!(a.code, 401, "{}", a.body);

    // Signed in: the operator's name, strict headers.
    let a = officer.get("/console/");
    assert_eq!(a.code, 200, "{}", a.body);
    assert!(
        a.body.contains("id=\"operator-name\">officer<"),
        "{}",
        a.body
    );
    assert!(
        a.body.contains(&reader0) && a.body.contains(&reader1),
        "{}",
        a.body
    );
    let csp = a.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(a.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(a.header("cache-control").as_deref(), Some("no-store"));
    assert!(!a.body.contains("<script>"), "no inline script");
    let css = officer.get("/console/assets/console.css");
    assert_eq!(css.code, 200);
    assert!(
        css.header("content-type")
            .unwrap_or_default()
            .starts_with("text/css")
    );
    assert!(css.body.contains("@media print"));

    // Registry data is escaped wherever it is shown.
    for path in [
        format!("/console/professionals?q={HOSTILE_IDNAT}"),
        format!("/console/professionals/{HOSTILE_IDNAT}"),
    ] {
        let a = officer.get(&path);
        assert_eq!(a.code, 200, "{}", a.body);
        assert!(
            a.body.contains("&lt;SCRIPT&gt;ZOLA&lt;/SCRIPT&gt;"),
            "{}",
            a.body
        );
        assert!(a.body.contains("Émile &amp; Co"), "{}", a.body);
        assert!(
            !a.body.contains("<SCRIPT>") && !a.body.contains("<b>DE</b>"),
            "{}",
            a.body
        );
    }
    let a = officer.get("/console/professionals?q=%22%3E%3Cscript%3Ex");
    assert!(!a.body.contains("\"><script>"), "{}", a.body);

    // The auditor reads, but every action is refused.
    let a = auditor.get(&format!("/console/professionals/{IDNAT}"));
    assert_eq!(a.code, 200, "{}", a.body);
    assert!(a.body.contains("DONNAT-GADY"));
    assert!(
        !a.body.contains("Enrol a card") && !a.body.contains("name=\"csrf\""),
        "{}",
        a.body
    );
    assert_eq!(auditor.get(&enrol_path()).code, 403);
    assert_eq!(auditor.get("/console/import").code, 403);
    let token = officer.token(&enrol_path());
    let a = enrol(&auditor, &reader0, STRUCTURE, Some(&token), &[]);
    assert_eq!(a.code, 403, "{}", a.body);
    assert!(a.body.contains("lacks the role ra-officer"), "{}", a.body);
    let a = auditor.post(
        &format!("/console/professionals/{IDNAT}/status"),
        &[("csrf", &token), ("status", "left"), ("confirm", "yes")],
        &[],
    );
    assert_eq!(a.code, 403);

    // Forgeries: no token, a wrong one, another officer's, another origin, another site.
    let a = enrol(&officer, &reader0, STRUCTURE, None, &[]);
    assert_eq!(a.code, 403, "{}", a.body);
    assert!(a.body.contains("anti-forgery token"), "{}", a.body);
    let mut wrong = token.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    let a = enrol(&officer, &reader0, STRUCTURE, Some(&wrong), &[]);
    assert_eq!(a.code, 403, "{}", a.body);
    let a = enrol(&officer2, &reader0, STRUCTURE, Some(&token), &[]);
    assert_eq!(
        a.code, 403,
        "a token is bound to its certificate: {}",
        a.body
    );
    let a = enrol(
        &officer,
        &reader0,
        STRUCTURE,
        Some(&token),
        &["Origin: https://evil.example"],
    );
    assert_eq!(a.code, 403, "{}", a.body);
    assert!(a.body.contains("another origin"), "{}", a.body);
    let a = enrol(
        &officer,
        &reader0,
        STRUCTURE,
        Some(&token),
        &["Sec-Fetch-Site: cross-site"],
    );
    assert_eq!(a.code, 403, "{}", a.body);
    // A GET never changes anything.
    assert_eq!(officer.get("/console/cards/x/suspend").code, 405);
    // Nothing was enrolled by any of these.
    let p = officer.json(&format!("/api/v1/professionals/{IDNAT}"));
    assert_eq!(p["cards"].as_array().map(Vec::len), Some(0), "{p}");

    // A bad registry file uploaded through the console: a line-by-line report, nothing imported.
    let bad = bad_csv(&dir);
    let import_token = officer.token("/console/import");
    let a = officer.run(
        "/console/import",
        &["-F", &format!("file=@{}", bad.display())],
    );
    assert_eq!(a.code, 403, "multipart without a token: {}", a.body);
    let a = officer.run(
        "/console/import",
        &[
            "-F",
            &format!("csrf={import_token}"),
            "-F",
            &format!("file=@{};type=text/csv", bad.display()),
        ],
    );
    let bad_import_job = job_of(&a);
    let j = wait_job(&officer, &bad_import_job);
    assert_eq!(j["status"], "failed", "{j}");
    let page = officer.get(&format!("/console/jobs/{bad_import_job}"));
    assert!(page.body.contains("nothing was imported"), "{}", page.body);
    assert!(page.body.contains("id=\"import-errors\""), "{}", page.body);
    for line in [
        "<th scope=\"row\">3</th>",
        "<th scope=\"row\">4</th>",
        "<th scope=\"row\">5</th>",
    ] {
        assert!(
            page.body.contains(line),
            "{line} not in the report:\n{}",
            page.body
        );
    }
    let p = officer.json("/api/v1/professionals?q=MARTIN");
    assert_eq!(p["professionals"].as_array().map(Vec::len), Some(0), "{p}");
    // The good file again, as a dry run: valid, nothing to change.
    let a = officer.run(
        "/console/import",
        &[
            "-F",
            &format!("csrf={import_token}"),
            "-F",
            &format!("file=@{}", csv.display()),
            "-F",
            "dry_run=1",
        ],
    );
    let job = job_of(&a);
    assert_eq!(wait_job(&officer, &job)["status"], "done");
    let page = officer.get(&format!("/console/jobs/{job}"));
    assert!(page.body.contains("Registry file checked"), "{}", page.body);
    assert!(
        page.body
            .contains("0 would be created, 0 updated, 2 unchanged"),
        "{}",
        page.body
    );

    // The browser: sign in, search, enrol with live progress, certificates, suspend.
    let shots = screenshot_dir();
    let browser = |extra: &[(&str, &str)]| {
        let t = Instant::now();
        let mut cmd = Command::new(peer("node"));
        cmd.arg(repo_root().join("tests/console/console.mjs"))
            .env("CONSOLE_URL", format!("https://{}", app.https))
            .env("CONSOLE_CERT", home.join("operator/officer-cert.pem"))
            .env("CONSOLE_KEY", home.join("operator/officer-key.pem"))
            .env("CONSOLE_OPERATOR", "officer")
            .env("CONSOLE_READER", &reader0)
            .env("CONSOLE_SEARCH", "donnat")
            .env("CONSOLE_IDNAT", IDNAT)
            .env("CONSOLE_STRUCTURE", STRUCTURE)
            .env("CONSOLE_SCREENSHOTS", &shots);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("node");
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        eprintln!(
            "--- playwright ({:.1} s) ---\n{stdout}{stderr}\nscreenshots: {}",
            t.elapsed().as_secs_f64(),
            shots.display()
        );
        assert!(out.status.success(), "the Playwright script failed");
        stdout
    };
    let stdout = browser(&[]);
    assert!(stdout.contains("console e2e: ok card="), "{stdout}");
    let pngs = std::fs::read_dir(&shots)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "png"))
        })
        .count();
    assert!(pngs >= 9, "{pngs} screenshots in {}", shots.display());
    // What the browser did is what the registry holds.
    let p = officer.json(&format!("/api/v1/professionals/{IDNAT}"));
    let cards = p["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 1, "{p}");
    assert_eq!(cards[0]["status"]["state"], "suspended", "{p}");
    assert_eq!(cards[0]["enrolled_by"], "operator:officer", "{p}");
    assert_eq!(cards[0]["certificates"].as_array().map(Vec::len), Some(2));

    // The card in slot 1 is pulled while the certificates are being written to it.
    let token = officer.token(&enrol_path());
    let a = enrol(&officer, &reader1, STRUCTURE_PULLED, Some(&token), &[]);
    let job = job_of(&a);
    wait_for("write_card to start", Duration::from_secs(60), || {
        let j = officer.json(&format!("/console/jobs/{job}/status"));
        assert_eq!(
            j["status"], "running",
            "the enrolment ended before the card was pulled: {j}"
        );
        j["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["step"] == "write_card" && e["state"] == "started")
            .then_some(())
    });
    let out = sim1.ctl(&["remove", "1"]);
    assert_success(&out, "firmware-sim ctl remove");
    let j = wait_job(&officer, &job);
    assert_eq!(j["status"], "failed", "{j}");
    let page = officer.get(&format!("/console/jobs/{job}"));
    assert_eq!(page.code, 200);
    assert!(
        page.body.contains("<h1>Enrolment failed</h1>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("The enrolment stopped at"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("class=\"step step-failed\""),
        "{}",
        page.body
    );
    let error = j["error"].as_str().unwrap_or_default();
    eprintln!("pulled card: {error}");
    assert!(error.contains("stopped at step"), "{error}");
    // No certificate of this professional stays valid: the pulled card's two were revoked by
    // the rollback, the browser-enrolled card's two are on hold.
    let certs = certificates_of(&officer, IDNAT);
    let count = |s: &str| certs.iter().filter(|c| c["status"] == s).count();
    assert_eq!(certs.len(), 4, "{certs:?}");
    assert_eq!(count("valid"), 0, "{certs:?}");
    assert_eq!(count("on-hold"), 2, "{certs:?}");
    assert_eq!(count("revoked"), 2, "{certs:?}");
    let home_page = officer.get("/console/");
    assert!(
        home_page.body.contains("Unfinished enrolments"),
        "{}",
        home_page.body
    );
    let failed_job = job;

    // The browser-enrolled card through its lifecycle, with the codes of the PIN mailer.
    let codes = stdout
        .lines()
        .find_map(|l| l.strip_prefix("card codes: "))
        .expect("the script prints the card codes");
    let code = |k: &str| {
        codes
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap()
            .to_owned()
    };
    let (serial, pin, puk) = (code("serial="), code("pin="), code("puk="));
    let card_path = format!("/console/cards/{serial}");
    let token = officer.token(&card_path);
    let act = |action: &str, form: &[(&str, &str)]| {
        let mut f = vec![("csrf", token.as_str())];
        f.extend_from_slice(form);
        officer.post(&format!("{card_path}/{action}"), &f, &[])
    };
    let redirected = |a: &Answer, done: &str| {
        assert_eq!(a.code, 303, "{}", a.body);
        let loc = a.header("location").unwrap_or_default();
        assert!(loc.contains(&format!("done={done}")), "{loc}");
    };
    let assertion = dir.join("assertion.xml");
    let login = |pin: &str| {
        home.cps(&[
            "login",
            "--reader",
            &reader0,
            "--pin",
            pin,
            "--patient-ins",
            "248079707503828",
            "--out",
            assertion.to_str().unwrap(),
        ])
    };
    redirected(&act("resume", &[]), "resumed");
    assert!(
        officer
            .get(&card_path)
            .body
            .contains("data-status=\"active\"")
    );
    // The PIN of the mailer is the card's PIN.
    assert_success(&login(&pin), "login with the PIN of the mailer");
    // PIN unblock with the PUK of the mailer (a wrong PUK is refused and says so).
    let a = act(
        "unblock",
        &[
            ("reader", &reader0),
            ("puk", "00000000"),
            ("new_pin", "654321"),
            ("new_pin2", "654321"),
        ],
    );
    assert_eq!(a.code, 422, "{}", a.body);
    assert!(a.body.contains("PUK"), "{}", a.body);
    let a = act(
        "unblock",
        &[
            ("reader", &reader0),
            ("puk", &puk),
            ("new_pin", "654321"),
            ("new_pin2", "654322"),
        ],
    );
    assert_eq!(a.code, 422, "{}", a.body);
    redirected(
        &act(
            "unblock",
            &[
                ("reader", &reader0),
                ("puk", &puk),
                ("new_pin", "654321"),
                ("new_pin2", "654321"),
            ],
        ),
        "unblocked",
    );
    assert!(!login(&pin).status.success(), "the old PIN no longer works");
    assert_success(&login("654321"), "login with the new PIN");
    // Opposition: confirmed, then for good.
    let a = act("oppose", &[("reason", "stolen")]);
    assert_eq!(a.code, 422, "{}", a.body);
    assert!(a.body.contains("Confirmation needed"), "{}", a.body);
    redirected(
        &act("oppose", &[("reason", "stolen"), ("confirm", "yes")]),
        "opposed",
    );
    let page = officer.get(&card_path);
    assert!(
        page.body.contains("data-status=\"opposed\""),
        "{}",
        page.body
    );
    assert!(!page.body.contains("id=\"resume-form\"") && !page.body.contains("id=\"oppose-form\""));
    let a = act("resume", &[]);
    assert_eq!(a.code, 422, "an opposed card never comes back: {}", a.body);
    let certs = certificates_of(&officer, IDNAT);
    assert_eq!(
        certs.iter().filter(|c| c["status"] == "revoked").count(),
        4,
        "{certs:?}"
    );

    // The registry through the console: register (a refused field is shown next to it), edit,
    // a stale edit, a status change.
    assert_eq!(auditor.get("/console/professionals/new").code, 403);
    let token = officer.token("/console/professionals/new");
    let mut form = vec![
        ("csrf", token.as_str()),
        ("idnat_ps", "810003456787"),
        ("surname", "LE GALL"),
        ("given_names", "Jean-Noël"),
        ("profession_code", "21"),
        ("savoir_faire", ""),
        ("act0_structure_id", "P290001234"),
        ("act0_structure_name", "PHARMACIE DU PORT"),
        ("act0_secteur", "SA33"),
        ("act1_structure_id", ""),
        ("act1_structure_name", ""),
        ("act1_secteur", ""),
    ];
    let a = officer.post("/console/professionals/new", &form, &[]);
    assert_eq!(a.code, 422, "{}", a.body);
    assert!(a.body.contains("id=\"idnat_ps-error\""), "{}", a.body);
    assert!(a.body.contains("check digit"), "{}", a.body);
    assert!(
        a.body.contains("value=\"Jean-Noël\""),
        "the form keeps what was typed"
    );
    form[1].1 = "810003456786";
    let a = officer.post("/console/professionals/new", &form, &[]);
    assert_eq!(a.code, 303, "{}", a.body);
    let p = officer.json("/api/v1/professionals/810003456786");
    assert_eq!(p["professional"]["data"]["surname"], "LE GALL", "{p}");
    let edit = officer.get("/console/professionals/810003456786/edit");
    assert!(
        edit.body.contains("name=\"revision\" value=\"1\""),
        "{}",
        edit.body
    );
    let token = officer.token("/console/professionals/810003456786/edit");
    let mut form: Vec<(&str, &str)> = vec![
        ("csrf", &token),
        ("revision", "1"),
        ("surname", "LE GALL"),
        ("given_names", "Jean-Noël"),
        ("profession_code", "21"),
        ("act0_structure_id", "P290001234"),
        ("act0_structure_name", "PHARMACIE DU PORT"),
        ("act0_secteur", "SA33"),
        ("act1_structure_id", "P290009999"),
        ("act1_structure_name", "PHARMACIE DE LA GARE"),
        ("act1_secteur", "SA33"),
    ];
    let a = officer.post("/console/professionals/810003456786/edit", &form, &[]);
    assert_eq!(a.code, 303, "{}", a.body);
    let p = officer.json("/api/v1/professionals/810003456786");
    assert_eq!(
        p["professional"]["data"]["activities"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{p}"
    );
    form[9].1 = "PHARMACIE DE LA GARE (annexe)";
    let a = officer.post("/console/professionals/810003456786/edit", &form, &[]);
    assert_eq!(a.code, 422, "an edit of an old revision: {}", a.body);
    assert!(a.body.contains("changed by someone else"), "{}", a.body);
    let status_path = format!("/console/professionals/{HOSTILE_IDNAT}/status");
    let token = officer.token(&format!("/console/professionals/{HOSTILE_IDNAT}"));
    // Its activity's structure identifier is the Annuaire Santé's technical one, which a login
    // assertion cannot carry: the form refuses it and says why, and starts no job.
    let enrol_hostile = || {
        let form = [
            ("csrf", token.as_str()),
            ("structure_id", "F340785161"),
            ("reader", reader1.as_str()),
        ];
        let a = officer.post(
            &format!("/console/professionals/{HOSTILE_IDNAT}/enrol"),
            &form,
            &[],
        );
        assert_eq!(a.code, 422, "{}", a.body);
        a
    };
    let a = enrol_hostile();
    assert!(
        a.body.contains("cannot be used for card login")
            && a.body.contains("unknown type prefix 'F'"),
        "{}",
        a.body
    );
    let a = officer.post(&status_path, &[("csrf", &token), ("status", "left")], &[]);
    assert_eq!(a.code, 422, "{}", a.body);
    let a = officer.post(
        &status_path,
        &[("csrf", &token), ("status", "suspended")],
        &[],
    );
    assert_eq!(a.code, 303, "{}", a.body);
    let page = officer.get(&format!("/console/professionals/{HOSTILE_IDNAT}"));
    assert!(
        page.body
            .contains("id=\"professional-status\"><span class=\"badge badge-hold\">suspended"),
        "{}",
        page.body
    );

    // No card for a suspended professional: the form says so and does not start a job.
    let a = enrol_hostile();
    assert!(
        a.body.contains("enrolment needs an active professional"),
        "{}",
        a.body
    );

    // Screenshots of the other pages, for the record.
    let pages = format!(
        "failed-enrolment=/console/jobs/{failed_job};bad-import-report=/console/jobs/{bad_import_job};\
         opposed-card=/console/cards/{serial};professional-after=/console/professionals/{IDNAT};\
         edit-form=/console/professionals/{HOSTILE_IDNAT}/edit;import-form=/console/import;\
         home-after=/console/"
    );
    let out = browser(&[
        ("CONSOLE_SNAPSHOTS", &pages),
        ("CONSOLE_SNAPSHOT_FIRST", "20"),
    ]);
    assert!(out.contains("console snapshots: ok 7"), "{out}");

    // Every audit message of the run (operators, imports, enrolments and their failures, the
    // card lifecycle, secrets delivered, refused forgeries): valid against the DICOM schema.
    let mut app = app;
    app.daemon.stop(Duration::from_secs(10));
    cps_trust_tests::dicom::assert_audit_log_schema_valid(&home);
}
