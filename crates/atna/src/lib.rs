//! cps-atna.
