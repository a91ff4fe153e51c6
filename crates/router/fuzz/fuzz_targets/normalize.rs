//! Any bytes through the path normaliser: no panic; when it succeeds the result is normal,
//! normalising it again changes nothing, and the fast check agrees with the rewrite.
//! Run: `cargo +nightly fuzz run normalize`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_router::{Normalized, is_normal, normalize_path, split_query};

fuzz_target!(|raw: &[u8]| {
    let mut out = Vec::new();
    let Ok(n) = normalize_path(raw, &mut out) else { return };
    let target = if n == Normalized::Rewritten { &out[..] } else { raw };
    let (path, query) = split_query(target);
    assert!(is_normal(path));
    assert_eq!(query, split_query(raw).1, "the query is kept verbatim");
    assert_eq!(n == Normalized::Unchanged, is_normal(split_query(raw).0));
    let mut again = Vec::new();
    assert_eq!(normalize_path(target, &mut again), Ok(Normalized::Unchanged));
});
