//! Any bytes through `parse_proxy_header`, the PROXY protocol (v1 and v2) reader that runs
//! before anything else on a listener that enables it.
//! - It never panics, and a complete header is never longer than the input.
//! - The answer depends only on the header's own bytes: what follows it changes nothing, and
//!   every strict prefix of a complete header is "incomplete" (so a header split across reads
//!   parses the same).
//! - A refusal stays a refusal however many bytes follow.
//! - Inputs of 12 bytes or more that `looks_like_proxy_header` rejects are refused as
//!   `Missing`: a plain listener's check and the parser agree.
//!
//! Run: `cargo +nightly fuzz run proxy_header`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_http::{ProxyHeaderError, looks_like_proxy_header, parse_proxy_header};

fuzz_target!(|data: &[u8]| {
    let answer = parse_proxy_header(data);
    match answer {
        Ok(Some(h)) => {
            assert!(h.len > 0 && h.len <= data.len());
            assert!(looks_like_proxy_header(data));
            assert_eq!(parse_proxy_header(&data[..h.len]), answer, "trailing bytes mattered");
            for cut in 0..h.len {
                assert_eq!(parse_proxy_header(&data[..cut]), Ok(None), "prefix of {cut} bytes");
            }
        }
        Ok(None) => {}
        Err(e) => {
            let mut longer = data.to_vec();
            longer.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n");
            assert!(parse_proxy_header(&longer).is_err(), "{e} became acceptable");
        }
    }
    if data.len() >= 12 && !looks_like_proxy_header(data) {
        assert_eq!(answer, Err(ProxyHeaderError::Missing));
    }
});
