//! Writing the heads that leave the proxy: the request to the upstream and
//! the response to the client. Each field is copied as received unless it is
//! hop-by-hop, named by `Connection`, or one the proxy owns.

use crate::header::{ConnectionTokens, is_hop_by_hop};
use crate::request::{BodyFraming, Request, Version};
use crate::response::{Response, ResponseFraming};

/// What the proxy adds to a forwarded request.
#[derive(Debug, Clone, Copy)]
pub struct ForwardContext<'a> {
    /// The peer's address as text, appended to `X-Forwarded-For`.
    pub client_ip: &'a [u8],
    /// Keep the incoming `X-Forwarded-For` entries before the peer's: only when the peer is
    /// a trusted proxy; otherwise what the client claims is dropped.
    pub keep_forwarded_for: bool,
    /// Leave out fields with `_` in their names (CGI and WSGI origins read `X_Consumer`
    /// as `X-Consumer`).
    pub drop_underscored: bool,
    /// `http` or `https`, sent as `X-Forwarded-Proto`.
    pub proto: &'a [u8],
    /// The path to send instead of the request's own (after normalisation).
    pub path: Option<&'a [u8]>,
    /// Host to send when the client sent none (HTTP/1.0): the upstream's address.
    pub fallback_host: &'a [u8],
    /// What the route's filters change in the head.
    pub edits: HeadEdits<'a>,
    /// A field the listener owns (lower-case name) and the value it sets,
    /// if any: the client's own is always left out (the verified client
    /// certificate's subject, for one).
    pub identity: Option<(&'a [u8], Option<&'a [u8]>)>,
}

/// Changes to a head beyond what the proxy does itself: fields to leave out
/// (lower-case names) and complete lines to add (`Name: value\r\n` each),
/// written after the kept fields. Framing and connection fields are the
/// encoder's own and are never dropped or added through this.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeadEdits<'a> {
    pub drop: &'a [Box<[u8]>],
    pub add: &'a [u8],
}

impl HeadEdits<'_> {
    /// No changes.
    pub const NONE: HeadEdits<'static> = HeadEdits {
        drop: &[],
        add: b"",
    };

    /// Whether the edits drop (or replace) field `name`.
    pub fn drops(&self, name: &[u8]) -> bool {
        self.drop.iter().any(|d| d.eq_ignore_ascii_case(name))
    }
}

fn put(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// Whether the encoder drops or rewrites this request field itself: framing,
/// the client-address story (a client must not be able to claim an address or
/// a scheme), and the URL overrides some frameworks honour over the request line.
pub fn owned_request_field(name: &[u8]) -> bool {
    const OWNED: [&[u8]; 12] = [
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-real-ip",
        b"true-client-ip",
        b"forwarded",
        b"x-original-url",
        b"x-rewrite-url",
        b"expect",
    ];
    OWNED.iter().any(|o| name.eq_ignore_ascii_case(o))
}

fn dropped(name: &[u8], connection: &ConnectionTokens<'_>) -> bool {
    is_hop_by_hop(name) || connection.names(name)
}

/// Appends the head to send upstream for `req` to `out`.
pub fn encode_request_head(req: &Request<'_, '_>, ctx: &ForwardContext<'_>, out: &mut Vec<u8>) {
    let path = ctx.path.unwrap_or(req.path);
    put(out, &[req.method.as_bytes(), b" ", path, b" HTTP/1.1\r\n"]);
    let host = if req.host.is_empty() {
        ctx.fallback_host
    } else {
        req.host
    };
    put(out, &[b"Host: ", host, b"\r\n"]);

    for h in req.headers {
        let name = h.name.as_bytes();
        if owned_request_field(name)
            || dropped(name, &req.connection)
            || ctx.edits.drops(name)
            || (ctx.drop_underscored && name.contains(&b'_'))
            || ctx
                .identity
                .is_some_and(|(owned, _)| name.eq_ignore_ascii_case(owned))
        {
            continue;
        }
        put(out, &[name, b": ", h.value, b"\r\n"]);
    }
    out.extend_from_slice(ctx.edits.add);
    if let Some((name, Some(value))) = ctx.identity {
        put(out, &[name, b": ", value, b"\r\n"]);
    }
    // From a trusted proxy, every incoming X-Forwarded-For value in order;
    // then the peer.
    out.extend_from_slice(b"X-Forwarded-For: ");
    if ctx.keep_forwarded_for {
        for h in req.headers {
            if h.name.as_bytes().eq_ignore_ascii_case(b"x-forwarded-for") {
                put(out, &[h.value, b", "]);
            }
        }
    }
    put(out, &[ctx.client_ip, b"\r\n"]);
    put(out, &[b"X-Forwarded-Proto: ", ctx.proto, b"\r\n"]);
    if !req.host.is_empty() {
        put(out, &[b"X-Forwarded-Host: ", req.host, b"\r\n"]);
    }
    match req.info.body {
        BodyFraming::Length(n) => {
            let mut digits = itoa_buf();
            put(
                out,
                &[b"Content-Length: ", fmt_u64(n, &mut digits), b"\r\n"],
            );
        }
        // One canonical line, however the client spelled it (the parser
        // accepted exactly one `chunked`): the upstream has nothing to
        // read differently.
        BodyFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyFraming::None => {}
    }
    if req.info.upgrade {
        put(
            out,
            &[b"Connection: upgrade\r\nUpgrade: ", req.upgrade, b"\r\n"],
        );
    }
    out.extend_from_slice(b"\r\n");
}

/// How the client side of a response is framed.
#[derive(Debug, Clone, Copy)]
pub struct ResponseEncodeOptions<'a> {
    /// The client's HTTP version.
    pub client_version: Version,
    /// The proxy closes the client connection after this response.
    pub close: bool,
    /// The body is chunked upstream but is sent de-chunked (HTTP/1.0 client).
    pub dechunk: bool,
    /// This is a `101` the client asked for; keep `Upgrade`.
    pub upgrade: bool,
    /// What the route's filters change in the head.
    pub edits: HeadEdits<'a>,
}

