//! PC/SC through the `pcsc` crate: readers, waiting for a card, connecting, raw transmit.
//!
//! Calls block: from async code run them on a blocking task. libpcsclite reads
//! `PCSCLITE_CSOCK_NAME` (once per process) to find a pcscd socket other than `/run/pcscd`.

use std::ffi::CString;
use std::time::{Duration, Instant};

use crate::Transport;
use crate::error::{CardError, Result};

/// A reader and what is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderInfo {
    pub name: String,
    pub card_present: bool,
    /// ATR of the card, empty without a card.
    pub atr: Vec<u8>,
}

/// A PC/SC context (one per thread of use).
pub struct Pcsc {
    ctx: pcsc::Context,
}

fn pcsc_err(op: &'static str) -> impl Fn(pcsc::Error) -> CardError {
    move |e| match e {
        pcsc::Error::NoService | pcsc::Error::ServiceStopped | pcsc::Error::NoReadersAvailable
            if op == "establish" =>
        {
            CardError::NoService(e)
        }
        pcsc::Error::NoService | pcsc::Error::ServiceStopped => CardError::NoService(e),
        pcsc::Error::RemovedCard | pcsc::Error::ResetCard => CardError::CardRemoved,
        _ => CardError::Pcsc { op, source: e },
    }
}

impl Pcsc {
    /// Connects to pcscd.
    pub fn establish() -> Result<Pcsc> {
        let ctx = pcsc::Context::establish(pcsc::Scope::User).map_err(pcsc_err("establish"))?;
        Ok(Pcsc { ctx })
    }

    fn reader_names(&self) -> Result<Vec<CString>> {
        match self.ctx.list_readers_owned() {
            Ok(v) => Ok(v),
            Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
            Err(e) => Err(pcsc_err("list readers")(e)),
        }
    }

