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

use crate::table::word_at as load;

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The host part of a raw `Host` value (port and one trailing dot removed, case kept) and its
/// [`hash`], found in one pass eight bytes at a time: this runs on every request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestHost<'a> {
    pub(crate) host: &'a [u8],
    pub(crate) hash: u64,
}

impl<'a> RequestHost<'a> {
    #[inline]
    /// With `hashed` false the hash is left 0 (for a [`HostMap::is_small`] map).
    pub(crate) fn new(raw: &'a [u8], hashed: bool) -> RequestHost<'a> {
        // A bracketed IPv6 literal ends at ']' (kept); anything else at ':' (dropped).
        let (stop, keep) = if raw.first() == Some(&b'[') {
            (b']', 1)
        } else {
            (b':', 0)
        };
        let mut h = SEED;
        let mut len = raw.len();
        let mut i = 0;
        while i < raw.len() {
            let w = load(raw, i);
            let hit = has_byte(w, stop);
            if hit != 0 {
                let n = ((hit.trailing_zeros() / 8) as usize + keep).min(raw.len() - i);
                if n > 0 && hashed {
                    h = mix(h, lower(w & low_bytes(n)));
                }
                len = i + n;
                break;
            }
            if hashed {
                h = mix(h, lower(w));
            }
            i += 8;
        }
        match raw[..len].strip_suffix(b".") {
            Some(host) => RequestHost {
                host,
                hash: hash(host),
            },
            None => RequestHost {
                host: &raw[..len],
                hash: finish(h, len),
            },
        }
    }
}

/// The host part of a raw `Host` value; see [`RequestHost`].
#[cfg(test)]
fn request_host(raw: &[u8]) -> &[u8] {
    let host = RequestHost::new(raw, false).host;
    assert_eq!(host, RequestHost::new(raw, true).host);
    host
}

/// Mask of the `n` (at most 8) low bytes of a word.
#[inline(always)]
fn low_bytes(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}

/// High bit set in the lowest byte of `w` equal to `b` (bytes above it may be wrong).
#[inline(always)]
fn has_byte(w: u64, b: u8) -> u64 {
    let y = w ^ (LO * b as u64);
    y.wrapping_sub(LO) & !y & HI
}

/// ASCII lower-case of eight bytes at once; other bytes unchanged.
#[inline(always)]
fn lower(w: u64) -> u64 {
    let seven = w & !HI;
    let ge_a = seven + LO * (0x80 - b'A' as u64);
    let gt_z = seven + LO * (0x80 - b'Z' as u64 - 1);
    let upper = ge_a & !gt_z & !w & HI;
    w | (upper >> 2)
}

/// An immutable map from lower-case host names to scope indices, probed with any-case keys
/// without allocating: hashing and comparing lower-case the probe eight bytes at a time.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostMap {
    /// Open addressing, power-of-two size: `(hash, key index)`, `EMPTY` index when free.
    slots: Box<[(u64, u32)]>,
    keys: Vec<(Box<[u8]>, u32)>,
    /// Each key's bytes as eight-byte words (zero-padded) with the mask of their bytes, when the map is small and no key
    /// is a bracketed IPv6 literal: then [`HostMap::get_raw`] compares raw `Host` values
    /// against them directly. Empty otherwise.
    plain: Vec<Box<[(u64, u64)]>>,
}

const EMPTY: u32 = u32::MAX;

/// Maps with at most this many keys are scanned, not hashed.
const SMALL: usize = 4;

impl HostMap {
    pub(crate) fn new(entries: Vec<(Box<str>, u32)>) -> HostMap {
        if entries.is_empty() {
            return HostMap::default();
        }
        let size = (entries.len() * 2).next_power_of_two();
        let mut slots = vec![(0, EMPTY); size].into_boxed_slice();
        let keys: Vec<(Box<[u8]>, u32)> = entries
            .into_iter()
            .map(|(k, v)| (k.into_boxed_bytes(), v))
            .collect();
        for (i, (k, _)) in keys.iter().enumerate() {
            let h = hash(k);
            let mut s = h as usize & (size - 1);
            while slots[s].1 != EMPTY {
                s = (s + 1) & (size - 1);
            }
            slots[s] = (h, i as u32);
        }
        let plain = if keys.len() <= SMALL && keys.iter().all(|(k, _)| k.first() != Some(&b'[')) {
            keys.iter()
                .map(|(k, _)| {
                    (0..k.len())
                        .step_by(8)
                        .map(|i| (load(k, i), low_bytes(k.len() - i)))
                        .collect()
                })
                .collect()
        } else {
            Vec::new()
        };
        HostMap { slots, keys, plain }
    }

