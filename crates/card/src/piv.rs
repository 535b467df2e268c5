//! PIV card-edge client (NIST SP 800-73-4 Part 2) over any [`Transport`]: command chaining for
//! long commands, `61xx`/GET RESPONSE and `6Cxx` for long answers, status words mapped to
//! actionable [`CardError`]s.

use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use crate::error::{CardError, Result};
use crate::identity::CpsIdentity;
use crate::keys::{KeyAlgorithm, PublicKey, pkcs1_v15_sha256};
use crate::{Transport, tlv};

/// The PIV AID (right-truncated form accepted by every PIV card).
pub const PIV_AID: [u8; 9] = [0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00];

pub const TAG_CHUID: u32 = 0x5FC102;
pub const TAG_CCC: u32 = 0x5FC107;
pub const TAG_PRINTED: u32 = 0x5FC109;
/// The CPS-profile identity object (proprietary tag of this project's cards).
pub const TAG_CPS_IDENTITY: u32 = 0x5FFF20;

/// PIV asymmetric key slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    /// 9A: PIV authentication (card login; PIN once per session).
    Authentication,
    /// 9C: digital signature (PIN before every use).
    Signature,
    /// 9D: key management.
    KeyManagement,
    /// 9E: card authentication (no PIN).
    CardAuthentication,
}

impl Slot {
    pub const ALL: [Slot; 4] = [
        Slot::Authentication,
        Slot::Signature,
        Slot::KeyManagement,
        Slot::CardAuthentication,
    ];
    pub fn key_ref(self) -> u8 {
        match self {
            Slot::Authentication => 0x9A,
            Slot::Signature => 0x9C,
            Slot::KeyManagement => 0x9D,
            Slot::CardAuthentication => 0x9E,
        }
    }
    pub fn cert_tag(self) -> u32 {
        match self {
            Slot::Authentication => 0x5FC105,
            Slot::Signature => 0x5FC10A,
            Slot::KeyManagement => 0x5FC10B,
            Slot::CardAuthentication => 0x5FC101,
        }
    }
    pub fn parse(s: &str) -> Option<Slot> {
        match s.to_ascii_lowercase().as_str() {
            "9a" | "auth" | "authentication" => Some(Slot::Authentication),
            "9c" | "sign" | "signature" => Some(Slot::Signature),
            "9d" | "key-management" => Some(Slot::KeyManagement),
            "9e" | "card-auth" => Some(Slot::CardAuthentication),
            _ => None,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Slot::Authentication => "PIV authentication",
            Slot::Signature => "digital signature",
            Slot::KeyManagement => "key management",
            Slot::CardAuthentication => "card authentication",
        };
        write!(f, "{:02X} ({name})", self.key_ref())
    }
}

/// PIN verification status (from an empty VERIFY, which never logs in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinStatus {
    Verified,
    NotVerified { tries_left: u8 },
    Blocked,
}

impl std::fmt::Display for PinStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinStatus::Verified => f.write_str("verified in this session"),
            PinStatus::NotVerified { tries_left } => write!(f, "{tries_left} tries left"),
            PinStatus::Blocked => f.write_str("BLOCKED (0 tries left) — unblock with the PUK"),
        }
    }
}

/// Card management key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MgmtAlgorithm {
    TripleDes,
    Aes128,
    Aes192,
    Aes256,
}

impl MgmtAlgorithm {
    fn id(self) -> u8 {
        match self {
            MgmtAlgorithm::TripleDes => 0x03,
            MgmtAlgorithm::Aes128 => 0x08,
            MgmtAlgorithm::Aes192 => 0x0A,
            MgmtAlgorithm::Aes256 => 0x0C,
        }
    }
    fn key_len(self) -> usize {
        match self {
            MgmtAlgorithm::Aes128 => 16,
            MgmtAlgorithm::Aes256 => 32,
            _ => 24,
        }
    }
    fn block_len(self) -> usize {
        if self == MgmtAlgorithm::TripleDes {
            8
        } else {
            16
        }
    }
}

/// A card management key (9B).
#[derive(Clone)]
pub struct ManagementKey {
    alg: MgmtAlgorithm,
    key: Vec<u8>,
}

impl std::fmt::Debug for ManagementKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ManagementKey({:?}, <secret>)", self.alg)
    }
}

/// The well-known PIV default management key 0102…08 (24 bytes).
pub const DEFAULT_MGMT_KEY: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];

