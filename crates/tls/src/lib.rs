//! TLS for cps-trust's listeners and its outgoing mutual-TLS links.
//!
//! **Invariant: no connection is made without a full handshake whose client certificate passed
//! every check against the live state.** Client certificates are verified against our own
//! hierarchy **and** the store's revocation state and profiles (a revoked, unknown or
//! wrong-profile certificate fails the handshake; a store that cannot answer fails it too), and
//! no session is ever resumed (rustls would restore a resumed session's client certificate
//! without calling the verifier).
//!
//! The private keys stay behind [`cps_hsm::Signer`] (a rustls `SigningKey` over it): rustls
//! calls it inside the handshake, so a signer that blocks (an HSM) is given wrapped so that it
//! does not hold the async runtime's worker (the appliance wraps its HSM keys that way).
//!
//! Protocol floor TLS 1.2, TLS 1.3 preferred; rustls offers only AEAD suites with ECDHE, which
//! is the BCP 195 set.

#![forbid(unsafe_code)]

use std::sync::Arc;

use cps_hsm::{KeyAlgorithm, SigFormat, SignatureAlgorithm, Signer};
use cps_store::{CertStatus, Store};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The key of a TLS endpoint (a server's or a client's): a private key behind [`Signer`].
pub type TlsKey = Arc<dyn Signer>;

/// A rustls signing key whose private half is behind a [`Signer`] (the HSM).
struct HsmSigningKey {
    key: TlsKey,
}

impl std::fmt::Debug for HsmSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HsmSigningKey({})", self.key.label())
    }
}

struct HsmTlsSigner {
    key: TlsKey,
    scheme: SignatureScheme,
    alg: SignatureAlgorithm,
}

impl std::fmt::Debug for HsmTlsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HsmTlsSigner({}, {:?})", self.key.label(), self.scheme)
    }
}

impl rustls::sign::Signer for HsmTlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // Called inside the handshake: a blocking signer comes wrapped (see the crate's doc).
        self.key
            .sign(self.alg, message, SigFormat::Der)
            .map_err(|e| rustls::Error::General(format!("HSM signing failed: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

impl rustls::sign::SigningKey for HsmSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        let candidates: &[(SignatureScheme, SignatureAlgorithm)] = match self.key.key_algorithm() {
            KeyAlgorithm::EcP256 => &[(
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SignatureAlgorithm::EcdsaSha256,
            )],
            KeyAlgorithm::EcP384 => &[(
                SignatureScheme::ECDSA_NISTP384_SHA384,
                SignatureAlgorithm::EcdsaSha384,
            )],
            _ => &[
                (
                    SignatureScheme::RSA_PSS_SHA256,
                    SignatureAlgorithm::RsaPssSha256,
                ),
                (
                    SignatureScheme::RSA_PSS_SHA384,
                    SignatureAlgorithm::RsaPssSha384,
                ),
                (
                    SignatureScheme::RSA_PKCS1_SHA256,
                    SignatureAlgorithm::RsaPkcs1Sha256,
                ),
                (
                    SignatureScheme::RSA_PKCS1_SHA384,
                    SignatureAlgorithm::RsaPkcs1Sha384,
                ),
            ],
        };
        candidates
            .iter()
            .find(|(s, _)| offered.contains(s))
            .map(|(scheme, alg)| {
                Box::new(HsmTlsSigner {
                    key: self.key.clone(),
                    scheme: *scheme,
                    alg: *alg,
                }) as Box<dyn rustls::sign::Signer>
            })
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        if self.key.key_algorithm().is_rsa() {
            rustls::SignatureAlgorithm::RSA
        } else {
            rustls::SignatureAlgorithm::ECDSA
        }
    }
}

/// Verifies client certificates: chain to our root through one of our issuing CAs, an extended
/// key usage that **lists** clientAuth (a certificate without the extension is refused, although
/// RFC 5280 reads its absence as "any purpose"), validity at the handshake time, and — fail
/// closed — a certificate the store knows, holds as valid and issued with one of the profiles
/// this listener accepts.
///
/// This runs at the handshake only; the appliance checks the same live state again for every
/// request, and session resumption is off ([`server_config`]).
#[derive(Debug)]
pub struct ClientVerifier {
    root: CertificateDer<'static>,
    /// (CA id, CA certificate DER, subject DER) of the issuing CAs whose clients we accept.
    issuers: Vec<(String, CertificateDer<'static>, Vec<u8>)>,
    hints: Vec<DistinguishedName>,
    store: StoreHandle,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// Refuse the handshake without a client certificate (the syslog-TLS repository); the API
    /// listener answers 401 instead.
    mandatory: bool,
    /// Certificate profiles (as recorded in the store) allowed to authenticate here.
    profiles: &'static [&'static str],
}

/// `Arc<dyn Store>` with a Debug impl (rustls wants Debug on verifiers).
#[derive(Clone)]
struct StoreHandle(Arc<dyn Store>);

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl ClientVerifier {
    /// A verifier for clients whose certificates were issued with one of `profiles`.
    pub fn new(
        root_der: Vec<u8>,
        issuers: Vec<(String, Vec<u8>)>,
        store: Arc<dyn Store>,
        profiles: &'static [&'static str],
    ) -> Result<Self, String> {
        let mut list = Vec::new();
        let mut hints = Vec::new();
        for (id, der) in issuers {
            let parsed = cps_pki::parse_certificate(&der).map_err(|e| e.to_string())?;
            let subject = parsed.subject.to_der().map_err(|e| e.to_string())?;
            hints.push(DistinguishedName::from(subject.clone()));
            list.push((id, CertificateDer::from(der), subject));
        }
        Ok(ClientVerifier {
            root: CertificateDer::from(root_der),
            issuers: list,
            hints,
            store: StoreHandle(store),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            mandatory: false,
            profiles,
        })
    }

    /// The same verifier, with the client certificate mandatory.
    pub fn mandatory(mut self) -> Self {
        self.mandatory = true;
        self
    }
}

