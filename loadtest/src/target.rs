//! The target: URL parsing, address resolution, the loopback-only rule and request bytes.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// A parsed `http://` URL, resolved.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Value of the `Host` header (host and port as written).
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

/// True for 127.0.0.0/8 and ::1 (and IPv4-mapped 127/8).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v| v.is_loopback()),
    }
}

/// Parses and resolves `url`; refuses non-loopback addresses unless `allow_remote`.
pub fn resolve(url: &str, allow_remote: bool) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?}: missing or unsupported host"));
    }
    let with_port = if has_port(authority) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<SocketAddr> = if authority.starts_with('[') {
        with_port
            .parse::<SocketAddr>()
            .map(|a| vec![a])
            .map_err(|e| format!("{url:?}: {e}"))?
    } else {
        with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url:?}: cannot resolve: {e}"))?
            .collect()
    };
    let addr = addrs
        .iter()
        .copied()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first().copied())
        .ok_or_else(|| format!("{url:?}: no address"))?;
    if !allow_remote && !is_loopback(addr.ip()) {
        return Err(format!(
            "refusing to load {addr} ({url}): only loopback targets (127.0.0.0/8, ::1) are \
             allowed without --allow-remote"
        ));
    }
    Ok(Target {
        addr,
        authority: authority.to_string(),
        path,
    })
}

fn has_port(authority: &str) -> bool {
    match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    }
}

/// Builds the bytes of one request, repeated `copies` times for pipelining.
pub fn request_bytes(
    target: &Target,
    method: &str,
    headers: &[String],
    body: Option<&str>,
    copies: usize,
) -> Result<Vec<u8>, String> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("invalid method {method:?}"));
    }
    let mut one = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\n",
        target.path, target.authority
    );
    let mut has_user_agent = false;
    for h in headers {
        let Some((name, value)) = h.split_once(':') else {
            return Err(format!("invalid header {h:?} (expected 'Name: value')"));
        };
        let name = name.trim();
        if name.is_empty()
            || name.bytes().any(|b| b <= b' ' || b == b':')
            || h.contains(['\r', '\n'])
        {
            return Err(format!("invalid header {h:?}"));
        }
        if name.eq_ignore_ascii_case("host") {
            // Replace the default Host.
            one = one.replace(&format!("Host: {}\r\n", target.authority), "");
        }
        has_user_agent |= name.eq_ignore_ascii_case("user-agent");
        one.push_str(&format!("{name}: {}\r\n", value.trim()));
    }
    if !has_user_agent {
        one.push_str("User-Agent: shardgate-loadtest\r\n");
    }
    if let Some(b) = body {
        one.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
    } else {
        one.push_str("\r\n");
    }
    Ok(one.repeat(copies.max(1)).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = resolve("http://127.0.0.1:8080/a/b?x=1", false).unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path, "/a/b?x=1");
        let t = resolve("http://127.0.0.2", false).unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.path, "/");
        let t = resolve("http://[::1]:9000?q", false).unwrap();
        assert_eq!(t.addr, "[::1]:9000".parse().unwrap());
        assert_eq!(t.path, "/?q");
        let t = resolve("http://localhost:1/", false).unwrap();
        assert!(is_loopback(t.addr.ip()));
    }

    #[test]
    fn refuses_remote_targets() {
        for url in [
            "http://10.0.0.1/",
            "http://192.168.1.1:80/",
            "http://8.8.8.8/",
        ] {
            let err = resolve(url, false).unwrap_err();
            assert!(err.contains("--allow-remote"), "{url}: {err}");
        }
        assert!(resolve("https://127.0.0.1/", false).is_err());
        assert!(resolve("http://", false).is_err());
    }

    #[test]
    fn builds_requests() {
        let t = resolve("http://127.0.0.1:8080/x", false).unwrap();
        let r = request_bytes(&t, "POST", &["X-A: 1".into()], Some("hi"), 2).unwrap();
        let one = "POST /x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-A: 1\r\n\
                   User-Agent: shardgate-loadtest\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(String::from_utf8(r).unwrap(), one.repeat(2));
        let r = request_bytes(&t, "GET", &["Host: example".into()], None, 1).unwrap();
        assert!(
            String::from_utf8(r)
                .unwrap()
                .starts_with("GET /x HTTP/1.1\r\nHost: example\r\n")
        );
        assert!(request_bytes(&t, "GET", &["bad".into()], None, 1).is_err());
        assert!(request_bytes(&t, "G T", &[], None, 1).is_err());
    }
}
