//! Black-box HTTP/1.1 conformance suite for `shardgate proxy`.
//!
//! Every case spawns the real binary (one shard) in front of a raw-socket mock upstream that
//! records exactly what crossed the proxy, talks to it with a raw TCP client whose every read
//! is bounded, and runs once per I/O driver (`uring` and `legacy`). Cases are one line each,
//! named after what they pin. A case that fails because the proxy is wrong stays here,
//! marked `#[ignore = "BUG: ..."]`, until the proxy is fixed.
//!
//! Layout: `wire` (strict framing used by both mocks), `harness` (proxy process and client),
//! `upstream` (mock upstream), then one file per area of the spec.

/// Defines `mod $name { fn uring(); fn legacy() }` for each case body, so every case runs on
/// both drivers and can be ignored per case (`#[ignore]` before `fn`) or per driver
/// (`[uring: #[ignore = "..."]]` after the name's argument list).
macro_rules! both_drivers {
    ($(
        $(#[$attr:meta])*
        fn $name:ident($d:ident)
        $([uring: $(#[$uattr:meta])*])?
        $([legacy: $(#[$lattr:meta])*])?
        $body:block
    )*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn case($d: crate::harness::Driver) $body

            $(#[$attr])* $($(#[$uattr])*)?
            #[test]
            fn uring() {
                case(crate::harness::Driver::Uring)
            }

            $(#[$attr])* $($(#[$lattr])*)?
            #[test]
            fn legacy() {
                case(crate::harness::Driver::Legacy)
            }
        }
    )*};
}

#[path = "conformance/harness.rs"]
mod harness;
#[path = "conformance/upstream.rs"]
mod upstream;
#[path = "conformance/wire.rs"]
mod wire;

#[path = "conformance/forwarding.rs"]
mod forwarding;
#[path = "conformance/hardening.rs"]
mod hardening;
#[path = "conformance/head_answers.rs"]
mod head_answers;
#[path = "conformance/integrity.rs"]
mod integrity;
#[path = "conformance/jwks.rs"]
mod jwks;
#[path = "conformance/lifecycle.rs"]
mod lifecycle;
#[path = "conformance/pooling.rs"]
mod pooling;
#[path = "conformance/request_cases.rs"]
mod request_cases;
#[path = "conformance/response_cases.rs"]
mod response_cases;
#[path = "conformance/slow_peers.rs"]
mod slow_peers;
#[path = "conformance/timing.rs"]
mod timing;
#[path = "conformance/tls.rs"]
mod tls;
