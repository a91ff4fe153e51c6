//! Request methods as bits of a `u64`, so a route's method set is one word and the check on the
//! lookup path is one `AND`.
//!
//! Bits 0..=8 are the nine methods of RFC 9110 (plus PATCH). Bits 9..=62 are the extension
//! methods that routes of one table name, numbered when the table is built. Bit 63 stands for
//! "a method no route names": only routes that take any method accept it.

use std::fmt;

/// A request method as written in a route: one of the standard ones or an extension token.
///
/// Methods are case-sensitive (RFC 9110 §9.1): `get` is an extension method, not `GET`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `CONNECT`
    Connect,
    /// `OPTIONS`
    Options,
    /// `TRACE`
    Trace,
    /// `PATCH`
    Patch,
    /// Any other token, e.g. `PURGE` or `PROPFIND`.
    Extension(String),
}

/// The standard methods in bit order.
pub(crate) const STANDARD: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Number of the first bit used for extension methods.
pub(crate) const FIRST_EXTENSION_BIT: u32 = STANDARD.len() as u32;

/// Bit for a method that no route of the table names.
pub(crate) const OTHER_BIT: u64 = 1 << 63;

/// Most extension methods one table can name (bits 9..=62).
pub const MAX_EXTENSION_METHODS: usize = 63 - STANDARD.len();

/// Mask of a route that takes any method.
pub(crate) const ANY: u64 = u64::MAX;

impl Method {
    /// Parses a method token as written in configuration. Returns `None` for an empty string
    /// or one with bytes that are not RFC 9110 `tchar`s.
    pub fn parse(token: &str) -> Option<Method> {
        if token.is_empty() || !token.bytes().all(is_tchar) {
            return None;
        }
        Some(match standard_bit(token.as_bytes()) {
            Some(bit) => Self::from_standard_index(bit.trailing_zeros() as usize),
            None => Method::Extension(token.to_owned()),
        })
    }

    fn from_standard_index(i: usize) -> Method {
        match i {
            0 => Method::Get,
            1 => Method::Head,
            2 => Method::Post,
            3 => Method::Put,
            4 => Method::Delete,
            5 => Method::Connect,
            6 => Method::Options,
            7 => Method::Trace,
            _ => Method::Patch,
        }
    }

    /// The method's token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Extension(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The bit of a standard method, or `None`.
#[inline]
pub(crate) fn standard_bit(m: &[u8]) -> Option<u64> {
    let i = match m {
        b"GET" => 0,
        b"HEAD" => 1,
        b"POST" => 2,
        b"PUT" => 3,
        b"DELETE" => 4,
        b"CONNECT" => 5,
        b"OPTIONS" => 6,
        b"TRACE" => 7,
        b"PATCH" => 8,
        _ => return None,
    };
    Some(1 << i)
}

/// The bit of a request method in a table whose extension methods are `extensions`.
#[inline]
pub(crate) fn request_bit(m: &[u8], extensions: &[Box<str>]) -> u64 {
    // The most common method first, in one comparison; the others out of line.
    if m == b"GET" {
        return 1;
    }
    other_request_bit(m, extensions)
}

#[inline(never)]
fn other_request_bit(m: &[u8], extensions: &[Box<str>]) -> u64 {
    if let Some(bit) = standard_bit(m) {
        return bit;
    }
    match extensions.iter().position(|e| e.as_bytes() == m) {
        Some(i) => 1 << (FIRST_EXTENSION_BIT + i as u32),
        None => OTHER_BIT,
    }
}

/// The methods a path accepts, for the `Allow` header of a 405 response. Borrowed from the
/// table; rendering it (`Display`, [`AllowMethods::iter`]) allocates nothing.
#[derive(Clone, Copy)]
pub struct AllowMethods<'r> {
    pub(crate) mask: u64,
    pub(crate) extensions: &'r [Box<str>],
}

impl<'r> AllowMethods<'r> {
    /// The method tokens, standard ones first in the order GET, HEAD, POST, PUT, DELETE,
    /// CONNECT, OPTIONS, TRACE, PATCH, then extension methods in the order routes named them.
    pub fn iter(&self) -> impl Iterator<Item = &'r str> + 'r {
        let mask = self.mask;
        let ext = self.extensions;
        (0..63u32)
            .filter(move |bit| mask & (1 << bit) != 0)
            .filter_map(move |bit| {
                let i = bit as usize;
                if i < STANDARD.len() {
                    Some(STANDARD[i])
                } else {
                    ext.get(i - STANDARD.len()).map(|s| &**s)
                }
            })
    }

    /// Whether `method` is among them.
    pub fn contains(&self, method: &[u8]) -> bool {
        let bit = request_bit(method, self.extensions);
        bit != OTHER_BIT && self.mask & bit != 0
    }

    /// The raw bitset (standard methods in bits 0..=8).
    pub fn bits(&self) -> u64 {
        self.mask
    }
}

impl fmt::Display for AllowMethods<'_> {
    /// Renders the header value, e.g. `GET, DELETE`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(m)?;
        }
        Ok(())
    }
}

impl fmt::Debug for AllowMethods<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AllowMethods({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, Option<Method>)] = &[
            ("GET", Some(Method::Get)),
            ("PATCH", Some(Method::Patch)),
            ("get", Some(Method::Extension("get".into()))),
            ("PURGE", Some(Method::Extension("PURGE".into()))),
            ("", None),
            ("GE T", None),
            ("GET\r", None),
        ];
        for (token, want) in cases {
            assert_eq!(Method::parse(token), *want, "{token:?}");
        }
    }

    #[test]
    fn request_bits() {
        let ext: Vec<Box<str>> = vec!["PURGE".into()];
        assert_eq!(request_bit(b"GET", &ext), 1);
        assert_eq!(request_bit(b"PATCH", &ext), 1 << 8);
        assert_eq!(request_bit(b"PURGE", &ext), 1 << 9);
        assert_eq!(request_bit(b"purge", &ext), OTHER_BIT);
        assert_eq!(request_bit(b"", &ext), OTHER_BIT);
    }

    #[test]
    fn allow_renders_in_bit_order() {
        let ext: Vec<Box<str>> = vec!["PURGE".into(), "LINK".into()];
        let allow = AllowMethods {
            mask: 1 | (1 << 4) | (1 << 10),
            extensions: &ext,
        };
        assert_eq!(allow.to_string(), "GET, DELETE, LINK");
        assert!(allow.contains(b"DELETE"));
        assert!(!allow.contains(b"PURGE"));
        assert!(!allow.contains(b"FOO"));
    }
}
