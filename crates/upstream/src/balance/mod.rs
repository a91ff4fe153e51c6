//! Load balancing: choose one endpoint index among `0..n`, given which are eligible.
//!
//! Four algorithms, one per file, behind [`BalancerKind`] (an enum, so a pick is a `match`, not a
//! virtual call): [`RoundRobin`], [`SmoothWeighted`] (exact canary ratios), [`LeastRequest`]
//! (power of two choices over the caller's in-flight counts) and [`Maglev`] (consistent hashing
//! on a key the caller hashed with [`shardgate_common::hash`]). [`WeightedSplit`] splits a route across
//! groups.
//!
//! Eligibility is the caller's predicate; [`BalancerKind::choose`] orders health, ejection and
//! the tried set for [`crate::group::Group::pick`]. Every algorithm falls back
//! deterministically when its first choice is ineligible and returns `None` only when no
//! endpoint is eligible.

mod least_request;
mod maglev;
mod round_robin;
mod smooth_weighted;

use std::fmt;

pub use least_request::LeastRequest;
pub use maglev::{DEFAULT_TABLE_SIZE, Maglev, MaglevError, is_prime};
pub use round_robin::RoundRobin;
pub use smooth_weighted::{SmoothWeighted, WeightedSplit};

/// The default endpoint weight.
pub const DEFAULT_WEIGHT: u32 = 1;

/// One endpoint as the balancer sees it: a stable id (e.g. `"10.0.0.7:8080"`, used by Maglev so
/// the table follows ids, not positions) and a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointSpec<'a> {
    pub id: &'a str,
    pub weight: u32,
}

impl<'a> EndpointSpec<'a> {
    pub fn new(id: &'a str, weight: u32) -> Self {
        EndpointSpec { id, weight }
    }
}

/// What a consistent-hash balancer hashes. The proxy extracts and hashes it; a request without
/// the header or cookie is balanced round robin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Header(Box<str>),
    Cookie(Box<str>),
}

/// The balancing algorithm of an upstream group (the config crate maps TOML onto this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    /// Smooth weighted round robin over the endpoint weights.
    Weighted,
    /// Power of two choices over in-flight requests.
    LeastRequest,
    /// Maglev consistent hashing; `table_size` must be prime (default [`DEFAULT_TABLE_SIZE`]).
    ConsistentHash {
        key: HashKey,
        table_size: u32,
    },
}

/// Why a balancer could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalanceError {
    Maglev(MaglevError),
}

impl fmt::Display for BalanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BalanceError::Maglev(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BalanceError {}

/// Per-request inputs some algorithms need.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickHint<'a> {
    /// The hashed consistent-hash key, if the request carried one.
    pub key: Option<u64>,
    /// In-flight requests per endpoint, for least request.
    pub in_flight: &'a [u32],
}

/// A group's balancer, statically dispatched.
#[derive(Debug, Clone)]
pub enum BalancerKind {
    RoundRobin(RoundRobin, usize),
    Weighted(SmoothWeighted),
    LeastRequest(LeastRequest, usize),
    /// The round robin serves requests without a key.
    Maglev(Maglev, RoundRobin),
}

impl BalancerKind {
    /// Build for `endpoints`; `seed` differs per shard so shards don't move in lockstep.
    /// Rebuild (with the same seed) whenever the endpoint set changes.
    pub fn new(
        algorithm: &Algorithm,
        endpoints: &[EndpointSpec<'_>],
        seed: u64,
    ) -> Result<Self, BalanceError> {
        let n = endpoints.len();
        let start = if n == 0 {
            0
        } else {
            (seed % n as u64) as usize
        };
        Ok(match algorithm {
            Algorithm::RoundRobin => BalancerKind::RoundRobin(RoundRobin::starting_at(start), n),
            Algorithm::Weighted => {
                BalancerKind::Weighted(SmoothWeighted::new(endpoints.iter().map(|e| e.weight)))
            }
            Algorithm::LeastRequest => BalancerKind::LeastRequest(LeastRequest::new(seed), n),
            Algorithm::ConsistentHash { table_size, .. } => BalancerKind::Maglev(
                Maglev::build(endpoints, *table_size).map_err(BalanceError::Maglev)?,
                RoundRobin::starting_at(start),
            ),
        })
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        match self {
            BalancerKind::RoundRobin(_, n) | BalancerKind::LeastRequest(_, n) => *n,
            BalancerKind::Weighted(w) => w.len(),
            BalancerKind::Maglev(m, _) => m.len(),
        }
    }

    /// True when the group has no endpoints.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Choose an eligible endpoint, or `None` if none is.
    #[inline]
    pub fn pick(&mut self, hint: &PickHint<'_>, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        match self {
            BalancerKind::RoundRobin(rr, n) => rr.pick(*n, eligible),
            BalancerKind::Weighted(w) => w.pick(eligible),
            BalancerKind::LeastRequest(lr, n) => lr.pick(*n, hint.in_flight, eligible),
            BalancerKind::Maglev(m, rr) => match hint.key {
                Some(key) => m.pick(key, eligible),
                None => rr.pick(m.len(), eligible),
            },
        }
    }

