use std::path::PathBuf;

use cryptoki::error::RvError;

use crate::{KeyAlgorithm, SignatureAlgorithm};

/// Errors of the HSM layer. Each names what an operator needs to act: the module, the token
/// label, the key label, the PKCS#11 return code and a hint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    #[error(
        "cannot load PKCS#11 module '{module}': {reason} (hint: the path must point to a PKCS#11 shared library, e.g. /usr/lib/softhsm/libsofthsm2.so)"
    )]
    ModuleLoad { module: PathBuf, reason: String },

    #[error("PKCS#11 module '{module}': {function} failed with {rv}{}", hint_suffix(*.rv_hint))]
    Module {
        module: PathBuf,
        function: &'static str,
        rv: String,
        rv_hint: Option<&'static str>,
    },

    #[error("token '{label}' not found in PKCS#11 module '{module}'; tokens present: {}", present_list(.present))]
    TokenNotFound {
        module: PathBuf,
        label: String,
        present: Vec<String>,
    },

    #[error(
        "{count} tokens labelled '{label}' in PKCS#11 module '{module}': labels must be unique"
    )]
    TokenAmbiguous {
        module: PathBuf,
        label: String,
        count: usize,
    },

    #[error("no free slot to create token '{label}' in PKCS#11 module '{module}'")]
    NoFreeSlot { module: PathBuf, label: String },

    #[error("HSM PIN not available: {0}")]
    Pin(String),

    /// The appliance refused to sign before reaching the HSM (e.g. its clock is not trusted).
    #[error("signing refused: {0}")]
    SigningRefused(String),

    /// A smart card refused or failed the operation (wrong PIN, blocked PIN, card error).
    #[error("smart card: {0}")]
    Card(String),

    #[error("login to token '{label}' failed: {rv}{}", hint_suffix(*.rv_hint))]
    Login {
        label: String,
        rv: String,
        rv_hint: Option<&'static str>,
    },

    #[error(
        "key '{key}' not found on token '{token}' (hint: run `cps-trust init` or check the key label in the configuration)"
    )]
    KeyNotFound { token: String, key: String },

    #[error("key '{key}' already exists on token '{token}': refusing to overwrite it")]
    KeyExists { token: String, key: String },

    #[error("{count} private keys labelled '{key}' on token '{token}': labels must be unique")]
    KeyAmbiguous {
        token: String,
        key: String,
        count: usize,
    },

    #[error("key '{key}' on token '{token}' is unsafe: {}", .problems.join(", "))]
    UnsafeKey {
        token: String,
        key: String,
        problems: Vec<String>,
    },

    #[error("token '{token}', key '{key}': {op} failed with {rv}{}", hint_suffix(*.rv_hint))]
    Operation {
        token: String,
        key: String,
        op: &'static str,
        rv: String,
        rv_hint: Option<&'static str>,
    },

    #[error("signature algorithm {signature} does not fit a {key} key")]
    AlgorithmMismatch {
        key: KeyAlgorithm,
        signature: SignatureAlgorithm,
    },

    #[error("unsupported key: {0}")]
    UnsupportedKey(String),

    #[error("malformed public key or signature: {0}")]
    Malformed(String),

    #[error("signature does not verify")]
    BadSignature,
}

fn hint_suffix(h: Option<&'static str>) -> String {
    h.map(|h| format!(" (hint: {h})")).unwrap_or_default()
}

fn present_list(p: &[String]) -> String {
    if p.is_empty() {
        "none (hint: initialise the token, e.g. `cps-trust init` for the embedded SoftHSM2, and check SOFTHSM2_CONF)".into()
    } else {
        p.iter()
            .map(|l| format!("'{l}'"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An operator-facing hint for a PKCS#11 return code.
pub fn hint_for_rv(rv: &RvError) -> Option<&'static str> {
    Some(match rv {
        RvError::PinIncorrect => {
            "wrong PIN: check the PIN source (environment variable or PIN file)"
        }
        RvError::PinLocked => {
            "the user PIN is locked: unlock it with the security officer PIN using the HSM vendor's tool"
        }
        RvError::PinExpired => "the user PIN has expired: change it with the HSM vendor's tool",
        RvError::PinLenRange => "the PIN length is outside what the token accepts",
        RvError::MechanismInvalid => "the token does not offer this mechanism",
        RvError::KeyTypeInconsistent => "the key type does not fit the mechanism",
        RvError::DeviceRemoved | RvError::TokenNotPresent | RvError::DeviceError => {
            "the HSM is unreachable or failed: check the device, its network link or the vendor daemon"
        }
        RvError::SessionHandleInvalid | RvError::SessionClosed => {
            "the HSM session was closed (HSM restarted?)"
        }
        RvError::UserNotLoggedIn => "not logged in: the HSM may have been restarted",
        RvError::ArgumentsBad | RvError::FunctionFailed | RvError::GeneralError => {
            "the vendor library rejected the call: check its logs and that the module is supported"
        }
        RvError::CryptokiAlreadyInitialized => "the module was initialised twice in this process",
        RvError::TokenWriteProtected => "the token is write-protected",
        RvError::AttributeValueInvalid
        | RvError::TemplateInconsistent
        | RvError::TemplateIncomplete => {
            "the token refused the key template (vendor restriction on attributes?)"
        }
        _ => return None,
    })
}

/// Split a cryptoki error into a printable return code and a hint.
pub(crate) fn describe(e: &cryptoki::error::Error) -> (String, Option<&'static str>) {
    match e {
        cryptoki::error::Error::Pkcs11(rv, _) => {
            (format!("{rv:?} ({})", rv_name(rv)), hint_for_rv(rv))
        }
        other => (other.to_string(), None),
    }
}

fn rv_name(rv: &RvError) -> String {
    // RvError's Display is a sentence; keep the CKR_ name operators search for.
    let dbg = format!("{rv:?}");
    let mut out = String::from("CKR");
    for ch in dbg.chars() {
        if ch.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

pub(crate) fn rv_of(e: &cryptoki::error::Error) -> Option<RvError> {
    match e {
        cryptoki::error::Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}
