//! PC/SC stack for the card tests: a private pcscd (own mount namespace, own socket, own vpcd
//! ports) and the card simulator, both stopped by PID when dropped.
//!
//! pcscd 1.9.9 hard-codes `/run/pcscd`, so each stack runs it under `unshare -m` with a bind
//! mount of its own directory over `/run/pcscd`, and a reader.conf.d whose vpcd CHANNELID is a
//! free port pair (vpcd listens on CHANNELID and CHANNELID+1). Clients (opensc-tool,
//! pkcs11-tool, our card crate) reach it through `PCSCLITE_CSOCK_NAME`.
//!
//! libpcsclite reads `PCSCLITE_CSOCK_NAME` once per process, and setting the environment of a
//! running multi-threaded test is unsound, so in-process uses of the card crate run in a child
//! copy of the test binary: [`PcscStack::run_child`] / [`child_env`].

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::{Daemon, assert_success, peer, text, wait_for};

pub const PCSCD: &str = "/usr/sbin/pcscd";
pub const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
pub const OPENSC_PKCS11: &str = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";

const INSTALL_HINT: &str =
    "run scripts/install-deps.sh (apt: pcscd vsmartcard-vpcd opensc opensc-pkcs11 pcsc-tools)";

fn require(path: &str) {
    assert!(Path::new(path).exists(), "{path} missing: {INSTALL_HINT}");
}

/// The `firmware-sim` binary of the same build profile as this test; built on demand.
pub fn firmware_sim_bin() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    crate::workspace_bin("firmware-sim", &BUILD)
}

/// Two consecutive free loopback ports (vpcd takes CHANNELID and CHANNELID+1).
fn free_port_pair() -> u16 {
    cps_testkit::ports(2)
}

/// A private pcscd with a vpcd reader (two slots).
pub struct PcscStack {
    pub dir: tempfile::TempDir,
    /// `PCSCLITE_CSOCK_NAME` for clients.
    pub socket: PathBuf,
    /// vpcd port of slot 0 (slot 1 is +1).
    pub vpcd_port: u16,
    /// Reader name prefix: readers are "<prefix> 00 00" and "<prefix> 00 01".
    pub reader_prefix: String,
    pub pcscd: Option<Daemon>,
}

impl PcscStack {
    pub fn start(label: &str) -> PcscStack {
        require(PCSCD);
        require(VPCD_DRIVER);
        require(OPENSC_PKCS11);
        let _ = peer("unshare");
        let _ = peer("opensc-tool");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port_pair();
        let reader_prefix = format!("CPS Test {label}");
        std::fs::create_dir_all(dir.path().join("run")).expect("run dir");
        std::fs::create_dir_all(dir.path().join("reader.conf.d")).expect("conf dir");
        std::fs::write(
            dir.path().join("reader.conf.d/vpcd"),
            format!(
                "FRIENDLYNAME \"{reader_prefix}\"\nDEVICENAME   /dev/null:0x{port:X}\nLIBPATH      {VPCD_DRIVER}\nCHANNELID    0x{port:X}\n"
            ),
        )
        .expect("reader.conf");
        let socket = dir.path().join("run/pcscd.comm");
        let mut s = PcscStack {
            dir,
            socket,
            vpcd_port: port,
            reader_prefix,
            pcscd: None,
        };
        s.start_pcscd();
        s
    }

