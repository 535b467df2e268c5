//! The PIV card applet (NIST SP 800-73-4 card edge) as a pure state machine:
//! `process(command APDU) -> response APDU`. No I/O, no clock; randomness is a parameter.
//!
//! Security conditions:
//! * PIN (key reference 80): 6–8 digits padded with FF, 3 tries; `63Cx` on failure, `6983` once
//!   blocked; an empty VERIFY only reports the status and never logs in.
//! * PUK (81): CHANGE REFERENCE DATA and RESET RETRY COUNTER; also blocks after 3 failures.
//! * Slot 9A (authentication) and 9D (key management): PIN once per card session.
//!   Slot 9C (digital signature): "PIN always" — a successful VERIFY enables exactly one use.
//!   Slot 9E (card authentication): no PIN.
//! * PUT DATA and GENERATE ASYMMETRIC KEY PAIR: card management key (9B) authentication.
//! * Private keys never leave the state; no command returns them.

use crate::apdu::{self, Command, sw};
use crate::crypto::{self, LoadedKey, Rng};
use crate::state::{CardState, MAX_OBJECT_SIZE, MAX_TRIES, PIV_AID, tag_key};
use crate::tlv;
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

/// Asymmetric key slots this card supports.
pub const ASYM_SLOTS: [u8; 4] = [0x9A, 0x9C, 0x9D, 0x9E];
pub const KEY_MGMT: u8 = 0x9B;
pub const REF_PIN: u8 = 0x80;
pub const REF_PUK: u8 = 0x81;

pub const TAG_DISCOVERY: u32 = 0x7E;
pub const TAG_CCC: u32 = 0x5FC107;
pub const TAG_CHUID: u32 = 0x5FC102;
pub const TAG_PRINTED: u32 = 0x5FC109;
/// Proprietary CPS-profile object: the professional's identity summary (readable without PIN).
pub const TAG_CPS_IDENTITY: u32 = 0x5FFF20;

/// Largest command data accepted through command chaining.
pub const MAX_CHAIN: usize = 16 * 1024;

const APP_LABEL: &[u8] = b"CPS-Trust PIV card simulator";

/// Data object metadata: who may read it.
#[derive(Debug, Clone, Copy)]
pub struct ObjectInfo {
    pub name: &'static str,
    /// Reading needs the PIN.
    pub pin: bool,
}

/// The PIV data objects of SP 800-73-4 Part 1 Table 3, plus the CPS identity object.
pub fn object_info(tag: u32) -> Option<ObjectInfo> {
    let (name, pin) = match tag {
        TAG_DISCOVERY => ("Discovery Object", false),
        TAG_CCC => ("Card Capability Container", false),
        TAG_CHUID => ("Card Holder Unique Identifier", false),
        0x5FC105 => ("X.509 Certificate for PIV Authentication", false),
        0x5FC10A => ("X.509 Certificate for Digital Signature", false),
        0x5FC10B => ("X.509 Certificate for Key Management", false),
        0x5FC101 => ("X.509 Certificate for Card Authentication", false),
        0x5FC103 => ("Cardholder Fingerprints", true),
        0x5FC106 => ("Security Object", false),
        0x5FC108 => ("Cardholder Facial Image", true),
        TAG_PRINTED => ("Printed Information", true),
        0x5FC10C => ("Key History Object", false),
        0x5FC10D..=0x5FC120 => ("Retired X.509 Certificate for Key Management", false),
        0x5FC121 => ("Cardholder Iris Images", true),
        0x5FC122 => ("Secure Messaging Certificate Signer", false),
        0x5FC123 => ("Pairing Code Reference Data Container", true),
        0x7F61 => ("Biometric Information Templates Group Template", false),
        TAG_CPS_IDENTITY => ("CPS identity summary", false),
        _ => return None,
    };
    Some(ObjectInfo { name, pin })
}

/// Certificate container of a key slot.
pub fn cert_tag(slot: u8) -> Option<u32> {
    match slot {
        0x9A => Some(0x5FC105),
        0x9C => Some(0x5FC10A),
        0x9D => Some(0x5FC10B),
        0x9E => Some(0x5FC101),
        _ => None,
    }
}