    /// Every reader with its card state.
    pub fn readers(&self) -> Result<Vec<ReaderInfo>> {
        let names = self.reader_names()?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut states: Vec<pcsc::ReaderState> = names
            .iter()
            .map(|n| pcsc::ReaderState::new(n.clone(), pcsc::State::UNAWARE))
            .collect();
        self.ctx
            .get_status_change(Duration::from_millis(0), &mut states)
            .or_else(|e| {
                if e == pcsc::Error::Timeout {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(pcsc_err("get status"))?;
        Ok(states
            .iter()
            .map(|s| {
                let present = s.event_state().contains(pcsc::State::PRESENT);
                ReaderInfo {
                    name: s.name().to_string_lossy().into_owned(),
                    card_present: present,
                    atr: if present {
                        s.atr().to_vec()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect())
    }

    /// Resolves a reader name: the exact name, else a unique reader whose name contains it.
    /// With `None`, the only reader holding a card.
    pub fn resolve_reader(&self, wanted: Option<&str>) -> Result<String> {
        let readers = self.readers()?;
        if readers.is_empty() {
            return Err(CardError::NoReaders);
        }
        let list = || {
            readers
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match wanted {
            Some(w) => {
                if let Some(r) = readers.iter().find(|r| r.name == w) {
                    return Ok(r.name.clone());
                }
                let m: Vec<_> = readers.iter().filter(|r| r.name.contains(w)).collect();
                match m.as_slice() {
                    [one] => Ok(one.name.clone()),
                    _ => Err(CardError::ReaderNotFound {
                        reader: w.to_string(),
                        available: list(),
                    }),
                }
            }
            None => {
                let with_card: Vec<_> = readers.iter().filter(|r| r.card_present).collect();
                match with_card.as_slice() {
                    [one] => Ok(one.name.clone()),
                    [] if readers.len() == 1 => Err(CardError::NoCard(readers[0].name.clone())),
                    [] => Err(CardError::NoCard(list())),
                    many => Err(CardError::AmbiguousReader(
                        many.iter()
                            .map(|r| r.name.clone())
                            .collect::<Vec<_>>()
                            .join(", "),
                    )),
                }
            }
        }
    }

    /// Blocks until a card is present in `reader` (or `timeout`).
    pub fn wait_for_card(&self, reader: &str, timeout: Duration) -> Result<()> {
        let name =
            CString::new(reader).map_err(|_| CardError::Invalid("reader name with NUL".into()))?;
        let mut st = [pcsc::ReaderState::new(name, pcsc::State::UNAWARE)];
        let t0 = Instant::now();
        loop {
            let left = timeout.saturating_sub(t0.elapsed());
            match self
                .ctx
                .get_status_change(left.min(Duration::from_millis(500)), &mut st)
            {
                Ok(()) | Err(pcsc::Error::Timeout) => {}
                Err(pcsc::Error::UnknownReader) => {
                    return Err(CardError::ReaderNotFound {
                        reader: reader.into(),
                        available: self
                            .readers()
                            .map(|v| v.into_iter().map(|r| r.name).collect::<Vec<_>>().join(", "))
                            .unwrap_or_default(),
                    });
                }
                Err(e) => return Err(pcsc_err("wait for card")(e)),
            }
            let ev = st[0].event_state();
            if ev.contains(pcsc::State::PRESENT) && !ev.contains(pcsc::State::MUTE) {
                return Ok(());
            }
            st[0].sync_current_state();
            if t0.elapsed() >= timeout {
                return Err(CardError::Timeout {
                    reader: reader.into(),
                    secs: timeout.as_secs(),
                });
            }
        }
    }

    /// Connects to the card in `reader` (shared mode, T=0 or T=1).
    pub fn connect(&self, reader: &str) -> Result<PcscCard> {
        let name =
            CString::new(reader).map_err(|_| CardError::Invalid("reader name with NUL".into()))?;
        let card = self
            .ctx
            .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
            .map_err(|e| match e {
                pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard => {
                    CardError::NoCard(reader.into())
                }
                pcsc::Error::UnknownReader => CardError::ReaderNotFound {
                    reader: reader.into(),
                    available: self
                        .readers()
                        .map(|v| v.into_iter().map(|r| r.name).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default(),
                },
                e => pcsc_err("connect")(e),
            })?;
        Ok(PcscCard {
            card: Some(card),
            reader: reader.to_string(),
            buf: vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED],
            leave_on_drop: false,
        })
    }
}

/// A connected card. Dropping it *resets* the card (so no PIN verification state is left for
/// another process to reuse) unless [`PcscCard::leave_verified_on_drop`] was called.
pub struct PcscCard {
    card: Option<pcsc::Card>,
    reader: String,
    buf: Vec<u8>,
    leave_on_drop: bool,
}

impl PcscCard {
    pub fn reader(&self) -> &str {
        &self.reader
    }

    /// The card's ATR.
    pub fn atr(&self) -> Result<Vec<u8>> {
        let card = self.card.as_ref().ok_or(CardError::CardRemoved)?;
        let st = card.status2_owned().map_err(pcsc_err("status"))?;
        Ok(st.atr().to_vec())
    }

    /// Reset the card now (warm reset through PC/SC): any PIN verification another process left
    /// on the card — OpenSC disconnects with "leave card" — is gone afterwards.
    pub fn reset(&mut self) -> Result<()> {
        let card = self.card.as_mut().ok_or(CardError::CardRemoved)?;
        card.reconnect(
            pcsc::ShareMode::Shared,
            pcsc::Protocols::ANY,
            pcsc::Disposition::ResetCard,
        )
        .map_err(pcsc_err("reconnect"))
    }

    /// Keep the card's security state when this handle is dropped (default: reset).
    pub fn leave_verified_on_drop(&mut self) {
        self.leave_on_drop = true;
    }

    /// Disconnects, resetting the card (`reset = true`) or leaving it as it is.
    pub fn disconnect(mut self, reset: bool) -> Result<()> {
        if let Some(c) = self.card.take() {
            let d = if reset {
                pcsc::Disposition::ResetCard
            } else {
                pcsc::Disposition::LeaveCard
            };
            c.disconnect(d)
                .map_err(|(_, e)| pcsc_err("disconnect")(e))?;
        }
        Ok(())
    }
}

impl Drop for PcscCard {
    fn drop(&mut self) {
        if let Some(c) = self.card.take() {
            let d = if self.leave_on_drop {
                pcsc::Disposition::LeaveCard
            } else {
                pcsc::Disposition::ResetCard
            };
            let _ = c.disconnect(d);
        }
    }
}

impl Transport for PcscCard {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>> {
        let card = self.card.as_ref().ok_or(CardError::CardRemoved)?;
        let r = card
            .transmit(apdu, &mut self.buf)
            .map_err(pcsc_err("transmit"))?;
        Ok(r.to_vec())
    }
}
