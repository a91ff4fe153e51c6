use super::*;
use crate::empty_headers;

fn parse(raw: &[u8]) -> Result<Option<RequestInfo>, ParseError> {
    parse_with(raw, &Limits::default())
}

fn parse_with(raw: &[u8], limits: &Limits) -> Result<Option<RequestInfo>, ParseError> {
    let mut h = empty_headers();
    parse_request(raw, &mut h, limits).map(|r| r.map(|r| r.info))
}

macro_rules! reject {
    ($($name:ident: $raw:expr => $err:ident;)*) => {
        $(
            #[test]
            fn $name() {
                assert_eq!(parse($raw).err(), Some(ParseError::$err));
            }
        )*
    };
}

reject! {
    cl_with_te: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" => ContentLengthWithTransferEncoding;
    te_with_cl: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n" => ContentLengthWithTransferEncoding;
    differing_cl: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n" => BadContentLength;
    differing_cl_list: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n" => BadContentLength;
    negative_cl: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n" => BadContentLength;
    plus_cl: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n" => BadContentLength;
    hex_cl: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x1\r\n\r\n" => BadContentLength;
    overflow_cl: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n" => BadContentLength;
    empty_cl: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n" => BadContentLength;
    te_not_final_chunked: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n" => TransferCodingNotImplemented;
    te_gzip_only: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n" => TransferCodingNotImplemented;
    te_coding_before_chunked: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" => TransferCodingNotImplemented;
    te_coding_in_another_field: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" => TransferCodingNotImplemented;
    te_trailing_comma: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n" => BadTransferEncoding;
    te_leading_comma: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n" => BadTransferEncoding;
    te_chunked_with_parameter: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n" => BadTransferEncoding;
    te_chunked_twice: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" => BadTransferEncoding;
    te_identity: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n" => TransferCodingNotImplemented;
    te_vertical_tab: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n" => BadHeaderValue;
    te_quoted: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n" => BadTransferEncoding;
    te_on_http10: b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" => BadTransferEncoding;
    te_empty: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n" => BadTransferEncoding;
    obs_fold: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n" => ObsFold;
    obs_fold_tab: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n" => ObsFold;
    space_before_colon: b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n" => BadHeaderName;
    tab_before_colon: b"GET / HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n" => BadHeaderName;
    bad_name_byte: b"GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n" => BadHeaderName;
    name_with_slash: b"GET / HTTP/1.1\r\nHost: a\r\nX/A: b\r\n\r\n" => BadHeaderName;
    empty_name: b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n" => BadHeaderName;
    nul_in_value: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n" => BadHeaderValue;
    cr_in_value: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n" => BadHeaderValue;
    del_in_value: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n" => BadHeaderValue;
    bare_lf_header: b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n" => BareLf;
    bare_lf_request_line: b"GET / HTTP/1.1\nHost: a\r\n\r\n" => BareLf;
    bare_lf_end: b"GET / HTTP/1.1\r\nHost: a\r\n\n" => BareLf;
    missing_host_11: b"GET / HTTP/1.1\r\n\r\n" => BadHost;
    duplicate_host: b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" => BadHost;
    duplicate_host_same: b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n" => BadHost;
    host_with_space: b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n" => BadHost;
    host_with_userinfo: b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n" => BadHost;
    host_with_slash: b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n" => BadHost;
    host_bad_port: b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n" => BadHost;
    lowercase_method_ok_but_space: b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n" => BadRequestLine;
    no_version: b"GET /\r\nHost: a\r\n\r\n" => BadRequestLine;
    relative_target: b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n" => BadRequestLine;
    target_with_space: b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n" => BadRequestLine;
    absolute_form_without_host: b"GET http://a/ HTTP/1.1\r\nX-A: b\r\n\r\n" => BadHost;
    http2_version: b"GET / HTTP/2.0\r\nHost: a\r\n\r\n" => UnsupportedVersion;
    http09_version: b"GET / HTTP/0.9\r\nHost: a\r\n\r\n" => UnsupportedVersion;
    bad_method_byte: b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n" => BadRequestLine;
    control_in_target: b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n" => BadRequestLine;
    absolute_with_userinfo: b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n" => BadRequestLine;
    absolute_other_scheme: b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n" => BadRequestLine;
    asterisk_not_options: b"GET * HTTP/1.1\r\nHost: a\r\n\r\n" => BadRequestLine;
    connect: b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n" => MethodNotImplemented;
    expect_other: b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n" => UnsupportedExpectation;
}