/// Result of one command: the response APDU and whether the persistent state changed (the
/// caller must persist it *before* sending the response).
#[derive(Debug)]
pub struct Output {
    pub response: Vec<u8>,
    pub persist: bool,
}

/// Volatile state: lost at power-off or reset.
#[derive(Default)]
struct Session {
    pin_verified: bool,
    /// Set by a successful VERIFY; consumed by one use of the 9C key.
    pin_always: bool,
    mgmt_auth: bool,
    pending_witness: Option<Vec<u8>>,
    pending_challenge: Option<Vec<u8>>,
    chain: Option<Chain>,
    /// Remaining response bytes for GET RESPONSE.
    out: Vec<u8>,
}

struct Chain {
    ins: u8,
    p1: u8,
    p2: u8,
    data: Vec<u8>,
}

/// A handler's result before Le/response chaining is applied.
struct Reply {
    data: Vec<u8>,
    sw: u16,
    persist: bool,
}

impl Reply {
    fn sw(sw: u16) -> Reply {
        Reply {
            data: Vec::new(),
            sw,
            persist: false,
        }
    }
    fn ok(data: Vec<u8>) -> Reply {
        Reply {
            data,
            sw: sw::OK,
            persist: false,
        }
    }
    fn persisted(mut self) -> Reply {
        self.persist = true;
        self
    }
}

/// The card: persistent state + parsed keys + session.
pub struct Card {
    state: CardState,
    keys: BTreeMap<u8, LoadedKey>,
    session: Session,
}

impl Card {
    /// Builds a card from a validated state (see [`CardState::validate`]). Keys that fail to
    /// parse are dropped (a validated state has none).
    pub fn new(state: CardState) -> Card {
        let mut keys = BTreeMap::new();
        for (slot, m) in &state.keys {
            if let (Ok(s), Ok(k)) = (u8::from_str_radix(slot, 16), LoadedKey::load(m)) {
                keys.insert(s, k);
            }
        }
        Card {
            state,
            keys,
            session: Session::default(),
        }
    }

    pub fn state(&self) -> &CardState {
        &self.state
    }

    /// Power-off, power-on or warm reset: the session (PIN status, management-key
    /// authentication, pending chains and responses) is lost.
    pub fn reset(&mut self) {
        self.session = Session::default();
    }

    /// Processes one command APDU. Never panics; every input gets a status word.
    pub fn process(&mut self, apdu: &[u8], rng: &mut dyn Rng) -> Output {
        let cmd = match Command::parse(apdu) {
            Ok(c) => c,
            Err(_) => {
                self.session.out.clear();
                self.session.chain = None;
                return Output {
                    response: apdu::response(&[], sw::WRONG_LENGTH),
                    persist: false,
                };
            }
        };
        let ne = cmd.le.unwrap_or(if cmd.extended { 65536 } else { 256 });

        if cmd.cla & !0x10 != 0 {
            let s = if cmd.cla & 0x0C != 0 && cmd.cla & 0xE0 == 0 {
                sw::SM_NOT_SUPPORTED
            } else {
                sw::CLA_NOT_SUPPORTED
            };
            return self.finish(Reply::sw(s), ne);
        }

        if cmd.ins == 0xC0 {
            return self.get_response(&cmd, ne);
        }
        self.session.out.clear();

        // Command chaining (CLA b5): accumulate, answer 9000, process on the last part.
        let data: Vec<u8>;
        let body: &[u8] = match self.session.chain.take() {
            Some(mut ch) if (ch.ins, ch.p1, ch.p2) == (cmd.ins, cmd.p1, cmd.p2) => {
                if ch.data.len() + cmd.data.len() > MAX_CHAIN {
                    return self.finish(Reply::sw(sw::NOT_ENOUGH_MEMORY), ne);
                }
                ch.data.extend_from_slice(cmd.data);
                if cmd.chained() {
                    self.session.chain = Some(ch);
                    return self.finish(Reply::sw(sw::OK), ne);
                }
                data = ch.data;
                &data
            }
            _ => {
                if cmd.chained() {
                    if !matches!(cmd.ins, 0xDB | 0x87 | 0x20 | 0x24 | 0x2C | 0x47 | 0xCB) {
                        return self.finish(Reply::sw(sw::INS_NOT_SUPPORTED), ne);
                    }
                    self.session.chain = Some(Chain {
                        ins: cmd.ins,
                        p1: cmd.p1,
                        p2: cmd.p2,
                        data: cmd.data.to_vec(),
                    });
                    return self.finish(Reply::sw(sw::OK), ne);
                }
                cmd.data
            }
        };

        let reply = match cmd.ins {
            0xA4 => self.select(cmd.p1, cmd.p2, body),
            0xCB => self.get_data(cmd.p1, cmd.p2, body),
            0xDB => self.put_data(cmd.p1, cmd.p2, body),
            0x20 => self.verify(cmd.p1, cmd.p2, body),
            0x24 => self.change_reference(cmd.p1, cmd.p2, body),
            0x2C => self.reset_retry(cmd.p1, cmd.p2, body),
            0x87 => self.general_authenticate(cmd.p1, cmd.p2, body, rng),
            0x47 => self.generate(cmd.p1, cmd.p2, body, rng),
            0xFF => self.set_management_key(cmd.p1, cmd.p2, body),
            _ => Reply::sw(sw::INS_NOT_SUPPORTED),
        };
        self.finish(reply, ne)
    }

