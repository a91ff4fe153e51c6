//! Any text as a configuration, loaded fresh and as a reload of the example configuration. No
//! panic; a refusal names at least one problem, each with a message; a reload that applies
//! reports an effective text that loads on its own.
//!
//! Seeded with the shipped configurations. A fuzzed `host:port` endpoint is resolved as the
//! gateway would (slow, and not repeatable where DNS answers change). Run with standard input
//! empty (a fuzzed key file path may name `/dev/stdin`):
//! `cargo +nightly fuzz run config corpus/config ../../../configs < /dev/null`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_config::{ConfigErrors, from_toml, reload_toml};

const PREVIOUS: &str = include_str!("../../../../configs/example.toml");

fn check_refusal(errors: &ConfigErrors) {
    assert!(!errors.0.is_empty(), "a refusal with no problem");
    for e in &errors.0 {
        assert!(!e.message.trim().is_empty(), "a problem without a message: {e:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = from_toml(text) {
        check_refusal(&e);
    }
    match reload_toml(text, PREVIOUS) {
        Ok(reloaded) => {
            if let Err(e) = from_toml(&reloaded.effective) {
                panic!("the effective text of an applied reload does not load: {e}");
            }
        }
        Err(e) => check_refusal(&e),
    }
});
