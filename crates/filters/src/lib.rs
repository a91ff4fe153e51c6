//! Sans-I/O request filters for Shardgate: what a route does to a request before (and to a
//! response after) the upstream sees it.
//!
//! Every filter is one file holding its TOML syntax (read through [`syntax`]), validation,
//! compiled form and request hook, with no I/O: rate limiting ([`rate_limit`]) with a
//! [`token_bucket`] per key, shared gateway-wide across shards by [`global_rate`] (shard-local
//! buckets, shares rebalanced off the request path from small per-period reports, per-shard
//! [`lru`] bounds); authentication by [`api_key`] (SHA-256 digests, constant-time lookup) and
//! [`jwt`] (HMAC, RSA, ECDSA and EdDSA signatures via `jsonwebtoken`'s RustCrypto backend,
//! claims checked with the wall clock passed in); [`cidr`] allow/deny lists; [`cors`];
//! [`headers`] add/set/remove; [`rewrite`] for paths and redirects; [`direct_response`];
//! [`body_limit`]; [`request_id`] and [`traceparent`] written into fixed buffers.
//!
//! [`filter`] is the model: the `BuiltIn` trait, the one list that registers every built-in
//! (and how to add one). [`chain`] runs a route's filters over a parsed request for the proxy.
//! Nothing here is `Sync`: each shard owns its compiled chains and their state.

pub mod api_key;
pub mod body_limit;
pub mod chain;
pub mod cidr;
pub mod cors;
pub mod direct_response;
pub mod filter;
pub mod global_rate;
pub mod headers;
pub mod jwt;
pub mod lru;
pub mod quota;
pub mod rate_limit;
pub mod request_id;
pub mod rewrite;
pub mod syntax;
pub mod token_bucket;
pub mod traceparent;