#[test]
fn accepts_valid_requests() {
    let cases: &[(&[u8], BodyFraming, bool)] = &[
        (
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            BodyFraming::None,
            true,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            BodyFraming::None,
            false,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", BodyFraming::None, false),
        (
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            BodyFraming::None,
            true,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
            BodyFraming::Length(5),
            true,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            BodyFraming::Length(5),
            true,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            BodyFraming::None,
            true,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            BodyFraming::Chunked,
            true,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  chunked \r\n\r\n",
            BodyFraming::Chunked,
            true,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
            BodyFraming::Chunked,
            true,
        ),
        (
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            BodyFraming::None,
            true,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
            BodyFraming::None,
            true,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a.example.com:80\r\n\r\n",
            BodyFraming::None,
            true,
        ),
        (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", BodyFraming::None, true),
        (
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            BodyFraming::None,
            true,
        ),
        (
            b"PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n",
            BodyFraming::None,
            true,
        ),
    ];
    for (raw, body, keep_alive) in cases {
        let info = parse(raw)
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(raw)))
            .unwrap();
        assert_eq!(info.body, *body, "{}", String::from_utf8_lossy(raw));
        assert_eq!(
            info.keep_alive,
            *keep_alive,
            "{}",
            String::from_utf8_lossy(raw)
        );
        assert_eq!(info.head_len, raw.len());
    }
}

#[test]
fn absolute_form_authority_replaces_host() {
    let raw = b"GET http://API.example.com:81/v1?x=1 HTTP/1.1\r\nHost: other\r\n\r\n";
    let mut h = empty_headers();
    let req = parse_request(raw, &mut h, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(req.host, b"API.example.com:81");
    assert_eq!(req.path, b"/v1?x=1");
    assert_eq!(req.info.target, Target::Absolute);
    let raw = b"GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n";
    let mut h = empty_headers();
    let req = parse_request(raw, &mut h, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(req.path, b"/");
}

#[test]
fn upgrade_needs_connection_upgrade_and_not_h2c() {
    let cases: &[(&[u8], bool)] = &[
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", true),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, upgrade\r\nUpgrade: websocket\r\n\r\n", true),
        (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", false),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n", false),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false),
    ];
    for (raw, want) in cases {
        assert_eq!(
            parse(raw).unwrap().unwrap().upgrade,
            *want,
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn expect_continue_only_with_body_on_http11() {
    let with_body =
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
    assert!(parse(with_body).unwrap().unwrap().expect_continue);
    let no_body = b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n";
    assert!(!parse(no_body).unwrap().unwrap().expect_continue);
    let http10 = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    assert!(!parse(http10).unwrap().unwrap().expect_continue);
}

#[test]
fn partial_heads_wait_for_more() {
    for raw in [
        &b"GE"[..],
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n",
    ] {
        assert_eq!(parse(raw), Ok(None), "{}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn limits_give_414_and_431_and_413() {
    let limits = Limits {
        max_request_line: 64,
        max_head: 256,
        max_headers: 4,
        max_body: Some(10),
    };
    let mut long_line = b"GET /".to_vec();
    long_line.extend(std::iter::repeat_n(b'a', 100));
    assert_eq!(
        parse_with(&long_line, &limits),
        Err(ParseError::RequestLineTooLong)
    );
    long_line.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        parse_with(&long_line, &limits),
        Err(ParseError::RequestLineTooLong)
    );

    let mut big_head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    big_head.extend(std::iter::repeat_n(b'b', 300));
    assert_eq!(
        parse_with(&big_head, &limits),
        Err(ParseError::HeadTooLarge)
    );

    let many = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n";
    assert_eq!(parse_with(many, &limits), Err(ParseError::TooManyHeaders));

    let body = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n";
    assert_eq!(parse_with(body, &limits), Err(ParseError::BodyTooLarge));
}

#[test]
fn statuses_of_errors() {
    assert_eq!(ParseError::RequestLineTooLong.status(), 414);
    assert_eq!(ParseError::HeadTooLarge.status(), 431);
    assert_eq!(ParseError::TooManyHeaders.status(), 431);
    assert_eq!(ParseError::BodyTooLarge.status(), 413);
    assert_eq!(ParseError::ContentLengthWithTransferEncoding.status(), 400);
}

/// The strict parser leaves value-byte checks to httparse; this pins that
/// httparse (scalar and SIMD paths: short and long values, every offset
/// class) accepts a value byte exactly when RFC 9110 field-value allows it
/// (HTAB, SP, VCHAR, obs-text) — NUL, CR, LF, DEL and other controls never.
#[test]
fn httparse_value_bytes_match_rfc_field_value() {
    for b in 0u8..=255 {
        let allowed = b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
        for (len, at) in [
            (1, 0),
            (5, 2),
            (40, 3),
            (40, 31),
            (70, 33),
            (70, 64),
            (130, 100),
        ] {
            let mut value = vec![b'v'; len];
            value[at] = b;
            if b == b'\r' || b == b'\n' {
                continue; // line endings: covered by the bare-LF and CR cases
            }
            let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-V: ".to_vec();
            raw.extend_from_slice(&value);
            raw.extend_from_slice(b"\r\n\r\n");
            let got = parse(&raw);
            let trimmed_space = (b == b' ' || b == b'\t') && (at == 0 || at == len - 1);
            if allowed || trimmed_space {
                assert!(got.is_ok(), "byte {b:#04x} at {at}/{len} refused: {got:?}");
            } else {
                assert_eq!(
                    got.err(),
                    Some(ParseError::BadHeaderValue),
                    "byte {b:#04x} at {at}/{len}"
                );
            }
        }
    }
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\r\n\r\n",
    ] {
        assert!(parse(raw).is_err(), "{:?}", String::from_utf8_lossy(raw));
    }
}