    /// Applies Ne: a response longer than Ne is split with `61xx` + GET RESPONSE.
    fn finish(&mut self, r: Reply, ne: usize) -> Output {
        let response = if r.sw == sw::OK && r.data.len() > ne {
            let first = r.data[..ne].to_vec();
            self.session.out = r.data[ne..].to_vec();
            let left = self.session.out.len().min(256) as u8; // 256 → 00
            apdu::response(&first, 0x6100 | left as u16)
        } else {
            apdu::response(&r.data, r.sw)
        };
        Output {
            response,
            persist: r.persist,
        }
    }

    fn get_response(&mut self, cmd: &Command<'_>, ne: usize) -> Output {
        self.session.chain = None;
        if cmd.p1 != 0 || cmd.p2 != 0 {
            return self.finish(Reply::sw(sw::WRONG_P1P2), ne);
        }
        if !cmd.data.is_empty() {
            self.session.out.clear();
            return self.finish(Reply::sw(sw::WRONG_LENGTH), ne);
        }
        if self.session.out.is_empty() {
            return self.finish(Reply::sw(sw::CONDITIONS_NOT_SATISFIED), ne);
        }
        let data = std::mem::take(&mut self.session.out);
        self.finish(Reply::ok(data), ne)
    }

    // ---- SELECT -----------------------------------------------------------------------------

    fn select(&mut self, p1: u8, p2: u8, aid: &[u8]) -> Reply {
        if p1 != 0x04 || (p2 != 0x00 && p2 != 0x0C) {
            return Reply::sw(sw::WRONG_P1P2);
        }
        // Full AID or a right-truncated one (at least the RID).
        if aid.len() < 5 || aid.len() > PIV_AID.len() || !PIV_AID.starts_with(aid) {
            return Reply::sw(sw::NOT_FOUND);
        }
        if p2 == 0x0C {
            return Reply::sw(sw::OK);
        }
        Reply::ok(application_property_template())
    }

    // ---- GET DATA / PUT DATA ----------------------------------------------------------------

    fn get_data(&mut self, p1: u8, p2: u8, body: &[u8]) -> Reply {
        if (p1, p2) != (0x3F, 0xFF) {
            return Reply::sw(sw::WRONG_P1P2);
        }
        let Ok(t) = tlv::read_single(body) else {
            return Reply::sw(sw::WRONG_DATA);
        };
        if t.tag != 0x5C || t.value.is_empty() || t.value.len() > 3 {
            return Reply::sw(sw::WRONG_DATA);
        }
        let tag = t.value.iter().fold(0u32, |a, &b| (a << 8) | b as u32);
        let Some(info) = object_info(tag) else {
            return Reply::sw(sw::NOT_FOUND);
        };
        if info.pin && !self.session.pin_verified {
            return Reply::sw(sw::SECURITY_STATUS);
        }
        if tag == TAG_DISCOVERY {
            return Reply::ok(discovery_object());
        }
        match self.state.objects.get(&tag_key(tag)) {
            Some(v) => Reply::ok(v.0.clone()),
            None => Reply::sw(sw::NOT_FOUND),
        }
    }

