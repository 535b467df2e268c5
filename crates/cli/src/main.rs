//! `cps-trust`: thin command-line front end. Parses arguments, sets up the process environment,
//! calls the appliance library, maps errors to one line on stderr and an exit code.

mod card_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cps_appliance::ceremony::{self, CaShow, InitReport};
use cps_appliance::config::{CONFIG_FILE, Config};

/// Exit codes: 0 success, 1 failure, 2 usage (clap), 3 refused (e.g. init over an existing CA,
/// unhealthy `ca show`).
const EXIT_FAILURE: u8 = 1;
const EXIT_REFUSED: u8 = 3;

#[derive(Parser)]
#[command(
    name = "cps-trust",
    version,
    about = "Trust-service appliance: HSM-backed CA, card enrolment, XUA assertions, ATNA audit and CT time"
)]
struct Cli {
    /// Home directory holding configuration, HSM token (embedded SoftHSM2), store and published certificates.
    #[arg(
        long,
        global = true,
        env = "CPS_TRUST_HOME",
        default_value = "/var/lib/cps-trust"
    )]
    home: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Smartcards: list readers, show what is on a card (PIN tries left, certificates).
    Card {
        #[command(subcommand)]
        command: card_cmd::CardCommand,
    },
    /// First-run key ceremony: configuration, HSM token, CA hierarchy, OCSP signers. Refuses an existing home.
    Init(InitArgs),
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// CA hierarchy commands.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Run every service of the appliance (until SIGINT/SIGTERM).
    Serve,
}

#[derive(clap::Args)]
struct InitArgs {
    /// Start from this configuration file instead of the embedded defaults (subjects, validity,
    /// algorithms, policy OIDs, HSM).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Base URL written into certificates for CRLs, CA certificates and OCSP.
    #[arg(long)]
    public_url: Option<String>,
    /// Use this PKCS#11 module (a vendor HSM) instead of the embedded SoftHSM2.
    #[arg(long, requires_all = ["token_label", "pin"])]
    hsm_module: Option<PathBuf>,
    /// Label of the existing token on the vendor HSM.
    #[arg(long)]
    token_label: Option<String>,
    /// PIN source for the vendor HSM: env:NAME or file:PATH (owner-only).
    #[arg(long)]
    pin: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check the configuration file without starting anything.
    Validate,
    /// Print the embedded default configuration.
    Default,
}

#[derive(Subcommand)]
enum CaCommand {
    /// The hierarchy (subjects, serials, key labels, algorithms, validity) and the HSM self-check.
    Show,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = if matches!(cli.command, Command::Serve) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CPS_TRUST_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
    }
}

type CliResult = Result<ExitCode, (u8, String)>;

fn fail(e: impl std::fmt::Display) -> (u8, String) {
    (EXIT_FAILURE, e.to_string())
}

fn load_config(home: &Path) -> Result<Config, (u8, String)> {
    let path = home.join(CONFIG_FILE);
    if !path.exists() {
        return Err(fail(format!(
            "{} not found: run `cps-trust --home {} init` first",
            path.display(),
            home.display()
        )));
    }
    Config::load(&path).map_err(fail)
}

