//! The card's persistent state (what a real card keeps in EEPROM) and its atomic persistence.
//!
//! The state file is JSON. It holds the private keys: it *is* the card. No APDU can read a
//! private key; only this file can, which is why it is written owner-only (0600).
//!
//! Persistence is atomic: the new state is written to `<file>.tmp`, fsynced, renamed over the
//! old file, and the directory is fsynced. A crash at any point leaves either the old or the new
//! state; a stale `.tmp` from a crash is ignored and overwritten.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The full PIV AID (NIST RID A000000308, PIX 00001000 0100).
pub const PIV_AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];

/// Default credentials of a blank simulated card.
pub const DEFAULT_PIN: &str = "123456";
pub const DEFAULT_PUK: &str = "12345678";
/// The well-known PIV default management key.
pub const DEFAULT_MGMT_KEY: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];
pub const MAX_TRIES: u8 = 3;
/// Largest data object the card stores (certificates of CPS cards are ~1.5 KiB).
pub const MAX_OBJECT_SIZE: usize = 8192;
/// Largest state file accepted at load.
pub const MAX_STATE_FILE: u64 = 1 << 20;

/// Algorithm of the card management key (SP 800-78-4 identifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MgmtAlg {
    #[serde(rename = "3des")]
    TripleDes,
    Aes128,
    Aes192,
    Aes256,
}

impl MgmtAlg {
    /// The algorithm with SP 800-78-4 identifier `id`.
    pub fn from_id(id: u8) -> Option<MgmtAlg> {
        [
            MgmtAlg::TripleDes,
            MgmtAlg::Aes128,
            MgmtAlg::Aes192,
            MgmtAlg::Aes256,
        ]
        .into_iter()
        .find(|a| a.id() == id)
    }

    pub fn id(self) -> u8 {
        match self {
            MgmtAlg::TripleDes => 0x03,
            MgmtAlg::Aes128 => 0x08,
            MgmtAlg::Aes192 => 0x0A,
            MgmtAlg::Aes256 => 0x0C,
        }
    }
    pub fn key_len(self) -> usize {
        match self {
            MgmtAlg::TripleDes | MgmtAlg::Aes192 => 24,
            MgmtAlg::Aes128 => 16,
            MgmtAlg::Aes256 => 32,
        }
    }
    pub fn block_len(self) -> usize {
        match self {
            MgmtAlg::TripleDes => 8,
            _ => 16,
        }
    }
    pub fn parse(s: &str) -> Option<MgmtAlg> {
        match s.to_ascii_lowercase().as_str() {
            "3des" | "tdes" => Some(MgmtAlg::TripleDes),
            "aes128" => Some(MgmtAlg::Aes128),
            "aes192" => Some(MgmtAlg::Aes192),
            "aes256" => Some(MgmtAlg::Aes256),
            _ => None,
        }
    }
}

/// Private key material of one slot. Big integers are big-endian.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "alg", rename_all = "lowercase")]
pub enum KeyMaterial {
    P256 {
        #[serde(with = "hexbytes")]
        d: Vec<u8>,
    },
    Rsa2048 {
        #[serde(with = "hexbytes")]
        n: Vec<u8>,
        #[serde(with = "hexbytes")]
        e: Vec<u8>,
        #[serde(with = "hexbytes")]
        d: Vec<u8>,
        #[serde(with = "hexbytes")]
        p: Vec<u8>,
        #[serde(with = "hexbytes")]
        q: Vec<u8>,
    },
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyMaterial::P256 { .. } => f.write_str("P256(<private>)"),
            KeyMaterial::Rsa2048 { .. } => f.write_str("Rsa2048(<private>)"),
        }
    }
}

/// Everything the card remembers across power cycles.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, Debug)]
#[serde(deny_unknown_fields)]
pub struct CardState {
    pub format: u32,
    /// PIN as stored by the card: 8 bytes, ASCII digits padded with 0xFF.
    #[serde(with = "hexbytes")]
    pub pin: Vec<u8>,
    pub pin_tries_left: u8,
    #[serde(with = "hexbytes")]
    pub puk: Vec<u8>,
    pub puk_tries_left: u8,
    pub mgmt_alg: MgmtAlg,
    #[serde(with = "hexbytes")]
    pub mgmt_key: Vec<u8>,
    /// Data objects by tag (hex, e.g. "5fc105"), value = the full TLV returned by GET DATA.
    pub objects: BTreeMap<String, HexBytes>,
    /// Private keys by key reference (hex, e.g. "9a").
    pub keys: BTreeMap<String, KeyMaterial>,
}

/// A byte string serialised as hex.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct HexBytes(#[serde(with = "hexbytes")] pub Vec<u8>);

pub const STATE_FORMAT: u32 = 1;

#[derive(Debug)]
pub enum StateError {
    Io(PathBuf, std::io::Error),
    Invalid(PathBuf, String),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::Io(p, e) => write!(f, "card state {}: {e}", p.display()),
            StateError::Invalid(p, m) => write!(f, "card state {} is not valid: {m}", p.display()),
        }
    }
}

