//! Blocking work (an HSM call, a store commit) run from code that may be on a Tokio worker.

/// Runs blocking work (an HSM call, a store commit) from code that may be running on a Tokio
/// worker (a TLS handshake, a handler computing an OCSP answer, `/health` raising an alarm):
/// on a multi-threaded runtime's worker, the worker first hands its other tasks to another
/// thread (`block_in_place`), so no async task waits behind the I/O; anywhere else (a blocking
/// thread, a command without a runtime) it simply runs.
pub fn blocking_io<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