    /// SET MANAGEMENT KEY (`00 FF FF FF|FE`, data `alg 9B len key`), the command PIV cards of
    /// the YubiKey family use to replace the card management key. Needs the current management
    /// key authenticated in this session; the new key must fit its algorithm.
    fn set_management_key(&mut self, p1: u8, p2: u8, body: &[u8]) -> Reply {
        if p1 != 0xFF || !(p2 == 0xFF || p2 == 0xFE) {
            return Reply::sw(sw::WRONG_P1P2);
        }
        if !self.session.mgmt_auth {
            return Reply::sw(sw::SECURITY_STATUS);
        }
        let [alg, 0x9B, len, key @ ..] = body else {
            return Reply::sw(sw::WRONG_DATA);
        };
        let Some(alg) = crate::state::MgmtAlg::from_id(*alg) else {
            return Reply::sw(sw::WRONG_DATA);
        };
        if usize::from(*len) != key.len() || key.len() != alg.key_len() {
            return Reply::sw(sw::WRONG_DATA);
        }
        self.state.mgmt_alg = alg;
        self.state.mgmt_key = key.to_vec();
        Reply::sw(sw::OK).persisted()
    }

    fn put_data(&mut self, p1: u8, p2: u8, body: &[u8]) -> Reply {
        if (p1, p2) != (0x3F, 0xFF) {
            return Reply::sw(sw::WRONG_P1P2);
        }
        if !self.session.mgmt_auth {
            return Reply::sw(sw::SECURITY_STATUS);
        }
        let Ok((t, rest)) = tlv::read(body) else {
            return Reply::sw(sw::WRONG_DATA);
        };
        if t.tag != 0x5C || t.value.is_empty() || t.value.len() > 3 {
            return Reply::sw(sw::WRONG_DATA);
        }
        let tag = t.value.iter().fold(0u32, |a, &b| (a << 8) | b as u32);
        if object_info(tag).is_none() {
            return Reply::sw(sw::NOT_FOUND);
        }
        if tag == TAG_DISCOVERY {
            return Reply::sw(sw::FUNC_NOT_SUPPORTED);
        }
        let Ok(obj) = tlv::read_single(rest) else {
            return Reply::sw(sw::WRONG_DATA);
        };
        let expected = if tag == 0x7F61 { 0x7F61 } else { 0x53 };
        if obj.tag != expected {
            return Reply::sw(sw::WRONG_DATA);
        }
        if obj.value.len() > MAX_OBJECT_SIZE {
            return Reply::sw(sw::NOT_ENOUGH_MEMORY);
        }
        if obj.value.is_empty() {
            self.state.objects.remove(&tag_key(tag));
        } else {
            self.state
                .objects
                .insert(tag_key(tag), crate::state::HexBytes(rest.to_vec()));
        }
        Reply::sw(sw::OK).persisted()
    }

    // ---- PIN / PUK --------------------------------------------------------------------------

    fn verify(&mut self, p1: u8, p2: u8, body: &[u8]) -> Reply {
        if p1 == 0xFF {
            // Reset the verification status (SP 800-73-4 3.2.1).
            if p2 != REF_PIN {
                return Reply::sw(sw::REF_NOT_FOUND);
            }
            if !body.is_empty() {
                return Reply::sw(sw::WRONG_LENGTH);
            }
            self.session.pin_verified = false;
            self.session.pin_always = false;
            return Reply::sw(sw::OK);
        }
        if p1 != 0x00 {
            return Reply::sw(sw::WRONG_P1P2);
        }
        if p2 != REF_PIN {
            return Reply::sw(sw::REF_NOT_FOUND);
        }
        if body.is_empty() {
            // Status only: never a login.
            return if self.state.pin_tries_left == 0 {
                Reply::sw(sw::AUTH_BLOCKED)
            } else if self.session.pin_verified {
                Reply::sw(sw::OK)
            } else {
                Reply::sw(sw::tries_left(self.state.pin_tries_left))
            };
        }
        if self.state.pin_tries_left == 0 {
            return Reply::sw(sw::AUTH_BLOCKED);
        }
        if body.len() != 8 {
            return Reply::sw(sw::WRONG_DATA);
        }
        self.session.pin_always = false;
        if bool::from(body.ct_eq(&self.state.pin)) {
            self.session.pin_verified = true;
            self.session.pin_always = true;
            if self.state.pin_tries_left != MAX_TRIES {
                self.state.pin_tries_left = MAX_TRIES;
                return Reply::sw(sw::OK).persisted();
            }
            Reply::sw(sw::OK)
        } else {
            self.session.pin_verified = false;
            self.state.pin_tries_left -= 1;
            Reply::sw(sw::tries_left(self.state.pin_tries_left)).persisted()
        }
    }

