//! `firmware-sim`: a simulated PIV professional card served to pcscd through vpcd.
//!
//! ```text
//! firmware-sim init  --state card.json [--mgmt-alg aes192|3des|aes128|aes256] [--force]
//! firmware-sim run   --card [SLOT=]card.json ... [--vpcd 127.0.0.1:35963] [--control ctl.sock] [--init-missing] [--removed]
//! firmware-sim ctl   --control ctl.sock (insert|remove|status) [SLOT]
//! firmware-sim show  --state card.json
//! ```
//! A reader slot is a port offset: slot N connects to port (vpcd port + N).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand};
use firmware_sim::crypto::{OsRng, Rng};
use firmware_sim::state::{CardState, DEFAULT_PIN, DEFAULT_PUK, MgmtAlg};
use firmware_sim::vpcd::{self, SlotConfig, SlotControl};

#[derive(Parser)]
#[command(
    name = "firmware-sim",
    version,
    about = "Simulated PIV professional smartcard for pcscd + vsmartcard vpcd",
    after_help = "Blank cards have PIN 123456, PUK 12345678 and the PIV default management key \
                  010203040506070801020304050607080102030405060708 (AES-192 unless --mgmt-alg)."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a blank card state file.
    Init {
        #[arg(long)]
        state: PathBuf,
        /// Management key algorithm: aes192 (default), 3des, aes128, aes256.
        #[arg(long, default_value = "aes192")]
        mgmt_alg: String,
        /// Overwrite an existing state file.
        #[arg(long)]
        force: bool,
    },
    /// Serve one or more cards to vpcd until SIGTERM/SIGINT.
    Run {
        /// A card: [SLOT=]STATE_FILE (slot = vpcd port offset; default: next free slot from 0).
        #[arg(long = "card", required = true)]
        cards: Vec<String>,
        /// vpcd address (the reader's first slot).
        #[arg(long, default_value = "127.0.0.1:35963")]
        vpcd: String,
        /// Unix socket accepting "insert N", "remove N", "status".
        #[arg(long)]
        control: Option<PathBuf>,
        /// Create blank state files that do not exist yet.
        #[arg(long)]
        init_missing: bool,
        /// Start with every card removed (insert them through the control socket).
        #[arg(long)]
        removed: bool,
        /// Crash tests only: pause this long in the middle of every state-file write.
        #[arg(long, hide = true)]
        persist_pause_ms: Option<u64>,
        /// Benchmarks only: no TCP_NODELAY/TCP_QUICKACK, split writes (the vpcd latency trap).
        #[arg(long, hide = true)]
        naive_socket: bool,
    },
    /// Insert or remove a card of a running simulator, or print its status.
    Ctl {
        #[arg(long)]
        control: PathBuf,
        /// insert, remove or status
        action: String,
        /// Slot number (insert/remove).
        slot: Option<u16>,
    },
    /// Print the public summary of a card state file (never the private keys).
    Show {
        #[arg(long)]
        state: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Cmd::Init {
            state,
            mgmt_alg,
            force,
        } => {
            let alg = MgmtAlg::parse(&mgmt_alg)
                .ok_or_else(|| format!("unknown management key algorithm '{mgmt_alg}'"))?;
            if state.exists() && !force {
                return Err(format!(
                    "{} exists (use --force to overwrite)",
                    state.display()
                ));
            }
            let st = blank(alg);
            st.save(&state).map_err(|e| e.to_string())?;
            println!(
                "blank card written to {} (PIN {DEFAULT_PIN}, PUK {DEFAULT_PUK}, management key {:?} default)",
                state.display(),
                alg
            );
            Ok(())
        }
        Cmd::Show { state } => {
            let st = CardState::load(&state).map_err(|e| e.to_string())?;
            println!("PIN tries left: {}", st.pin_tries_left);
            println!("PUK tries left: {}", st.puk_tries_left);
            println!("management key: {:?}", st.mgmt_alg);
            for (slot, k) in &st.keys {
                let alg = match k {
                    firmware_sim::state::KeyMaterial::P256 { .. } => "ECC P-256",
                    firmware_sim::state::KeyMaterial::Rsa2048 { .. } => "RSA-2048",
                };
                println!("key {slot}: {alg}");
            }
            for (tag, v) in &st.objects {
                println!("object {tag}: {} bytes", v.0.len());
            }
            Ok(())
        }
        Cmd::Ctl {
            control,
            action,
            slot,
        } => {
            let line = match (action.as_str(), slot) {
                ("status", _) => "status".to_string(),
                ("insert" | "remove", Some(n)) => format!("{action} {n}"),
                _ => return Err("usage: ctl --control PATH (insert|remove) SLOT | status".into()),
            };
            let mut s = UnixStream::connect(&control)
                .map_err(|e| format!("control socket {}: {e}", control.display()))?;
            writeln!(s, "{line}").map_err(|e| e.to_string())?;
            let mut answer = String::new();
            BufReader::new(s)
                .read_line(&mut answer)
                .map_err(|e| e.to_string())?;
            let answer = answer.trim_end();
            if let Some(err) = answer.strip_prefix("error: ") {
                return Err(err.to_string());
            }
            println!("{}", answer.replace(" | ", "\n"));
            Ok(())
        }
        Cmd::Run {
            cards,
            vpcd,
            control,
            init_missing,
            removed,
            persist_pause_ms,
            naive_socket,
        } => serve(
            cards,
            &vpcd,
            control,
            init_missing,
            removed,
            persist_pause_ms,
            naive_socket,
        ),
    }
}