impl std::error::Error for StateError {}

/// Pads a PIN/PUK to the 8-byte PIV reference-data format.
pub fn pad_pin(pin: &str) -> Option<Vec<u8>> {
    let b = pin.as_bytes();
    if !(6..=8).contains(&b.len()) || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v = b.to_vec();
    v.resize(8, 0xFF);
    Some(v)
}

/// True if `v` is 8 bytes: 6–8 ASCII digits then 0xFF padding.
pub fn valid_padded_pin(v: &[u8]) -> bool {
    if v.len() != 8 {
        return false;
    }
    let n = v.iter().position(|&b| b == 0xFF).unwrap_or(8);
    n >= 6 && v[..n].iter().all(u8::is_ascii_digit) && v[n..].iter().all(|&b| b == 0xFF)
}

impl CardState {
    /// A blank card: default PIN/PUK/management key, CCC and CHUID derived from `guid`,
    /// `expiry` as "YYYYMMDD".
    pub fn blank(guid: [u8; 16], expiry: &str, mgmt_alg: MgmtAlg) -> CardState {
        let mut objects = BTreeMap::new();
        objects.insert(tag_key(0x5FC107), HexBytes(ccc(&guid)));
        objects.insert(tag_key(0x5FC102), HexBytes(chuid(&guid, expiry)));
        let mgmt_key = match mgmt_alg {
            MgmtAlg::Aes128 => DEFAULT_MGMT_KEY[..16].to_vec(),
            MgmtAlg::Aes256 => [DEFAULT_MGMT_KEY.as_slice(), &DEFAULT_MGMT_KEY[..8]].concat(),
            _ => DEFAULT_MGMT_KEY.to_vec(),
        };
        CardState {
            format: STATE_FORMAT,
            pin: pad_pin(DEFAULT_PIN).unwrap_or_default(),
            pin_tries_left: MAX_TRIES,
            puk: pad_pin(DEFAULT_PUK).unwrap_or_default(),
            puk_tries_left: MAX_TRIES,
            mgmt_alg,
            mgmt_key,
            objects,
            keys: BTreeMap::new(),
        }
    }

