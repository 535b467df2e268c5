//! cps-xua.
