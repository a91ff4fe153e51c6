//! IP allow/deny lists by CIDR block.
//!
//! Blocks are written `10.0.0.0/8`, `2001:db8::/32`, or as a bare address (a single host).
//! IPv4 is kept in the IPv4-mapped IPv6 space (`::ffff:0:0/96`), so a client that reaches a
//! dual-stack listener as `::ffff:10.1.2.3` matches `10.0.0.0/8`, and one 128-bit masked
//! compare serves both families. A block with bits set past its prefix (`10.0.0.1/8`) is
//! refused at config time: it is almost always a typo, and the error names the network meant.
//!
//! **Rule: deny wins.** An address in any `deny` block is refused; otherwise, if `allow` is
//! non-empty, only addresses in an `allow` block pass; with an empty `allow` everything not
//! denied passes. Order within a list does not matter, so a list can be reordered or merged
//! from several sources (tenant defaults + route) without changing its meaning.

use crate::chain::{Cx, Flow};
use crate::filter::{BuildContext, BuiltIn};
use crate::syntax::ParseCx;
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A CIDR block, stored in IPv6 form (IPv4 mapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    net: u128,
    mask: u128,
    /// Prefix length in the IPv6 space.
    prefix: u8,
}

/// Why a block did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrError {
    Address(String),
    Prefix(String),
    /// Bits set past the prefix; `network` is the block probably meant.
    HostBits {
        given: String,
        network: String,
    },
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::Address(s) => write!(f, "{s:?} is not an IP address or CIDR block"),
            CidrError::Prefix(s) => write!(f, "{s:?} has an invalid prefix length"),
            CidrError::HostBits { given, network } => {
                write!(f, "{given:?} has host bits set; did you mean {network:?}?")
            }
        }
    }
}

impl std::error::Error for CidrError {}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask_of(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl Cidr {
    /// Whether `ip` is inside the block (IPv4-mapped IPv6 addresses count as IPv4).
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        to_u128(ip) & self.mask == self.net
    }

    fn is_v4(&self) -> bool {
        self.prefix >= 96 && (self.net >> 32) == 0xffff
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip = IpAddr::from_str(addr).map_err(|_| CidrError::Address(s.to_owned()))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = match len {
            None => max,
            // Digits only: `u8::from_str` would also take `+8`.
            Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => l
                .parse()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| CidrError::Prefix(s.to_owned()))?,
            Some(_) => return Err(CidrError::Prefix(s.to_owned())),
        };
        let prefix = if ip.is_ipv4() { 96 + len } else { len };
        let mask = mask_of(prefix);
        let bits = to_u128(ip);
        let cidr = Cidr {
            net: bits & mask,
            mask,
            prefix,
        };
        if bits & !mask != 0 {
            return Err(CidrError::HostBits {
                given: s.to_owned(),
                network: cidr.to_string(),
            });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_v4() {
            let v4 = Ipv4Addr::from(self.net as u32);
            write!(f, "{v4}/{}", self.prefix - 96)
        } else {
            write!(f, "{}/{}", Ipv6Addr::from(self.net), self.prefix)
        }
    }
}

/// The verdict for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVerdict {
    Allow,
    /// Refuse with 403.
    Deny,
}

/// Allow and deny lists; deny wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRules {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

/// A list entry that did not parse, with its field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRulesError {
    pub field: String,
    pub error: CidrError,
}

impl fmt::Display for IpRulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.error)
    }
}

impl std::error::Error for IpRulesError {}

impl IpRules {
    /// Parse both lists, reporting every bad entry as `allow[i]` / `deny[i]`.
    pub fn parse<'a>(
        allow: impl IntoIterator<Item = &'a str>,
        deny: impl IntoIterator<Item = &'a str>,
    ) -> Result<IpRules, Vec<IpRulesError>> {
        let mut errors = Vec::new();
        let mut list = |name: &str, items: &mut dyn Iterator<Item = &'a str>| -> Vec<Cidr> {
            let mut out = Vec::new();
            for (i, s) in items.enumerate() {
                match s.trim().parse() {
                    Ok(c) => out.push(c),
                    Err(error) => errors.push(IpRulesError {
                        field: format!("{name}[{i}]"),
                        error,
                    }),
                }
            }
            out
        };
        let allow = list("allow", &mut allow.into_iter());
        let deny = list("deny", &mut deny.into_iter());
        if errors.is_empty() {
            Ok(IpRules { allow, deny })
        } else {
            Err(errors)
        }
    }

    /// Deny wins; an empty allow list allows everything not denied.
    pub fn check(&self, ip: IpAddr) -> IpVerdict {
        if self.deny.iter().any(|c| c.contains(ip)) {
            return IpVerdict::Deny;
        }
        if self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip)) {
            IpVerdict::Allow
        } else {
            IpVerdict::Deny
        }
    }
}