/// Appends the head to send to the client for `res` to `out`.
pub fn encode_response_head(
    res: &Response<'_, '_>,
    opts: &ResponseEncodeOptions<'_>,
    out: &mut Vec<u8>,
) {
    let mut digits = itoa_buf();
    let status = fmt_u64(u64::from(res.info.status), &mut digits);
    put(out, &[b"HTTP/1.1 ", status, b" ", res.reason, b"\r\n"]);
    let rewrite_length = matches!(res.info.framing, ResponseFraming::Length(_));
    let mut upgrade_value: &[u8] = b"";
    for h in res.headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Kept when the body travels as received: chunked to a 1.1 client,
            // or close-delimited with other codings still applied.
            let passed_as_is = match res.info.framing {
                ResponseFraming::Chunked => !opts.dechunk,
                ResponseFraming::UntilClose => true,
                _ => false,
            };
            if passed_as_is {
                put(out, &[name, b": ", h.value, b"\r\n"]);
            }
            continue;
        }
        if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_value = h.value;
            continue;
        }
        let is_length = name.eq_ignore_ascii_case(b"content-length");
        if rewrite_length && is_length {
            continue;
        }
        // Content-Length is framing, not a connection option: a `Connection`
        // header naming it must not strip it (the body would turn into
        // read-until-close for the client).
        if (dropped(name, &res.connection) || opts.edits.drops(name)) && !is_length {
            continue;
        }
        put(out, &[name, b": ", h.value, b"\r\n"]);
    }
    out.extend_from_slice(opts.edits.add);
    if let ResponseFraming::Length(n) = res.info.framing {
        let mut d = itoa_buf();
        put(out, &[b"Content-Length: ", fmt_u64(n, &mut d), b"\r\n"]);
    }
    if opts.upgrade {
        put(
            out,
            &[b"Connection: upgrade\r\nUpgrade: ", upgrade_value, b"\r\n"],
        );
    } else if opts.close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if opts.client_version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// Formats `n` in decimal into `buf` without allocating.
