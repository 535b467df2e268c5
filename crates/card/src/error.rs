//! Errors a card-issuing officer (or the appliance) can act on.

/// Everything that can go wrong between the appliance and a card.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CardError {
    /// pcscd is not reachable.
    #[error(
        "PC/SC service not available ({0}): is pcscd running? (start pcscd; a private pcscd is reached through PCSCLITE_CSOCK_NAME)"
    )]
    NoService(pcsc::Error),
    /// pcscd runs but knows no reader.
    #[error(
        "no smartcard reader found (plug a reader in, or start the card simulator's vpcd reader)"
    )]
    NoReaders,
    /// The named reader does not exist.
    #[error("reader '{reader}' not found; readers present: {available}")]
    ReaderNotFound { reader: String, available: String },
    /// Several readers hold a card and none was named.
    #[error("several readers hold a card ({0}): name one with --reader")]
    AmbiguousReader(String),
    /// The reader is empty.
    #[error("no card in reader '{0}'")]
    NoCard(String),
    /// Waiting for a card timed out.
    #[error("no card inserted in '{reader}' within {secs} s")]
    Timeout { reader: String, secs: u64 },
    /// The card left the reader during an operation.
    #[error("the card was removed from the reader during the operation")]
    CardRemoved,
    /// Any other PC/SC failure.
    #[error("PC/SC {op} failed: {source}")]
    Pcsc {
        op: &'static str,
        source: pcsc::Error,
    },
    /// The card has no PIV application.
    #[error("not a PIV card: the PIV application (A000000308) is not on this card")]
    NotPiv,
    /// Wrong PIN; the counter went down.
    #[error("wrong PIN: {tries_left} tries left")]
    WrongPin { tries_left: u8 },
    /// PIN retry counter exhausted.
    #[error("PIN blocked: 0 tries left — unblock with the PUK (cps-trust card unblock)")]
    PinBlocked,
    /// Wrong PUK; the counter went down.
    #[error("wrong PUK: {tries_left} tries left")]
    WrongPuk { tries_left: u8 },
    /// PUK retry counter exhausted: the card can no longer be unblocked.
    #[error("PUK blocked: 0 tries left — the card can no longer be unblocked and must be replaced")]
    PukBlocked,
    /// A PIN or PUK that the card would refuse, caught before sending anything.
    #[error("invalid {what}: {why}")]
    InvalidPin {
        what: &'static str,
        why: &'static str,
    },
    /// The operation needs the cardholder's PIN first.
    #[error("{what}: the PIN must be verified first")]
    PinRequired { what: &'static str },
    /// The operation needs card-management-key authentication first.
    #[error("{what}: card management key authentication required first")]
    AdminRequired { what: &'static str },
    /// The card rejected the management key.
    #[error("the card rejected the management key (wrong key or wrong algorithm)")]
    ManagementKeyRejected,
    /// The card did not prove knowledge of the management key (not the expected card).
    #[error("the card failed to prove it holds the management key: not the expected card")]
    CardNotAuthentic,
    /// The object or key is not on the card.
    #[error("{what}: not on the card")]
    NotFound { what: &'static str },
    /// Any other status word.
    #[error("{what}: the card answered {sw:04X} ({})", sw_meaning(*.sw))]
    Status { what: &'static str, sw: u16 },
    /// The card answered something that does not parse.
    #[error("malformed card response to {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// A signature made by the card does not verify with its public key.
    #[error("the card's signature does not verify with its public key")]
    BadSignature,
    /// Caller error (argument out of range).
    #[error("{0}")]
    Invalid(String),
}

/// Human meaning of the ISO 7816-4 status words a PIV card uses.
pub fn sw_meaning(sw: u16) -> &'static str {
    match sw {
        0x9000 => "success",
        0x6581 => "memory failure",
        0x6700 => "wrong length",
        0x6882 => "secure messaging not supported",
        0x6883 => "last command of the chain expected",
        0x6982 => "security status not satisfied",
        0x6983 => "authentication method blocked",
        0x6985 => "conditions of use not satisfied",
        0x6A80 => "incorrect data",
        0x6A81 => "function not supported",
        0x6A82 => "object or application not found",
        0x6A84 => "not enough memory",
        0x6A86 => "incorrect P1/P2",
        0x6A88 => "referenced data not found",
        0x6D00 => "instruction not supported",
        0x6E00 => "class not supported",
        s if s & 0xFFF0 == 0x63C0 => "verification failed",
        _ => "unexpected status",
    }
}

pub type Result<T> = std::result::Result<T, CardError>;