fn bad(reason: impl Into<String>) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(std::io::Error::other(reason.into())),
    )))
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// Optional at the TLS layer, so that a client without a certificate gets a clear HTTP 401
    /// rather than a handshake failure; every protected route requires one.
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let anchor = webpki::anchor_from_trusted_cert(&self.root)
            .map_err(|e| bad(format!("trust anchor: {e}")))?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| bad(format!("client certificate: {e}")))?;
        let intermediates: Vec<CertificateDer<'_>> =
            self.issuers.iter().map(|(_, d, _)| d.clone()).collect();
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &[anchor],
            &intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| match e {
            webpki::Error::RequiredEkuNotFoundContext(_) => {
                bad("the client certificate's extended key usage does not list clientAuth")
            }
            e => bad(format!(
                "client certificate does not chain to this appliance: {e:?}"
            )),
        })?;
        let parsed = cps_pki::parse_certificate(end_entity).map_err(|e| bad(e.to_string()))?;
        if !parsed.has_extended_key_usage(cps_pki::ext::ID_KP_CLIENT_AUTH) {
            return Err(bad(
                "the client certificate's extended key usage does not list clientAuth",
            ));
        }
        let issuer_der = parsed.issuer.to_der().map_err(|e| bad(e.to_string()))?;
        let ca = self
            .issuers
            .iter()
            .find(|(_, _, s)| *s == issuer_der)
            .map(|(id, _, _)| id.clone())
            .ok_or_else(|| bad("unknown issuer"))?;
        match self.store.0.get_certificate(&ca, parsed.serial.as_bytes()) {
            Ok(Some(rec))
                if rec.der == end_entity.as_ref()
                    && !self.profiles.contains(&rec.profile.as_str()) =>
            {
                Err(bad(format!(
                    "a '{}' certificate does not authenticate on this listener",
                    rec.profile
                )))
            }
            Ok(Some(rec)) if rec.der == end_entity.as_ref() && rec.status == CertStatus::Valid => {
                Ok(ClientCertVerified::assertion())
            }
            Ok(Some(rec)) if rec.der == end_entity.as_ref() => Err(
                rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked),
            ),
            Ok(_) => Err(bad("client certificate was not issued by this appliance")),
            // Fail closed: no revocation answer, no entry.
            Err(e) => Err(bad(format!("revocation state unavailable: {e}"))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Server configuration: the server key (HSM-held) with its chain, client verification as above,
/// TLS 1.3 and 1.2 only, h2 and http/1.1, and **no session resumption**: rustls restores the
/// client certificate of a resumed session without calling the verifier, so a resumed session
/// would skip the chain, usage and status checks of the handshake. Every connection makes a full
/// handshake instead (one server signature; connections are long-lived, so it is rare).
pub fn server_config(
    key: TlsKey,
    chain: Vec<Vec<u8>>,
    verifier: Arc<ClientVerifier>,
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = chain.into_iter().map(CertificateDer::from).collect();
    let certified = Arc::new(CertifiedKey::new(chain, Arc::new(HsmSigningKey { key })));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(FixedCert(certified)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Neither session IDs / stateful tickets (TLS 1.2 and 1.3) nor stateless tickets.
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    cfg.ticketer = Arc::new(NoTickets);
    Ok(cfg)
}

/// A ticketer that never issues a ticket (resumption is off, see [`server_config`]).
#[derive(Debug)]
struct NoTickets;

impl rustls::server::ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }

    fn lifetime(&self) -> u32 {
        0
    }

    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Client configuration for the appliance's own outgoing mutual-TLS links (audit messages to
/// repositories): its node key (HSM-held) and chain, servers verified against `roots` (DER).
pub fn client_config(
    key: TlsKey,
    chain: Vec<Vec<u8>>,
    roots: Vec<Vec<u8>>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store
            .add(CertificateDer::from(r))
            .map_err(|e| format!("trust anchor: {e}"))?;
    }
    let chain: Vec<CertificateDer<'static>> = chain.into_iter().map(CertificateDer::from).collect();
    let certified = Arc::new(CertifiedKey::new(chain, Arc::new(HsmSigningKey { key })));
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(store)
        .with_client_cert_resolver(Arc::new(FixedClientCert(certified))))
}