    /// Checks an old PIN/PUK value against `reference`, counting a failure.
    fn check_reference(&mut self, reference: u8, value: &[u8]) -> Result<bool, Reply> {
        let (stored, tries) = match reference {
            REF_PIN => (&self.state.pin, &mut self.state.pin_tries_left),
            _ => (&self.state.puk, &mut self.state.puk_tries_left),
        };
        if *tries == 0 {
            return Err(Reply::sw(sw::AUTH_BLOCKED));
        }
        if bool::from(value.ct_eq(stored)) {
            let changed = *tries != MAX_TRIES;
            *tries = MAX_TRIES;
            Ok(changed)
        } else {
            *tries -= 1;
            if reference == REF_PIN {
                self.session.pin_verified = false;
                self.session.pin_always = false;
            }
            Err(Reply::sw(sw::tries_left(*tries)).persisted())
        }
    }

    fn change_reference(&mut self, p1: u8, p2: u8, body: &[u8]) -> Reply {
        if p1 != 0x00 {
            return Reply::sw(sw::WRONG_P1P2);
        }
        if p2 != REF_PIN && p2 != REF_PUK {
            return Reply::sw(sw::REF_NOT_FOUND);
        }
        if body.len() != 16 {
            return Reply::sw(sw::WRONG_DATA);
        }
        let (old, new) = body.split_at(8);
        if !crate::state::valid_padded_pin(new) {
            return Reply::sw(sw::WRONG_DATA);
        }
        if let Err(r) = self.check_reference(p2, old) {
            return r;
        }
        if p2 == REF_PIN {
            self.state.pin = new.to_vec();
            self.session.pin_verified = true;
        } else {
            self.state.puk = new.to_vec();
        }
        Reply::sw(sw::OK).persisted()
    }

    fn reset_retry(&mut self, p1: u8, p2: u8, body: &[u8]) -> Reply {
        if p1 != 0x00 {
            return Reply::sw(sw::WRONG_P1P2);
        }
        if p2 != REF_PIN {
            return Reply::sw(sw::REF_NOT_FOUND);
        }
        if body.len() != 16 {
            return Reply::sw(sw::WRONG_DATA);
        }
        let (puk, new) = body.split_at(8);
        if !crate::state::valid_padded_pin(new) {
            return Reply::sw(sw::WRONG_DATA);
        }
        if let Err(r) = self.check_reference(REF_PUK, puk) {
            return r;
        }
        self.state.pin = new.to_vec();
        self.state.pin_tries_left = MAX_TRIES;
        self.session.pin_verified = false;
        self.session.pin_always = false;
        Reply::sw(sw::OK).persisted()
    }

    // ---- GENERAL AUTHENTICATE ---------------------------------------------------------------

