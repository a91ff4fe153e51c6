//! A token bucket: `rate` tokens a second flow in, at most `burst` are held, each request takes
//! `n` (usually 1).
//!
//! The bucket starts full and refills lazily from the `now` passed in, so it has no timer and
//! costs two floating-point operations per check. A [`Decision`] carries everything the 429 and
//! the rate-limit headers need: whether it was admitted, the tokens left, how long until the
//! bucket is full again (`RateLimit-Reset`) and, when refused, how long until `n` tokens are
//! there (`Retry-After`). [`RateLimitHeaders`] turns those into whole seconds and writes the
//! header lines into a caller's buffer without allocating.
//!
//! Changing the limit in place ([`TokenBucket::set_limit`]) keeps the tokens already earned
//! (clamped to the new burst): that is how a shard's share of a gateway-wide limit moves (see
//! [`crate::global_rate`]).

use std::fmt;
use std::time::{Duration, Instant};

/// A rate limit: `rate` tokens per second, at most `burst` held at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    rate: f64,
    burst: f64,
}

/// Why a [`Limit`] is unusable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimitError {
    /// `rate` must be finite and above zero.
    Rate(f64),
    /// `burst` must be finite and at least 1.
    Burst(f64),
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::Rate(r) => write!(f, "rate must be a positive number, got {r}"),
            LimitError::Burst(b) => write!(f, "burst must be at least 1, got {b}"),
        }
    }
}

impl std::error::Error for LimitError {}

impl Limit {
    /// `rate` tokens per second (fractions allowed: 0.5 is one every two seconds) and a burst of
    /// at least one token.
    pub fn new(rate: f64, burst: f64) -> Result<Limit, LimitError> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(LimitError::Rate(rate));
        }
        if !(burst.is_finite() && burst >= 1.0) {
            return Err(LimitError::Burst(burst));
        }
        Ok(Limit { rate, burst })
    }

    /// `count` tokens per `per` (e.g. 100 per minute), burst `burst`.
    pub fn per(count: u32, per: Duration, burst: u32) -> Result<Limit, LimitError> {
        let secs = per.as_secs_f64();
        let rate = if secs > 0.0 {
            f64::from(count) / secs
        } else {
            f64::NAN
        };
        Limit::new(rate, f64::from(burst))
    }

    /// A limit that does not check its inputs; for shares computed from a valid limit, where a
    /// share may legitimately be tiny. `rate` is floored at a millionth of a token per second
    /// and `burst` at zero.
    pub(crate) fn share(rate: f64, burst: f64) -> Limit {
        Limit {
            rate: if rate.is_finite() {
                rate.max(1e-6)
            } else {
                1e-6
            },
            burst: if burst.is_finite() {
                burst.max(0.0)
            } else {
                0.0
            },
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn burst(&self) -> f64 {
        self.burst
    }
}

/// What [`TokenBucket::try_take`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Whole tokens left after this decision.
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset_after: Duration,
    /// When refused: time until the requested tokens will be there. `None` when admitted.
    /// A request costing more than the burst can never pass; it gets the time to a full bucket.
    pub retry_after: Option<Duration>,
}

impl Decision {
    /// The header values for this decision under a limit advertised as `limit` requests.
    pub fn headers(&self, limit: u64) -> RateLimitHeaders {
        RateLimitHeaders {
            limit,
            remaining: self.remaining,
            reset_secs: ceil_secs(self.reset_after),
            retry_after_secs: self.retry_after.map(|d| ceil_secs(d).max(1)),
        }
    }
}

/// One bucket. Not `Sync`: one shard owns it.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: Limit,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: Limit, now: Instant) -> TokenBucket {
        TokenBucket {
            limit,
            tokens: limit.burst,
            last: now,
        }
    }

    pub fn limit(&self) -> Limit {
        self.limit
    }

    fn refill(&mut self, now: Instant) {
        // An instant earlier than the last one (taken a moment before by the caller) adds
        // nothing; the clock never runs backwards for the bucket.
        if now > self.last {
            let dt = now.duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.limit.rate).min(self.limit.burst);
            self.last = now;
        }
    }

    /// Tokens available at `now` (fractional).
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// Change the rate and burst, keeping the tokens earned so far (clamped to the new burst).
    pub fn set_limit(&mut self, limit: Limit, now: Instant) {
        self.refill(now);
        self.limit = limit;
        self.tokens = self.tokens.min(limit.burst);
    }

    /// Take `n` tokens if there are that many.
    pub fn try_take(&mut self, n: u32, now: Instant) -> Decision {
        self.refill(now);
        let want = f64::from(n);
        let allowed = self.tokens >= want;
        if allowed {
            self.tokens -= want;
        }
        let rate = self.limit.rate;
        let reset_after = secs((self.limit.burst - self.tokens) / rate);
        let retry_after = if allowed {
            None
        } else if want > self.limit.burst {
            Some(reset_after)
        } else {
            Some(secs((want - self.tokens) / rate))
        };
        Decision {
            allowed,
            remaining: self.tokens.max(0.0) as u64,
            reset_after,
            retry_after,
        }
    }
}

fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Integer header values: `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds,
/// rounded up) and, on refusal, `Retry-After` (seconds, rounded up, at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitHeaders {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u64,
    pub retry_after_secs: Option<u64>,
}

impl RateLimitHeaders {
    /// The header fields as `(name, value)` with the value rendered into `scratch`; call
    /// [`RateLimitHeaders::field`] for `i` in `0..self.len()`.
    pub fn len(&self) -> usize {
        3 + usize::from(self.retry_after_secs.is_some())
    }

    /// Of two limits one request met, the one to advertise (a response
    /// carries one set of fields): a refusal first, then the fewer requests
    /// remaining, then the later reset.
    pub fn tighter(self, other: RateLimitHeaders) -> RateLimitHeaders {
        let rank = |h: &RateLimitHeaders| {
            (
                h.retry_after_secs.is_none(),
                h.remaining,
                std::cmp::Reverse(h.reset_secs),
            )
        };
        if rank(&other) < rank(&self) {
            other
        } else {
            self
        }
    }

    /// Always at least three fields.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Field `i` (`0..len()`): its name, and its value written into `scratch`.
    pub fn field<'s>(&self, i: usize, scratch: &'s mut [u8; 20]) -> (&'static str, &'s [u8]) {
        let (name, v) = match i {
            0 => ("RateLimit-Limit", self.limit),
            1 => ("RateLimit-Remaining", self.remaining),
            2 => ("RateLimit-Reset", self.reset_secs),
            _ => ("Retry-After", self.retry_after_secs.unwrap_or(0)),
        };
        (name, format_u64(v, scratch))
    }

    /// Append `Name: value\r\n` for every field to `out`; no allocation once `out` has room.
    pub fn write_lines(&self, out: &mut Vec<u8>) {
        let mut scratch = [0u8; 20];
        for i in 0..self.len() {
            let (name, value) = self.field(i, &mut scratch);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Render `v` in decimal into `buf`, returning the digits.
pub fn format_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn bucket(rate: f64, burst: f64, t0: Instant) -> TokenBucket {
        TokenBucket::new(Limit::new(rate, burst).unwrap(), t0)
    }

    #[test]
    fn the_tighter_limit_is_advertised() {
        let h = |remaining, reset_secs, retry: Option<u64>| RateLimitHeaders {
            limit: 10,
            remaining,
            reset_secs,
            retry_after_secs: retry,
        };
        let cases = [
            // A refusal wins over any admission.
            (h(0, 5, None), h(3, 1, Some(1)), h(3, 1, Some(1))),
            // Then fewer remaining.
            (h(4, 1, None), h(2, 9, None), h(2, 9, None)),
            // Then the later reset.
            (h(2, 1, None), h(2, 7, None), h(2, 7, None)),
        ];
        for (a, b, want) in cases {
            assert_eq!(a.tighter(b), want, "{a:?} vs {b:?}");
            assert_eq!(b.tighter(a), want, "{b:?} vs {a:?}");
        }
    }

    #[test]
    fn limit_validation_table() {
        let cases: &[(f64, f64, bool)] = &[
            (10.0, 5.0, true),
            (0.5, 1.0, true),
            (0.0, 5.0, false),
            (-1.0, 5.0, false),
            (f64::NAN, 5.0, false),
            (f64::INFINITY, 5.0, false),
            (10.0, 0.5, false),
            (10.0, f64::NAN, false),
        ];
        for &(rate, burst, ok) in cases {
            assert_eq!(Limit::new(rate, burst).is_ok(), ok, "{rate}/{burst}");
        }
        let per_minute = Limit::per(120, Duration::from_secs(60), 10).unwrap();
        assert_eq!(per_minute.rate(), 2.0);
        assert!(Limit::per(1, Duration::ZERO, 1).is_err());
    }

    #[test]
    fn burst_then_steady_rate() {
        let t0 = Instant::now();
        let mut b = bucket(10.0, 5.0, t0);
        let admitted = (0..10).filter(|_| b.try_take(1, t0).allowed).count();
        assert_eq!(admitted, 5, "the burst, then nothing");
        // 10/s: one token every 100 ms.
        assert!(!b.try_take(1, t0 + 99 * MS).allowed);
        assert!(b.try_take(1, t0 + 100 * MS).allowed);
        // Over 10 s at 1 request per ms, exactly 100 more pass (10/s).
        let mut n = 0;
        for ms in 101..=10_100 {
            n += u32::from(b.try_take(1, t0 + ms * MS).allowed);
        }
        assert_eq!(n, 100);
    }

    #[test]
    fn decision_numbers_table() {
        // (tokens taken before, n, allowed, remaining, reset_ms, retry_ms)
        type Case = (u32, u32, bool, u64, u64, Option<u64>);
        let cases: &[Case] = &[
            (0, 1, true, 9, 100, None),
            (9, 1, true, 0, 1000, None),
            (10, 1, false, 0, 1000, Some(100)),
            (10, 3, false, 0, 1000, Some(300)),
            (0, 10, true, 0, 1000, None),
            (0, 11, false, 10, 0, Some(0)),
            (5, 11, false, 5, 500, Some(500)),
        ];
        for &(before, n, allowed, remaining, reset_ms, retry_ms) in cases {
            let t0 = Instant::now();
            let mut b = bucket(10.0, 10.0, t0);
            for _ in 0..before {
                assert!(b.try_take(1, t0).allowed);
            }
            let d = b.try_take(n, t0);
            let ctx = format!("{before} taken, then {n}: {d:?}");
            assert_eq!(d.allowed, allowed, "{ctx}");
            assert_eq!(d.remaining, remaining, "{ctx}");
            assert_eq!(d.reset_after.as_millis() as u64, reset_ms, "{ctx}");
            assert_eq!(
                d.retry_after.map(|r| r.as_millis() as u64),
                retry_ms,
                "{ctx}"
            );
        }
    }

    #[test]
    fn set_limit_keeps_earned_tokens_clamped_to_new_burst() {
        let t0 = Instant::now();
        let mut b = bucket(10.0, 10.0, t0);
        b.set_limit(Limit::new(100.0, 4.0).unwrap(), t0);
        assert_eq!(b.available(t0), 4.0);
        for _ in 0..4 {
            assert!(b.try_take(1, t0).allowed);
        }
        b.set_limit(Limit::new(1.0, 50.0).unwrap(), t0 + 10 * MS);
        // 10 ms at the old 100/s earned one token before the change.
        assert!((b.available(t0 + 10 * MS) - 1.0).abs() < 1e-9);
        assert!((b.available(t0 + 1010 * MS) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn earlier_instant_neither_refills_nor_panics() {
        let t0 = Instant::now();
        let mut b = bucket(1.0, 1.0, t0 + Duration::from_secs(5));
        assert!(b.try_take(1, t0).allowed);
        assert!(!b.try_take(1, t0).allowed);
    }

    #[test]
    fn fractional_rate_refills_slowly() {
        let t0 = Instant::now();
        let mut b = bucket(0.5, 1.0, t0);
        assert!(b.try_take(1, t0).allowed);
        let d = b.try_take(1, t0 + Duration::from_secs(1));
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
        assert!(b.try_take(1, t0 + Duration::from_secs(2)).allowed);
    }

    #[test]
    fn headers_round_up_and_write_lines() {
        let t0 = Instant::now();
        let mut b = bucket(3.0, 3.0, t0);
        for _ in 0..3 {
            b.try_take(1, t0);
        }
        let d = b.try_take(1, t0);
        let h = d.headers(3);
        assert_eq!(
            h,
            RateLimitHeaders {
                limit: 3,
                remaining: 0,
                reset_secs: 1,
                retry_after_secs: Some(1)
            }
        );
        let mut out = Vec::with_capacity(128);
        h.write_lines(&mut out);
        assert_eq!(
            out,
            b"RateLimit-Limit: 3\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: 1\r\nRetry-After: 1\r\n"
        );
        let admitted = bucket(3.0, 3.0, t0).try_take(1, t0).headers(3);
        assert_eq!(admitted.len(), 3);
    }

    #[test]
    fn format_u64_table() {
        let mut buf = [0u8; 20];
        for (v, want) in [
            (0u64, "0"),
            (7, "7"),
            (10, "10"),
            (1234567890, "1234567890"),
            (u64::MAX, "18446744073709551615"),
        ] {
            assert_eq!(format_u64(v, &mut buf), want.as_bytes());
        }
    }
}
