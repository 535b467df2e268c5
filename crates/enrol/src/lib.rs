//! cps-enrol.
