//! The PKCS#11 side: module loading, token by label, login, session pool, keys, signing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use parking_lot::{Condvar, Mutex};
use zeroize::Zeroizing;

use crate::encoding::{
    ec_alg_from_params, ec_coordinate_len, ec_params, ec_spki, ecdsa_raw_to_der, rsa_alg_from_bits,
    rsa_spki,
};
use crate::error::{describe, rv_of};
use crate::{
    HsmError, KeyAlgorithm, MAC_KEY_LEN, MacKey, PinSource, SigFormat, SignatureAlgorithm, Signer,
};

/// How to reach the HSM.
#[derive(Debug, Clone)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Label of the token that holds the appliance's keys.
    pub token_label: String,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// Maximum number of sessions kept open for concurrent signing.
    pub sessions: usize,
}

/// One loaded module per path per process: `C_Initialize` may be called only once, and login
/// state is per process, so every [`Hsm`] on the same module shares the context.
fn context_for(module: &Path) -> Result<Pkcs11, HsmError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = CONTEXTS.get_or_init(Default::default).lock();
    if let Some(ctx) = map.get(module) {
        return Ok(ctx.clone());
    }
    if !module.exists() {
        return Err(HsmError::ModuleLoad {
            module: module.into(),
            reason: "no such file".into(),
        });
    }
    let ctx = Pkcs11::new(module).map_err(|e| HsmError::ModuleLoad {
        module: module.into(),
        reason: match e {
            CkError::LibraryLoading(le) => le.to_string(),
            other => other.to_string(),
        },
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            let (rv, rv_hint) = describe(&e);
            return Err(HsmError::Module {
                module: module.into(),
                function: "C_Initialize",
                rv,
                rv_hint,
            });
        }
    }
    map.insert(module.into(), ctx.clone());
    Ok(ctx)
}

fn module_err(module: &Path, function: &'static str, e: CkError) -> HsmError {
    let (rv, rv_hint) = describe(&e);
    HsmError::Module {
        module: module.into(),
        function,
        rv,
        rv_hint,
    }
}

/// Serialises token creation against slot listing (see [`init_token_on_free_slot`]).
static SLOT_LIST: parking_lot::RwLock<()> = parking_lot::RwLock::new(());

/// Labels of the initialised tokens a module offers, with their slots.
fn tokens(ctx: &Pkcs11, module: &Path) -> Result<Vec<(Slot, String)>, HsmError> {
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| module_err(module, "C_GetSlotList", e))?;
    let mut out = Vec::with_capacity(slots.len());
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| module_err(module, "C_GetTokenInfo", e))?;
        out.push((slot, info.label().to_owned()));
    }
    Ok(out)
}

fn find_token(ctx: &Pkcs11, module: &Path, label: &str) -> Result<Slot, HsmError> {
    let all = tokens(ctx, module)?;
    let matching: Vec<Slot> = all
        .iter()
        .filter(|(_, l)| l == label)
        .map(|(s, _)| *s)
        .collect();
    match matching.len() {
        1 => Ok(matching[0]),
        0 => Err(HsmError::TokenNotFound {
            module: module.into(),
            label: label.into(),
            present: all.into_iter().map(|(_, l)| l).collect(),
        }),
        n => Err(HsmError::TokenAmbiguous {
            module: module.into(),
            label: label.into(),
            count: n,
        }),
    }
}

/// Create and initialise a token on the first free slot (SoftHSM2 always offers one), set its
/// user PIN and return. Refuses when a token with that label already exists.
pub fn init_token_on_free_slot(
    module: &Path,
    label: &str,
    so_pin: &str,
    user_pin: &str,
) -> Result<(), HsmError> {
    let ctx = context_for(module)?;
    if tokens(&ctx, module)?.iter().any(|(_, l)| l == label) {
        return Err(HsmError::Module {
            module: module.into(),
            function: "C_InitToken",
            rv: format!("a token labelled '{label}' already exists"),
            rv_hint: Some("refusing to re-initialise an existing token"),
        });
    }
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| module_err(module, "C_GetSlotList", e))?;
    let mut free = None;
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| module_err(module, "C_GetTokenInfo", e))?;
        if !info.token_initialized() {
            free = Some(slot);
            break;
        }
    }
    let slot = free.ok_or_else(|| HsmError::NoFreeSlot {
        module: module.into(),
        label: label.into(),
    })?;
    let so = AuthPin::from(so_pin.to_owned());
    ctx.init_token(slot, &so, label)
        .map_err(|e| module_err(module, "C_InitToken", e))?;
    // SoftHSM2 moves a freshly initialised token to a new slot id: find it again by label.
    let slot = find_token(&ctx, module, label)?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| module_err(module, "C_OpenSession", e))?;
    session
        .login(UserType::So, Some(&so))
        .map_err(|e| login_err(label, e))?;
    session
        .init_pin(&AuthPin::from(user_pin.to_owned()))
        .map_err(|e| module_err(module, "C_InitPIN", e))?;
    let _ = session.logout();
    Ok(())
}