/// SoftHSM2 reads SOFTHSM2_CONF in C_Initialize, so the variable is set here, while the process
/// is still single-threaded (before the async runtime or any HSM call).
fn set_softhsm_env(home: &Path, config: &Config) {
    if let Some(conf) = ceremony::softhsm_conf_path(home, config) {
        // SAFETY: called from main before any other thread exists.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", conf);
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn run(cli: Cli) -> CliResult {
    let home = absolute(&cli.home);
    match cli.command {
        Command::Card { command } => card_cmd::run(command),
        Command::Init(args) => init(&home, args),
        Command::Config {
            command: ConfigCommand::Validate,
        } => {
            let config = load_config(&home)?;
            config.validate(&home).map_err(fail)?;
            println!("{}: OK", home.join(CONFIG_FILE).display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", Config::embedded_default().to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Ca {
            command: CaCommand::Show,
        } => {
            let config = load_config(&home)?;
            set_softhsm_env(&home, &config);
            let report = ceremony::show(&home, &config).map_err(fail)?;
            print_show(&report);
            match report.first_problem() {
                None => Ok(ExitCode::SUCCESS),
                Some(problem) => Err((EXIT_REFUSED, problem)),
            }
        }
        Command::Serve => {
            let config = load_config(&home)?;
            set_softhsm_env(&home, &config);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(fail)?;
            rt.block_on(cps_appliance::serve::run(&home, &config))
                .map_err(fail)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

fn init(home: &Path, args: InitArgs) -> CliResult {
    let mut config = match &args.config {
        Some(p) => Config::load(p).map_err(fail)?,
        None => Config::embedded_default(),
    };
    if let Some(url) = args.public_url {
        config.appliance.public_base_url = url;
    }
    if let Some(module) = args.hsm_module {
        config.hsm.module = module;
        config.hsm.softhsm2_conf = None;
        config.hsm.token_label = args.token_label.unwrap_or_default();
        config.hsm.pin = args.pin.unwrap_or_default();
    }
    set_softhsm_env(home, &config);
    match ceremony::init(home, &config, now()) {
        Ok(report) => {
            print_init(&report);
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ cps_appliance::ApplianceError::Refused(_)) => Err((EXIT_REFUSED, e.to_string())),
        Err(e) => Err(fail(e)),
    }
}

fn date(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

fn print_init(r: &InitReport) {
    let mut out = String::new();
    macro_rules! println { ($($t:tt)*) => {{ out.push_str(&format!($($t)*)); out.push('\n'); }} }
    println!("Initialised cps-trust in {}", r.home.display());
    println!(
        "HSM token '{}'{}",
        r.token_label,
        if r.embedded_hsm {
            " (embedded SoftHSM2; PINs in secrets/, owner-only)"
        } else {
            ""
        }
    );
    for c in &r.certificates {
        println!(
            "  {:<22} {:<12} key {:<20} serial {}  until {}",
            c.id,
            c.role,
            c.key_label,
            c.serial,
            date(c.not_after)
        );
        println!("  {:<22} {}", "", c.subject);
    }
    println!(
        "CA certificates published in {}/ca/ (PEM, DER, <ca>-chain.pem, ca-bundle.pem)",
        r.home.display()
    );
    println!("Next: cps-trust --home {} serve", r.home.display());
    emit(&out);
}

fn print_show(s: &CaShow) {
    let mut out = String::new();
    macro_rules! println { () => { out.push('\n') }; ($($t:tt)*) => {{ out.push_str(&format!($($t)*)); out.push('\n'); }} }
    match &s.token {
        Some(t) => println!(
            "HSM token '{}' — {} {} (serial {}), module {} [{}]",
            t.label,
            t.manufacturer,
            t.model,
            t.serial,
            t.module.display(),
            t.library
        ),
        None => println!("HSM: not reachable"),
    }
    match &s.self_check {
        Ok(r) if r.is_ok() => println!(
            "HSM self-check: OK — {} keys present, sensitive, never extractable, sign-only",
            r.keys.len()
        ),
        Ok(r) => {
            println!("HSM self-check: FAILED");
            for k in r.keys.iter().filter(|k| !k.problems.is_empty()) {
                println!("  key '{}': {}", k.label, k.problems.join("; "));
            }
        }
        Err(e) => println!("HSM self-check: FAILED — {e}"),
    }
    println!();
    for (e, p, verdict) in &s.certificates {
        let key_state = match &s.self_check {
            Ok(r) => r
                .keys
                .iter()
                .find(|k| k.label == e.key_label)
                .map(|k| {
                    if k.problems.is_empty() {
                        "OK"
                    } else {
                        "FAILED"
                    }
                })
                .unwrap_or("?"),
            Err(_) => "unchecked",
        };
        println!("{} ({})", e.id, e.role);
        println!("  subject     {}", p.subject);
        println!(
            "  issuer      {}",
            if e.issuer_id == e.id {
                "self-signed".to_string()
            } else {
                format!("{} — {}", e.issuer_id, p.issuer)
            }
        );
        println!("  serial      {}", p.serial);
        println!(
            "  key         '{}' {} — {}",
            e.key_label, e.algorithm, key_state
        );
        println!(
            "  signature   {}",
            p.signature_algorithm
                .map(|a| a.to_string())
                .unwrap_or_else(|| "unknown".into())
        );
        println!(
            "  validity    {} → {}",
            date(p.not_before),
            date(p.not_after)
        );
        println!("  sha256      {}", e.sha256);
        println!(
            "  chain       {}",
            match verdict {
                Ok(()) => format!("signature verified by '{}'", e.issuer_id),
                Err(m) => format!("FAILED: {m}"),
            }
        );
    }
    emit(&out);
}

/// Write to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
