//! The PROXY protocol header (HAProxy's, versions 1 and 2) that an L4 load
//! balancer puts before the first byte of a connection to say who the client
//! is. Strict: a header that is not exactly one of the two forms is refused,
//! since a lenient reader lets a client that reaches the listener directly
//! claim any address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version 2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest version 1 header, CRLF included (the specification's 107).
const V1_MAX: usize = 107;

/// Longest version 2 header accepted: the addresses and a few TLVs.
pub const V2_MAX: usize = 16 + 1024;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxiedFrom {
    /// The client's address and port.
    Client(SocketAddr),
    /// The balancer's own connection (a health check: version 2 `LOCAL`,
    /// version 1 `UNKNOWN`, or a family other than TCP over IPv4/IPv6): the
    /// peer is the client.
    Local,
}

/// A complete header and its length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    pub from: ProxiedFrom,
    pub len: usize,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// The bytes are not a PROXY header at all.
    Missing,
    /// A version 1 line that breaks the grammar.
    BadV1(&'static str),
    /// A version 2 header that breaks the format.
    BadV2(&'static str),
}

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyHeaderError::Missing => f.write_str("no PROXY protocol header"),
            ProxyHeaderError::BadV1(why) => write!(f, "bad PROXY v1 header: {why}"),
            ProxyHeaderError::BadV2(why) => write!(f, "bad PROXY v2 header: {why}"),
        }
    }
}

impl std::error::Error for ProxyHeaderError {}

/// Whether `buf` starts like a PROXY header (of either version), as far as
/// it goes: a listener without the protocol refuses such a connection.
pub fn looks_like_proxy_header(buf: &[u8]) -> bool {
    // Five bytes of the v2 signature include its NUL: no request has one.
    let n = buf.len().min(V2_SIGNATURE.len());
    let v2 = n >= 5 && buf[..n] == V2_SIGNATURE[..n];
    let m = buf.len().min(6);
    let v1 = m > 0 && buf[..m] == b"PROXY "[..m];
    v1 || v2
}