/// A blank card with a fresh random GUID and an expiry ten years from now.
fn blank(alg: MgmtAlg) -> CardState {
    let mut guid = [0u8; 16];
    OsRng.fill(&mut guid);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let year = 1970 + secs / 31_556_952 + 10;
    CardState::blank(guid, &format!("{year}1231"), alg)
}

fn serve(
    cards: Vec<String>,
    vpcd: &str,
    control: Option<PathBuf>,
    init_missing: bool,
    removed: bool,
    persist_pause_ms: Option<u64>,
    naive_socket: bool,
) -> Result<(), String> {
    let (host, port) = vpcd
        .rsplit_once(':')
        .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
        .ok_or_else(|| format!("--vpcd '{vpcd}': expected HOST:PORT"))?;
    let mut next = 0u16;
    let mut slots: Vec<(u16, PathBuf)> = Vec::new();
    for c in &cards {
        let (slot, path) = match c.split_once('=') {
            Some((s, p)) if s.parse::<u16>().is_ok() => {
                (s.parse::<u16>().unwrap_or(0), PathBuf::from(p))
            }
            _ => (next, PathBuf::from(c)),
        };
        if slots.iter().any(|(s, _)| *s == slot) {
            return Err(format!("slot {slot} given twice"));
        }
        next = slot.saturating_add(1).max(next);
        slots.push((slot, path));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut controls = Vec::new();
    let mut threads = Vec::new();
    for (slot, path) in slots {
        let state = load_or_init(&path, init_missing)?;
        let p = port
            .checked_add(slot)
            .ok_or_else(|| format!("slot {slot}: port out of range"))?;
        let ctl = SlotControl::new(slot, !removed);
        controls.push(ctl.clone());
        let cfg = SlotConfig {
            host: host.clone(),
            port: p,
            state_path: path,
            persist_pause: persist_pause_ms.map(Duration::from_millis),
            naive_socket,
        };
        let stop = stop.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("slot-{slot}"))
                .spawn(move || vpcd::serve(cfg, state, ctl, stop))
                .map_err(|e| e.to_string())?,
        );
    }
    if let Some(path) = control {
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path)
            .map_err(|e| format!("control socket {}: {e}", path.display()))?;
        let controls = controls.clone();
        std::thread::spawn(move || control_loop(l, controls));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn load_or_init(path: &Path, init_missing: bool) -> Result<CardState, String> {
    if !path.exists() && init_missing {
        let st = blank(MgmtAlg::Aes192);
        st.save(path).map_err(|e| e.to_string())?;
        eprintln!("firmware-sim: blank card created in {}", path.display());
        return Ok(st);
    }
    CardState::load(path).map_err(|e| e.to_string())
}

fn control_loop(l: UnixListener, controls: Vec<Arc<SlotControl>>) {
    for conn in l.incoming() {
        let Ok(conn) = conn else { continue };
        let Ok(mut w) = conn.try_clone() else {
            continue;
        };
        let mut line = String::new();
        if BufReader::new(conn.take_limit())
            .read_line(&mut line)
            .is_err()
        {
            continue;
        }
        let mut it = line.split_whitespace();
        let answer = match (it.next(), it.next().and_then(|s| s.parse::<u16>().ok())) {
            (Some("status"), _) => controls
                .iter()
                .map(|c| c.status())
                .collect::<Vec<_>>()
                .join(" | "),
            (Some(a @ ("insert" | "remove")), Some(n)) => {
                match controls.iter().find(|c| c.slot == n) {
                    Some(c) => {
                        if a == "insert" {
                            c.insert();
                            format!("ok: slot {n} inserted")
                        } else {
                            c.remove();
                            format!("ok: slot {n} removed")
                        }
                    }
                    None => format!("error: no card in slot {n}"),
                }
            }
            _ => "error: expected 'insert N', 'remove N' or 'status'".to_string(),
        };
        let _ = writeln!(w, "{answer}");
    }
}

trait TakeLimit {
    fn take_limit(self) -> std::io::Take<UnixStream>;
}

impl TakeLimit for UnixStream {
    fn take_limit(self) -> std::io::Take<UnixStream> {
        use std::io::Read;
        self.take(256)
    }
}
