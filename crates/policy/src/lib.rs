//! Sans-I/O gateway policy for Shardgate: the decisions a shard makes about upstreams, with
//! every input (including the clock) passed in.
//!
//! **What it is for.** Choosing an endpoint ([`balance`]), tracking endpoint health from active
//! probes ([`health`]) and from live traffic ([`outlier`]), deciding whether and how long to
//! retry ([`retry`], [`retry_budget`]), failing fast when a group is in trouble ([`breaker`]),
//! bounding connections per endpoint ([`pool_limit`]) and turning DNS answers into endpoint set
//! changes ([`dns`]). Every type is single-shard state mutated through `&mut self`; one shard
//! owns one copy, so nothing here is `Sync`, and nothing needs to be `Send`.
//!
//! **What it is not for.** No sockets, timers, threads, async, logging or global state: the
//! proxy crate does the I/O, owns the clock and the wake-ups, and logs the transition events
//! these types return (each has a `Display` meant to be the log line).
//!
//! **Time.** Points in time are [`std::time::Instant`], spans are [`std::time::Duration`],
//! always passed in by the caller (`now`). Tests build instants as `t0 + Duration`, so every
//! state machine is deterministic. Types that bucket time (breaker, retry budget) anchor their
//! buckets at the `now` they were created with.
//!
//! **Endpoints are indices.** A group's endpoints are `0..n` in the order the caller keeps them;
//! eligibility (healthy, not ejected, not already tried) is a predicate `Fn(usize) -> bool`
//! composed by the caller, so the balancers stay ignorant of why an endpoint is out.
//!
//! ```
//! use std::time::Instant;
//! use shardgate_policy::balance::{Algorithm, BalancerKind, EndpointSpec, PickHint};
//! use shardgate_policy::health::HealthSnapshot;
//! use shardgate_policy::outlier::{OutlierConfig, OutlierDetector};
//! use shardgate_policy::retry::RetryState;
//!
//! let now = Instant::now();
//! let eps = [EndpointSpec::new("10.0.0.1:80", 7), EndpointSpec::new("10.0.0.2:80", 3)];
//! let mut balancer = BalancerKind::new(&Algorithm::Weighted, &eps, /* shard seed */ 0).unwrap();
//! let health = HealthSnapshot::default(); // the shard's copy of the prober's latest
//! let outlier = OutlierDetector::new(OutlierConfig::default(), eps.len());
//! let mut retry = RetryState::new(now, b"GET", true);
//!
//! let eligible = |i: usize| health.is_up(i) && !outlier.is_ejected(i, now);
//! let first = balancer.pick(&PickHint::default(), eligible).unwrap();
//! retry.record_attempt(first);
//! let second = balancer.pick_retry(&PickHint::default(), eligible, |i| retry.tried(i));
//! assert_eq!((first, second), (0, Some(1)));
//! ```
//!
//! **Gateway filters.** Every filter lives here too, one file each holding its TOML syntax
//! (read through [`syntax`]), validation, compiled form and request hook, with no I/O:
//! rate limiting ([`rate_limit`]) with a [`token_bucket`]
//! per key, shared gateway-wide across shards by [`global_rate`] (shard-local buckets, shares
//! rebalanced off the request path from small per-period reports, per-shard [`lru`] bounds);
//! authentication by [`api_key`] (SHA-256 digests, constant-time lookup) and [`jwt`] (HMAC,
//! RSA, ECDSA and EdDSA signatures via `jsonwebtoken`'s RustCrypto backend, claims checked with
//! the wall clock passed in); [`cidr`] allow/deny lists; [`cors`]; [`headers`] add/set/remove;
//! [`rewrite`] for paths and redirects; [`direct_response`]; [`body_limit`]; [`request_id`] and
//! [`traceparent`] written into fixed buffers. [`filter`] is the model: the `BuiltIn` trait,
//! the one list that registers every built-in (and how to add one); [`chain`] runs a route's
//! filters over a parsed request for the proxy.

pub mod api_key;
pub mod balance;
pub mod body_limit;
pub mod breaker;
pub mod chain;
pub mod cidr;
pub mod cors;
pub mod direct_response;
pub mod dns;
pub mod endpoint_set;
pub mod filter;
pub mod global_rate;
pub mod hash;
pub mod headers;
pub mod health;
pub mod jwt;
pub mod lru;
pub mod outcome;
pub mod outlier;
pub mod pool_limit;
pub mod rate_limit;
pub mod request_id;
pub mod retry;
pub mod retry_budget;
pub mod rewrite;
pub mod syntax;
pub mod token_bucket;
pub mod traceparent;
pub mod units;
mod window;

pub use balance::{Algorithm, BalanceError, BalancerKind, EndpointSpec, PickHint, WeightedSplit};

pub use breaker::{Breaker, BreakerConfig, BreakerState, Rejected, Ticket, Verdict};
pub use endpoint_set::EndpointSet;
pub use outcome::Outcome;