pub(crate) fn fmt_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limits, Method, empty_headers, parse_request, parse_response};

    fn forward(raw: &[u8]) -> String {
        forward_with(raw, HeadEdits::NONE)
    }

    fn forward_with(raw: &[u8], edits: HeadEdits<'_>) -> String {
        let mut h = empty_headers();
        let req = parse_request(raw, &mut h, &Limits::default())
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        let ctx = ForwardContext {
            identity: None,
            client_ip: b"10.0.0.9",
            keep_forwarded_for: true,
            drop_underscored: true,
            proto: b"http",
            path: None,
            fallback_host: b"127.0.0.1:9000",
            edits,
        };
        encode_request_head(&req, &ctx, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_drops_hop_by_hop_and_connection_named() {
        let got = forward(
            b"GET /a?b HTTP/1.1\r\nHost: ex.com\r\nConnection: keep-alive, X-Secret\r\n\
              Keep-Alive: 5\r\nX-Secret: 1\r\nTE: trailers\r\nTrailer: X\r\n\
              Proxy-Connection: x\r\nUpgrade: websocket\r\nAccept: */*\r\n\r\n",
        );
        assert_eq!(
            got,
            "GET /a?b HTTP/1.1\r\nHost: ex.com\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.9\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: ex.com\r\n\r\n"
        );
    }

    #[test]
    fn request_appends_to_forwarded_for_and_overwrites_proto() {
        let got = forward(
            b"POST / HTTP/1.1\r\nHost: ex.com\r\nX-Forwarded-For: 1.1.1.1\r\n\
              X-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Proto: https\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!(
            got,
            "POST / HTTP/1.1\r\nHost: ex.com\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: ex.com\r\nContent-Length: 3\r\n\r\n"
        );
    }

    #[test]
    fn what_the_client_claims_about_itself_is_dropped() {
        let got = forward(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Real-IP: 1.1.1.1\r\nTrue-Client-IP: 1.1.1.1\r\n\
              Forwarded: for=1.1.1.1\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\n\
              X_Consumer: root\r\nX-Kept: 1\r\n\r\n",
        );
        assert_eq!(
            got,
            "GET / HTTP/1.1\r\nHost: a\r\nX-Kept: 1\r\nX-Forwarded-For: 10.0.0.9\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\n\r\n"
        );
    }

    #[test]
    fn an_untrusted_peer_s_forwarded_for_is_replaced() {
        let mut h = empty_headers();
        let req = parse_request(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nX_Keep: 1\r\n\r\n",
            &mut h,
            &Limits::default(),
        )
        .unwrap()
        .unwrap();
        let mut out = Vec::new();
        let ctx = ForwardContext {
            identity: None,
            client_ip: b"10.0.0.9",
            keep_forwarded_for: false,
            drop_underscored: false,
            proto: b"http",
            path: None,
            fallback_host: b"",
            edits: HeadEdits::NONE,
        };
        encode_request_head(&req, &ctx, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nHost: a\r\nX_Keep: 1\r\nX-Forwarded-For: 10.0.0.9\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\n\r\n"
        );
    }

    #[test]
    fn request_absolute_form_replaces_host() {
        let got = forward(b"GET http://Other.example:8080/x HTTP/1.1\r\nHost: ex.com\r\n\r\n");
        assert!(
            got.starts_with("GET /x HTTP/1.1\r\nHost: Other.example:8080\r\n"),
            "{got}"
        );
    }

    #[test]
    fn request_keeps_upgrade_when_upgrading() {
        let got = forward(
            b"GET /ws HTTP/1.1\r\nHost: ex.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert!(
            got.ends_with("Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
            "{got}"
        );
    }

    #[test]
    fn request_http10_without_host_gets_fallback() {
        let got = forward(b"GET / HTTP/1.0\r\n\r\n");
        assert!(
            got.starts_with("GET / HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n"),
            "{got}"
        );
    }

    #[test]
    fn request_chunked_keeps_transfer_encoding() {
        let got = forward(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(got.contains("Transfer-Encoding: chunked\r\n"), "{got}");
    }

    fn respond(raw: &[u8], opts: ResponseEncodeOptions) -> String {
        let mut h = empty_headers();
        let res = parse_response(raw, &mut h, Method::Get, 8192)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        encode_response_head(&res, &opts, &mut out);
        String::from_utf8(out).unwrap()
    }

    const KEEP: ResponseEncodeOptions = ResponseEncodeOptions {
        client_version: Version::Http11,
        close: false,
        dechunk: false,
        upgrade: false,
        edits: HeadEdits::NONE,
    };

    #[test]
    fn filter_edits_drop_fields_and_add_lines_on_both_sides() {
        let drop: [Box<[u8]>; 2] = [b"x-consumer".as_slice().into(), b"server".as_slice().into()];
        let edits = HeadEdits {
            drop: &drop,
            add: b"X-Consumer: alice\r\n",
        };
        let got = forward_with(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Consumer: mallory\r\nContent-Length: 0\r\n\r\n",
            edits,
        );
        assert_eq!(
            got,
            "GET / HTTP/1.1\r\nHost: a\r\nX-Consumer: alice\r\nX-Forwarded-For: 10.0.0.9\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\n\r\n"
        );
        let got = respond(
            b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 0\r\n\r\n",
            ResponseEncodeOptions { edits, ..KEEP },
        );
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Consumer: alice\r\n\r\n"
        );
    }

    #[test]
    fn response_strips_hop_by_hop() {
        let got = respond(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nKeep-Alive: timeout=5\r\n\
              X-Internal: 1\r\nContent-Length: 2\r\nContent-Length: 2\r\nX-Ok: y\r\n\r\n",
            KEEP,
        );
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\nX-Ok: y\r\nContent-Length: 2\r\n\r\n"
        );
    }

    #[test]
    fn response_close_and_dechunk() {
        let got = respond(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            ResponseEncodeOptions {
                client_version: Version::Http10,
                close: true,
                dechunk: true,
                upgrade: false,
                edits: HeadEdits::NONE,
            },
        );
        assert_eq!(got, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    }

    #[test]
    fn response_http10_keep_alive() {
        let got = respond(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            ResponseEncodeOptions {
                client_version: Version::Http10,
                ..KEEP
            },
        );
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn response_connection_naming_content_length_zero_keeps_length() {
        let got = respond(
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 0\r\n\r\n",
            KEEP,
        );
        assert_eq!(got, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn fmt_u64_edges() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut b = itoa_buf();
            assert_eq!(fmt_u64(n, &mut b), n.to_string().as_bytes());
        }
    }
}
