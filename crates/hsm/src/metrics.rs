//! HSM signature latency and errors, by key label (through the `metrics` facade: counted only
//! when the process installed a recorder).

use std::time::Duration;

/// Histogram of signature latency, seconds, by key label.
pub const SIGN_SECONDS: &str = "cps_hsm_sign_duration_seconds";
/// Counter of failed signatures, by key label.
pub const SIGN_ERRORS: &str = "cps_hsm_sign_errors_total";

/// One signature by the key `label`, which took `took`.
pub(crate) fn signed(label: &str, took: Duration, ok: bool) {
    metrics::histogram!(SIGN_SECONDS, "key" => label.to_owned()).record(took.as_secs_f64());
    if !ok {
        metrics::counter!(SIGN_ERRORS, "key" => label.to_owned()).increment(1);
    }
}
