//! Sans-I/O upstream behaviour for Shardgate: the decisions a shard makes about the servers
//! behind it, with every input (including the clock) passed in.
//!
//! **What is here.** [`group::Group`] is a shard's view of one group and the only place that
//! picks an endpoint, records what a try did and decides whether and where to retry; it is
//! built from the parts below. Choosing an endpoint ([`balance`]), tracking endpoint health from active
//! probes ([`health`]) and from live traffic ([`outlier`]), deciding whether and how long to
//! retry ([`retry`], [`retry_budget`]), failing fast when a group is in trouble ([`breaker`]),
//! bounding connections per endpoint ([`pool_limit`]) and turning DNS answers into endpoint set
//! changes ([`dns`]). Every type is single-shard state mutated through `&mut self`; one shard
//! owns one copy, so nothing here is `Sync`, and nothing needs to be `Send`.
//!
//! **What is not.** No sockets, timers, threads, async, logging or global state: the proxy
//! crate does the I/O, owns the clock and the wake-ups, and logs the transition events these
//! types return (each has a `Display` meant to be the log line).
//!
//! **Time.** Points in time are [`std::time::Instant`], spans are [`std::time::Duration`],
//! always passed in by the caller (`now`). Tests build instants as `t0 + Duration`, so every
//! state machine is deterministic. Types that bucket time (breaker, retry budget) anchor their
//! buckets at the `now` they were created with.
//!
//! **Endpoints are indices.** A group's endpoints are `0..n` in the order the caller keeps them.

pub mod balance;
pub mod breaker;
pub mod dns;
pub mod endpoint_set;
pub mod group;
pub mod health;
pub mod outcome;
pub mod outlier;
pub mod pool_limit;
pub mod retry;
pub mod retry_budget;
mod window;

pub use balance::{Algorithm, BalanceError, BalancerKind, EndpointSpec, PickHint, WeightedSplit};
pub use breaker::{Breaker, BreakerConfig, BreakerState, Rejected, Ticket, Verdict};
pub use endpoint_set::EndpointSet;
pub use group::{Group, GroupConfig};
pub use outcome::Outcome;