fn login_err(label: &str, e: CkError) -> HsmError {
    let (rv, rv_hint) = describe(&e);
    HsmError::Login {
        label: label.into(),
        rv,
        rv_hint,
    }
}

struct PoolState {
    idle: Vec<Session>,
    open: usize,
}

struct Inner {
    ctx: Pkcs11,
    module: PathBuf,
    token_label: String,
    slot: Slot,
    pin: Zeroizing<String>,
    max_sessions: usize,
    pool: Mutex<PoolState>,
    available: Condvar,
    /// Holds the login for the life of this handle: PKCS#11 logs a token out when the
    /// application's last session closes.
    anchor: Mutex<Session>,
    ecdsa_sha256: bool,
    ecdsa_sha384: bool,
}

/// A session borrowed from the pool; returned on drop unless marked dead.
struct Pooled<'a> {
    inner: &'a Inner,
    session: Option<Session>,
    dead: bool,
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let mut st = self.inner.pool.lock();
        match self.session.take() {
            Some(s) if !self.dead => st.idle.push(s),
            _ => st.open -= 1,
        }
        drop(st);
        self.inner.available.notify_one();
    }
}

impl Inner {
    fn checkout(&self) -> Result<Pooled<'_>, CkError> {
        let mut st = self.pool.lock();
        loop {
            if let Some(s) = st.idle.pop() {
                return Ok(Pooled {
                    inner: self,
                    session: Some(s),
                    dead: false,
                });
            }
            if st.open < self.max_sessions {
                st.open += 1;
                drop(st);
                return match self.ctx.open_ro_session(self.slot) {
                    Ok(s) => Ok(Pooled {
                        inner: self,
                        session: Some(s),
                        dead: false,
                    }),
                    Err(e) => {
                        self.pool.lock().open -= 1;
                        self.available.notify_one();
                        Err(e)
                    }
                };
            }
            self.available.wait(&mut st);
        }
    }

    fn login(&self) -> Result<(), HsmError> {
        let anchor = self.anchor.lock();
        match anchor.login(
            UserType::User,
            Some(&AuthPin::from(self.pin.as_str().to_owned())),
        ) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(e) => Err(login_err(&self.token_label, e)),
        }
    }

    /// Run `f` on a pooled session. A session the module reports as dead is discarded and the
    /// call retried once on a fresh one; a lost login is restored once. Anything else fails closed.
    fn with_session<R>(&self, f: impl Fn(&Session) -> Result<R, CkError>) -> Result<R, CkError> {
        let mut retried = false;
        loop {
            let mut pooled = self.checkout()?;
            let res = f(pooled.session.as_ref().expect("pooled session present"));
            match res {
                Err(ref e) if !retried => match rv_of(e) {
                    Some(RvError::SessionHandleInvalid | RvError::SessionClosed) => {
                        pooled.dead = true;
                        retried = true;
                    }
                    Some(RvError::UserNotLoggedIn) => {
                        drop(pooled);
                        if self.login().is_err() {
                            return res;
                        }
                        retried = true;
                    }
                    _ => return res,
                },
                other => return other,
            }
        }
    }
}

/// A logged-in handle on one token. Cheap to clone.
#[derive(Clone)]
pub struct Hsm {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("module", &self.inner.module)
            .field("token", &self.inner.token_label)
            .finish_non_exhaustive()
    }
}

/// Token identity for reports.
#[derive(Debug, Clone)]
pub struct TokenSummary {
    pub module: PathBuf,
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub library: String,
}