    /// The group's one choice of endpoint for a try. `up(i)`: active health checks hold `i`
    /// up (always true without checks); `out(i)`: passive detection keeps `i` out now (ejected,
    /// or on probation with a request already in flight); `tried`: endpoints this request has
    /// used. In order of preference: up, in and untried; up and in; up (every up endpoint is
    /// out: serving beats refusing); and only when checks hold every endpoint down, the same
    /// over all of them. So no request goes to an endpoint held down while another is up.
    pub fn choose(
        &mut self,
        hint: &PickHint<'_>,
        up: impl Fn(usize) -> bool,
        out: impl Fn(usize) -> bool,
        tried: &[usize],
    ) -> usize {
        let fresh = |i: usize| !tried.contains(&i);
        self.pick(hint, |i| up(i) && !out(i) && fresh(i))
            .or_else(|| self.pick(hint, |i| up(i) && !out(i)))
            .or_else(|| self.pick(hint, |i| up(i) && fresh(i)))
            .or_else(|| self.pick(hint, &up))
            .or_else(|| self.pick(hint, |i| !out(i) && fresh(i)))
            .or_else(|| self.pick(hint, fresh))
            .or_else(|| self.pick(hint, |_| true))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(weights: &[u32]) -> Vec<(String, u32)> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| (format!("10.0.0.{i}:80"), w))
            .collect()
    }

    fn kind(algorithm: Algorithm, weights: &[u32], seed: u64) -> BalancerKind {
        let owned = specs(weights);
        let eps: Vec<EndpointSpec<'_>> = owned
            .iter()
            .map(|(id, w)| EndpointSpec::new(id, *w))
            .collect();
        BalancerKind::new(&algorithm, &eps, seed).unwrap()
    }

    fn every_algorithm() -> Vec<Algorithm> {
        vec![
            Algorithm::RoundRobin,
            Algorithm::Weighted,
            Algorithm::LeastRequest,
            Algorithm::ConsistentHash {
                key: HashKey::ClientIp,
                table_size: 251,
            },
        ]
    }

    #[test]
    fn every_kind_respects_eligibility_and_returns_none_when_nothing_is() {
        for algorithm in every_algorithm() {
            let mut b = kind(algorithm.clone(), &[1, 1, 1, 1], 5);
            assert_eq!(b.len(), 4);
            for k in 0..200u64 {
                let hint = PickHint {
                    key: Some(k.wrapping_mul(0x9e37_79b9)),
                    in_flight: &[0; 4],
                };
                let got = b.pick(&hint, |i| i % 2 == 1);
                assert!(matches!(got, Some(1 | 3)), "{algorithm:?}: {got:?}");
                assert_eq!(b.pick(&hint, |_| false), None, "{algorithm:?}");
            }
        }
    }

    #[test]
    fn empty_group_picks_nothing() {
        for algorithm in every_algorithm() {
            let mut b = kind(algorithm.clone(), &[], 0);
            assert!(b.is_empty());
            assert_eq!(
                b.pick(
                    &PickHint {
                        key: Some(1),
                        in_flight: &[]
                    },
                    |_| true
                ),
                None
            );
        }
    }

    #[test]
    fn retry_avoids_the_tried_endpoint_unless_it_is_the_only_one() {
        for algorithm in every_algorithm() {
            let mut b = kind(algorithm.clone(), &[1, 1, 1], 1);
            for k in 0..100u64 {
                let hint = PickHint {
                    key: Some(k),
                    in_flight: &[0; 3],
                };
                let first = b.pick(&hint, |_| true).unwrap();
                let again = b.choose(&hint, |_| true, |_| false, &[first]);
                assert_ne!(again, first, "{algorithm:?}");
                let only = b.choose(&hint, |i| i == first, |_| false, &[first]);
                assert_eq!(only, first, "{algorithm:?}: falls back to the tried one");
            }
        }
    }

    #[test]
    fn consistent_hash_is_sticky_and_keyless_requests_rotate() {
        let algorithm = Algorithm::ConsistentHash {
            key: HashKey::Cookie("sid".into()),
            table_size: 251,
        };
        let mut b = kind(algorithm, &[1, 1, 1], 0);
        let hint = PickHint {
            key: Some(12_345),
            in_flight: &[],
        };
        let first = b.pick(&hint, |_| true);
        assert!((0..50).all(|_| b.pick(&hint, |_| true) == first));
        let keyless = PickHint::default();
        let rotation: Vec<_> = (0..3)
            .map(|_| b.pick(&keyless, |_| true).unwrap())
            .collect();
        assert_eq!(rotation, vec![0, 1, 2]);
    }

    #[test]
    fn shards_with_different_seeds_start_round_robin_at_different_endpoints() {
        let mut a = kind(Algorithm::RoundRobin, &[1, 1, 1], 0);
        let mut b = kind(Algorithm::RoundRobin, &[1, 1, 1], 1);
        let hint = PickHint::default();
        assert_eq!(a.pick(&hint, |_| true), Some(0));
        assert_eq!(b.pick(&hint, |_| true), Some(1));
    }

    #[test]
    fn bad_table_size_is_reported_with_its_value() {
        let algorithm = Algorithm::ConsistentHash {
            key: HashKey::ClientIp,
            table_size: 100,
        };
        let err = BalancerKind::new(&algorithm, &[EndpointSpec::new("a", 1)], 0).unwrap_err();
        assert_eq!(err.to_string(), "maglev table size 100 is not prime");
    }

    #[test]
    fn choose_honours_health_then_ejection_then_the_tried_set() {
        // (up, out, tried, endpoints it may choose)
        type Case<'a> = (&'a str, [bool; 3], [bool; 3], &'a [usize], &'a [usize]);
        let cases: &[Case<'_>] = &[
            ("all fine", [true; 3], [false; 3], &[], &[0, 1, 2]),
            (
                "down is never chosen while one is up",
                [false, true, true],
                [false; 3],
                &[],
                &[1, 2],
            ),
            (
                "ejected is skipped",
                [true; 3],
                [false, true, false],
                &[],
                &[0, 2],
            ),
            ("tried is skipped", [true; 3], [false; 3], &[0, 1], &[2]),
            (
                "all up tried: a tried one, not a down one",
                [true, true, false],
                [false; 3],
                &[0, 1],
                &[0, 1],
            ),
            (
                "every up one out: still an up one",
                [true, false, false],
                [true, false, false],
                &[],
                &[0],
            ),
            (
                "all down: all are used",
                [false; 3],
                [false; 3],
                &[],
                &[0, 1, 2],
            ),
            (
                "all down: ejection still counts",
                [false; 3],
                [true, false, true],
                &[],
                &[1],
            ),
            (
                "all down and out: anything",
                [false; 3],
                [true; 3],
                &[0],
                &[1, 2],
            ),
        ];
        let eps = [
            EndpointSpec::new("a", 1),
            EndpointSpec::new("b", 1),
            EndpointSpec::new("c", 1),
        ];
        for (name, up, out, tried, allowed) in cases {
            let mut b = BalancerKind::new(&Algorithm::RoundRobin, &eps, 0).unwrap();
            for _ in 0..9 {
                let got = b.choose(&PickHint::default(), |i| up[i], |i| out[i], tried);
                assert!(
                    allowed.contains(&got),
                    "{name}: chose {got}, allowed {allowed:?}"
                );
            }
        }
    }
}
