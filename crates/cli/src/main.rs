//! `cps-trust`: thin command-line front end. Parses arguments, sets up the process environment,
//! calls the appliance library, maps errors to one line on stderr and an exit code.

mod audit_cmd;
mod card_cmd;
mod dsg_card;
mod dsg_cmd;
mod dsg_files;
mod issuance_cmd;
mod login_cmd;
mod node_cmd;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod client;
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
    /// Smartcards: list readers, show what is on a card (PIN tries left, certificates); enrol
    /// and manage cards through the appliance.
    Card {
        /// Operator credential for the commands that go through the appliance.
        #[arg(long = "as", default_value = "admin")]
        as_operator: String,
        #[command(subcommand)]
        command: card_cmd::CardCommand,
    },
    /// The registry of health professionals (through the appliance).
    Professional {
        #[arg(long = "as", default_value = "admin")]
        as_operator: String,
        #[command(subcommand)]
        command: issuance_cmd::ProfessionalCommand,
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
    /// Certificates, through the running appliance's API (mutual TLS as an operator).
    Cert {
        /// Operator credential to use (`<home>/operator/<name>-cert.pem` and `-key.pem`).
        #[arg(long, default_value = "admin")]
        operator: String,
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Operators: people and services that reach the API with a client certificate.
    Operator {
        /// Operator credential used to make the request.
        #[arg(long = "as", default_value = "admin")]
        as_operator: String,
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Log in with a professional card (PC/SC): the appliance checks the card's signature over a
    /// fresh challenge and answers with a signed VIHF assertion, printed here.
    Login(login_cmd::LoginArgs),
    /// XUA assertions: validate one with the appliance.
    Xua {
        /// Operator credential (role `service`) used to make the request.
        #[arg(long = "as", default_value = "admin")]
        as_operator: String,
        #[command(subcommand)]
        command: login_cmd::XuaCommand,
    },
    /// Document signatures (IHE DSG, XAdES-X-L): sign with a structure's seal, verify.
    Dsg {
        /// Operator credential used to make the request (role `signer` to sign; `signer` or
        /// `service` to verify).
        #[arg(long = "as", default_value = "admin")]
        as_operator: String,
        #[command(subcommand)]
        command: dsg_cmd::DsgCommand,
    },
    /// The audit record repository: verify its tamper-evident log, search it.
    Audit {
        #[command(subcommand)]
        command: audit_cmd::AuditCommand,
    },
    /// Several appliance nodes on one PostgreSQL store: make the home of a new node.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// IHE ATNA secure nodes: certify and register them, list, remove.
    Node {
        /// Operator credential used to make the request.
        #[arg(long = "as", default_value = "admin")]
        as_operator: String,
        #[command(subcommand)]
        command: node_cmd::NodeCommand,
    },
    /// Fetch the current CRL of a CA (DER) from the running appliance.
    Crl {
        /// CA identifier: root, personnes, organisations.
        #[arg(long)]
        ca: String,
        /// Write the DER CRL here (default: print a summary).
        #[arg(long, short)]
        out: Option<PathBuf>,
        #[arg(long, default_value = "admin")]
        operator: String,
    },
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
    /// Where the clock's trust comes from: `kernel` (the kernel's synchronisation state, the
    /// default) or `declared` (the operator vouches for the clock; see README "Time").
    #[arg(long, value_parser = ["kernel", "declared"])]
    time_source: Option<String>,
    /// Keep the appliance's state in this PostgreSQL database (`[store] backend = "postgres"`)
    /// instead of the embedded store, e.g.
    /// `postgresql://cps@db1,db2/cps?target_session_attrs=read-write`.
    #[arg(long)]
    store_url: Option<String>,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum CertCommand {
    /// Issue a certificate from a PKCS#10 CSR (its signature proves possession of the key).
    Issue {
        /// Profile: cps-auth, cps-sign, org-tls-client, org-tls-server, org-cachet.
        #[arg(long)]
        profile: String,
        /// CSR file (PEM or DER).
        #[arg(long)]
        csr: PathBuf,
        /// Registry identity of the holder (IdNat_PS, structure id, node name).
        #[arg(long)]
        holder: String,
        /// Person subject: IdNat_PS,surname,given name,TRE_G15 profession code.
        #[arg(long, conflicts_with_all = ["org_name", "structure_id", "cn", "state"])]
        person: Option<String>,
        /// Organisation subject: raison sociale (O).
        #[arg(long)]
        org_name: Option<String>,
        /// Organisation subject: struct_IdNat (OU).
        #[arg(long)]
        structure_id: Option<String>,
        /// Organisation subject: application name or FQDN (CN).
        #[arg(long)]
        cn: Option<String>,
        /// Organisation subject: department, e.g. "Paris (75)" (ST).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        dns: Vec<String>,
        #[arg(long)]
        ip: Vec<String>,
        #[arg(long)]
        email: Vec<String>,
        /// Write the certificate (PEM) here.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Show one certificate.
    Show {
        #[arg(long)]
        ca: String,
        /// Serial number in hex.
        #[arg(long)]
        serial: String,
        /// Print only the PEM.
        #[arg(long)]
        pem: bool,
    },
    /// List certificates.
    List {
        #[arg(long)]
        ca: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Continue after this cursor (printed at the end of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Revoke a certificate (reasons as in RFC 5280: keyCompromise, superseded, cessationOfOperation,
    /// affiliationChanged, privilegeWithdrawn, certificateHold to suspend, removeFromCRL to resume).
    Revoke {
        #[arg(long)]
        ca: String,
        #[arg(long)]
        serial: String,
        #[arg(long, default_value = "unspecified")]
        reason: String,
        /// When the key is known to have been compromised (RFC 5280 invalidity date), Unix
        /// seconds; for keyCompromise, a signature timestamped after it is refused.
        #[arg(long)]
        invalidity_date: Option<i64>,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Create an operator: a key is generated here, the appliance certifies it and binds the
    /// roles; the credential is written to <home>/operator/<name>-cert.pem, -key.pem, .p12.
    Add {
        #[arg(long)]
        name: String,
        /// ca-operator, ra-officer, auditor, service (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check the configuration file without starting anything.
    Validate,
    /// Print the embedded default configuration.
    Default,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Make `--home` the home of a new node of the cluster that the node at `--from` belongs
    /// to: shared files (HSM access and PINs, CA, TLS and seal certificates) copied, the
    /// configuration copied with this node's id, its own audit keys and its listen addresses.
    Join {
        /// Home of a node of the cluster (a copy of it, on another machine).
        #[arg(long)]
        from: PathBuf,
        /// This node's id (`[cluster] node_id`), unique in the cluster.
        #[arg(long)]
        node_id: String,
        /// `listen.http` of this node.
        #[arg(long)]
        http: Option<String>,
        /// `listen.https` of this node.
        #[arg(long)]
        https: Option<String>,
        /// `listen.syslog_tls` of this node.
        #[arg(long)]
        syslog_tls: Option<String>,
        /// `listen.ntp` of this node.
        #[arg(long)]
        ntp: Option<String>,
    },
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
        Command::Card {
            as_operator,
            command: card_cmd::CardCommand::Issuance(cmd),
        } => {
            let config = load_config(&home)?;
            let api = client::ApiClient::new(&home, &config, &as_operator).map_err(fail)?;
            issuance_cmd::card(&api, cmd)
        }
        Command::Card { command, .. } => card_cmd::run(command),
        Command::Professional {
            as_operator,
            command,
        } => {
            let config = load_config(&home)?;
            let api = client::ApiClient::new(&home, &config, &as_operator).map_err(fail)?;
            issuance_cmd::professional(&api, command)
        }
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
        Command::Cluster {
            command:
                ClusterCommand::Join {
                    from,
                    node_id,
                    http,
                    https,
                    syslog_tls,
                    ntp,
                },
        } => {
            let written = cps_appliance::cluster::join(&cps_appliance::cluster::JoinRequest {
                from: &from,
                to: &home,
                node_id: &node_id,
                listen: [
                    ("http", http),
                    ("https", https),
                    ("syslog_tls", syslog_tls),
                    ("ntp", ntp),
                ],
            })
            .map_err(fail)?;
            for p in written {
                println!("wrote {}", p.display());
            }
            println!(
                "node {node_id}: start it with `cps-trust --home {} serve`",
                home.display()
            );
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
        Command::Audit {
            command:
                audit_cmd::AuditCommand::Verify {
                    node,
                    dir,
                    root,
                    as_operator,
                },
        } => {
            let config = load_config(&home)?;
            audit_cmd::verify(&home, &config, node, dir, root, &as_operator)
        }
        Command::Audit { command } => {
            let config = load_config(&home)?;
            let operator = match &command {
                audit_cmd::AuditCommand::Events { as_operator, .. } => as_operator.clone(),
                _ => "admin".into(),
            };
            let api = client::ApiClient::new(&home, &config, &operator).map_err(fail)?;
            audit_cmd::events(&api, command)
        }
        Command::Dsg {
            as_operator,
            command,
        } => {
            let config = load_config(&home)?;
            let api = || client::ApiClient::new(&home, &config, &as_operator).map_err(fail);
            dsg_cmd::run(&config, api, command)
        }
        Command::Login(args) => {
            let config = load_config(&home)?;
            let api = client::ApiClient::anonymous(&home, &config).map_err(fail)?;
            login_cmd::login(&api, args)
        }
        Command::Xua {
            as_operator,
            command,
        } => {
            let config = load_config(&home)?;
            let api = client::ApiClient::new(&home, &config, &as_operator).map_err(fail)?;
            login_cmd::xua(&api, command)
        }
        Command::Node {
            as_operator,
            command,
        } => {
            let config = load_config(&home)?;
            let api = client::ApiClient::new(&home, &config, &as_operator).map_err(fail)?;
            node_cmd::run(&api, command)
        }
        Command::Cert { operator, command } => {
            let config = load_config(&home)?;
            let api = client::ApiClient::new(&home, &config, &operator).map_err(fail)?;
            cert(&api, command)
        }
        Command::Operator {
            as_operator,
            command: OperatorCommand::Add { name, roles },
        } => {
            let config = load_config(&home)?;
            let api = client::ApiClient::new(&home, &config, &as_operator).map_err(fail)?;
            let (key_pem, csr) =
                cps_appliance::operators::OperatorCredential::new_key_and_csr(&name)
                    .map_err(fail)?;
            let c: cps_api::CertificateView = api
                .post(
                    "/api/v1/operators",
                    &cps_api::OperatorRequest {
                        name: name.clone(),
                        roles: roles.clone(),
                        csr,
                    },
                )
                .map_err(fail)?;
            let pem = c.pem.as_str();
            let cert_der = der::pem::decode_vec(pem.as_bytes())
                .map(|(_, d)| d)
                .map_err(|e| fail(format!("certificate: {e}")))?;
            let cred = cps_appliance::operators::OperatorCredential::from_parts(cert_der, key_pem)
                .map_err(fail)?;
            let read = |f: &str| {
                std::fs::read(home.join("ca").join(f)).map_err(|e| fail(format!("{f}: {e}")))
            };
            cps_appliance::operators::write_credential(
                &home.join("operator"),
                &name,
                &cred,
                &read("organisations.der")?,
                &read("root.der")?,
            )
            .map_err(fail)?;
            emit(&format!(
                "operator '{name}' ({}) created: {}/operator/{name}-cert.pem, {name}-key.pem, {name}.p12\n",
                roles.join(", "),
                home.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Crl { ca, out, operator } => {
            let config = load_config(&home)?;
            let api = client::ApiClient::new(&home, &config, &operator).map_err(fail)?;
            let der = api.get_bytes(&format!("/api/v1/crl/{ca}")).map_err(fail)?;
            match out {
                Some(p) => {
                    std::fs::write(&p, &der).map_err(|e| fail(format!("{}: {e}", p.display())))?;
                    emit(&format!(
                        "CRL of '{ca}' written to {} ({} bytes)\n",
                        p.display(),
                        der.len()
                    ));
                }
                None => {
                    let c = cps_pki::crl::parse_crl(&der).map_err(fail)?;
                    emit(&format!(
                        "CRL of '{ca}': number {}, thisUpdate {}, nextUpdate {}, {} revoked\n",
                        c.crl_number
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| "-".into()),
                        date(c.this_update),
                        c.next_update.map(date).unwrap_or_else(|| "-".into()),
                        c.entries.len()
                    ));
                }
            }
            Ok(ExitCode::SUCCESS)
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
    match args.time_source.as_deref() {
        Some("declared") => config.time.source = cps_appliance::config::TimeSourceKind::Declared,
        Some(_) => config.time.source = cps_appliance::config::TimeSourceKind::Kernel,
        None => {}
    }
    if let Some(url) = args.store_url {
        config.store.backend = cps_appliance::config::StoreBackend::Postgres;
        config.store.url = Some(url);
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

/// An answer as indented JSON, keys in alphabetical order (as this output has always been).
fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_default()
}

fn date(t: i64) -> String {
    cps_appliance::rfc3339(t)
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
/// A CSR file (PEM or DER) as PEM text.
fn read_csr_pem(path: &Path) -> Result<String, (u8, String)> {
    let bytes = std::fs::read(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    Ok(if bytes.starts_with(b"-----") {
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        cps_pki::pem_encode("CERTIFICATE REQUEST", &bytes)
    })
}

/// [`emit`] and a line end.
fn emitln(text: &str) {
    emit(text);
    emit("\n");
}

fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn cert(api: &client::ApiClient, command: CertCommand) -> CliResult {
    match command {
        CertCommand::Issue {
            profile,
            csr,
            holder,
            person,
            org_name,
            structure_id,
            cn,
            state,
            dns,
            ip,
            email,
            out,
        } => {
            let csr_pem = read_csr_pem(&csr)?;
            let subject = match person {
                Some(p) => {
                    let f: Vec<&str> = p.split(',').map(str::trim).collect();
                    if f.len() != 4 {
                        return Err(fail(
                            "--person takes IdNat_PS,surname,given name,profession code",
                        ));
                    }
                    cps_api::SubjectRequest::Person(cps_api::PersonSubject {
                        idnat_ps: f[0].into(),
                        surname: f[1].into(),
                        given_name: f[2].into(),
                        profession_code: f[3].into(),
                    })
                }
                None => cps_api::SubjectRequest::Organisation(cps_api::OrganisationSubject {
                    state: state
                        .ok_or_else(|| fail("--state is required for an organisation subject"))?,
                    name: org_name.ok_or_else(|| {
                        fail("--org-name is required for an organisation subject")
                    })?,
                    structure_id: structure_id.ok_or_else(|| {
                        fail("--structure-id is required for an organisation subject")
                    })?,
                    common_name: cn
                        .ok_or_else(|| fail("--cn is required for an organisation subject"))?,
                }),
            };
            let body = cps_api::IssueRequest {
                profile,
                csr: csr_pem,
                subject,
                holder,
                dns,
                ip: ip_addresses(&ip)?,
                email,
            };
            let c: cps_api::CertificateView =
                api.post("/api/v1/certificates", &body).map_err(fail)?;
            if let Some(p) = out {
                std::fs::write(&p, &c.pem).map_err(|e| fail(format!("{}: {e}", p.display())))?;
            }
            emit(&describe_cert(&c));
        }
        CertCommand::Show { ca, serial, pem } => {
            let c: cps_api::CertificateView = api
                .get(&format!("/api/v1/certificates/{ca}/{serial}"))
                .map_err(fail)?;
            if pem {
                emit(&c.pem);
            } else {
                emit(&describe_cert(&c));
            }
        }
        CertCommand::List { ca, limit, after } => {
            let mut q = format!("/api/v1/certificates?limit={limit}");
            if let Some(ca) = ca {
                q.push_str(&format!("&ca={ca}"));
            }
            if let Some(a) = after {
                q.push_str(&format!("&after={a}"));
            }
            let page: cps_api::CertificateList = api.get(&q).map_err(fail)?;
            let mut out = String::new();
            for c in &page.certificates {
                out.push_str(&format!(
                    "{:<14} {:<34} {:<8} {:<12} {}\n",
                    c.ca, c.serial, c.status, c.profile, c.subject
                ));
            }
            if let Some(next) = page.next {
                out.push_str(&format!("more: --after {next}\n"));
            }
            emit(&out);
        }
        CertCommand::Revoke {
            ca,
            serial,
            reason,
            invalidity_date,
        } => {
            let c: cps_api::CertificateView = api
                .post(
                    &format!("/api/v1/certificates/{ca}/{serial}/revoke"),
                    &cps_api::RevokeRequest {
                        reason,
                        invalidity_date,
                    },
                )
                .map_err(fail)?;
            emit(&describe_cert(&c));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_cert(c: &cps_api::CertificateView) -> String {
    let mut out = format!(
        "ca          {}\nserial      {}\nsubject     {}\nprofile     {}\nholder      {}\nvalidity    {} → {}\nstatus      {}\n",
        c.ca,
        c.serial,
        c.subject,
        c.profile,
        c.holder.as_deref().unwrap_or("-"),
        date(c.not_before),
        date(c.not_after),
        c.status
    );
    if let Some(t) = c.revocation_time {
        out.push_str(&format!(
            "revoked     {} ({})\n",
            date(t),
            c.revocation_reason.as_deref().unwrap_or("-")
        ));
    }
    out
}

/// `--ip` values as addresses (the API takes nothing else).
fn ip_addresses(ip: &[String]) -> Result<Vec<std::net::IpAddr>, (u8, String)> {
    ip.iter()
        .map(|a| a.parse().map_err(|e| fail(format!("--ip {a}: {e}"))))
        .collect()
}
