//! The `quota` filter: a count per key (consumer, client, header, ...) over a long calendar
//! window (an hour, a day or a month, in UTC), shared by every gateway of a fleet and kept in
//! Redis, so a restart or a new gateway does not reset it.
//!
//! Each shard admits from what it knows: the fleet's total for the key as of the last exchange
//! (`base`) plus what it admitted since (`unsynced`). Every period the shard hands its
//! increments to the fleet thread, which adds them in Redis (`INCRBY`) and sends every shard
//! the totals that come back. Between two exchanges the shards of all gateways may each admit
//! what was left at the last one, so a quota is overshot by at most what the fleet admits for
//! that key in one sync interval (100 ms by default); a key that a gateway has not seen since
//! it started is admitted until the first exchange brings its total.

use crate::chain::{Cx, Declare, Flow};
use crate::filter::{BuildContext, BuiltIn};
use crate::global_rate::{DEFAULT_MAX_KEYS, RateKey};
use crate::lru::{Lru, Slot};
use crate::rate_limit::{RateKeySource, fleet_name, max_keys, rate_key};
use crate::syntax::ParseCx;
use crate::token_bucket::RateLimitHeaders;
use serde::Deserialize;

/// The window a quota counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    Month,
}

impl Period {
    /// The window holding `unix` (seconds): its start and end.
    pub fn window(self, unix: u64) -> (u64, u64) {
        match self {
            Period::Hour => (unix / 3600 * 3600, unix / 3600 * 3600 + 3600),
            Period::Day => (unix / 86_400 * 86_400, unix / 86_400 * 86_400 + 86_400),
            Period::Month => {
                let (y, m) = year_month(unix / 86_400);
                let start = days_from_civil(y, m) * 86_400;
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (start, days_from_civil(ny, nm) * 86_400)
            }
        }
    }
}

/// The (year, month) of a day count since 1970-01-01 (the civil calendar algorithm of Howard
/// Hinnant's date library).
fn year_month(days: u64) -> (i64, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// Days since 1970-01-01 of the first of month `m` of year `y`.
fn days_from_civil(y: i64, m: u32) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) as u64
}

/// `quota`: `limit` requests per key per `per` window, fleet-wide.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaConfig {
    pub limit: u64,
    pub period: Period,
    pub key: RateKeySource,
    pub max_keys: usize,
    /// Its name in Redis (`name`, else the filter's place: `routes[2].filters[0]`).
    pub name: String,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            limit: 1000,
            period: Period::Day,
            key: RateKeySource::Consumer,
            max_keys: DEFAULT_MAX_KEYS,
            name: String::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    limit: Option<i64>,
    /// `hour`, `day` or `month`.
    per: Option<String>,
    key: Option<String>,
    max_keys: Option<i64>,
    name: Option<String>,
}

/// The filter as built.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    pub cfg: QuotaConfig,
    slot: usize,
}

/// A key's count on one shard.
#[derive(Debug, Clone)]
struct Entry {
    /// The window start it counts for.
    window: u64,
    /// The fleet's total as last known, with this shard's reported increments.
    base: u64,
    /// Admitted here since the last report.
    unsynced: u64,
}

/// One shard's counts of one quota.
#[derive(Debug, Clone)]
pub struct QuotaShard {
    pub name: String,
    pub limit: u64,
    pub period: Period,
    entries: Lru<Entry>,
    /// Increments of entries evicted before they were reported.
    pending: Vec<(RateKey, u64, u64)>,
}

impl QuotaShard {
    pub fn new(cfg: &QuotaConfig) -> QuotaShard {
        QuotaShard {
            name: cfg.name.clone(),
            limit: cfg.limit,
            period: cfg.period,
            entries: Lru::new(cfg.max_keys),
            pending: Vec::new(),
        }
    }

    /// One request for `key` at `unix` seconds: admitted or not, and the headers to show.
    pub fn check(&mut self, key: RateKey, unix: u64) -> (bool, RateLimitHeaders) {
        let (start, end) = self.period.window(unix);
        let (_, e, found) = self.entries.get_or_insert_with(key.0, || Entry {
            window: start,
            base: 0,
            unsynced: 0,
        });
        if let Slot::Evicted { key: old, value } = found
            && value.unsynced > 0
        {
            self.pending
                .push((RateKey(old), value.window, value.unsynced));
        }
        if e.window != start {
            if e.unsynced > 0 {
                self.pending.push((key, e.window, e.unsynced));
            }
            *e = Entry {
                window: start,
                base: 0,
                unsynced: 0,
            };
        }
        let used = e.base + e.unsynced;
        let allowed = used < self.limit;
        if allowed {
            e.unsynced += 1;
        }
        let reset = end.saturating_sub(unix).max(1);
        let headers = RateLimitHeaders {
            limit: self.limit,
            remaining: self.limit.saturating_sub(e.base + e.unsynced),
            reset_secs: reset,
            retry_after_secs: (!allowed).then_some(reset),
        };
        (allowed, headers)
    }

    /// The increments since the last report, `(key, window start, count)`; they now count in
    /// the shard's base until the fleet's totals come back.
    pub fn report(&mut self) -> Vec<(RateKey, u64, u64)> {
        let mut out = std::mem::take(&mut self.pending);
        let keys: Vec<u64> = self.entries.keys_by_recency().collect();
        for k in keys {
            let Some(slot) = self.entries.slot_of(k) else {
                continue;
            };
            if let Some((_, e)) = self.entries.slot_mut(slot)
                && e.unsynced > 0
            {
                out.push((RateKey(k), e.window, e.unsynced));
                e.base += e.unsynced;
                e.unsynced = 0;
            }
        }
        out
    }