    /// The value for a raw `Host` value that is byte for byte a key of an
    /// [`is_plain`](HostMap::is_plain) map: the usual header, lower case without a port. `None`
    /// says nothing about other spellings.
    #[inline]
    pub(crate) fn get_exactly(&self, raw: &[u8]) -> Option<u32> {
        if !self.is_plain() {
            return None;
        }
        self.keys
            .iter()
            .find(|(key, _)| same_exactly(key, raw))
            .map(|&(_, value)| value)
    }

    /// Whether [`HostMap::get_raw`] answers for this map: it is empty, or small with plain
    /// names only.
    #[inline]
    pub(crate) fn is_plain(&self) -> bool {
        self.plain.len() == self.keys.len()
    }

    /// The value for a raw `Host` value (any case, optional `:port`, one optional trailing
    /// dot) of an [`is_plain`](HostMap::is_plain) map, read straight from the raw bytes: a
    /// key without ':' or '[' equals the request's host exactly when the raw value starts with
    /// it (ignoring case) and continues with nothing, `.`, `:…` or `.:…`.
    #[inline]
    pub(crate) fn get_raw(&self, raw: &[u8]) -> Option<u32> {
        debug_assert!(self.is_plain());
        for ((key, value), words) in self.keys.iter().zip(&self.plain) {
            let len = key.len();
            if raw.len() < len {
                continue;
            }
            let mut same = true;
            for (k, &(word, mask)) in words.iter().enumerate() {
                // Hosts usually arrive in lower case: lower-case only on a mismatch.
                let w = load(raw, 8 * k) & mask;
                if w != word && lower(w) != word {
                    same = false;
                    break;
                }
            }
            if same && matches!(&raw[len..], [] | [b'.'] | [b':', ..] | [b'.', b':', ..]) {
                return Some(*value);
            }
        }
        None
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Few enough keys that comparing each beats hashing the probe.
    #[inline]
    pub(crate) fn is_small(&self) -> bool {
        self.keys.len() <= SMALL
    }

    /// The value for a host of any case.
    #[inline]
    pub(crate) fn get(&self, host: &[u8]) -> Option<u32> {
        self.get_hashed(host, if self.is_small() { 0 } else { hash(host) })
    }

    /// [`HostMap::get`] with the host's [`hash`] already known (any value if the map
    /// [`is_small`](HostMap::is_small)).
    #[inline]
    pub(crate) fn get_hashed(&self, host: &[u8], h: u64) -> Option<u32> {
        if self.is_small() {
            return self
                .keys
                .iter()
                .find(|(k, _)| k.len() == host.len() && same_lower(k, host))
                .map(|(_, v)| *v);
        }
        let mask = self.slots.len() - 1;
        let mut s = h as usize & mask;
        loop {
            let (slot_hash, i) = self.slots[s];
            if i == EMPTY {
                return None;
            }
            if slot_hash == h {
                let (key, value) = &self.keys[i as usize];
                if key.len() == host.len() && same_lower(key, host) {
                    return Some(*value);
                }
            }
            s = (s + 1) & mask;
        }
    }
}

/// `a == b`, inline for the usual host lengths: two overlapping eight-byte words cover 8 to
/// 16 bytes.
#[inline(always)]
fn same_exactly(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    match (
        a.first_chunk::<8>(),
        a.last_chunk::<8>(),
        b.first_chunk::<8>(),
        b.last_chunk::<8>(),
    ) {
        (Some(a0), Some(a1), Some(b0), Some(b1)) if a.len() <= 16 => a0 == b0 && a1 == b1,
        _ => a == b,
    }
}

const SEED: u64 = 0x243F_6A88_85A3_08D3;
const K: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(K).rotate_left(31)
}

#[inline(always)]
fn finish(h: u64, len: usize) -> u64 {
    let h = (h ^ len as u64).wrapping_mul(K);
    h ^ (h >> 29)
}

/// A multiplicative hash over the lower-cased eight-byte words of `s`.
#[inline]
pub(crate) fn hash(s: &[u8]) -> u64 {
    let mut h = SEED;
    let mut i = 0;
    while i < s.len() {
        h = mix(h, lower(load(s, i)));
        i += 8;
    }
    finish(h, s.len())
}

