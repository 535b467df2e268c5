//! vpcd transport: the card is a TCP client of the vsmartcard `vpcd` reader driver loaded by
//! pcscd. Every message in both directions is a 2-byte big-endian length and a payload; a
//! 1-byte payload from vpcd is a control message (0 power off, 1 power on, 2 reset, 4 get ATR),
//! anything longer is a command APDU. Closing the connection removes the card.
//!
//! Latency: vpcd writes the length and the APDU in two `send()`s. With Nagle on its side and
//! delayed ACK on ours, every APDU would stall ~40 ms; so the socket has `TCP_NODELAY`, and
//! `TCP_QUICKACK` is re-armed before every read (Linux clears it after each ACK). Each response
//! goes out in one `write_all` (length and payload together). Reads are exact, whatever the
//! fragmentation.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::applet::Card;
use crate::crypto::{OsRng, Rng};
use crate::state::CardState;

/// Answer-to-reset: T=1, proprietary historical bytes "CPS-TRUST PIV" (13 bytes).
/// Not a contactless ATR (OpenSC would restrict PIV access over "NFC").
pub fn atr() -> Vec<u8> {
    let hist = b"CPS-TRUST PIV";
    let mut a = vec![0x3B, 0x80 | hist.len() as u8, 0x01];
    a.extend_from_slice(hist);
    let tck = a[1..].iter().fold(0u8, |x, b| x ^ b);
    a.push(tck);
    a
}

/// Shortest time a card stays out of the reader between two connections.
pub const MIN_ABSENCE: Duration = Duration::from_millis(1000);

/// Largest frame accepted from vpcd (an extended APDU with 64 KiB of data and Le).
const MAX_FRAME: usize = 4 + 3 + 65536 + 2;

/// Shared control of one slot (insert/remove while running).
pub struct SlotControl {
    pub slot: u16,
    inserted: AtomicBool,
    connected: AtomicBool,
    apdus: AtomicU64,
    stream: Mutex<Option<TcpStream>>,
}

impl SlotControl {
    pub fn new(slot: u16, inserted: bool) -> Arc<SlotControl> {
        Arc::new(SlotControl {
            slot,
            inserted: AtomicBool::new(inserted),
            connected: AtomicBool::new(false),
            apdus: AtomicU64::new(0),
            stream: Mutex::new(None),
        })
    }