/// Security-relevant attributes of a private key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyAttributes {
    pub token: bool,
    pub private: bool,
    pub sensitive: bool,
    pub always_sensitive: bool,
    pub extractable: bool,
    pub never_extractable: bool,
    pub sign: bool,
    pub decrypt: bool,
    pub unwrap: bool,
    pub derive: bool,
    pub local: bool,
}

impl KeyAttributes {
    /// What is wrong with these attributes for an appliance signing key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut need = |ok: bool, what: &str| {
            if !ok {
                p.push(what.to_owned());
            }
        };
        need(self.token, "not a token object (CKA_TOKEN false)");
        need(self.private, "not private (CKA_PRIVATE false)");
        need(self.sensitive, "not sensitive (CKA_SENSITIVE false)");
        need(
            self.always_sensitive,
            "was not always sensitive (CKA_ALWAYS_SENSITIVE false)",
        );
        need(!self.extractable, "extractable (CKA_EXTRACTABLE true)");
        need(
            self.never_extractable,
            "was extractable once (CKA_NEVER_EXTRACTABLE false)",
        );
        need(self.sign, "cannot sign (CKA_SIGN false)");
        need(!self.decrypt, "can decrypt (CKA_DECRYPT true)");
        need(!self.unwrap, "can unwrap (CKA_UNWRAP true)");
        need(!self.derive, "can derive (CKA_DERIVE true)");
        p
    }
}

/// The result of checking one key.
#[derive(Debug, Clone)]
pub struct KeyCheck {
    pub label: String,
    pub algorithm: Option<KeyAlgorithm>,
    pub attributes: Option<KeyAttributes>,
    pub problems: Vec<String>,
}

/// The start-up self-check: every appliance key present, sensitive and never extractable.
#[derive(Debug, Clone)]
pub struct SelfCheckReport {
    pub token: String,
    pub keys: Vec<KeyCheck>,
}

impl SelfCheckReport {
    pub fn is_ok(&self) -> bool {
        self.keys.iter().all(|k| k.problems.is_empty())
    }

    /// The first failing key as an error, or `Ok(())`.
    pub fn into_result(self) -> Result<(), HsmError> {
        match self.keys.into_iter().find(|k| !k.problems.is_empty()) {
            None => Ok(()),
            Some(k) if k.attributes.is_none() => Err(HsmError::KeyNotFound {
                token: self.token,
                key: k.label,
            }),
            Some(k) => Err(HsmError::UnsafeKey {
                token: self.token,
                key: k.label,
                problems: k.problems,
            }),
        }
    }
}

impl Hsm {
    /// Load the module, find the token by label and log in.
    pub fn open(cfg: &HsmConfig) -> Result<Hsm, HsmError> {
        let ctx = context_for(&cfg.module)?;
        let slot = {
            let _guard = SLOT_LIST.read();
            find_token(&ctx, &cfg.module, &cfg.token_label)?
        };
        let pin = cfg.pin.read()?;
        let anchor = ctx
            .open_ro_session(slot)
            .map_err(|e| module_err(&cfg.module, "C_OpenSession", e))?;
        // Ask for the two mechanisms directly: listing every mechanism makes cryptoki log each
        // vendor mechanism it does not know.
        let has = |m: MechanismType| ctx.get_mechanism_info(slot, m).is_ok();
        let inner = Inner {
            ecdsa_sha256: has(MechanismType::ECDSA_SHA256),
            ecdsa_sha384: has(MechanismType::ECDSA_SHA384),
            ctx,
            module: cfg.module.clone(),
            token_label: cfg.token_label.clone(),
            slot,
            pin,
            max_sessions: cfg.sessions.max(1),
            pool: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            available: Condvar::new(),
            anchor: Mutex::new(anchor),
        };
        inner.login()?;
        tracing::info!(module = %cfg.module.display(), token = %cfg.token_label, "HSM token opened");
        Ok(Hsm {
            inner: Arc::new(inner),
        })
    }

    pub fn token_label(&self) -> &str {
        &self.inner.token_label
    }

    pub fn module(&self) -> &Path {
        &self.inner.module
    }

