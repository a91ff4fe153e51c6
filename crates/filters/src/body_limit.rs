//! Request body size limit: refuse at the head when `Content-Length` is over the limit, and
//! count chunked (or close-delimited) bodies as they stream, failing as soon as the running
//! total passes it. Either way the proxy answers 413; once body bytes have been forwarded
//! upstream it must abort that exchange too, since the upstream holds a truncated body.

use crate::chain::{Cx, Declare, Flow};
use crate::filter::{BuildContext, BuiltIn};
use crate::syntax::ParseCx;
use serde::Deserialize;
use shardgate_common::units::RawSize;

/// `body-limit`: 413 over `max` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyLimitConfig {
    pub max: u64,
}

impl Default for BodyLimitConfig {
    fn default() -> Self {
        BodyLimitConfig { max: 1 << 20 }
    }
}

/// The TOML table: `max`, bytes or a size with a unit.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBodyLimit {
    max: Option<RawSize>,
}

/// The `body-limit` filter: requests with more than `max` body bytes get a
/// 413 (a declared length at once, a chunked body as it streams).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    pub max: u64,
}

impl BuiltIn for BodyLimit {
    type Spec = BodyLimitConfig;
    const NAME: &'static str = "body-limit";
    const ABOUT: &'static str = "413 for request bodies over a size, chunked too";

    fn parse(cx: &mut ParseCx<'_>, body: toml::Value) -> Option<BodyLimitConfig> {
        let r: RawBodyLimit = cx.read(body)?;
        let d = BodyLimitConfig::default();
        Some(BodyLimitConfig {
            max: cx.size("max", r.max.as_ref(), d.max),
        })
    }

    fn build(c: &BodyLimitConfig, _: &BuildContext<'_>) -> Result<BodyLimit, Vec<String>> {
        Ok(BodyLimit { max: c.max })
    }

    /// The chain's limit is its smallest; the proxy applies it to chunked
    /// bodies as they stream.
    fn declare(&mut self, d: &mut Declare<'_>) {
        let max = self.max;
        d.edits.max_body = Some(d.edits.max_body.map_or(max, |m| m.min(max)));
    }

    /// 413 for a declared `Content-Length` over the limit.
    fn on_request<'f>(&'f self, cx: &mut Cx<'_, '_>) -> Flow<'f> {
        match cx.req.info.body {
            shardgate_http::BodyFraming::Length(n) if n > self.max => Flow::answer(413),
            _ => Flow::Continue,
        }
    }
}

/// The running count for one request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyBudget {
    max: u64,
    seen: u64,
}

/// The body is over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    pub max: u64,
    /// Bytes known so far (the declared length, or the running total).
    pub seen: u64,
}

impl BodyBudget {
    /// Start counting a body; a declared `Content-Length` over `max` is refused at once.
    pub fn start(max: u64, content_length: Option<u64>) -> Result<BodyBudget, TooLarge> {
        match content_length {
            Some(len) if len > max => Err(TooLarge { max, seen: len }),
            _ => Ok(BodyBudget { max, seen: 0 }),
        }
    }

    /// Count `len` more body bytes (decoded chunk data, not chunk framing).
    #[inline]
    pub fn on_data(&mut self, len: usize) -> Result<(), TooLarge> {
        self.seen = self.seen.saturating_add(len as u64);
        if self.seen > self.max {
            Err(TooLarge {
                max: self.max,
                seen: self.seen,
            })
        } else {
            Ok(())
        }
    }

    pub fn seen(&self) -> u64 {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_length_table() {
        let cases = [
            (10, Some(10), true),
            (10, Some(11), false),
            (10, None, true),
            (0, Some(0), true),
            (0, Some(1), false),
        ];
        for (max, len, ok) in cases {
            assert_eq!(BodyBudget::start(max, len).is_ok(), ok, "{max} {len:?}");
        }
    }

    #[test]
    fn streaming_chunks_fail_on_the_chunk_that_passes_the_limit() {
        let mut b = BodyBudget::start(100, None).unwrap();
        for _ in 0..10 {
            assert!(b.on_data(10).is_ok());
        }
        assert_eq!(
            b.on_data(1),
            Err(TooLarge {
                max: 100,
                seen: 101
            })
        );
        let mut b = BodyBudget::start(5, None).unwrap();
        assert!(b.on_data(0).is_ok());
        assert!(b.on_data(usize::MAX).is_err());
    }
}
