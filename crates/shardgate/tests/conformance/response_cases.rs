//! Upstream responses (RFC 9112 §4-§7): malformed or ambiguous ones become 502, a response cut
//! short stays visibly cut short, and bodiless responses keep the client connection in sync.

use crate::harness::{Driver, Proxy, ReadError};
use crate::upstream::Upstream;
use crate::wire::{contains, show};

#[derive(Clone, Copy)]
pub enum Outcome {
    /// A 502 from the gateway.
    BadGateway,
    /// Either a 502, or a response the gateway had already begun that the client sees end with
    /// a close before it is complete. Never a complete-looking response, never a hang.
    Truncated,
    /// Either a 502 or a clean (strictly parseable) 200 with this body: the gateway may repair
    /// what RFC 9112 lets it repair, but must not pass the defect on.
    BadGatewayOrClean(&'static [u8]),
    /// This status and body, complete, and the next request on the same client connection is
    /// answered correctly (framing stayed in sync).
    InSync(u16, &'static [u8]),
    /// This status and body, complete, and the next request on the same client connection is
    /// answered with the right 200 or a 502, never with leftover bytes of the first response.
    InSyncOr502(u16, &'static [u8]),
    /// This status and body, complete (the connection may close after it).
    Complete(u16, &'static [u8]),
}
use Outcome::*;

pub const GET: bool = false;
pub const HEAD: bool = true;
pub const CLOSE: bool = true;
pub const KEEP: bool = false;

pub fn run(driver: Driver, head: bool, reply: &'static [u8], close: bool, outcome: Outcome) {
    let up = Upstream::scripted(reply, close);
    let mut proxy = Proxy::start(driver, &[up.addr]);
    let mut c = proxy.client();
    let method = if head { "HEAD" } else { "GET" };
    c.send(format!("{method} /first HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    let what = format!("{method} answered with {}", show(reply));
    let first = c.read_final(head);
    match outcome {
        BadGateway => match first {
            Ok((_, r)) => assert_eq!(r.status, 502, "{what}: got {}", show(&r.raw)),
            Err(e) => panic!("{what}: expected a 502, {e}"),
        },
        Truncated => match first {
            Ok((_, r)) if r.status == 502 => {}
            Ok((_, r)) => panic!("{what}: complete-looking response {}", show(&r.raw)),
            Err(ReadError::Closed(partial)) => {
                assert!(
                    !contains(&partial, b"\r\n0\r\n\r\n"),
                    "{what}: terminating chunk sent"
                );
            }
            Err(e) => panic!("{what}: expected a visible truncation, {e}"),
        },
        BadGatewayOrClean(body) => match first {
            Ok((_, r)) if r.status == 502 => {}
            Ok((_, r)) => assert_eq!((r.status, &r.body[..]), (200, body), "{what}"),
            Err(e) => panic!("{what}: expected a 502 or a clean 200, {e}"),
        },
        InSync(status, body) | InSyncOr502(status, body) | Complete(status, body) => {
            let r = match first {
                Ok((_, r)) => r,
                Err(e) => panic!("{what}: expected a complete {status}, {e}"),
            };
            assert_eq!(
                (r.status, &r.body[..]),
                (status, body),
                "{what}: {}",
                show(&r.raw)
            );
            if let Complete(..) = outcome {
                return;
            }
            c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
            let next = match c.read_final(false) {
                Ok((_, r)) => r,
                Err(e) => panic!("{what}: next request on the same connection: {e}"),
            };
            let ok = (next.status, &next.body[..]) == (200, b"/next".as_slice());
            let ok = ok || matches!(outcome, InSyncOr502(..)) && next.status == 502;
            assert!(ok, "{what}: next request answered {}", show(&next.raw));
        }
    }
    assert!(proxy.alive(), "{what}: the proxy process died");
}

macro_rules! response_cases {
    ($($(#[$attr:meta])* $name:ident: $head:ident $reply:literal $close:ident => $out:expr;)*) => {
        both_drivers! {$(
            $(#[$attr])*
            fn $name(d) { run(d, $head, $reply, $close, $out) }
        )*}
    };
}

response_cases! {
    // --- Ambiguous framing ---
    cl_and_te: GET b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" KEEP => BadGateway;
    te_and_cl: GET b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" KEEP => BadGateway;
    cl_differing_duplicates: GET b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!" KEEP => BadGateway;
    cl_differing_list: GET b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok!" KEEP => BadGateway;
    cl_negative: GET b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok" KEEP => BadGateway;
    cl_plus_sign: GET b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok" KEEP => BadGateway;
    cl_overflow: GET b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999999\r\n\r\nok" KEEP => BadGateway;
    te_in_http10_response: GET b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" CLOSE => BadGateway;
    te_chunked_twice: GET b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n" KEEP => BadGateway;
    // --- Bad status lines and heads ---
    status_four_digits: GET b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok" KEEP => BadGateway;
    status_not_numeric: GET b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok" KEEP => BadGateway;
    status_bad_protocol: GET b"HTTZ/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" KEEP => BadGateway;
    status_http2: GET b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok" KEEP => BadGateway;
    garbage_head: GET b"hello there\r\n\r\n" KEEP => BadGateway;
    http09_style_body: GET b"ok, no head at all" CLOSE => BadGateway;
    closed_without_answer: GET b"" CLOSE => BadGateway;
    uninvited_101: GET b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n" KEEP => BadGateway;
    obs_fold: GET b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok" KEEP => BadGatewayOrClean(b"ok");
    space_before_colon: GET b"HTTP/1.1 200 OK\r\nX-A : b\r\nContent-Length: 2\r\n\r\nok" KEEP => BadGatewayOrClean(b"ok");
    nul_in_value: GET b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok" KEEP => BadGatewayOrClean(b"ok");
    bare_cr_in_value: GET b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok" KEEP => BadGatewayOrClean(b"ok");
    bad_name_byte: GET b"HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 2\r\n\r\nok" KEEP => BadGatewayOrClean(b"ok");
    bare_lf_head: GET b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok" KEEP => BadGatewayOrClean(b"ok");
    // --- Truncation stays visible ---
    body_shorter_than_cl: GET b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello" CLOSE => Truncated;
    chunked_cut_after_chunk: GET b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n" CLOSE => Truncated;
    chunked_cut_mid_chunk: GET b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel" CLOSE => Truncated;
    chunked_bad_size: GET b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n" KEEP => Truncated;
    chunked_size_overflow: GET b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n" KEEP => Truncated;
    chunked_bare_lf: GET b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n" KEEP => Truncated;
    only_interim_then_close: GET b"HTTP/1.1 100 Continue\r\n\r\n" CLOSE => BadGateway;
    head_cut: GET b"HTTP/1.1 200 OK\r\nContent-Len" CLOSE => BadGateway;
    // --- Bodiless responses keep the client connection in sync ---
    head_with_cl_no_body: HEAD b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" KEEP => InSync(200, b"");
    head_with_te_no_body: HEAD b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" KEEP => InSync(200, b"");
    no_content_204: GET b"HTTP/1.1 204 No Content\r\n\r\n" KEEP => InSync(204, b"");
    not_modified_304_with_cl: GET b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n" KEEP => InSync(304, b"");
    early_hints_103_then_200: GET b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" KEEP => InSync(200, b"ok");
    unsolicited_100_then_200: GET b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" KEEP => InSync(200, b"ok");
    chunked_with_trailer: GET b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n" KEEP => InSync(200, b"hello");
    not_modified_304_with_te: GET b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n" KEEP => InSync(304, b"");
    no_content_204_with_a_body: GET b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello" KEEP => InSyncOr502(204, b"");
    status_without_reason: GET b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok" KEEP => InSync(200, b"ok");
    status_without_reason_or_space: GET b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok" KEEP => BadGatewayOrClean(b"ok");
    zero_length: GET b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" KEEP => InSync(200, b"");
    head_answered_with_a_body: HEAD b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" KEEP => InSyncOr502(200, b"");
    extra_bytes_after_body: GET b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil" KEEP => InSyncOr502(200, b"ok");
    // --- Close-delimited bodies arrive whole ---
    close_delimited_11: GET b"HTTP/1.1 200 OK\r\n\r\nabc" CLOSE => Complete(200, b"abc");
    close_delimited_10: GET b"HTTP/1.0 200 OK\r\n\r\nabc" CLOSE => Complete(200, b"abc");
}
