//! Blocking work (an HSM call, a store commit) run from code that may be on a Tokio worker.

use cps_hsm::{HsmError, KeyAlgorithm, SigFormat, SignatureAlgorithm, Signer};

pub use cps_ct::blocking_io;

/// A signer whose signatures run under [`blocking_io`]: for a key that is called on the runtime,
/// inside a TLS handshake (the HTTPS and syslog-TLS listeners, the audit sender's links).
pub struct OffWorker<S>(pub S);

impl<S: Signer> Signer for OffWorker<S> {
    fn label(&self) -> &str {
        self.0.label()
    }

    fn key_algorithm(&self) -> KeyAlgorithm {
        self.0.key_algorithm()
    }

    fn public_key_der(&self) -> &[u8] {
        self.0.public_key_der()
    }

    fn sign(
        &self,
        alg: SignatureAlgorithm,
        message: &[u8],
        format: SigFormat,
    ) -> Result<Vec<u8>, HsmError> {
        blocking_io(|| self.0.sign(alg, message, format))
    }
}
