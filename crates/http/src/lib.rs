//! Sans-I/O HTTP/1.1 for Shardgate.
//!
//! This crate owns the rules of the wire: it parses request and response heads
//! (with `httparse`, into caller-provided stack arrays), applies the strict
//! validation a trusted proxy needs (RFC 9110 / RFC 9112 framing and smuggling
//! rules), decides how each body is framed, scans chunked bodies, and writes the
//! rewritten heads that go to the other side (hop-by-hop headers removed,
//! `X-Forwarded-*` added).
//!
//! It does no I/O and keeps no state between messages beyond what a caller
//! holds; it never allocates on the parse path. The proxy crate drives it.

mod canned;
mod chunked;
mod encode;
mod error;
mod header;
mod proxy_protocol;
mod request;
mod response;
mod trailers;
mod websocket;

pub use canned::{Canned, GatewayResponse, canned_response, gateway_response};
pub use chunked::{ChunkedDecoder, ChunkedError, Progress};
pub use encode::{
    ForwardContext, HeadEdits, ResponseEncodeOptions, encode_request_head, encode_response_head,
    owned_request_field,
};
pub use error::{ParseError, ResponseError};
pub use header::{ConnectionTokens, is_hop_by_hop, tokens_contain};
pub use proxy_protocol::{
    ProxiedFrom, ProxyHeader, ProxyHeaderError, V2_SIGNATURE, looks_like_proxy_header,
    parse_proxy_header,
};
pub use request::{
    BodyFraming, Limits, Method, Request, RequestInfo, Target, Version, parse_request,
};
pub use response::{Response, ResponseFraming, ResponseInfo, parse_response};
pub use trailers::{filter_trailers, trailer_field_allowed};
pub use websocket::websocket_accept;

/// The most headers a head may carry; the configured limit may only be lower.
pub const MAX_HEADERS_CAP: usize = 128;

/// A fresh array of empty header slots for [`parse_request`] / [`parse_response`].
pub fn empty_headers<'b>() -> [httparse::Header<'b>; MAX_HEADERS_CAP] {
    [httparse::EMPTY_HEADER; MAX_HEADERS_CAP]
}