    /// Whether the token signs ECDSA with SHA-256 in one mechanism (otherwise the appliance
    /// hashes in software and uses raw `CKM_ECDSA`).
    pub fn has_combined_ecdsa(&self) -> bool {
        self.inner.ecdsa_sha256
    }

    pub fn token_summary(&self) -> Result<TokenSummary, HsmError> {
        let i = &self.inner;
        let info = i
            .ctx
            .get_token_info(i.slot)
            .map_err(|e| module_err(&i.module, "C_GetTokenInfo", e))?;
        let lib = i
            .ctx
            .get_library_info()
            .map_err(|e| module_err(&i.module, "C_GetInfo", e))?;
        Ok(TokenSummary {
            module: i.module.clone(),
            label: info.label().to_owned(),
            manufacturer: info.manufacturer_id().to_owned(),
            model: info.model().to_owned(),
            serial: info.serial_number().to_owned(),
            library: format!("{} {}", lib.library_description(), lib.library_version()),
        })
    }

    fn op_err(&self, key: &str, op: &'static str, e: CkError) -> HsmError {
        let (rv, rv_hint) = describe(&e);
        HsmError::Operation {
            token: self.inner.token_label.clone(),
            key: key.into(),
            op,
            rv,
            rv_hint,
        }
    }

    fn find(
        &self,
        session: &Session,
        class: ObjectClass,
        label: &str,
    ) -> Result<Vec<ObjectHandle>, HsmError> {
        session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| self.op_err(label, "C_FindObjects", e))
    }

    /// Generate a signing key pair on the token. Refuses if a key with that label exists.
    ///
    /// Private key: `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE` true, `CKA_EXTRACTABLE` false,
    /// `CKA_SIGN` true; `CKA_DECRYPT`, `CKA_UNWRAP`, `CKA_DERIVE`, `CKA_SIGN_RECOVER` false.
    pub fn generate_key_pair(&self, label: &str, alg: KeyAlgorithm) -> Result<HsmKey, HsmError> {
        let i = &self.inner;
        if label.is_empty() || label.len() > 64 {
            return Err(HsmError::UnsupportedKey(format!(
                "key label '{label}' must be 1 to 64 characters"
            )));
        }
        let session = i
            .ctx
            .open_rw_session(i.slot)
            .map_err(|e| self.op_err(label, "C_OpenSession", e))?;
        if !self
            .find(&session, ObjectClass::PRIVATE_KEY, label)?
            .is_empty()
            || !self
                .find(&session, ObjectClass::PUBLIC_KEY, label)?
                .is_empty()
        {
            return Err(HsmError::KeyExists {
                token: i.token_label.clone(),
                key: label.into(),
            });
        }
        let id =
            ring::digest::digest(&ring::digest::SHA256, label.as_bytes()).as_ref()[..16].to_vec();
        let common = |v: &mut Vec<Attribute>| {
            v.push(Attribute::Token(true));
            v.push(Attribute::Label(label.as_bytes().to_vec()));
            v.push(Attribute::Id(id.clone()));
        };
        let mut public = Vec::new();
        common(&mut public);
        public.extend([
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
        ]);
        let mut private = Vec::new();
        common(&mut private);
        private.extend([
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::SignRecover(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ]);
        let mechanism = if alg.is_rsa() {
            public.push(Attribute::ModulusBits((alg.bits() as u64).into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        } else {
            public.push(Attribute::EcParams(ec_params(alg)));
            Mechanism::EccKeyPairGen
        };
        session
            .generate_key_pair(&mechanism, &public, &private)
            .map_err(|e| self.op_err(label, "C_GenerateKeyPair", e))?;
        drop(session);
        let key = self.key(label)?;
        let check = self.check_key(label);
        if !check.problems.is_empty() {
            return Err(HsmError::UnsafeKey {
                token: i.token_label.clone(),
                key: label.into(),
                problems: check.problems,
            });
        }
        Ok(key)
    }

    /// Find a key pair by label.
    pub fn key(&self, label: &str) -> Result<HsmKey, HsmError> {
        let i = &self.inner;
        let found = i
            .with_session(|s| {
                let privs = s.find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])?;
                let pubs = s.find_objects(&[
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])?;
                let public_attrs = match pubs.first() {
                    Some(h) => Some(s.get_attributes(
                        *h,
                        &[
                            AttributeType::KeyType,
                            AttributeType::EcParams,
                            AttributeType::EcPoint,
                            AttributeType::Modulus,
                            AttributeType::PublicExponent,
                        ],
                    )?),
                    None => None,
                };
                Ok((privs, pubs.len(), public_attrs))
            })
            .map_err(|e| self.op_err(label, "C_FindObjects", e))?;
        let (privs, pub_count, public_attrs) = found;
        let handle = match privs.len() {
            0 => {
                return Err(HsmError::KeyNotFound {
                    token: i.token_label.clone(),
                    key: label.into(),
                });
            }
            1 => privs[0],
            n => {
                return Err(HsmError::KeyAmbiguous {
                    token: i.token_label.clone(),
                    key: label.into(),
                    count: n,
                });
            }
        };
        if pub_count > 1 {
            return Err(HsmError::KeyAmbiguous {
                token: i.token_label.clone(),
                key: label.into(),
                count: pub_count,
            });
        }
        let attrs = public_attrs.ok_or_else(|| {
            HsmError::UnsupportedKey(format!(
                "key '{label}' on token '{}' has no public-key object",
                i.token_label
            ))
        })?;
        let (algorithm, spki) = public_key_from_attrs(&attrs)?;
        Ok(HsmKey {
            hsm: self.clone(),
            label: label.into(),
            handle,
            algorithm,
            spki,
        })
    }

    /// Read the security attributes of a private key.
    pub fn key_attributes(&self, label: &str) -> Result<KeyAttributes, HsmError> {
        let i = &self.inner;
        let attrs = i
            .with_session(|s| {
                let privs = s.find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])?;
                match privs.as_slice() {
                    [h] => Ok(Some(s.get_attributes(
                        *h,
                        &[
                            AttributeType::Token,
                            AttributeType::Private,
                            AttributeType::Sensitive,
                            AttributeType::AlwaysSensitive,
                            AttributeType::Extractable,
                            AttributeType::NeverExtractable,
                            AttributeType::Sign,
                            AttributeType::Decrypt,
                            AttributeType::Unwrap,
                            AttributeType::Derive,
                            AttributeType::Local,
                        ],
                    )?)),
                    _ => Ok(None),
                }
            })
            .map_err(|e| self.op_err(label, "C_GetAttributeValue", e))?
            .ok_or_else(|| HsmError::KeyNotFound {
                token: i.token_label.clone(),
                key: label.into(),
            })?;
        // Attributes a module does not report keep their "unsafe" default for the booleans that
        // must be true (sensitive, never-extractable...) and "safe" for the ones that must be false
        // only if absent is impossible: CKA_EXTRACTABLE defaults to true, so absent = unsafe.
        let mut k = KeyAttributes {
            extractable: true,
            decrypt: false,
            ..Default::default()
        };
        for a in attrs {
            match a {
                Attribute::Token(v) => k.token = v,
                Attribute::Private(v) => k.private = v,
                Attribute::Sensitive(v) => k.sensitive = v,
                Attribute::AlwaysSensitive(v) => k.always_sensitive = v,
                Attribute::Extractable(v) => k.extractable = v,
                Attribute::NeverExtractable(v) => k.never_extractable = v,
                Attribute::Sign(v) => k.sign = v,
                Attribute::Decrypt(v) => k.decrypt = v,
                Attribute::Unwrap(v) => k.unwrap = v,
                Attribute::Derive(v) => k.derive = v,
                Attribute::Local(v) => k.local = v,
                _ => {}
            }
        }
        Ok(k)
    }

    /// Check one key: present, usable, sensitive, never extractable, and its secret value not
    /// readable (some modules answer `C_GetAttributeValue(CKA_VALUE)` with an empty value rather
    /// than an error: both count as "not readable").
    pub fn check_key(&self, label: &str) -> KeyCheck {
        let mut check = KeyCheck {
            label: label.into(),
            algorithm: None,
            attributes: None,
            problems: Vec::new(),
        };
        match self.key(label) {
            Ok(k) => check.algorithm = Some(k.algorithm),
            Err(e) => {
                check.problems.push(e.to_string());
                return check;
            }
        }
        match self.key_attributes(label) {
            Ok(a) => {
                check.problems.extend(a.problems());
                check.attributes = Some(a);
            }
            Err(e) => check.problems.push(e.to_string()),
        }
        if let Ok(true) = self.secret_value_readable(label) {
            check
                .problems
                .push("private key value is readable from the token".into());
        }
        check
    }

    /// Whether any private component of the key can be read out of the token.
    pub fn secret_value_readable(&self, label: &str) -> Result<bool, HsmError> {
        let i = &self.inner;
        i.with_session(|s| {
            let privs = s.find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])?;
            let mut readable = false;
            for h in privs {
                for t in [
                    AttributeType::Value,
                    AttributeType::PrivateExponent,
                    AttributeType::Prime1,
                ] {
                    // An error (CKR_ATTRIBUTE_SENSITIVE) or an empty answer both mean "not readable".
                    if let Ok(attrs) = s.get_attributes(h, &[t]) {
                        readable |= attrs.iter().any(|a| match a {
                            Attribute::Value(v)
                            | Attribute::PrivateExponent(v)
                            | Attribute::Prime1(v) => !v.is_empty(),
                            _ => false,
                        });
                    }
                }
            }
            Ok(readable)
        })
        .map_err(|e| self.op_err(label, "C_GetAttributeValue", e))
    }

    /// The start-up self-check over every key the appliance needs.
    pub fn self_check<S: AsRef<str>>(&self, labels: &[S]) -> SelfCheckReport {
        SelfCheckReport {
            token: self.inner.token_label.clone(),
            keys: labels.iter().map(|l| self.check_key(l.as_ref())).collect(),
        }
    }

    /// Labels of every private key on the token.
    pub fn private_key_labels(&self) -> Result<Vec<String>, HsmError> {
        self.inner
            .with_session(|s| {
                let mut out = Vec::new();
                for h in s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])? {
                    for a in s.get_attributes(h, &[AttributeType::Label])? {
                        if let Attribute::Label(l) = a {
                            out.push(String::from_utf8_lossy(&l).into_owned());
                        }
                    }
                }
                out.sort();
                Ok(out)
            })
            .map_err(|e| self.op_err("*", "C_FindObjects", e))
    }

    /// Generate a generic secret key of [`MAC_KEY_LEN`] bytes on the token for HMAC-SHA256.
    /// Refuses if a secret key with that label exists.
    ///
    /// Attributes: `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, `CKA_SIGN`, `CKA_VERIFY` true;
    /// `CKA_EXTRACTABLE`, `CKA_ENCRYPT`, `CKA_DECRYPT`, `CKA_WRAP`, `CKA_UNWRAP`, `CKA_DERIVE`
    /// false. Its value can never be read: it only computes MACs.
    pub fn generate_mac_key(&self, label: &str) -> Result<HsmMacKey, HsmError> {
        let i = &self.inner;
        if label.is_empty() || label.len() > 64 {
            return Err(HsmError::UnsupportedKey(format!(
                "key label '{label}' must be 1 to 64 characters"
            )));
        }
        let session = i
            .ctx
            .open_rw_session(i.slot)
            .map_err(|e| self.op_err(label, "C_OpenSession", e))?;
        if !self
            .find(&session, ObjectClass::SECRET_KEY, label)?
            .is_empty()
        {
            return Err(HsmError::KeyExists {
                token: i.token_label.clone(),
                key: label.into(),
            });
        }
        let id =
            ring::digest::digest(&ring::digest::SHA256, label.as_bytes()).as_ref()[..16].to_vec();
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen((MAC_KEY_LEN as u64).into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ];
        session
            .generate_key(&Mechanism::GenericSecretKeyGen, &template)
            .map_err(|e| self.op_err(label, "C_GenerateKey", e))?;
        drop(session);
        self.mac_key(label)
    }

    /// Find a MAC key by label; refuses one whose value could leave the token.
    pub fn mac_key(&self, label: &str) -> Result<HsmMacKey, HsmError> {
        let i = &self.inner;
        let (handles, attrs) = i
            .with_session(|s| {
                let h = s.find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])?;
                let attrs = match h.as_slice() {
                    [one] => s.get_attributes(
                        *one,
                        &[
                            AttributeType::Sensitive,
                            AttributeType::Extractable,
                            AttributeType::Sign,
                        ],
                    )?,
                    _ => Vec::new(),
                };
                Ok((h, attrs))
            })
            .map_err(|e| self.op_err(label, "C_FindObjects", e))?;
        let handle = match handles.as_slice() {
            [] => {
                return Err(HsmError::KeyNotFound {
                    token: i.token_label.clone(),
                    key: label.into(),
                });
            }
            [one] => *one,
            more => {
                return Err(HsmError::KeyAmbiguous {
                    token: i.token_label.clone(),
                    key: label.into(),
                    count: more.len(),
                });
            }
        };
        let (mut sensitive, mut extractable, mut sign) = (false, true, false);
        for a in attrs {
            match a {
                Attribute::Sensitive(v) => sensitive = v,
                Attribute::Extractable(v) => extractable = v,
                Attribute::Sign(v) => sign = v,
                _ => {}
            }
        }
        let mut problems = Vec::new();
        if !sensitive {
            problems.push("not sensitive (CKA_SENSITIVE false)".to_string());
        }
        if extractable {
            problems.push("extractable (CKA_EXTRACTABLE true)".to_string());
        }
        if !sign {
            problems.push("cannot compute MACs (CKA_SIGN false)".to_string());
        }
        if !problems.is_empty() {
            return Err(HsmError::UnsafeKey {
                token: i.token_label.clone(),
                key: label.into(),
                problems,
            });
        }
        Ok(HsmMacKey {
            hsm: self.clone(),
            label: label.into(),
            handle,
        })
    }

    /// Random bytes from the token's generator.
    pub fn random(&self, len: usize) -> Result<Vec<u8>, HsmError> {
        let n = u32::try_from(len)
            .map_err(|_| HsmError::Malformed("random length too large".into()))?;
        self.inner
            .with_session(|s| s.generate_random_vec(n))
            .map_err(|e| self.op_err("-", "C_GenerateRandom", e))
    }
}