/// Parses the header at the start of `buf`. `Ok(None)`: incomplete, read
/// more (nothing that cannot become a header is waited for).
pub fn parse_proxy_header(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyHeaderError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] != b"PROXY "[..n] {
        return Err(ProxyHeaderError::Missing);
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyHeaderError> {
    let bad = ProxyHeaderError::BadV1;
    let Some(end) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(bad("longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    let line = buf[..end]
        .strip_suffix(b"\r")
        .ok_or(bad("not ended by CRLF"))?;
    let line = std::str::from_utf8(&line[6..]).map_err(|_| bad("not ASCII"))?;
    let len = end + 1;
    let mut parts = line.split(' ');
    let family = parts.next().unwrap_or_default();
    if family == "UNKNOWN" {
        // The rest of the line is to be ignored.
        return Ok(Some(ProxyHeader {
            from: ProxiedFrom::Local,
            len,
        }));
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(bad("expected 4 fields after the protocol"));
    };
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            src.parse::<Ipv4Addr>()
                .map_err(|_| bad("bad IPv4 source"))?
                .into(),
            dst.parse::<Ipv4Addr>()
                .map_err(|_| bad("bad IPv4 destination"))?
                .into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>()
                .map_err(|_| bad("bad IPv6 source"))?
                .into(),
            dst.parse::<Ipv6Addr>()
                .map_err(|_| bad("bad IPv6 destination"))?
                .into(),
        ),
        _ => return Err(bad("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let _ = dst;
    let sport = port(sport).ok_or(bad("bad source port"))?;
    port(dport).ok_or(bad("bad destination port"))?;
    Ok(Some(ProxyHeader {
        from: ProxiedFrom::Client(SocketAddr::new(src, sport)),
        len,
    }))
}

/// A decimal port: digits only, no leading zero, at most 65535.
fn port(text: &str) -> Option<u16> {
    let digits_only =
        !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

fn parse_v2(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyHeaderError> {
    let bad = ProxyHeaderError::BadV2;
    if buf.len() < 16 {
        return Ok(None);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(bad("version is not 2"));
    }
    if command > 1 {
        return Err(bad("command is neither LOCAL nor PROXY"));
    }
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    if family > 3 || transport > 2 {
        return Err(bad("unknown address family or transport"));
    }
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > V2_MAX {
        return Err(bad("longer than the 1 KiB of TLVs accepted"));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let addrs = &buf[16..len];
    let need = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if addrs.len() < need {
        return Err(bad("shorter than its address block"));
    }
    let from = match (command, family, transport) {
        (1, 1, 1) => {
            let ip = Ipv4Addr::new(addrs[0], addrs[1], addrs[2], addrs[3]);
            ProxiedFrom::Client(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([addrs[8], addrs[9]]),
            ))
        }
        (1, 2, 1) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&addrs[..16]);
            let port = u16::from_be_bytes([addrs[32], addrs[33]]);
            ProxiedFrom::Client(SocketAddr::new(Ipv6Addr::from(octets).into(), port))
        }
        _ => ProxiedFrom::Local,
    };
    Ok(Some(ProxyHeader { from, len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(text: &str) -> ProxiedFrom {
        ProxiedFrom::Client(text.parse().unwrap())
    }

    #[test]
    fn version_1_lines() {
        let ok: &[(&[u8], ProxiedFrom, usize)] = &[
            (
                b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nGET /",
                client("192.0.2.7:56324"),
                41,
            ),
            (
                b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
                client("[2001:db8::1]:1"),
                44,
            ),
            (b"PROXY UNKNOWN\r\n", ProxiedFrom::Local, 15),
            (b"PROXY UNKNOWN whatever here\r\n", ProxiedFrom::Local, 29),
        ];
        for (input, from, len) in ok {
            let h = parse_proxy_header(input).unwrap().unwrap();
            assert_eq!(
                (h.from, h.len),
                (*from, *len),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443 x\r\n",
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 +80 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 080 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 443\r\n",
            b"PROXY TCP4  192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.000.2.7 10.0.0.1 1 2\r\n",
        ];
        for input in bad {
            assert!(
                matches!(parse_proxy_header(input), Err(ProxyHeaderError::BadV1(_))),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat();
        assert!(parse_proxy_header(&long).is_err());
        assert_eq!(parse_proxy_header(b"PROXY TCP4 192.0.2.7"), Ok(None));
        assert_eq!(parse_proxy_header(b"PRO"), Ok(None));
        assert_eq!(
            parse_proxy_header(b"GET / HTTP/1.1\r\n"),
            Err(ProxyHeaderError::Missing)
        );
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn version_2_headers() {
        let inet = [192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb];
        let h = parse_proxy_header(&v2(1, 0x11, &inet)).unwrap().unwrap();
        assert_eq!((h.from, h.len), (client("192.0.2.7:56324"), 28));
        let mut inet6 = [0u8; 36];
        inet6[0] = 0x20;
        inet6[1] = 0x01;
        inet6[15] = 1;
        inet6[32] = 0x1f;
        inet6[33] = 0x90;
        let h = parse_proxy_header(&v2(1, 0x21, &inet6)).unwrap().unwrap();
        assert_eq!(h.from, client("[2001::1]:8080"));
        // TLVs after the addresses are skipped.
        let with_tlv = [&inet[..], &[0x04, 0x00, 0x01, 0xff]].concat();
        assert_eq!(
            parse_proxy_header(&v2(1, 0x11, &with_tlv))
                .unwrap()
                .unwrap()
                .len,
            32
        );
        // LOCAL and UNSPEC: the peer is the client.
        for (cmd, fam, body) in [
            (0u8, 0x11u8, &inet[..]),
            (1, 0x00, &[][..]),
            (0, 0x00, &[][..]),
        ] {
            let h = parse_proxy_header(&v2(cmd, fam, body)).unwrap().unwrap();
            assert_eq!(h.from, ProxiedFrom::Local);
        }
        let bad = [
            v2(2, 0x11, &inet),
            v2(1, 0x11, &inet[..11]),
            v2(1, 0x41, &inet),
            v2(1, 0x13, &inet),
            v2(1, 0x11, &vec![0u8; 2000]),
        ];
        for input in bad {
            assert!(
                matches!(parse_proxy_header(&input), Err(ProxyHeaderError::BadV2(_))),
                "{input:?}"
            );
        }
        let mut v1_version = v2(1, 0x11, &inet);
        v1_version[12] = 0x11;
        assert!(parse_proxy_header(&v1_version).is_err());
        let whole = v2(1, 0x11, &inet);
        for cut in 1..whole.len() {
            assert_eq!(parse_proxy_header(&whole[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn what_looks_like_a_header() {
        assert!(looks_like_proxy_header(b"PROXY TCP4 1.2.3.4"));
        assert!(looks_like_proxy_header(b"PROXY"));
        assert!(looks_like_proxy_header(&V2_SIGNATURE));
        assert!(
            !looks_like_proxy_header(b"\r\n\r\n"),
            "blank lines before a request"
        );
        assert!(!looks_like_proxy_header(b"GET / HTTP/1.1"));
        assert!(!looks_like_proxy_header(b"PUT / HTTP/1.1"));
    }
}