impl ManagementKey {
    pub fn new(alg: MgmtAlgorithm, key: &[u8]) -> Result<ManagementKey> {
        if key.len() != alg.key_len() {
            return Err(CardError::Invalid(format!(
                "a {alg:?} management key is {} bytes, got {}",
                alg.key_len(),
                key.len()
            )));
        }
        Ok(ManagementKey {
            alg,
            key: key.to_vec(),
        })
    }

    /// The default key as AES-192 (current cards) — blank simulated cards use this.
    pub fn default_aes192() -> ManagementKey {
        ManagementKey {
            alg: MgmtAlgorithm::Aes192,
            key: DEFAULT_MGMT_KEY.to_vec(),
        }
    }

    /// The default key as 3DES (older PIV cards).
    pub fn default_3des() -> ManagementKey {
        ManagementKey {
            alg: MgmtAlgorithm::TripleDes,
            key: DEFAULT_MGMT_KEY.to_vec(),
        }
    }

    fn cipher(&self, block: &[u8], encrypt: bool) -> Result<Vec<u8>> {
        use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit, generic_array::GenericArray};
        fn run<C: KeyInit + BlockEncrypt + BlockDecrypt>(
            k: &[u8],
            b: &[u8],
            enc: bool,
        ) -> Option<Vec<u8>> {
            if b.len() != C::block_size() {
                return None;
            }
            let c = C::new_from_slice(k).ok()?;
            let mut blk = GenericArray::clone_from_slice(b);
            if enc {
                c.encrypt_block(&mut blk)
            } else {
                c.decrypt_block(&mut blk)
            }
            Some(blk.to_vec())
        }
        let r = match self.alg {
            MgmtAlgorithm::TripleDes => run::<des::TdesEde3>(&self.key, block, encrypt),
            MgmtAlgorithm::Aes128 => run::<aes::Aes128>(&self.key, block, encrypt),
            MgmtAlgorithm::Aes192 => run::<aes::Aes192>(&self.key, block, encrypt),
            MgmtAlgorithm::Aes256 => run::<aes::Aes256>(&self.key, block, encrypt),
        };
        r.ok_or_else(|| CardError::Malformed {
            what: "management key authentication",
            detail: format!("block of {} bytes", block.len()),
        })
    }
}

/// What the CHUID says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chuid {
    pub guid: Vec<u8>,
    pub expiry: String,
}

/// Everything `card status` shows.
#[derive(Debug, Clone)]
pub struct CardSummary {
    pub application: String,
    pub chuid: Option<Chuid>,
    pub identity: Option<CpsIdentity>,
    pub pin: PinStatus,
    /// DER certificate per slot, if present.
    pub certificates: Vec<(Slot, Option<Vec<u8>>)>,
}

/// A PIV application, selected.
pub struct Piv<T: Transport> {
    t: T,
    label: String,
}

/// Validates and pads a PIN/PUK to the 8-byte PIV format (zeroed when dropped).
pub fn pad_pin(what: &'static str, pin: &str) -> Result<Zeroizing<[u8; 8]>> {
    let b = pin.as_bytes();
    if b.is_empty() {
        return Err(CardError::InvalidPin { what, why: "empty" });
    }
    if !(6..=8).contains(&b.len()) {
        return Err(CardError::InvalidPin {
            what,
            why: "must be 6 to 8 digits",
        });
    }
    if !b.iter().all(u8::is_ascii_digit) {
        return Err(CardError::InvalidPin {
            what,
            why: "digits only",
        });
    }
    let mut out = Zeroizing::new([0xFFu8; 8]);
    out[..b.len()].copy_from_slice(b);
    Ok(out)
}