    /// Starts (or restarts) pcscd.
    pub fn start_pcscd(&mut self) {
        let d = self.dir.path();
        let _ = std::fs::remove_file(&self.socket);
        let script = format!(
            "mkdir -p /run/pcscd && mount --bind {run} /run/pcscd && exec {PCSCD} -f -c {conf}",
            run = d.join("run").display(),
            conf = d.join("reader.conf.d").display()
        );
        let mut cmd = Command::new(peer("unshare"));
        cmd.args(["-m", "sh", "-c", &script]);
        let log = d.join(format!(
            "pcscd-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|t| t.as_nanos())
                .unwrap_or(0)
        ));
        let mut daemon = Daemon::spawn("pcscd", cmd, &log);
        let sock = self.socket.clone();
        wait_for("pcscd socket", Duration::from_secs(10), || {
            if let Ok(Some(st)) = daemon.child.try_wait() {
                panic!(
                    "pcscd exited ({st:?}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            sock.exists().then_some(())
        });
        let _ = &mut daemon;
        self.pcscd = Some(daemon);
    }

    /// Stops pcscd (SIGTERM by PID).
    pub fn stop_pcscd(&mut self) {
        if let Some(mut d) = self.pcscd.take() {
            d.stop(Duration::from_secs(5));
        }
    }

    pub fn reader(&self, slot: u16) -> String {
        format!("{} 00 {slot:02}", self.reader_prefix)
    }

    /// A command with `PCSCLITE_CSOCK_NAME` set to this stack.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("PCSCLITE_CSOCK_NAME", &self.socket);
        c
    }

    pub fn opensc_tool(&self, args: &[&str]) -> Output {
        self.command(peer("opensc-tool"))
            .args(args)
            .output()
            .expect("opensc-tool")
    }

    pub fn pkcs11_tool(&self, args: &[&str]) -> Output {
        self.command(peer("pkcs11-tool"))
            .arg("--module")
            .arg(OPENSC_PKCS11)
            .args(args)
            .output()
            .expect("pkcs11-tool")
    }

    /// The card signs `input` through OpenSC with its key `id` (01: authentication, 02:
    /// signature) and `pin`: SHA-256, then ECDSA; the DER signature goes to `output`.
    pub fn sign_with_card(&self, pin: &str, id: &str, input: &Path, output: &Path) {
        let out = self.pkcs11_tool(&[
            "--login",
            "--pin",
            pin,
            "--sign",
            "-m",
            "ECDSA-SHA256",
            "--id",
            id,
            "--input-file",
            input.to_str().expect("path"),
            "--output-file",
            output.to_str().expect("path"),
            "--signature-format",
            "openssl",
        ]);
        assert_success(&out, &format!("pkcs11-tool --sign --id {id}"));
    }

    pub fn pkcs15_tool(&self, args: &[&str]) -> Output {
        self.command(peer("pkcs15-tool"))
            .args(args)
            .output()
            .expect("pkcs15-tool")
    }

    /// Whether pcscd sees a card in `slot` (`opensc-tool -l`).
    pub fn card_present(&self, slot: u16) -> bool {
        let out = self.opensc_tool(&["-l"]);
        let want = self.reader(slot);
        text(&out.stdout)
            .lines()
            .any(|l| l.ends_with(&want) && l.split_whitespace().nth(1) == Some("Yes"))
    }

    pub fn wait_card(&self, slot: u16, present: bool) {
        wait_for(
            &format!(
                "card {} in {}",
                if present { "present" } else { "absent" },
                self.reader(slot)
            ),
            Duration::from_secs(15),
            || (self.card_present(slot) == present).then_some(()),
        );
    }

    /// Starts the simulator with `cards` = (slot, state file); waits until pcscd sees them.
    pub fn simulator(&self, cards: &[(u16, &Path)], extra: &[&str]) -> Simulator {
        let control = self.dir.path().join(format!(
            "sim-{}.sock",
            cards.first().map(|c| c.0).unwrap_or(0)
        ));
        let mut cmd = Command::new(firmware_sim_bin());
        cmd.arg("run")
            .arg("--vpcd")
            .arg(format!("127.0.0.1:{}", self.vpcd_port))
            .arg("--control")
            .arg(&control);
        for (slot, path) in cards {
            cmd.arg("--card").arg(format!("{slot}={}", path.display()));
        }
        cmd.args(extra);
        let log = self.dir.path().join(format!(
            "sim-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|t| t.as_nanos())
                .unwrap_or(0)
        ));
        let daemon = Daemon::spawn("firmware-sim", cmd, &log);
        let mut sim = Simulator {
            daemon,
            control,
            log,
        };
        if !extra.contains(&"--removed") {
            for (slot, _) in cards {
                let t0 = std::time::Instant::now();
                while !self.card_present(*slot) {
                    if let Ok(Some(st)) = sim.daemon.child.try_wait() {
                        panic!("firmware-sim exited ({st:?}):\n{}", sim.log_text());
                    }
                    assert!(
                        t0.elapsed() < Duration::from_secs(15),
                        "timed out waiting for a card in {}; simulator log:\n{}",
                        self.reader(*slot),
                        sim.log_text()
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        sim
    }

    /// Runs test `name` of the current test binary again in a child process with this stack's
    /// socket and `vars` in its environment; the child sees [`child_env`] = Some.
    pub fn run_child(&self, name: &str, vars: &[(&str, String)]) -> Output {
        let mut c = self.command(std::env::current_exe().expect("test exe"));
        c.args([name, "--exact", "--nocapture", "--test-threads", "1"])
            .env("CPS_CARD_TEST_CHILD", name);
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = c.output().expect("child test");
        eprintln!(
            "--- child {name} ---\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert_success(&out, &format!("child test {name}"));
        assert!(text(&out.stdout).contains("1 passed"), "child ran no test");
        out
    }
}

impl PcscStack {
    /// Like [`PcscStack::run_child`] but does not wait: the caller collects the child.
    pub fn spawn_child(&self, name: &str, vars: &[(&str, String)]) -> std::process::Child {
        let mut c = self.command(std::env::current_exe().expect("test exe"));
        c.args([name, "--exact", "--nocapture", "--test-threads", "1"])
            .env("CPS_CARD_TEST_CHILD", name);
        for (k, v) in vars {
            c.env(k, v);
        }
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().expect("child test")
    }
}

impl Drop for PcscStack {
    fn drop(&mut self) {
        self.stop_pcscd();
    }
}

/// In a child started by [`PcscStack::run_child`] for test `name`: Some(()).
pub fn child_env(name: &str) -> Option<()> {
    (std::env::var("CPS_CARD_TEST_CHILD").ok().as_deref() == Some(name)).then_some(())
}

/// A running simulator, stopped by PID on drop.
pub struct Simulator {
    pub daemon: Daemon,
    pub control: PathBuf,
    pub log: PathBuf,
}

impl Simulator {
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(firmware_sim_bin())
            .arg("ctl")
            .arg("--control")
            .arg(&self.control)
            .args(args)
            .output()
            .expect("firmware-sim ctl")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL by PID (crash tests).
    pub fn kill9(&mut self) {
        let _ = self.daemon.child.kill();
        let _ = self.daemon.child.wait();
    }
}

impl PcscStack {
    /// A stack with one blank simulated card in slot 0: the stack, its running simulator and
    /// the card's reader name.
    pub fn with_blank_card(label: &str) -> (PcscStack, Simulator, String) {
        let stack = PcscStack::start(label);
        let card_file = stack.dir.path().join("card.json");
        blank_card(&card_file);
        let sim = stack.simulator(&[(0, &card_file)], &[]);
        let reader = stack.reader(0);
        (stack, sim, reader)
    }

    /// A fresh home whose commands reach this stack's pcscd.
    pub fn home(&self) -> crate::Home {
        crate::Home::new().with_env("PCSCLITE_CSOCK_NAME", &self.socket)
    }
}

/// What `scripts/run.sh` leaves running, on a private stack: a blank simulated card in slot 0
/// (state file `<stack dir>/card0.json`) and a served home that reaches this stack's pcscd.
pub fn appliance_with_blank_card(
    label: &str,
) -> (PcscStack, Simulator, crate::Home, crate::Appliance) {
    let stack = PcscStack::start(label);
    let card = stack.dir.path().join("card0.json");
    blank_card(&card);
    let sim = stack.simulator(&[(0, &card)], &[]);
    let (home, app) = crate::Appliance::fresh_in(
        crate::Home::new().with_env("PCSCLITE_CSOCK_NAME", &stack.socket),
    );
    (stack, sim, home, app)
}

/// A blank card state file (`firmware-sim init`).
pub fn blank_card(path: &Path) {
    let out = Command::new(firmware_sim_bin())
        .arg("init")
        .arg("--state")
        .arg(path)
        .output()
        .expect("firmware-sim init");
    assert_success(&out, "firmware-sim init");
}

/// A throw-away test CA with openssl, and certificates for card public keys.
pub struct TestCa {
    pub dir: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        std::fs::create_dir_all(dir).expect("ca dir");
        let run = |args: &[&str]| {
            let out = Command::new(peer("openssl"))
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl");
            assert_success(&out, &format!("openssl {}", args.join(" ")));
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "30",
            "-subj",
            "/CN=cps-trust card test CA",
        ]);
        run(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "dummy.key",
            "-out",
            "dummy.csr",
            "-subj",
            "/CN=placeholder",
        ]);
        std::fs::write(
            dir.join("ext.cnf"),
            "keyUsage = critical, digitalSignature\nbasicConstraints = CA:FALSE\n",
        )
        .expect("ext");
        TestCa {
            dir: dir.to_path_buf(),
        }
    }

    /// Certifies `spki_pem` (the card's public key); returns the DER certificate.
    pub fn certify(&self, name: &str, spki_pem: &str) -> Vec<u8> {
        let pubf = self.dir.join(format!("{name}.pub.pem"));
        std::fs::write(&pubf, spki_pem).expect("pub");
        let out = Command::new(peer("openssl"))
            .args([
                "x509",
                "-req",
                "-in",
                "dummy.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-extfile",
                "ext.cnf",
                "-outform",
                "DER",
                "-force_pubkey",
            ])
            .arg(&pubf)
            .args(["-subj", &format!("/CN={name}"), "-out"])
            .arg(self.dir.join(format!("{name}.der")))
            .current_dir(&self.dir)
            .output()
            .expect("openssl x509");
        assert_success(&out, "openssl x509 -req -force_pubkey");
        std::fs::read(self.dir.join(format!("{name}.der"))).expect("cert")
    }
}

/// IdNat_PS of the professional of [`registry_csv`].
pub const IDNAT: &str = "810002813839";
/// Her two activities: the structure her card is enrolled for, and the other one.
pub const STRUCTURE: &str = "10B0152872";
pub const OTHER_STRUCTURE: &str = "1340785161";

/// A registry file with one professional (a médecin) and her two activities.
pub fn registry_csv(dir: &Path) -> PathBuf {
    registry_csv_with(dir, "")
}

/// [`registry_csv`] with more lines (`extra`: whole lines, each ending in `\n`).
pub fn registry_csv_with(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("professionals.csv");
    std::fs::write(
        &p,
        format!(
            "Type d'identifiant PP|Identifiant PP|Identification nationale PP|Nom d'exercice|Prénom d'exercice|Code profession|Libellé profession|Code savoir-faire|Identifiant technique de la structure|Raison sociale site|Code secteur d'activité|Libellé secteur d'activité|\n\
             8|00002813839|810002813839|DONNAT-GADY|ISABELLE|10|Médecin|SM26|1340785161|CHU DE MONTPELLIER|SA01|Etablissement public de santé|\n\
             8|00002813839|810002813839|DONNAT-GADY|ISABELLE|10|Médecin|SM26|10B0152872|CABINET DU DR DONNAT-GADY|SA07|Cabinet individuel|\n{extra}"
        ),
    )
    .expect("registry file");
    p
}

/// A card enrolled by the appliance ([`enrol_card`]).
pub struct EnrolledCard {
    pub serial: String,
    pub pin: String,
    /// Serials of its `cps-auth` and `cps-sign` certificates (CA `personnes`).
    pub auth_serial: String,
    pub sign_serial: String,
}

/// Imports [`registry_csv`] and enrols the blank card in `reader` for [`IDNAT`] at
/// [`STRUCTURE`], with the `cps-trust` CLI against the running appliance of `home`.
pub fn enrol_card(home: &crate::Home, dir: &Path, reader: &str) -> EnrolledCard {
    let csv = registry_csv(dir);
    let out = home.cps(&["professional", "import", csv.to_str().expect("path")]);
    assert_success(&out, "professional import");
    assert!(
        text(&out.stdout).contains("outcome imported"),
        "{}",
        text(&out.stdout)
    );
    let out = home.cps(&[
        "card",
        "enroll",
        "--reader",
        reader,
        "--professional",
        IDNAT,
        "--activity",
        STRUCTURE,
    ]);
    assert_success(&out, "card enroll");
    let listing = text(&out.stdout);
    let serial_of = |profile: &str| {
        listing
            .lines()
            .find(|l| l.trim_start().starts_with(profile))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_else(|| panic!("no {profile} certificate in:\n{listing}"))
            .to_owned()
    };
    EnrolledCard {
        serial: crate::field(&listing, "card ").to_owned(),
        pin: crate::field(&listing, "initial PIN ").to_owned(),
        auth_serial: serial_of("cps-auth"),
        sign_serial: serial_of("cps-sign"),
    }
}

/// The PEM of certificate `serial` of CA `personnes`, written into `dir`.
pub fn certificate_pem(home: &crate::Home, dir: &Path, serial: &str) -> PathBuf {
    let out = home.cps(&[
        "cert",
        "show",
        "--ca",
        "personnes",
        "--serial",
        serial,
        "--pem",
    ]);
    assert_success(&out, "cert show --pem");
    let p = dir.join(format!("{serial}.pem"));
    std::fs::write(&p, &out.stdout).expect("certificate file");
    p
}

/// An appliance with one card enrolled through its reader: the PC/SC stack with a blank
/// simulated card ([`PcscStack::with_blank_card`]), the appliance, [`enrol_card`], and the PEM files
/// of the card's certificates. Card certificates exist only this way.
pub struct CardAppliance {
    pub home: crate::Home,
    pub app: crate::Appliance,
    pub reader: String,
    pub card: EnrolledCard,
    /// The `cps-auth` and `cps-sign` certificates (PEM files).
    pub auth_pem: PathBuf,
    pub sign_pem: PathBuf,
    pub sim: Simulator,
    pub stack: PcscStack,
}

impl CardAppliance {
    pub fn start(label: &str) -> CardAppliance {
        let (stack, sim, reader) = PcscStack::with_blank_card(label);
        let dir = stack.dir.path().to_path_buf();
        let (home, app) = crate::Appliance::fresh_in(stack.home());
        let card = enrol_card(&home, &dir, &reader);
        let auth_pem = certificate_pem(&home, &dir, &card.auth_serial);
        let sign_pem = certificate_pem(&home, &dir, &card.sign_serial);
        CardAppliance {
            home,
            app,
            reader,
            card,
            auth_pem,
            sign_pem,
            sim,
            stack,
        }
    }
}