/// `ip-filter`: allow/deny by CIDR (deny wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpFilterConfig {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// The TOML table: `allow` and `deny` lists of CIDRs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIpFilter {
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
}

impl BuiltIn for IpRules {
    type Spec = IpFilterConfig;
    const NAME: &'static str = "ip-filter";
    const ABOUT: &'static str = "allow/deny client addresses by CIDR, deny wins";

    fn parse(cx: &mut ParseCx<'_>, body: toml::Value) -> Option<IpFilterConfig> {
        let r: RawIpFilter = cx.read(body)?;
        let d = IpFilterConfig::default();
        Some(IpFilterConfig {
            allow: r.allow.unwrap_or(d.allow),
            deny: r.deny.unwrap_or(d.deny),
        })
    }

    fn build(c: &IpFilterConfig, _: &BuildContext<'_>) -> Result<IpRules, Vec<String>> {
        IpRules::parse(
            c.allow.iter().map(String::as_str),
            c.deny.iter().map(String::as_str),
        )
        .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    /// 403 for a client the rules refuse.
    fn on_request<'f>(&'f self, cx: &mut Cx<'_, '_>) -> Flow<'f> {
        match self.check(cx.client) {
            IpVerdict::Deny => Flow::answer(403),
            IpVerdict::Allow => Flow::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_table() {
        // (input, Ok(display) or Err(prefix of the message))
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("10.0.0.0/8", Ok("10.0.0.0/8")),
            ("10.1.2.3", Ok("10.1.2.3/32")),
            ("0.0.0.0/0", Ok("0.0.0.0/0")),
            ("::1/128", Ok("::1/128")),
            ("::1", Ok("::1/128")),
            ("2001:db8::/32", Ok("2001:db8::/32")),
            ("::/0", Ok("::/0")),
            ("::ffff:10.0.0.0/104", Ok("10.0.0.0/8")),
            (
                "10.0.0.1/8",
                Err("\"10.0.0.1/8\" has host bits set; did you mean \"10.0.0.0/8\""),
            ),
            ("10.0.0.0/33", Err("\"10.0.0.0/33\" has an invalid prefix")),
            ("10.0.0.0/+8", Err("\"10.0.0.0/+8\" has an invalid prefix")),
            ("10.0.0.0/", Err("\"10.0.0.0/\" has an invalid prefix")),
            ("::/129", Err("\"::/129\" has an invalid prefix")),
            ("10.0.0/8", Err("\"10.0.0/8\" is not an IP")),
            ("host.example", Err("\"host.example\" is not an IP")),
        ];
        for (input, want) in cases {
            match (input.parse::<Cidr>(), want) {
                (Ok(c), Ok(display)) => assert_eq!(c.to_string(), *display, "{input}"),
                (Err(e), Err(msg)) => {
                    assert!(e.to_string().starts_with(msg), "{input}: {e}")
                }
                (got, _) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn contains_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.255.0.1", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("10.0.0.0/8", "::a01:203", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("::/0", "2001:db8::1", true),
            ("::/0", "10.0.0.1", true),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("192.168.1.7", "192.168.1.7", true),
            ("192.168.1.7", "192.168.1.8", false),
            ("::1", "::1", true),
            ("::1", "127.0.0.1", false),
        ];
        for (block, addr, want) in cases {
            let c: Cidr = block.parse().unwrap();
            assert_eq!(c.contains(ip(addr)), *want, "{block} contains {addr}");
        }
    }

    #[test]
    fn deny_wins_table() {
        let rules = IpRules::parse(["10.0.0.0/8", "2001:db8::/32"], ["10.9.0.0/16"]).unwrap();
        let open = IpRules::parse([], ["192.0.2.0/24"]).unwrap();
        let cases: &[(&IpRules, &str, IpVerdict)] = &[
            (&rules, "10.1.1.1", IpVerdict::Allow),
            (&rules, "10.9.1.1", IpVerdict::Deny),
            (&rules, "::ffff:10.9.1.1", IpVerdict::Deny),
            (&rules, "2001:db8::5", IpVerdict::Allow),
            (&rules, "172.16.0.1", IpVerdict::Deny),
            (&open, "172.16.0.1", IpVerdict::Allow),
            (&open, "192.0.2.1", IpVerdict::Deny),
        ];
        for (r, addr, want) in cases {
            assert_eq!(r.check(ip(addr)), *want, "{addr}");
        }
        assert_eq!(IpRules::default().check(ip("1.2.3.4")), IpVerdict::Allow);
    }

    #[test]
    fn parse_reports_every_bad_entry_with_its_path() {
        let errs = IpRules::parse(["10.0.0.0/8", "nope"], ["1.2.3.4/40"]).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "allow[1]: \"nope\" is not an IP address or CIDR block",
                "deny[0]: \"1.2.3.4/40\" has an invalid prefix length"
            ]
        );
    }
}