    /// The fleet's totals for keys of the window starting at `window`.
    pub fn apply(&mut self, window: u64, totals: &[(RateKey, u64)]) {
        for &(key, total) in totals {
            let (_, e, found) = self.entries.get_or_insert_with(key.0, || Entry {
                window,
                base: 0,
                unsynced: 0,
            });
            if e.window == window {
                e.base = e.base.max(total);
            }
            if let Slot::Evicted { key: old, value } = found
                && value.unsynced > 0
            {
                self.pending
                    .push((RateKey(old), value.window, value.unsynced));
            }
        }
    }
}

impl BuiltIn for Quota {
    type Spec = QuotaConfig;
    const NAME: &'static str = "quota";
    const ABOUT: &'static str = "requests per key per hour, day or month, fleet-wide and kept in Redis; 429 with RateLimit-*";

    fn parse(cx: &mut ParseCx<'_>, body: toml::Value) -> Option<QuotaConfig> {
        let r: RawQuota = cx.read(body)?;
        let d = QuotaConfig::default();
        let limit = cx.int_in("limit", r.limit, d.limit, 1, u64::from(u32::MAX));
        let period = match r.per.as_deref() {
            None => d.period,
            Some("hour") => Period::Hour,
            Some("day") => Period::Day,
            Some("month") => Period::Month,
            Some(other) => {
                cx.push("per", format!("expected hour, day or month, got {other:?}"));
                d.period
            }
        };
        let key = rate_key(cx, r.key.as_deref(), d.key);
        Some(QuotaConfig {
            limit,
            period,
            key,
            max_keys: max_keys(cx, r.max_keys, d.max_keys),
            name: fleet_name(cx, r.name),
        })
    }

    fn build(c: &QuotaConfig, _cx: &BuildContext<'_>) -> Result<Quota, Vec<String>> {
        if let RateKeySource::Header(h) = &c.key
            && !crate::headers::is_token(h.as_bytes())
        {
            return Err(vec![format!("key.header: {h:?} is not a header name")]);
        }
        Ok(Quota {
            cfg: c.clone(),
            slot: usize::MAX,
        })
    }

    fn declare(&mut self, d: &mut Declare<'_>) {
        for name in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
            d.own_response(name);
        }
        self.slot = d.quota(&self.cfg);
    }

    fn on_request<'f>(&'f self, cx: &mut Cx<'_, '_>) -> Flow<'f> {
        let key = self.cfg.key.key(cx);
        let Some(q) = cx.quotas.get(self.slot) else {
            return Flow::Continue;
        };
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (allowed, met) = q.borrow_mut().check(key, unix);
        crate::rate_limit::decide(cx, allowed, met)
    }

    fn needs_consumer(c: &QuotaConfig) -> Option<&'static str> {
        (c.key == RateKeySource::Consumer).then_some("key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_calendar_hours_days_and_months() {
        // 2026-12-03T11:42:43Z
        let t = 1_796_298_163;
        assert_eq!(Period::Hour.window(t), (1_796_295_600, 1_796_299_200));
        assert_eq!(Period::Day.window(t), (1_796_256_000, 1_796_342_400));
        // 2026-12-01 to 2027-01-01; and February of a leap year.
        assert_eq!(Period::Month.window(t), (1_796_083_200, 1_798_761_600));
        let feb_2028 = 1_832_976_000 + 86_400 * 10;
        assert_eq!(
            Period::Month.window(feb_2028),
            (1_832_976_000, 1_835_481_600)
        );
    }

    #[test]
    fn a_shard_admits_up_to_the_fleet_total_and_reports_what_it_admitted() {
        let cfg = QuotaConfig {
            limit: 3,
            ..QuotaConfig::default()
        };
        let mut q = QuotaShard::new(&cfg);
        let t = 1_796_298_163;
        let (k, day) = (RateKey(7), Period::Day.window(t).0);
        assert!(q.check(k, t).0);
        assert_eq!(q.report(), [(k, day, 1)]);
        // The fleet says 2 more were used elsewhere: this shard now has none left.
        q.apply(day, &[(k, 3)]);
        let (allowed, h) = q.check(k, t);
        assert!(!allowed);
        assert_eq!(
            (h.remaining, h.retry_after_secs),
            (0, Some(1_796_342_400 - t))
        );
        assert!(q.report().is_empty());
        // The next day starts again.
        assert!(q.check(k, t + 86_400).0);
    }

    #[test]
    fn counts_of_an_evicted_key_are_still_reported() {
        let cfg = QuotaConfig {
            limit: 10,
            max_keys: 1,
            ..QuotaConfig::default()
        };
        let mut q = QuotaShard::new(&cfg);
        let t = 1_796_298_163;
        let day = Period::Day.window(t).0;
        assert!(q.check(RateKey(1), t).0);
        q.apply(day, &[(RateKey(2), 4)]);
        assert!(q.check(RateKey(3), t).0);
        let mut r = q.report();
        r.sort();
        assert_eq!(r, [(RateKey(1), day, 1), (RateKey(3), day, 1)]);
    }
}