    /// Checks every invariant the applet relies on (a hand-edited or corrupted file is refused,
    /// never half-used).
    pub fn validate(&self) -> Result<(), String> {
        if self.format != STATE_FORMAT {
            return Err(format!(
                "format {} (this simulator reads {STATE_FORMAT})",
                self.format
            ));
        }
        if !valid_padded_pin(&self.pin) {
            return Err("PIN is not 6-8 digits padded with FF to 8 bytes".into());
        }
        if !valid_padded_pin(&self.puk) {
            return Err("PUK is not 6-8 digits padded with FF to 8 bytes".into());
        }
        if self.pin_tries_left > MAX_TRIES || self.puk_tries_left > MAX_TRIES {
            return Err(format!("retry counters above {MAX_TRIES}"));
        }
        if self.mgmt_key.len() != self.mgmt_alg.key_len() {
            return Err(format!(
                "management key is {} bytes, {:?} needs {}",
                self.mgmt_key.len(),
                self.mgmt_alg,
                self.mgmt_alg.key_len()
            ));
        }
        for (tag, v) in &self.objects {
            let t = parse_tag_key(tag).ok_or_else(|| format!("object tag '{tag}'"))?;
            if crate::applet::object_info(t).is_none() {
                return Err(format!("object tag '{tag}' is not a PIV data object"));
            }
            if v.0.len() > MAX_OBJECT_SIZE + 8 || crate::tlv::read_single(&v.0).is_err() {
                return Err(format!(
                    "object '{tag}' is not one TLV of at most {MAX_OBJECT_SIZE} bytes"
                ));
            }
        }
        for (slot, k) in &self.keys {
            let s = u8::from_str_radix(slot, 16).map_err(|_| format!("key slot '{slot}'"))?;
            if !crate::applet::ASYM_SLOTS.contains(&s) {
                return Err(format!("key slot '{slot}' is not 9a/9c/9d/9e"));
            }
            crate::crypto::LoadedKey::load(k).map_err(|e| format!("key in slot {slot}: {e}"))?;
        }
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data cannot fail; fall back to an empty document defensively.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    pub fn from_json(b: &[u8]) -> Result<CardState, String> {
        let s: CardState = serde_json::from_slice(b).map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    /// Loads and validates a state file.
    pub fn load(path: &Path) -> Result<CardState, StateError> {
        let meta = std::fs::metadata(path).map_err(|e| StateError::Io(path.into(), e))?;
        if meta.len() > MAX_STATE_FILE {
            return Err(StateError::Invalid(path.into(), "file too large".into()));
        }
        let b = std::fs::read(path).map_err(|e| StateError::Io(path.into(), e))?;
        CardState::from_json(&b).map_err(|m| StateError::Invalid(path.into(), m))
    }

    /// Atomically replaces the state file (see the module documentation).
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        save_bytes(path, &self.to_json(), None)
    }
}

/// Writes `bytes` to `path` atomically. `pause_midway` (crash tests only) sleeps after half of
/// the temporary file is written, to widen the window in which a kill lands mid-write.
pub fn save_bytes(
    path: &Path,
    bytes: &[u8],
    pause_midway: Option<std::time::Duration>,
) -> Result<(), StateError> {
    let err = |e| StateError::Io(path.into(), e);
    let tmp = tmp_path(path);
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        let half = bytes.len() / 2;
        f.write_all(&bytes[..half]).map_err(err)?;
        if let Some(d) = pause_midway {
            f.flush().map_err(err)?;
            std::thread::sleep(d);
        }
        f.write_all(&bytes[half..]).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    Ok(())
}

pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

pub fn tag_key(tag: u32) -> String {
    format!("{tag:02x}")
}

pub fn parse_tag_key(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 6 || !s.len().is_multiple_of(2) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// Card Capability Container (SP 800-73-4 Part 1, Table 8), card identifier from the GUID.
pub fn ccc(guid: &[u8; 16]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut card_id = vec![0xA0, 0x00, 0x00, 0x01, 0x16, 0xFF, 0x02];
    card_id.extend_from_slice(&guid[..14]);
    crate::tlv::put(&mut body, 0xF0, &card_id);
    for (t, v) in [
        (0xF1u32, &[0x21u8][..]),
        (0xF2, &[0x21]),
        (0xF3, &[]),
        (0xF4, &[0x00]),
        (0xF5, &[0x10]),
        (0xF6, &[]),
        (0xF7, &[]),
        (0xFA, &[]),
        (0xFB, &[]),
        (0xFC, &[]),
        (0xFD, &[]),
        (0xFE, &[]),
    ] {
        crate::tlv::put(&mut body, t, v);
    }
    crate::tlv::tlv(0x53, &body)
}

/// Card Holder Unique Identifier (SP 800-73-4 Part 1, Table 9): the non-government FASC-N
/// (agency code 9999), the GUID, an expiration date, an empty issuer signature.
pub fn chuid(guid: &[u8; 16], expiry: &str) -> Vec<u8> {
    const FASCN_9999: [u8; 25] = [
        0xD4, 0xE7, 0x39, 0xDA, 0x73, 0x9C, 0xED, 0x39, 0xCE, 0x73, 0x9D, 0x83, 0x68, 0x58, 0x21,
        0x08, 0x42, 0x10, 0x84, 0x21, 0xC8, 0x42, 0x10, 0xC3, 0xEB,
    ];
    let mut body = Vec::new();
    crate::tlv::put(&mut body, 0x30, &FASCN_9999);
    crate::tlv::put(&mut body, 0x34, guid);
    let mut exp = expiry.as_bytes().to_vec();
    exp.resize(8, b'0');
    crate::tlv::put(&mut body, 0x35, &exp);
    crate::tlv::put(&mut body, 0x3E, &[]);
    crate::tlv::put(&mut body, 0xFE, &[]);
    crate::tlv::tlv(0x53, &body)
}

mod hexbytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins() {
        assert_eq!(pad_pin("123456").unwrap(), b"123456\xFF\xFF");
        assert!(pad_pin("12345").is_none());
        assert!(pad_pin("123456789").is_none());
        assert!(pad_pin("12345a").is_none());
        assert!(valid_padded_pin(b"12345678"));
        assert!(!valid_padded_pin(b"1234\xFF\xFF\xFF\xFF"));
        assert!(!valid_padded_pin(b"123456\xFF1"));
    }

    #[test]
    fn blank_round_trip_and_atomic_save() {
        let s = CardState::blank([7; 16], "20301231", MgmtAlg::Aes192);
        s.validate().unwrap();
        let back = CardState::from_json(&s.to_json()).unwrap();
        assert_eq!(back, s);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("card.json");
        s.save(&p).unwrap();
        assert_eq!(CardState::load(&p).unwrap(), s);
        // a stale half-written temporary file does not matter
        std::fs::write(tmp_path(&p), b"{\"format\":").unwrap();
        assert_eq!(CardState::load(&p).unwrap(), s);
        s.save(&p).unwrap();
    }

    #[test]
    fn corrupt_files_are_refused() {
        let s = CardState::blank([7; 16], "20301231", MgmtAlg::Aes192);
        let mut j: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
        j["pin_tries_left"] = 9.into();
        assert!(CardState::from_json(j.to_string().as_bytes()).is_err());
        assert!(CardState::from_json(b"{").is_err());
        assert!(CardState::from_json(b"").is_err());
        let mut j: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
        j["keys"]["9a"] = serde_json::json!({"alg":"p256","d":"00"});
        assert!(CardState::from_json(j.to_string().as_bytes()).is_err());
    }
}
