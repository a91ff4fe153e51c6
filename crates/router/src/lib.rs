//! Shardgate's request router: host, then path and method, to a route's value.
//!
//! **What it is.** A sans-I/O table built once from configuration, immutable afterwards, and
//! kept by every shard as its own copy. [`RouterBuilder`] validates routes and rejects
//! conflicting ones with an error naming both; [`Router::lookup`] answers [`Lookup::Found`]
//! (with captured parameters), [`Lookup::MethodNotAllowed`] (with the `Allow` set) or
//! [`Lookup::NotFound`], without allocating. [`normalize_path`] puts a request target into the
//! one form the table matches on.
//!
//! **What it is not.** No I/O, no regular expressions, no rewriting, no query or header
//! matching, no implicit `HEAD` for `GET` routes or automatic `OPTIONS`: those belong to the
//! proxy's pipeline and policy.
//!
//! # Rules
//!
//! **Path normalisation** (see [`normalize_path`]): unreserved percent-encodings decoded, other
//! encodings kept with upper-case hex (`%2F` never splits a segment), `//` merged, dot segments
//! resolved after decoding, climbing above `/` rejected, the query kept verbatim. The proxy
//! routes on the normal form and forwards it upstream when it was rewritten.
//!
//! **Hosts**: case-insensitive, port and a trailing dot
//! ignored; an exact host beats a wildcard, a longer wildcard beats a shorter one,
//! `*.example.com` matches `a.example.com` and `a.b.example.com` but not `example.com`; routes
//! without hosts form the default scope. Once a scope is chosen there is no fall-through to
//! another (tenant isolation).
//!
//! **Patterns**: `/users/:id` (one non-empty segment), `/static/*path` (the non-empty rest,
//! last segment only), static text otherwise; at most [`MAX_PARAMS`] captures. A trailing `/`
//! is significant for exact routes. Prefix routes ([`PatternKind::Prefix`]) are static and
//! match on a segment boundary: `/api` matches `/api`, `/api/` and `/api/x`, never `/apix`.
//!
//! **Priority**, among routes of the chosen scope that match both path and method:
//! 1. any exact route beats any prefix route;
//! 2. between exact routes, compare segment by segment from the left: static beats parameter
//!    beats catch-all;
//! 3. between prefix routes, the longest wins.
//!
//! If routes match the path but none takes the method, the answer is 405 and the `Allow` set
//! is the union of their methods — exactly the methods that would have been found. Two routes
//! conflict (build error) when they have the same host scope, the same pattern shape
//! (parameter names aside) and kind, and share a method; nothing else is ambiguous.

mod builder;
mod error;
mod host;
mod method;
mod normalize;
mod pattern;
mod router;
mod table;
mod trie;

pub use builder::{PatternKind, RouteSpec, RouterBuilder};
pub use error::BuildError;
pub use method::{AllowMethods, MAX_EXTENSION_METHODS, Method};
pub use normalize::{
    EscapedSlashes, Normalized, PathError, PathOptions, Semicolons, differs_only_in_spelling,
    is_normal, is_normal_with, normalize_path, normalize_path_with, split_query,
};
pub use pattern::MAX_PARAMS;
pub use router::{Lookup, Match, Params, Router};