    fn general_authenticate(&mut self, p1: u8, p2: u8, body: &[u8], rng: &mut dyn Rng) -> Reply {
        let Ok(outer) = tlv::read_single(body) else {
            return Reply::sw(sw::WRONG_DATA);
        };
        if outer.tag != 0x7C {
            return Reply::sw(sw::WRONG_DATA);
        }
        let Ok(items) = tlv::read_all(outer.value, 4) else {
            return Reply::sw(sw::WRONG_DATA);
        };
        let mut parts: [Option<&[u8]>; 6] = [None; 6]; // tags 80..85
        for it in &items {
            match it.tag {
                0x80..=0x85 => {
                    let i = (it.tag - 0x80) as usize;
                    if parts[i].is_some() {
                        return Reply::sw(sw::WRONG_DATA);
                    }
                    parts[i] = Some(it.value);
                }
                _ => return Reply::sw(sw::WRONG_DATA),
            }
        }
        if p2 == KEY_MGMT {
            return self.mgmt_authenticate(p1, parts, rng);
        }
        if !ASYM_SLOTS.contains(&p2) {
            return Reply::sw(sw::WRONG_P1P2);
        }
        // Any other use of GENERAL AUTHENTICATE abandons a management-key exchange.
        self.session.pending_witness = None;
        self.session.pending_challenge = None;
        let Some(key) = self.keys.get(&p2) else {
            return Reply::sw(sw::REF_NOT_FOUND);
        };
        if key.alg() != p1 {
            return Reply::sw(sw::WRONG_P1P2);
        }
        // Request: 82 empty (response wanted) + 81 (challenge) or 85 (ECDH peer point).
        let wants_response = matches!(parts[2], Some(v) if v.is_empty());
        let input = match (parts[1], parts[5]) {
            (Some(c), None) => (false, c),
            (None, Some(pt)) => (true, pt),
            _ => return Reply::sw(sw::WRONG_DATA),
        };
        if !wants_response || parts[0].is_some() || parts[3].is_some() || parts[4].is_some() {
            return Reply::sw(sw::WRONG_DATA);
        }
        // Access rules.
        match p2 {
            0x9A | 0x9D if !self.session.pin_verified => {
                return Reply::sw(sw::SECURITY_STATUS);
            }
            0x9C if !(self.session.pin_verified && self.session.pin_always) => {
                return Reply::sw(sw::SECURITY_STATUS);
            }
            _ => {}
        }
        let result = match (key, input) {
            (LoadedKey::P256(k), (false, digest)) => crypto::ecdsa_sign(k, digest),
            (LoadedKey::P256(k), (true, point)) => crypto::ecdh(k, point),
            (LoadedKey::Rsa2048(k), (false, block)) => crypto::rsa_raw(k, block, rng),
            (LoadedKey::Rsa2048(_), (true, _)) => return Reply::sw(sw::WRONG_DATA),
        };
        let out = match result {
            Ok(v) => v,
            Err(_) => return Reply::sw(sw::WRONG_DATA),
        };
        if p2 == 0x9C {
            self.session.pin_always = false;
        }
        Reply::ok(tlv::tlv(0x7C, &tlv::tlv(0x82, &out)))
    }

    fn mgmt_authenticate(&mut self, p1: u8, parts: [Option<&[u8]>; 6], rng: &mut dyn Rng) -> Reply {
        let alg = self.state.mgmt_alg;
        let bl = alg.block_len();
        let witness = std::mem::take(&mut self.session.pending_witness);
        let challenge = std::mem::take(&mut self.session.pending_challenge);
        // "81 00" with P1=00: a plain random challenge (used by hosts as GET CHALLENGE).
        if p1 == 0x00 && parts[1] == Some(&[][..]) && parts[0].is_none() && parts[2].is_none() {
            let mut c = vec![0u8; bl];
            rng.fill(&mut c);
            return Reply::ok(tlv::tlv(0x7C, &tlv::tlv(0x81, &c)));
        }
        if p1 != alg.id() {
            return Reply::sw(sw::WRONG_P1P2);
        }
        let enc = |b: &[u8]| crypto::mgmt_cipher(alg, &self.state.mgmt_key, b, true);
        match (parts[0], parts[1], parts[2]) {
            // Step 1 of mutual authentication: witness request.
            (Some([]), None, None) => {
                let mut plain = vec![0u8; bl];
                rng.fill(&mut plain);
                let Some(c) = enc(&plain) else {
                    return Reply::sw(sw::UNKNOWN);
                };
                self.session.pending_witness = Some(plain);
                self.session.mgmt_auth = false;
                Reply::ok(tlv::tlv(0x7C, &tlv::tlv(0x80, &c)))
            }
            // Step 2: decrypted witness + host challenge; answer the encrypted challenge.
            (Some(w), Some(host_challenge), None) if !w.is_empty() => {
                let Some(expected) = witness else {
                    return Reply::sw(sw::CONDITIONS_NOT_SATISFIED);
                };
                if host_challenge.len() != bl {
                    return Reply::sw(sw::WRONG_DATA);
                }
                if w.len() != bl || !bool::from(w.ct_eq(&expected)) {
                    return Reply::sw(sw::SECURITY_STATUS);
                }
                let Some(c) = enc(host_challenge) else {
                    return Reply::sw(sw::UNKNOWN);
                };
                self.session.mgmt_auth = true;
                Reply::ok(tlv::tlv(0x7C, &tlv::tlv(0x82, &c)))
            }
            // External authentication, step 1: challenge request.
            (None, Some([]), None) => {
                let mut plain = vec![0u8; bl];
                rng.fill(&mut plain);
                self.session.pending_challenge = Some(plain.clone());
                self.session.mgmt_auth = false;
                Reply::ok(tlv::tlv(0x7C, &tlv::tlv(0x81, &plain)))
            }
            // External authentication, step 2: the host's encryption of our challenge.
            (None, None, Some(resp)) if !resp.is_empty() => {
                let Some(plain) = challenge else {
                    return Reply::sw(sw::CONDITIONS_NOT_SATISFIED);
                };
                let Some(expected) = enc(&plain) else {
                    return Reply::sw(sw::UNKNOWN);
                };
                if resp.len() != bl || !bool::from(resp.ct_eq(&expected)) {
                    return Reply::sw(sw::SECURITY_STATUS);
                }
                self.session.mgmt_auth = true;
                Reply::sw(sw::OK)
            }
            _ => Reply::sw(sw::WRONG_DATA),
        }
    }