fn public_key_from_attrs(attrs: &[Attribute]) -> Result<(KeyAlgorithm, Vec<u8>), HsmError> {
    let mut key_type = None;
    let (mut params, mut point, mut modulus, mut exponent) = (None, None, None, None);
    for a in attrs {
        match a {
            Attribute::KeyType(t) => key_type = Some(*t),
            Attribute::EcParams(v) => params = Some(v.as_slice()),
            Attribute::EcPoint(v) => point = Some(v.as_slice()),
            Attribute::Modulus(v) => modulus = Some(v.as_slice()),
            Attribute::PublicExponent(v) => exponent = Some(v.as_slice()),
            _ => {}
        }
    }
    match key_type {
        Some(KeyType::EC) => {
            let alg =
                ec_alg_from_params(params.ok_or_else(|| {
                    HsmError::UnsupportedKey("EC key without CKA_EC_PARAMS".into())
                })?)?;
            let spki = ec_spki(
                alg,
                point.ok_or_else(|| {
                    HsmError::UnsupportedKey("EC key without CKA_EC_POINT".into())
                })?,
            )?;
            Ok((alg, spki))
        }
        Some(KeyType::RSA) => {
            let m = modulus
                .ok_or_else(|| HsmError::UnsupportedKey("RSA key without CKA_MODULUS".into()))?;
            let e = exponent.ok_or_else(|| {
                HsmError::UnsupportedKey("RSA key without CKA_PUBLIC_EXPONENT".into())
            })?;
            let bits = m.len() * 8 - m.first().map(|b| b.leading_zeros() as usize).unwrap_or(0);
            Ok((rsa_alg_from_bits(bits)?, rsa_spki(m, e)?))
        }
        other => Err(HsmError::UnsupportedKey(format!("key type {other:?}"))),
    }
}

