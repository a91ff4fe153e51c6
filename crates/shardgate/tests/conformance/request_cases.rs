//! Request validation (RFC 9112 §2-§7, RFC 9110 §5): smuggling shapes are rejected with the
//! connection closed and nothing reaching the upstream; valid-but-unusual shapes are forwarded
//! with unambiguous framing.

use crate::harness::{Driver, Proxy};
use crate::upstream::Upstream;
use crate::wire::{contains, show};

/// A request appended after every rejected case: if framing desynchronises, this is what the
/// upstream would see as a second request.
const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
const SENTINEL: &[u8] = b"GET /sentinel HTTP/1.1\r\nHost: sentinel\r\n\r\n";

#[derive(Clone, Copy)]
pub enum Expect {
    /// Rejected before anything is forwarded: one of these statuses, the connection closed,
    /// and the upstream sees no byte of it (only the sentinel sent afterwards).
    Reject(&'static [u16]),
    /// Rejected while the body streams: one of these statuses, the connection closed; the
    /// upstream may have seen a partial request on a connection that is then dropped, but never
    /// a complete one or the smuggled request.
    RejectInBody(&'static [u16]),
    /// Forwarded: a 200, and the upstream framed exactly one request with this body.
    Forward(&'static [u8]),
    /// Either `Forward` or `Reject(&[400])`: both are conforming, smuggling is not.
    ForwardOrReject(&'static [u8]),
}
use Expect::*;

const BAD: &[u16] = &[400];
/// Unknown transfer codings may be answered 501 (RFC 9112 §6.1) as well as 400.
const BAD_OR_501: &[u16] = &[400, 501];
/// An unsupported major version may be answered 505 (RFC 9110 §15.6.6) as well as 400.
const BAD_OR_505: &[u16] = &[400, 505];

pub fn run(driver: Driver, request: &[u8], expect: Expect) {
    let up = Upstream::echo();
    let mut proxy = Proxy::start(driver, &[up.addr]);
    let mut c = proxy.client();
    let sent = match expect {
        Reject(_) | RejectInBody(_) => [request, SMUGGLED].concat(),
        Forward(_) | ForwardOrReject(_) => request.to_vec(),
    };
    c.send(&sent);
    let what = format!("request {}", show(&sent));
    let r = c.expect_final(false, &what);
    let expect = match expect {
        ForwardOrReject(_) if r.status == 400 => Reject(BAD),
        ForwardOrReject(body) => Forward(body),
        e => e,
    };
    match expect {
        Reject(statuses) | RejectInBody(statuses) => {
            assert!(
                statuses.contains(&r.status),
                "{what}: status {} not in {statuses:?}",
                r.status
            );
            if let Err(e) = c.closed_cleanly() {
                panic!("{what}: framing in doubt but {e}");
            }
            // The sentinel is a sync point: once it has crossed, anything smuggled would have.
            let mut s = proxy.client();
            s.send(SENTINEL);
            let r = s.expect_final(false, "sentinel after a rejected request");
            assert_eq!(
                (r.status, &r.body[..]),
                (200, &b"/sentinel"[..]),
                "sentinel answer"
            );
            let seen = up.seen();
            let targets: Vec<&str> = seen.requests.iter().map(|r| r.target.as_str()).collect();
            assert_eq!(
                targets,
                ["/sentinel"],
                "{what}: upstream framed unexpected requests"
            );
            let raw = seen.conns.concat();
            assert!(
                !contains(&raw, b"smuggled"),
                "{what}: upstream saw {}",
                show(&raw)
            );
            if let Reject(_) = expect {
                let sentinel_len = seen.requests[0].raw.len();
                assert_eq!(
                    raw.len(),
                    sentinel_len,
                    "{what}: upstream saw {}",
                    show(&raw)
                );
            }
        }
        Forward(body) => {
            assert_eq!(
                r.status,
                200,
                "{what}: status; upstream errors {:?}",
                up.seen().errors
            );
            let reqs = up.requests();
            assert_eq!(reqs.len(), 1, "{what}: upstream requests {reqs:?}");
            assert_eq!(reqs[0].body, body, "{what}: body as the upstream framed it");
            assert!(
                reqs[0].head.has("host"),
                "{what}: Host dropped: {}",
                show(&reqs[0].raw)
            );
        }
        ForwardOrReject(_) => unreachable!("resolved above"),
    }
    assert!(proxy.alive(), "{what}: the proxy process died");
}

macro_rules! request_cases {
    ($($(#[$attr:meta])* $name:ident: $req:expr => $expect:expr;)*) => {
        both_drivers! {$(
            $(#[$attr])*
            fn $name(d) { run(d, $req, $expect) }
        )*}
    };
}

request_cases! {
    // --- Content-Length together with Transfer-Encoding (RFC 9112 §6.1) ---
    cl_then_te: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" => Reject(BAD);
    te_then_cl: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" => Reject(BAD);
    // --- Transfer-Encoding whose final coding is not (exactly once) chunked ---
    te_chunked_then_identity: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" => Reject(BAD_OR_501);
    te_xchunked: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" => Reject(BAD_OR_501);
    te_chunked_with_suffix: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n" => Reject(BAD_OR_501);
    te_vertical_tab: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n" => Reject(BAD_OR_501);
    te_duplicate_chunked_lines: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" => Reject(BAD);
    te_chunked_twice_in_list: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n" => Reject(BAD);
    te_second_line_identity: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" => Reject(BAD_OR_501);
    te_on_http10: b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" => Reject(BAD);
    // --- Only `chunked`, exactly: list tricks other parsers read differently ---
    te_coding_before_chunked: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" => Reject(&[501]);
    te_coding_line_before_chunked: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" => Reject(&[501]);
    te_trailing_comma: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n" => Reject(BAD);
    te_leading_comma: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n" => Reject(BAD);
    te_space_before_colon: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" => Reject(BAD);
    te_folded_onto_host: b"POST / HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" => Reject(BAD);
    te_folded_value: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" => Reject(BAD);
    te_on_get_with_cl: b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" => Reject(BAD);
    // --- Content-Length shapes (RFC 9110 §8.6) ---
    cl_plus_sign: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello" => Reject(BAD);
    cl_two_numbers: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello" => Reject(BAD);
    cl_differing_duplicates: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!" => Reject(BAD);
    cl_differing_list: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!" => Reject(BAD);
    cl_overflow: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999999\r\n\r\nhello" => Reject(BAD);
    cl_negative: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\nhello" => Reject(BAD);
    cl_hex: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello" => Reject(BAD);
    cl_decimal_point: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5.0\r\n\r\nhello" => Reject(BAD);
    cl_empty: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\nhello" => Reject(BAD);
    cl_over_max_body: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\nhello" => Reject(&[413]);
    // --- Chunked framing (RFC 9112 §7.1) ---
    chunk_size_hex_prefix: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n" => RejectInBody(BAD);
    chunk_size_trailing_space: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n" => RejectInBody(BAD);
    chunk_size_negative: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n" => RejectInBody(BAD);
    chunk_size_overflow: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n" => RejectInBody(&[400, 413]);
    chunk_size_overflow_wraps_to_5: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n" => RejectInBody(&[400, 413]);
    chunk_size_17_digits_with_zeros: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n" => RejectInBody(BAD);
    chunk_size_empty: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n" => RejectInBody(BAD);
    chunk_size_bare_lf: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n" => RejectInBody(BAD);
    chunk_data_bare_lf: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n" => RejectInBody(BAD);
    chunk_data_missing_crlf: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n" => RejectInBody(BAD);
    chunk_data_longer_than_size: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n" => RejectInBody(BAD);
    chunk_ext_control_char: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\x01b\r\nhello\r\n0\r\n\r\n" => RejectInBody(BAD);
    chunk_ext_bare_cr: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n" => RejectInBody(BAD);
    last_chunk_bare_lf: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\n\n" => RejectInBody(BAD);
    trailer_bare_lf: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX: y\n\r\n" => RejectInBody(BAD);
    // --- Field syntax (RFC 9112 §5, RFC 9110 §5.5) ---
    obs_fold: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n" => Reject(BAD);
    space_before_colon: b"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n" => Reject(BAD);
    tab_before_colon: b"GET / HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n" => Reject(BAD);
    nul_in_value: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n" => Reject(BAD);
    bare_cr_in_value: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n" => Reject(BAD);
    name_with_space: b"GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n" => Reject(BAD);
    name_with_delimiter: b"GET / HTTP/1.1\r\nHost: a\r\nX@A: b\r\n\r\n" => Reject(BAD);
    name_non_ascii: b"GET / HTTP/1.1\r\nHost: a\r\nX\xffA: b\r\n\r\n" => Reject(BAD);
    name_empty: b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n" => Reject(BAD);
    line_without_colon: b"GET / HTTP/1.1\r\nHost: a\r\nX-A b\r\n\r\n" => Reject(BAD);
    // --- Host (RFC 9112 §3.2) ---
    host_missing_on_11: b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n" => Reject(BAD);
    host_duplicate: b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" => Reject(BAD);
    host_with_space: b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n" => Reject(BAD);
    host_list: b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n" => Reject(BAD);
    host_missing_with_absolute_form: b"GET http://a/ HTTP/1.1\r\nX-A: b\r\n\r\n" => Reject(BAD);
    host_bad_port: b"GET / HTTP/1.1\r\nHost: a:b\r\n\r\n" => Reject(BAD);
    host_with_userinfo: b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n" => Reject(BAD);
    absolute_form_with_userinfo: b"GET http://user:pw@a/ HTTP/1.1\r\nHost: a\r\n\r\n" => Reject(BAD);
    absolute_form_empty_authority: b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n" => Reject(BAD);
    // --- Request line (RFC 9112 §3) ---
    line_tab_separated: b"GET\t/\tHTTP/1.1\r\nHost: a\r\n\r\n" => ForwardOrReject(b"");
    line_double_space: b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n" => Reject(BAD);
    line_extra_token: b"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n" => Reject(BAD);
    line_space_in_target: b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n" => Reject(BAD);
    line_nul_in_target: b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n" => Reject(BAD);
    line_bad_method_byte: b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n" => Reject(BAD);
    line_lowercase_version: b"GET / http/1.1\r\nHost: a\r\n\r\n" => Reject(BAD);
    line_target_not_origin_form: b"GET a HTTP/1.1\r\nHost: a\r\n\r\n" => Reject(BAD);
    line_http_2_0: b"GET / HTTP/2.0\r\nHost: a\r\n\r\n" => Reject(BAD_OR_505);
    line_http_0_9: b"GET /\r\n\r\n" => Reject(BAD_OR_505);
    line_non_ascii_target: b"GET /a\xffb HTTP/1.1\r\nHost: a\r\n\r\n" => Reject(BAD);
    line_del_in_target: b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n" => Reject(BAD);
    line_version_garbage: b"GET / HTTP/1.x\r\nHost: a\r\n\r\n" => Reject(BAD_OR_505);
    // --- Hop-by-hop abuse: a framing field named in Connection (RFC 9110 §7.6.1) ---
    connection_names_content_length: b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n" => ForwardOrReject(b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
    connection_names_transfer_encoding: b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" => ForwardOrReject(b"hello");
    connection_names_host: b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Host\r\n\r\n" => ForwardOrReject(b"");
    // --- Equal duplicates: accepting or rejecting both conform (RFC 9110 §8.6) ---
    cl_equal_duplicates: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello" => ForwardOrReject(b"hello");
    cl_equal_list: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello" => ForwardOrReject(b"hello");
    // --- Valid shapes that must be forwarded, unambiguously ---
    ok_cl_leading_zeros: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 05\r\n\r\nhello" => Forward(b"hello");
    ok_te_tab_after_colon: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" => Forward(b"hello");
    ok_te_extra_spaces: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:   chunked  \r\n\r\n5\r\nhello\r\n0\r\n\r\n" => Forward(b"hello");
    ok_te_uppercase: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n" => Forward(b"hello");
    ok_chunk_size_leading_zeros: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n005\r\nhello\r\n0\r\n\r\n" => Forward(b"hello");
    ok_chunk_size_uppercase_hex: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nA\r\nhelloworld\r\n0\r\n\r\n" => Forward(b"helloworld");
    ok_chunk_extension: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;name=\"v\"\r\nhello\r\n0;x\r\n\r\n" => Forward(b"hello");
    ok_chunked_trailer: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n" => Forward(b"hello");
    ok_many_small_chunks: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nh\r\n1\r\ne\r\n3\r\nllo\r\n0\r\n\r\n" => Forward(b"hello");
    ok_body_hides_a_request: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n" => Forward(b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
    ok_http10_without_host: b"GET / HTTP/1.0\r\n\r\n" => Forward(b"");
    ok_trailer_named_content_length: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 99\r\n\r\n" => ForwardOrReject(b"hello");
    ok_cl_with_surrounding_spaces: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:   5  \r\n\r\nhello" => Forward(b"hello");
    ok_framing_names_any_case: b"POST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 5\r\n\r\nhello" => Forward(b"hello");
    ok_chunked_empty_body_on_get: b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" => Forward(b"");
    ok_value_with_obs_text: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9 \xff\r\n\r\n" => Forward(b"");
    ok_get_with_body: b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" => Forward(b"hello");
}
