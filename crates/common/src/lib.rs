//! Small building blocks shared by the filters, the upstream crate and the configuration:
//! [`hash`] (fast non-cryptographic hashing of keys and addresses, and a seeded random number
//! generator) and [`units`] (durations such as `250ms`, sizes such as `16KiB`, and base64, as
//! configuration text). No I/O, no global state.

pub mod hash;
pub mod units;
