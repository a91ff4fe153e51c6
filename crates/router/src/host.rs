//! Host scopes: which routing table a request's `Host` selects.
//!
//! - A route names exact hosts (`api.example.com`), wildcards (`*.example.com`) or nothing
//!   (the default scope).
//! - Matching ignores ASCII case, a `:port` and one trailing `.` of the request's host.
//! - `*.example.com` matches any name ending in `.example.com` at any depth (`a.example.com`,
//!   `a.b.example.com`), never the bare `example.com`.
//! - Exactly one scope is chosen: an exact host, else the longest matching wildcard, else the
//!   default. There is no fall-through: when a host's scope has no route for the path, the
//!   answer is 404/405 even if the default scope has one (tenant isolation).

/// A host scope as configured.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum HostKey {
    /// A lower-case host name without port.
    Exact(Box<str>),
    /// The domain after `*.`, lower-case.
    Wildcard(Box<str>),
    Default,
}

impl std::fmt::Display for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostKey::Exact(h) => write!(f, "host {h}"),
            HostKey::Wildcard(h) => write!(f, "host *.{h}"),
            HostKey::Default => f.write_str("the default host"),
        }
    }
}

/// Parses a configured host. Errors are sentences.
pub(crate) fn parse_host(host: &str) -> Result<HostKey, String> {
    let (wild, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() {
        return Err("is empty (leave `hosts` empty for the default host)".into());
    }
    if name.len() > 253 {
        return Err("is longer than 253 bytes".into());
    }
    let bracketed = name.starts_with('[') && name.ends_with(']') && !wild;
    let valid = if bracketed {
        name[1..name.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    };
    if !valid {
        return Err(
            "is not a host name (letters, digits, '-', '_' in dot-separated labels, \
                    optionally a leading '*.'; no port)"
                .into(),
        );
    }
    Ok(if wild {
        HostKey::Wildcard(name.into())
    } else {
        HostKey::Exact(name.into())
    })
}

/// The host part of a raw `Host` header value: port and one trailing dot removed.
#[inline]
pub(crate) fn request_host(raw: &[u8]) -> &[u8] {
    let host = if raw.first() == Some(&b'[') {
        match raw.iter().position(|&b| b == b']') {
            Some(i) => &raw[..=i],
            None => raw,
        }
    } else {
        match raw.iter().position(|&b| b == b':') {
            Some(i) => &raw[..i],
            None => raw,
        }
    };
    host.strip_suffix(b".").unwrap_or(host)
}

/// An immutable map from lower-case host names to scope indices, probed with any-case keys
/// without allocating: the hash folds ASCII case, equality ignores it.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostMap {
    /// Open addressing, power-of-two size; `u32::MAX` marks an empty slot.
    slots: Box<[u32]>,
    keys: Vec<(Box<[u8]>, u32)>,
}

const EMPTY: u32 = u32::MAX;

impl HostMap {
    pub(crate) fn new(entries: Vec<(Box<str>, u32)>) -> HostMap {
        if entries.is_empty() {
            return HostMap::default();
        }
        let size = (entries.len() * 2).next_power_of_two();
        let mut slots = vec![EMPTY; size].into_boxed_slice();
        let keys: Vec<(Box<[u8]>, u32)> = entries
            .into_iter()
            .map(|(k, v)| (k.into_boxed_bytes(), v))
            .collect();
        for (i, (k, _)) in keys.iter().enumerate() {
            let mut s = fold_hash(k) as usize & (size - 1);
            while slots[s] != EMPTY {
                s = (s + 1) & (size - 1);
            }
            slots[s] = i as u32;
        }
        HostMap { slots, keys }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    #[inline]
    pub(crate) fn get(&self, host: &[u8]) -> Option<u32> {
        if self.keys.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut s = fold_hash(host) as usize & mask;
        loop {
            let i = self.slots[s];
            if i == EMPTY {
                return None;
            }
            let (key, value) = &self.keys[i as usize];
            if key.eq_ignore_ascii_case(host) {
                return Some(*value);
            }
            s = (s + 1) & mask;
        }
    }
}

/// A hash that ignores ASCII case: every byte has its 0x20 bit set before mixing (this also
/// folds some non-letters together, which only costs a rare extra probe).
#[inline]
fn fold_hash(s: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (s.len() as u64).wrapping_mul(K);
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ (w | 0x2020_2020_2020_2020))
            .wrapping_mul(K)
            .rotate_left(31);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = (h ^ (u64::from_le_bytes(buf) | 0x2020_2020_2020_2020)).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_host_table() {
        let ok: &[(&str, HostKey)] = &[
            ("api.example.com", HostKey::Exact("api.example.com".into())),
            ("API.Example.COM", HostKey::Exact("api.example.com".into())),
            ("api.example.com.", HostKey::Exact("api.example.com".into())),
            ("*.example.com", HostKey::Wildcard("example.com".into())),
            ("*.com", HostKey::Wildcard("com".into())),
            ("localhost", HostKey::Exact("localhost".into())),
            ("10.0.0.1", HostKey::Exact("10.0.0.1".into())),
            ("[::1]", HostKey::Exact("[::1]".into())),
        ];
        for (h, want) in ok {
            assert_eq!(parse_host(h).as_ref(), Ok(want), "{h}");
        }
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "api.example.com:8080",
            "a b",
            "*.[::1]",
            ".a",
        ] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_host_table() {
        let cases: &[(&str, &str)] = &[
            ("api.example.com", "api.example.com"),
            ("api.example.com:8080", "api.example.com"),
            ("API.example.com.", "API.example.com"),
            ("api.example.com.:443", "api.example.com"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(request_host(raw.as_bytes()), want.as_bytes(), "{raw}");
        }
    }

    #[test]
    fn host_map_finds_any_case_and_misses_others() {
        let names = [
            "a.com",
            "b.com",
            "api.example.com",
            "x",
            "long-name.internal.example.org",
        ];
        let map = HostMap::new(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| ((*n).into(), i as u32))
                .collect(),
        );
        for (i, n) in names.iter().enumerate() {
            assert_eq!(map.get(n.as_bytes()), Some(i as u32));
            assert_eq!(map.get(n.to_ascii_uppercase().as_bytes()), Some(i as u32));
        }
        for miss in ["c.com", "a.co", "", "api.example.com.", "A.COM\0"] {
            assert_eq!(map.get(miss.as_bytes()), None, "{miss}");
        }
        assert_eq!(HostMap::default().get(b"a.com"), None);
    }
}
