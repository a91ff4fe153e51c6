//! Request ids (`X-Request-Id`): keep a well-formed incoming one, otherwise make one, so every
//! hop and every log line of a request share it.
//!
//! An incoming id is kept when it is 1 to [`MAX_LEN`] bytes of a conservative charset (ASCII
//! letters, digits and `-_.:@/+=`): anything else (spaces, quotes, control bytes, very long
//! values) could break a log line or a downstream parser, so it is replaced. New ids are 128
//! random bits in lowercase hex (32 bytes), from a per-shard generator seeded with the shard
//! index and the start time, written into a fixed array: no allocation.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::chain::{Cx, Declare, Flow, line};
use crate::filter::{BuildContext, BuiltIn};
use crate::headers::{is_managed, is_token};
use crate::syntax::ParseCx;
use serde::Deserialize;
use shardgate_common::hash::{Rng, mix64};

/// The header, lowercase.
pub const HEADER: &str = "x-request-id";
/// Longest incoming id kept.
pub const MAX_LEN: usize = 128;
/// Length of a generated id.
pub const GENERATED_LEN: usize = 32;

/// Whether an incoming id is kept as it is.
pub fn is_valid(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.:@/+=".contains(&b))
}

/// A per-shard id generator.
#[derive(Debug, Clone)]
pub struct RequestIdGen {
    rng: Rng,
}

impl RequestIdGen {
    /// Seeded from the shard index and the wall clock at start-up, so shards (and restarts)
    /// do not repeat each other's sequences.
    pub fn new(shard: usize, started: SystemTime) -> RequestIdGen {
        let nanos = started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        RequestIdGen {
            rng: Rng::new(mix64(shard as u64) ^ nanos),
        }
    }

    /// The generator's PRNG, shared with trace ids (see [`crate::traceparent`]).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// A fresh id.
    pub fn generate(&mut self) -> [u8; GENERATED_LEN] {
        let mut out = [0u8; GENERATED_LEN];
        let (hi, lo) = (self.rng.next_u64(), self.rng.next_u64());
        hex_into(&hi.to_be_bytes(), &mut out[..16]);
        hex_into(&lo.to_be_bytes(), &mut out[16..]);
        out
    }

    /// The id for a request: the incoming one if valid, else a new one.
    pub fn resolve<'a>(&mut self, incoming: Option<&'a [u8]>) -> RequestId<'a> {
        match incoming {
            Some(id) if is_valid(id) => RequestId::Kept(id),
            _ => RequestId::Generated(self.generate()),
        }
    }
}

/// Lowercase hex of `bytes` into `out` (twice as long).
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
}

/// The id a request carries: forward it upstream and return it to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestId<'a> {
    Kept(&'a [u8]),
    Generated([u8; GENERATED_LEN]),
}

impl RequestId<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Kept(id) => id,
            RequestId::Generated(id) => id,
        }
    }

    /// Whether the incoming header must be replaced (it was missing or invalid).
    pub fn is_generated(&self) -> bool {
        matches!(self, RequestId::Generated(_))
    }
}

/// `request-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIdConfig {
    pub header: String,
    /// Return the id to the client in the response too.
    pub in_response: bool,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        RequestIdConfig {
            header: HEADER.into(),
            in_response: true,
        }
    }
}

/// The TOML table: every field optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequestId {
    header: Option<String>,
    in_response: Option<bool>,
}

/// The compiled filter: the checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIdFilter(pub RequestIdConfig);

impl BuiltIn for RequestIdFilter {
    type Spec = RequestIdConfig;
    const NAME: &'static str = "request-id";
    const ABOUT: &'static str = "keep or generate X-Request-Id, forward and return it";

    fn parse(cx: &mut ParseCx<'_>, body: toml::Value) -> Option<RequestIdConfig> {
        let r: RawRequestId = cx.read(body)?;
        let d = RequestIdConfig::default();
        Some(RequestIdConfig {
            header: r.header.unwrap_or(d.header),
            in_response: r.in_response.unwrap_or(d.in_response),
        })
    }

    fn build(c: &RequestIdConfig, _: &BuildContext<'_>) -> Result<Self, Vec<String>> {
        if !is_token(c.header.as_bytes()) {
            return Err(vec![format!("header: {:?} is not a header name", c.header)]);
        }
        if is_managed(&c.header) {
            return Err(vec![format!(
                "header: {:?} is managed by the proxy and cannot be used",
                c.header
            )]);
        }
        Ok(RequestIdFilter(c.clone()))
    }

    /// The id is the gateway's to say (it keeps a valid incoming one).
    fn declare(&mut self, d: &mut Declare<'_>) {
        d.own_request(&self.0.header);
        if self.0.in_response {
            d.own_response(&self.0.header);
        }
    }

    /// Keeps a valid incoming id or makes one; sends it upstream, returns
    /// it, and hands it to the access log.
    fn on_request<'f>(&'f self, cx: &mut Cx<'_, '_>) -> Flow<'f> {
        let c = &self.0;
        let incoming = cx.header(c.header.as_bytes());
        let id = cx.ids.resolve(incoming);
        let value = id.as_bytes();
        line(cx.upstream, c.header.as_bytes(), value);
        if c.in_response {
            line(cx.response, c.header.as_bytes(), value);
        }
        let n = value.len().min(cx.request_id.0.len());
        cx.request_id.0[..n].copy_from_slice(&value[..n]);
        cx.request_id.1 = n as u8;
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    #[test]
    fn validity_table() {
        let long = [b'a'; MAX_LEN];
        let too_long = [b'a'; MAX_LEN + 1];
        let cases: &[(&[u8], bool)] = &[
            (b"abc-123", true),
            (b"3f2a9c1e-7b4d-4e8a-9f00-123456789abc", true),
            (b"trace:1/2+3=4@x_y.z", true),
            (&long, true),
            (&too_long, false),
            (b"", false),
            (b"a b", false),
            (b"a\"b", false),
            (b"a\r\nb", false),
            (b"caf\xc3\xa9", false),
            (b"<script>", false),
        ];
        for (id, want) in cases {
            assert_eq!(is_valid(id), *want, "{:?}", String::from_utf8_lossy(id));
        }
    }

    #[test]
    fn resolve_keeps_valid_and_replaces_the_rest() {
        let mut g = RequestIdGen::new(0, UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(g.resolve(Some(b"abc")), RequestId::Kept(b"abc"));
        for bad in [None, Some(&b"bad id"[..]), Some(&b""[..])] {
            let id = g.resolve(bad);
            assert!(id.is_generated());
            assert_eq!(id.as_bytes().len(), GENERATED_LEN);
            assert!(is_valid(id.as_bytes()));
            assert!(
                id.as_bytes()
                    .iter()
                    .all(|b| b"0123456789abcdef".contains(b))
            );
        }
    }

    #[test]
    fn shards_do_not_repeat_each_other() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut seen = HashSet::new();
        for shard in 0..4 {
            let mut g = RequestIdGen::new(shard, t);
            for _ in 0..1000 {
                assert!(seen.insert(g.generate()));
            }
        }
        let a = RequestIdGen::new(0, t).generate();
        let b = RequestIdGen::new(0, t + Duration::from_nanos(1)).generate();
        assert_ne!(a, b, "a restart gets a new sequence");
    }
}