/// Two padded PINs/PUKs back to back (CHANGE REFERENCE DATA, RESET RETRY COUNTER), zeroed when
/// dropped.
fn pin_pair(
    first: (&'static str, &str),
    second: (&'static str, &str),
) -> Result<Zeroizing<Vec<u8>>> {
    let mut d = Zeroizing::new(Vec::with_capacity(16));
    d.extend_from_slice(&*pad_pin(first.0, first.1)?);
    d.extend_from_slice(&*pad_pin(second.0, second.1)?);
    Ok(d)
}

impl<T: Transport> Piv<T> {
    /// Selects the PIV application.
    pub fn select(mut t: T) -> Result<Piv<T>> {
        let (data, sw) = transceive(&mut t, [0x00, 0xA4, 0x04, 0x00], &PIV_AID, true)?;
        if sw == 0x6A82 || sw == 0x6D00 || sw == 0x6E00 {
            return Err(CardError::NotPiv);
        }
        if sw != 0x9000 {
            return Err(CardError::Status {
                what: "SELECT PIV",
                sw,
            });
        }
        let mut label = String::from("PIV");
        if let Ok(apt) = tlv::read_single(&data)
            && let Ok(items) = tlv::read_all(apt.value, 16)
            && let Some(l) = items.iter().find(|i| i.tag == 0x50)
        {
            label = String::from_utf8_lossy(l.value).into_owned();
        }
        Ok(Piv { t, label })
    }

    /// The application label from the application property template.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn transport(&mut self) -> &mut T {
        &mut self.t
    }

    pub fn into_transport(self) -> T {
        self.t
    }

    /// Sends a command (with chaining) and returns (data, SW).
    pub fn send(
        &mut self,
        header: [u8; 4],
        data: &[u8],
        expect_data: bool,
    ) -> Result<(Vec<u8>, u16)> {
        transceive(&mut self.t, header, data, expect_data)
    }

    fn ok(
        &mut self,
        what: &'static str,
        header: [u8; 4],
        data: &[u8],
        expect: bool,
    ) -> Result<Vec<u8>> {
        let (d, sw) = self.send(header, data, expect)?;
        match sw {
            0x9000 => Ok(d),
            0x6982 => Err(if header[1] == 0xDB || header[1] == 0x47 {
                CardError::AdminRequired { what }
            } else {
                CardError::PinRequired { what }
            }),
            0x6A82 | 0x6A88 => Err(CardError::NotFound { what }),
            sw => Err(CardError::Status { what, sw }),
        }
    }

    /// GET DATA: the full object TLV (`53 …`), or None if absent.
    pub fn get_data(&mut self, tag: u32) -> Result<Option<Vec<u8>>> {
        let mut q = Vec::new();
        let tb: Vec<u8> = if tag > 0xFFFF {
            vec![(tag >> 16) as u8, (tag >> 8) as u8, tag as u8]
        } else if tag > 0xFF {
            vec![(tag >> 8) as u8, tag as u8]
        } else {
            vec![tag as u8]
        };
        tlv::put(&mut q, 0x5C, &tb);
        match self.ok("GET DATA", [0x00, 0xCB, 0x3F, 0xFF], &q, true) {
            Ok(d) => Ok(Some(d)),
            Err(CardError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GET DATA, returning the value inside the `53` wrapper.
    pub fn read_object(&mut self, tag: u32) -> Result<Option<Vec<u8>>> {
        let Some(d) = self.get_data(tag)? else {
            return Ok(None);
        };
        let t = tlv::read_single(&d).map_err(|_| CardError::Malformed {
            what: "GET DATA",
            detail: format!("object {tag:06X} is not one TLV"),
        })?;
        if t.value.is_empty() {
            return Ok(None);
        }
        Ok(Some(t.value.to_vec()))
    }

    /// PUT DATA of `value` wrapped in `53` (an empty value deletes the object). Needs the
    /// management key.
    pub fn write_object(&mut self, tag: u32, value: &[u8]) -> Result<()> {
        let mut q = Vec::new();
        let tb = [(tag >> 16) as u8, (tag >> 8) as u8, tag as u8];
        tlv::put(
            &mut q,
            0x5C,
            if tag > 0xFFFF {
                &tb[..]
            } else if tag > 0xFF {
                &tb[1..]
            } else {
                &tb[2..]
            },
        );
        tlv::put(&mut q, 0x53, value);
        self.ok("PUT DATA", [0x00, 0xDB, 0x3F, 0xFF], &q, false)
            .map(|_| ())
    }

    /// The certificate (DER) in a slot's container, if any.
    pub fn read_certificate(&mut self, slot: Slot) -> Result<Option<Vec<u8>>> {
        let Some(v) = self.read_object(slot.cert_tag())? else {
            return Ok(None);
        };
        let items = tlv::read_all(&v, 8).map_err(|_| CardError::Malformed {
            what: "certificate container",
            detail: "bad TLV".into(),
        })?;
        if items
            .iter()
            .any(|i| i.tag == 0x71 && i.value.first().is_some_and(|b| b & 0x01 != 0))
        {
            return Err(CardError::Malformed {
                what: "certificate container",
                detail: "compressed certificates are not supported".into(),
            });
        }
        Ok(items
            .iter()
            .find(|i| i.tag == 0x70)
            .map(|i| i.value.to_vec())
            .filter(|c| !c.is_empty()))
    }

    /// Writes a DER certificate into a slot's container (`70` cert, `71 00` uncompressed,
    /// `FE` LRC), as OpenSC and every PIV middleware expect.
    pub fn write_certificate(&mut self, slot: Slot, der: &[u8]) -> Result<()> {
        let mut v = Vec::new();
        tlv::put(&mut v, 0x70, der);
        tlv::put(&mut v, 0x71, &[0x00]);
        tlv::put(&mut v, 0xFE, &[]);
        self.write_object(slot.cert_tag(), &v)
    }

    pub fn read_chuid(&mut self) -> Result<Option<Chuid>> {
        let Some(v) = self.read_object(TAG_CHUID)? else {
            return Ok(None);
        };
        let items = tlv::read_all(&v, 16).map_err(|_| CardError::Malformed {
            what: "CHUID",
            detail: "bad TLV".into(),
        })?;
        let get = |t| items.iter().find(|i| i.tag == t).map(|i| i.value.to_vec());
        Ok(Some(Chuid {
            guid: get(0x34).unwrap_or_default(),
            expiry: String::from_utf8_lossy(&get(0x35).unwrap_or_default()).into_owned(),
        }))
    }

    /// The CPS identity summary (readable without PIN).
    pub fn read_identity(&mut self) -> Result<Option<CpsIdentity>> {
        match self.read_object(TAG_CPS_IDENTITY)? {
            Some(v) => CpsIdentity::decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Writes the CPS identity summary (management key needed).
    pub fn write_identity(&mut self, id: &CpsIdentity) -> Result<()> {
        self.write_object(TAG_CPS_IDENTITY, &id.encode()?)
    }

    // ---- PIN --------------------------------------------------------------------------------

    /// PIN status without logging in (empty VERIFY).
    pub fn pin_status(&mut self) -> Result<PinStatus> {
        let (_, sw) = self.send([0x00, 0x20, 0x00, 0x80], &[], false)?;
        match sw {
            0x9000 => Ok(PinStatus::Verified),
            0x6983 => Ok(PinStatus::Blocked),
            s if s & 0xFFF0 == 0x63C0 => Ok(PinStatus::NotVerified {
                tries_left: (s & 0x0F) as u8,
            }),
            sw => Err(CardError::Status {
                what: "VERIFY (status)",
                sw,
            }),
        }
    }

    /// Verifies the PIN. An empty PIN is refused here and never sent: an empty VERIFY only
    /// reports the card's state, which another process may have left verified.
    pub fn verify_pin(&mut self, pin: &str) -> Result<()> {
        let p = pad_pin("PIN", pin)?;
        let (_, sw) = self.send([0x00, 0x20, 0x00, 0x80], &*p, false)?;
        pin_result(sw, false, "VERIFY")
    }

    /// Forgets the PIN verification (VERIFY P1=FF).
    pub fn logout(&mut self) -> Result<()> {
        self.ok("VERIFY (reset)", [0x00, 0x20, 0xFF, 0x80], &[], false)
            .map(|_| ())
    }

    pub fn change_pin(&mut self, old: &str, new: &str) -> Result<()> {
        let d = pin_pair(("current PIN", old), ("new PIN", new))?;
        let (_, sw) = self.send([0x00, 0x24, 0x00, 0x80], &d, false)?;
        pin_result(sw, false, "CHANGE REFERENCE DATA (PIN)")
    }

    pub fn change_puk(&mut self, old: &str, new: &str) -> Result<()> {
        let d = pin_pair(("current PUK", old), ("new PUK", new))?;
        let (_, sw) = self.send([0x00, 0x24, 0x00, 0x81], &d, false)?;
        pin_result(sw, true, "CHANGE REFERENCE DATA (PUK)")
    }

    /// Unblocks the PIN with the PUK and sets a new PIN (RESET RETRY COUNTER).
    pub fn unblock_pin(&mut self, puk: &str, new_pin: &str) -> Result<()> {
        let d = pin_pair(("PUK", puk), ("new PIN", new_pin))?;
        let (_, sw) = self.send([0x00, 0x2C, 0x00, 0x80], &d, false)?;
        pin_result(sw, true, "RESET RETRY COUNTER")
    }

    // ---- management key ---------------------------------------------------------------------

    /// Mutual authentication with the card management key (9B): the card proves it holds
    /// the key too (witness / challenge, SP 800-73-4 Appendix A.1).
    pub fn authenticate(&mut self, key: &ManagementKey) -> Result<()> {
        let alg = key.alg.id();
        let hdr = [0x00, 0x87, alg, 0x9B];
        let (r, sw) = self.send(hdr, &[0x7C, 0x02, 0x80, 0x00], true)?;
        match sw {
            0x9000 => {}
            0x6A86 | 0x6A80 => return Err(CardError::ManagementKeyRejected),
            sw => {
                return Err(CardError::Status {
                    what: "GENERAL AUTHENTICATE (witness)",
                    sw,
                });
            }
        }
        let witness = dyn_auth_item(&r, 0x80, "GENERAL AUTHENTICATE (witness)")?;
        if witness.len() != key.alg.block_len() {
            return Err(CardError::Malformed {
                what: "GENERAL AUTHENTICATE (witness)",
                detail: "witness size".into(),
            });
        }
        let plain = key.cipher(&witness, false)?;
        let mut challenge = vec![0u8; key.alg.block_len()];
        ring::rand::SystemRandom::new()
            .fill(&mut challenge)
            .map_err(|_| CardError::Invalid("no system randomness".into()))?;
        let mut inner = tlv::tlv(0x80, &plain);
        inner.extend(tlv::tlv(0x81, &challenge));
        let (r, sw) = self.send(hdr, &tlv::tlv(0x7C, &inner), true)?;
        match sw {
            0x9000 => {}
            0x6982 | 0x6A80 | 0x6985 => return Err(CardError::ManagementKeyRejected),
            sw => {
                return Err(CardError::Status {
                    what: "GENERAL AUTHENTICATE (challenge)",
                    sw,
                });
            }
        }
        let answer = dyn_auth_item(&r, 0x82, "GENERAL AUTHENTICATE (challenge)")?;
        if answer != key.cipher(&challenge, true)? {
            return Err(CardError::CardNotAuthentic);
        }
        Ok(())
    }

    // ---- keys -------------------------------------------------------------------------------

    /// Generates a key pair on the card (management key needed); returns the public key.
    pub fn generate_key(&mut self, slot: Slot, alg: KeyAlgorithm) -> Result<PublicKey> {
        let ac = tlv::tlv(0xAC, &[0x80, 0x01, alg.id()]);
        let r = self.ok(
            "GENERATE ASYMMETRIC KEY PAIR",
            [0x00, 0x47, 0x00, slot.key_ref()],
            &ac,
            true,
        )?;
        PublicKey::from_template(&r, alg)
    }

    /// Raw private-key operation (GENERAL AUTHENTICATE): `input` is a digest for ECDSA
    /// (32 bytes for P-256) or a padded block for RSA. Returns the card's answer (DER ECDSA
    /// signature, or the RSA result).
    pub fn private_operation(
        &mut self,
        slot: Slot,
        alg: KeyAlgorithm,
        input: &[u8],
    ) -> Result<Vec<u8>> {
        let mut inner = vec![0x82, 0x00];
        inner.extend(tlv::tlv(0x81, input));
        let r = self.ok(
            "GENERAL AUTHENTICATE (sign)",
            [0x00, 0x87, alg.id(), slot.key_ref()],
            &tlv::tlv(0x7C, &inner),
            true,
        )?;
        dyn_auth_item(&r, 0x82, "GENERAL AUTHENTICATE (sign)")
    }

    /// Signs `message` with SHA-256 (ECDSA, or RSA PKCS#1 v1.5 padded here): the signature
    /// verifies with [`PublicKey::verify`] and with openssl.
    pub fn sign(&mut self, slot: Slot, alg: KeyAlgorithm, message: &[u8]) -> Result<Vec<u8>> {
        let d = ring::digest::digest(&ring::digest::SHA256, message);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(d.as_ref());
        match alg {
            KeyAlgorithm::EccP256 => self.private_operation(slot, alg, &digest),
            KeyAlgorithm::Rsa2048 => self.private_operation(slot, alg, &pkcs1_v15_sha256(&digest)),
        }
    }

    /// Card login step: PIN, then a signature over the challenge with the 9A key.
    pub fn sign_challenge(
        &mut self,
        pin: &str,
        alg: KeyAlgorithm,
        challenge: &[u8],
    ) -> Result<Vec<u8>> {
        self.verify_pin(pin)?;
        self.sign(Slot::Authentication, alg, challenge)
    }

    /// Everything `cps-trust card status` prints (never logs in).
    pub fn summary(&mut self) -> Result<CardSummary> {
        let chuid = self.read_chuid()?;
        let identity = self.read_identity()?;
        let pin = self.pin_status()?;
        let mut certificates = Vec::new();
        for s in Slot::ALL {
            certificates.push((s, self.read_certificate(s)?));
        }
        Ok(CardSummary {
            application: self.label.clone(),
            chuid,
            identity,
            pin,
            certificates,
        })
    }
}

fn pin_result(sw: u16, puk: bool, what: &'static str) -> Result<()> {
    match sw {
        0x9000 => Ok(()),
        0x6983 if puk => Err(CardError::PukBlocked),
        0x6983 => Err(CardError::PinBlocked),
        s if s & 0xFFF0 == 0x63C0 => {
            let tries_left = (s & 0x0F) as u8;
            match (puk, tries_left) {
                (false, 0) => Err(CardError::PinBlocked),
                (true, 0) => Err(CardError::PukBlocked),
                (false, n) => Err(CardError::WrongPin { tries_left: n }),
                (true, n) => Err(CardError::WrongPuk { tries_left: n }),
            }
        }
        0x6A80 => Err(CardError::InvalidPin {
            what: if puk { "PUK/PIN" } else { "PIN" },
            why: "refused by the card",
        }),
        sw => Err(CardError::Status { what, sw }),
    }
}

/// Extracts one item of a `7C` dynamic authentication template.
fn dyn_auth_item(r: &[u8], tag: u32, what: &'static str) -> Result<Vec<u8>> {
    let bad = |d: &str| CardError::Malformed {
        what,
        detail: d.to_string(),
    };
    let t = tlv::read_single(r).map_err(|_| bad("not one TLV"))?;
    if t.tag != 0x7C {
        return Err(bad("no 7C template"));
    }
    let items = tlv::read_all(t.value, 4).map_err(|_| bad("template"))?;
    items
        .iter()
        .find(|i| i.tag == tag)
        .map(|i| i.value.to_vec())
        .ok_or_else(|| bad(&format!("no {tag:02X} item")))
}

/// Sends one command with ISO command chaining (parts of 255 bytes) and collects the answer
/// through `61xx` + GET RESPONSE (and `6Cxx`). Returns (data, final SW).
pub fn transceive<T: Transport + ?Sized>(
    t: &mut T,
    header: [u8; 4],
    data: &[u8],
    expect_data: bool,
) -> Result<(Vec<u8>, u16)> {
    let split = |r: Vec<u8>| -> Result<(Vec<u8>, u16)> {
        if r.len() < 2 {
            return Err(CardError::Malformed {
                what: "response APDU",
                detail: format!("{} bytes", r.len()),
            });
        }
        let sw = u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]]);
        Ok((r[..r.len() - 2].to_vec(), sw))
    };
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(255).collect()
    };
    let n = chunks.len();
    let mut resp = Vec::new();
    let mut sw = 0x9000;
    for (i, c) in chunks.into_iter().enumerate() {
        let last = i + 1 == n;
        // Command APDUs may carry a PIN or PUK: zeroed when dropped, sized not to grow.
        let mut a = Zeroizing::new(Vec::with_capacity(c.len() + 6));
        a.push(if last { header[0] } else { header[0] | 0x10 });
        a.extend_from_slice(&header[1..]);
        if !c.is_empty() {
            a.push(c.len() as u8);
            a.extend_from_slice(c);
        }
        if last && expect_data {
            a.push(0x00);
        }
        let (d, s) = split(t.transmit(&a)?)?;
        if !last {
            if s != 0x9000 {
                return Ok((d, s));
            }
            continue;
        }
        resp = d;
        sw = s;
        if sw & 0xFF00 == 0x6C00 {
            a.pop();
            a.push(sw as u8);
            let (d, s) = split(t.transmit(&a)?)?;
            resp = d;
            sw = s;
        }
    }
    let mut guard = 0;
    while sw & 0xFF00 == 0x6100 {
        guard += 1;
        if guard > 256 {
            return Err(CardError::Malformed {
                what: "GET RESPONSE",
                detail: "endless response".into(),
            });
        }
        let (d, s) = split(t.transmit(&[0x00, 0xC0, 0x00, 0x00, sw as u8])?)?;
        resp.extend_from_slice(&d);
        sw = s;
    }
    Ok((resp, sw))
}
