//! Random route tables and requests from the fuzzer's bytes; the router must agree with the
//! naive reference matcher in `tests/support/reference.rs` on every lookup and on which
//! inserts conflict. Run: `cargo +nightly fuzz run differential`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Flat, so that `super::generate` inside `diff` names the sibling module.
#[path = "../../tests/support/diff.rs"]
mod diff;
#[path = "../../tests/support/generate.rs"]
mod generate;
#[path = "../../tests/support/reference.rs"]
mod reference;

fuzz_target!(|data: &[u8]| {
    diff::run(&mut generate::Bytes(data));
});