/// Whether `probe`, lower-cased, equals `key` (lower-case, same length).
#[inline]
fn same_lower(key: &[u8], probe: &[u8]) -> bool {
    let mut i = 0;
    while i < key.len() {
        if load(key, i) != lower(load(probe, i)) {
            return false;
        }
        i += 8;
    }
    true
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
            ("WWW.EXAMPLE-1.ORG:80", "WWW.EXAMPLE-1.ORG"),
            (
                "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q",
                "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q",
            ),
            ("exactly8:1", "exactly8"),
            ("exactly8", "exactly8"),
            (":8080", ""),
            (".", ""),
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
    fn lower_changes_only_ascii_capitals() {
        for b in 0..=255u8 {
            let w = u64::from_le_bytes([b, b'A', b, b'z', b, b'@', b'[', b]);
            let want = u64::from_le_bytes([
                b.to_ascii_lowercase(),
                b'a',
                b.to_ascii_lowercase(),
                b'z',
                b.to_ascii_lowercase(),
                b'@',
                b'[',
                b.to_ascii_lowercase(),
            ]);
            assert_eq!(lower(w), want, "byte {b:#x}");
        }
    }

    #[test]
    fn load_pads_with_zeros_at_any_offset() {
        let s = b"0123456789abc";
        for len in 0..=s.len() {
            for i in 0..len {
                let mut want = [0u8; 8];
                let n = (len - i).min(8);
                want[..n].copy_from_slice(&s[i..i + n]);
                assert_eq!(
                    load(&s[..len], i),
                    u64::from_le_bytes(want),
                    "len {len} at {i}"
                );
            }
        }
    }

    #[test]
    fn one_pass_hash_equals_hash_of_the_cut_host() {
        for raw in [
            "a.com",
            "A.Com:80",
            "exactly8",
            "exactly8:1",
            "api.github.com",
            "[::1]:8080",
            "x.",
            "x.:1",
            "",
        ] {
            let h = RequestHost::new(raw.as_bytes(), true);
            assert_eq!(h.hash, hash(h.host), "{raw}");
            assert_eq!(
                h.hash,
                hash(h.host.to_ascii_lowercase().as_slice()),
                "{raw}"
            );
        }
    }

    #[test]
    fn same_exactly_is_slice_equality() {
        let s = b"abcdefghijklmnopqrstu";
        for len in 0..=s.len() {
            let a = &s[..len];
            assert!(same_exactly(a, a));
            for i in 0..len {
                let mut b = a.to_vec();
                b[i] ^= 1;
                assert!(!same_exactly(a, &b), "len {len} at {i}");
            }
            if len > 0 {
                assert!(!same_exactly(a, &a[..len - 1]));
            }
        }
    }

    #[test]
    fn raw_lookup_equals_lookup_of_the_cut_host() {
        let map = HostMap::new(vec![
            ("a.com".into(), 0),
            ("exactly8".into(), 1),
            ("api.github.com".into(), 2),
            ("sixteen-bytes.io".into(), 3),
        ]);
        assert!(map.is_plain());
        for raw in [
            "a.com",
            "A.COM",
            "a.com.",
            "a.com:80",
            "a.com.:80",
            "a.com..",
            "a.com.x",
            "a.comx",
            "a.co",
            "b.a.com",
            "exactly8",
            "EXACTLY8:1",
            "exactly80",
            "api.github.com",
            "API.GitHub.com.:443",
            "api.github.co",
            "api.github.com\0",
            "sixteen-bytes.io",
            "sixteen-bytes.io:1",
            "sixteen-bytes.i",
            "[::1]",
            "",
            ":80",
        ] {
            let h = RequestHost::new(raw.as_bytes(), false).host;
            assert_eq!(map.get_raw(raw.as_bytes()), map.get(h), "{raw}");
        }
        assert!(HostMap::default().is_plain());
        assert!(!HostMap::new(vec![("[::1]".into(), 0)]).is_plain());
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
        assert!(!map.is_small());
        for (i, n) in names.iter().enumerate() {
            assert_eq!(map.get(n.as_bytes()), Some(i as u32));
            assert_eq!(map.get(n.to_ascii_uppercase().as_bytes()), Some(i as u32));
        }
        for miss in [
            "c.com",
            "a.co",
            "",
            "api.example.com.",
            "a.com\0",
            "A.COM\0",
            "a.com\x01",
        ] {
            assert_eq!(map.get(miss.as_bytes()), None, "{miss}");
        }
        assert_eq!(HostMap::default().get(b"a.com"), None);
        let small = HostMap::new(vec![("a.com".into(), 7)]);
        assert!(small.is_small());
        assert_eq!(small.get(b"A.com"), Some(7));
        assert_eq!(small.get(b"b.com"), None);
    }
}