    /// Removes the card: the vpcd connection is closed and not re-opened until `insert`.
    pub fn remove(&self) {
        self.inserted.store(false, Ordering::SeqCst);
        if let Ok(g) = self.stream.lock()
            && let Some(s) = g.as_ref()
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn insert(&self) {
        self.inserted.store(true, Ordering::SeqCst);
    }

    pub fn status(&self) -> String {
        format!(
            "slot {}: {} {} apdus={}",
            self.slot,
            if self.inserted.load(Ordering::SeqCst) {
                "inserted"
            } else {
                "removed"
            },
            if self.connected.load(Ordering::SeqCst) {
                "connected"
            } else {
                "not-connected"
            },
            self.apdus.load(Ordering::SeqCst)
        )
    }
}

/// How a slot is served.
pub struct SlotConfig {
    pub host: String,
    pub port: u16,
    pub state_path: PathBuf,
    /// Crash tests only: pause in the middle of writing the state file.
    pub persist_pause: Option<Duration>,
    /// Benchmarks only: behave like a naive card (no TCP_NODELAY, no TCP_QUICKACK, length and
    /// payload in two writes) to measure the latency trap.
    pub naive_socket: bool,
}

/// Serves one card on one vpcd slot until `stop` is set. Reconnects whenever the connection
/// drops (pcscd restarted, card re-inserted).
pub fn serve(cfg: SlotConfig, state: CardState, ctl: Arc<SlotControl>, stop: Arc<AtomicBool>) {
    let mut card = Card::new(state);
    let mut rng = OsRng;
    let mut announced_wait = false;
    while !stop.load(Ordering::SeqCst) {
        if !ctl.inserted.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let stream = match connect(&cfg.host, cfg.port, !cfg.naive_socket) {
            Ok(s) => s,
            Err(e) => {
                if !announced_wait {
                    eprintln!(
                        "firmware-sim: slot {}: waiting for vpcd at {}:{} ({e})",
                        ctl.slot, cfg.host, cfg.port
                    );
                    announced_wait = true;
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        announced_wait = false;
        eprintln!(
            "firmware-sim: slot {}: card inserted in vpcd {}:{}",
            ctl.slot, cfg.host, cfg.port
        );
        if let (Ok(mut g), Ok(clone)) = (ctl.stream.lock(), stream.try_clone()) {
            *g = Some(clone);
        }
        ctl.connected.store(true, Ordering::SeqCst);
        card.reset();
        let r = session(&cfg, &mut card, stream, &ctl, &mut rng);
        ctl.connected.store(false, Ordering::SeqCst);
        if let Ok(mut g) = ctl.stream.lock() {
            *g = None;
        }
        card.reset();
        match r {
            Ok(()) => eprintln!(
                "firmware-sim: slot {}: vpcd closed the connection",
                ctl.slot
            ),
            Err(e) => eprintln!("firmware-sim: slot {}: connection ended: {e}", ctl.slot),
        }
        // Stay away long enough for pcscd (which polls card presence every 400 ms) to see the
        // removal: if a client's reset fails on a vanished card, pcscd marks the reader empty
        // but its poller only resynchronises after it has itself observed an absent card.
        std::thread::sleep(MIN_ABSENCE);
    }
}

fn connect(host: &str, port: u16, nodelay: bool) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => {
                s.set_nodelay(nodelay)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn quickack(s: &TcpStream) {
    // Best effort: on failure only latency suffers.
    let _ = socket2::SockRef::from(s).set_tcp_quickack(true);
}

/// One connection: frames in, frames out. Returns Ok on a clean close by vpcd.
fn session(
    cfg: &SlotConfig,
    card: &mut Card,
    mut s: TcpStream,
    ctl: &SlotControl,
    rng: &mut dyn Rng,
) -> io::Result<()> {
    let mut len = [0u8; 2];
    let mut buf = vec![0u8; MAX_FRAME];
    let mut out = Vec::with_capacity(600);
    let qa = |s: &TcpStream| {
        if !cfg.naive_socket {
            quickack(s)
        }
    };
    loop {
        qa(&s);
        match s.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let n = u16::from_be_bytes(len) as usize;
        if n > MAX_FRAME {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
        }
        qa(&s);
        s.read_exact(&mut buf[..n])?;
        if !ctl.inserted.load(Ordering::SeqCst) {
            let _ = s.shutdown(Shutdown::Both);
            return Ok(());
        }
        let frame = &buf[..n];
        let reply: Option<Vec<u8>> = match n {
            0 => None,
            1 => match frame[0] {
                0x00..=0x02 => {
                    card.reset();
                    None
                }
                0x04 => Some(atr()),
                _ => None,
            },
            _ => {
                ctl.apdus.fetch_add(1, Ordering::Relaxed);
                let o = card.process(frame, rng);
                if o.persist {
                    if let Err(e) = crate::state::save_bytes(
                        &cfg.state_path,
                        &card.state().to_json(),
                        cfg.persist_pause,
                    ) {
                        // The card could not write its EEPROM: report a memory failure and go
                        // back to what is durably stored.
                        eprintln!("firmware-sim: slot {}: {e}", ctl.slot);
                        if let Ok(st) = CardState::load(&cfg.state_path) {
                            *card = Card::new(st);
                        }
                        Some(vec![0x65, 0x81])
                    } else {
                        Some(o.response)
                    }
                } else {
                    Some(o.response)
                }
            }
        };
        if let Some(r) = reply {
            if cfg.naive_socket {
                s.write_all(&(r.len() as u16).to_be_bytes())?;
                s.write_all(&r)?;
                continue;
            }
            out.clear();
            out.extend_from_slice(&(r.len() as u16).to_be_bytes());
            out.extend_from_slice(&r);
            s.write_all(&out)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atr_is_well_formed() {
        let a = atr();
        assert_eq!(a[0], 0x3B);
        assert_eq!((a[1] & 0x0F) as usize, 13);
        assert_eq!(a.len(), 3 + 13 + 1);
        assert_eq!(a[1..].iter().fold(0u8, |x, b| x ^ b), 0, "TCK");
        // not the contactless pattern 3B 8x 80 01
        assert!(!(a[1] & 0xF0 == 0x80 && a[2] == 0x80 && a[3] == 0x01));
    }

    /// A fake vpcd: frames with the length and payload in separate writes (as vpcd does),
    /// control messages, an APDU, and a clean close.
    #[test]
    fn frames_over_a_fake_vpcd() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card.json");
        let st = CardState::blank([1; 16], "20301231", crate::state::MgmtAlg::Aes192);
        st.save(&path).unwrap();
        let ctl = SlotControl::new(0, true);
        let stop = Arc::new(AtomicBool::new(false));
        let (c2, s2) = (ctl.clone(), stop.clone());
        let t = std::thread::spawn(move || {
            serve(
                SlotConfig {
                    host: "127.0.0.1".into(),
                    port,
                    state_path: path,
                    persist_pause: None,
                    naive_socket: false,
                },
                st,
                c2,
                s2,
            )
        });
        let (mut v, _) = l.accept().unwrap();
        let send = |v: &mut TcpStream, p: &[u8]| {
            v.write_all(&(p.len() as u16).to_be_bytes()).unwrap();
            v.flush().unwrap();
            v.write_all(p).unwrap();
        };
        let recv = |v: &mut TcpStream| {
            let mut l = [0u8; 2];
            v.read_exact(&mut l).unwrap();
            let mut b = vec![0u8; u16::from_be_bytes(l) as usize];
            v.read_exact(&mut b).unwrap();
            b
        };
        send(&mut v, &[0x01]);
        send(&mut v, &[0x04]);
        assert_eq!(recv(&mut v), atr());
        send(
            &mut v,
            &[
                0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00,
            ],
        );
        let r = recv(&mut v);
        assert_eq!(&r[r.len() - 2..], &[0x90, 0x00]);
        assert_eq!(r[0], 0x61);
        send(&mut v, &[0x00, 0x20, 0x00, 0x80]);
        assert_eq!(recv(&mut v), [0x63, 0xC3]);
        assert!(ctl.status().contains("connected"));
        // removal closes the connection
        ctl.remove();
        let mut b = [0u8; 1];
        v.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(v.read(&mut b).unwrap_or(0), 0);
        // re-insert: it connects again
        ctl.insert();
        let (mut v2, _) = l.accept().unwrap();
        send(&mut v2, &[0x04]);
        assert_eq!(recv(&mut v2), atr());
        stop.store(true, Ordering::SeqCst);
        drop(v2);
        t.join().unwrap();
    }
}