    // ---- GENERATE ASYMMETRIC KEY PAIR ------------------------------------------------------

    fn generate(&mut self, p1: u8, p2: u8, body: &[u8], rng: &mut dyn Rng) -> Reply {
        if p1 != 0x00 || !ASYM_SLOTS.contains(&p2) {
            return Reply::sw(sw::WRONG_P1P2);
        }
        if !self.session.mgmt_auth {
            return Reply::sw(sw::SECURITY_STATUS);
        }
        let Ok(ac) = tlv::read_single(body) else {
            return Reply::sw(sw::WRONG_DATA);
        };
        if ac.tag != 0xAC {
            return Reply::sw(sw::WRONG_DATA);
        }
        let Ok(items) = tlv::read_all(ac.value, 8) else {
            return Reply::sw(sw::WRONG_DATA);
        };
        let mut alg = None;
        for it in &items {
            match (it.tag, it.value) {
                (0x80, [a]) => alg = Some(*a),
                // Yubico-style PIN/touch policies are accepted and ignored.
                (0xAA | 0xAB, [_]) => {}
                _ => return Reply::sw(sw::WRONG_DATA),
            }
        }
        let Some(alg) = alg else {
            return Reply::sw(sw::WRONG_DATA);
        };
        if alg != crypto::ALG_P256 && alg != crypto::ALG_RSA2048 {
            return Reply::sw(sw::WRONG_DATA);
        }
        let Some((material, key)) = crypto::generate(alg, rng) else {
            return Reply::sw(sw::UNKNOWN);
        };
        let public = key.public_template();
        self.state.keys.insert(format!("{p2:02x}"), material);
        self.keys.insert(p2, key);
        Reply::ok(public).persisted()
    }

    /// Whether a key pair exists in `slot` (inspection; the key itself is never exposed).
    pub fn has_key(&self, slot: u8) -> bool {
        self.keys.contains_key(&slot)
    }
}

/// Application property template answered to SELECT (SP 800-73-4 Part 1, Table 3).
pub fn application_property_template() -> Vec<u8> {
    let mut body = Vec::new();
    tlv::put(&mut body, 0x4F, &PIV_AID[5..]);
    tlv::put(&mut body, 0x79, &tlv::tlv(0x4F, &PIV_AID[..5]));
    tlv::put(&mut body, 0x50, APP_LABEL);
    let mut algs = Vec::new();
    for a in [0x03u8, 0x08, 0x0A, 0x0C, 0x07, 0x11] {
        tlv::put(&mut algs, 0x80, &[a]);
    }
    tlv::put(&mut algs, 0x06, &[0x00]);
    tlv::put(&mut body, 0xAC, &algs);
    tlv::tlv(0x61, &body)
}

/// Discovery object: the PIV AID and the PIN usage policy (PIV PIN only).
pub fn discovery_object() -> Vec<u8> {
    let mut body = Vec::new();
    tlv::put(&mut body, 0x4F, &PIV_AID);
    tlv::put(&mut body, 0x5F2F, &[0x40, 0x00]);
    tlv::tlv(0x7E, &body)
}

#[cfg(test)]
mod tests;