/// A private key on the token, usable as a [`Signer`] from any thread.
#[derive(Clone)]
pub struct HsmKey {
    hsm: Hsm,
    label: String,
    handle: ObjectHandle,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
}

impl std::fmt::Debug for HsmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmKey")
            .field("token", &self.hsm.inner.token_label)
            .field("label", &self.label)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl HsmKey {
    pub fn hsm(&self) -> &Hsm {
        &self.hsm
    }
}

impl Signer for HsmKey {
    fn label(&self) -> &str {
        &self.label
    }

    fn key_algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign(
        &self,
        alg: SignatureAlgorithm,
        message: &[u8],
        format: SigFormat,
    ) -> Result<Vec<u8>, HsmError> {
        let started = std::time::Instant::now();
        let signed = self.sign_in_token(alg, message, format);
        crate::metrics::signed(&self.label, started.elapsed(), signed.is_ok());
        signed
    }
}

impl HsmKey {
    /// [`Signer::sign`], untimed.
    fn sign_in_token(
        &self,
        alg: SignatureAlgorithm,
        message: &[u8],
        format: SigFormat,
    ) -> Result<Vec<u8>, HsmError> {
        if !alg.fits(self.algorithm) {
            return Err(HsmError::AlgorithmMismatch {
                key: self.algorithm,
                signature: alg,
            });
        }
        let inner = &self.hsm.inner;
        let pss = |hash: MechanismType, mgf: PkcsMgfType, len: u64| PkcsPssParams {
            hash_alg: hash,
            mgf,
            s_len: len.into(),
        };
        let (mechanism, prehash) = match alg {
            SignatureAlgorithm::RsaPkcs1Sha256 => (Mechanism::Sha256RsaPkcs, false),
            SignatureAlgorithm::RsaPkcs1Sha384 => (Mechanism::Sha384RsaPkcs, false),
            SignatureAlgorithm::RsaPssSha256 => (
                Mechanism::Sha256RsaPkcsPss(pss(
                    MechanismType::SHA256,
                    PkcsMgfType::MGF1_SHA256,
                    32,
                )),
                false,
            ),
            SignatureAlgorithm::RsaPssSha384 => (
                Mechanism::Sha384RsaPkcsPss(pss(
                    MechanismType::SHA384,
                    PkcsMgfType::MGF1_SHA384,
                    48,
                )),
                false,
            ),
            SignatureAlgorithm::EcdsaSha256 if inner.ecdsa_sha256 => {
                (Mechanism::EcdsaSha256, false)
            }
            SignatureAlgorithm::EcdsaSha384 if inner.ecdsa_sha384 => {
                (Mechanism::EcdsaSha384, false)
            }
            SignatureAlgorithm::EcdsaSha256 | SignatureAlgorithm::EcdsaSha384 => {
                (Mechanism::Ecdsa, true)
            }
        };
        let digest;
        let input: &[u8] = if prehash {
            digest = ring::digest::digest(alg.digest(), message);
            digest.as_ref()
        } else {
            message
        };
        let sig = inner
            .with_session(|s| s.sign(&mechanism, self.handle, input))
            .map_err(|e| self.hsm.op_err(&self.label, "C_Sign", e))?;
        if alg.is_ecdsa() {
            let width = ec_coordinate_len(self.algorithm);
            if sig.len() != 2 * width {
                return Err(HsmError::Malformed(format!(
                    "token returned a {}-byte ECDSA signature",
                    sig.len()
                )));
            }
            match format {
                SigFormat::Raw => Ok(sig),
                SigFormat::Der => ecdsa_raw_to_der(&sig),
            }
        } else {
            Ok(sig)
        }
    }
}

/// A generic secret key on the token, usable as a [`MacKey`] from any thread.
#[derive(Clone)]
pub struct HsmMacKey {
    hsm: Hsm,
    label: String,
    handle: ObjectHandle,
}

impl std::fmt::Debug for HsmMacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmMacKey")
            .field("token", &self.hsm.inner.token_label)
            .field("label", &self.label)
            .finish()
    }
}

impl MacKey for HsmMacKey {
    fn label(&self) -> &str {
        &self.label
    }

    fn hmac_sha256(&self, data: &[u8]) -> Result<[u8; 32], HsmError> {
        let mac = self
            .hsm
            .inner
            .with_session(|s| s.sign(&Mechanism::Sha256Hmac, self.handle, data))
            .map_err(|e| self.hsm.op_err(&self.label, "C_Sign (HMAC)", e))?;
        <[u8; 32]>::try_from(mac.as_slice()).map_err(|_| {
            HsmError::Malformed(format!("token returned a {}-byte HMAC-SHA256", mac.len()))
        })
    }
}
