//! Errors found while building a table. Each names the route (by the name it was given) and
//! the offending value.

use std::fmt;

/// A route the table cannot take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The path pattern is malformed.
    InvalidPattern {
        route: String,
        pattern: String,
        reason: String,
    },
    /// A host is malformed.
    InvalidHost {
        route: String,
        host: String,
        reason: String,
    },
    /// A method is not an RFC 9110 token.
    InvalidMethod { route: String, method: String },
    /// `methods` was given but empty: the route could never match.
    NoMethods { route: String },
    /// More distinct extension methods than a table can number.
    TooManyExtensionMethods {
        route: String,
        method: String,
        max: usize,
    },
    /// Two routes were given the same name.
    DuplicateName { route: String },
    /// Both routes match the same requests with the same priority.
    Conflict {
        route: String,
        other: String,
        /// The methods both take, e.g. `GET` or `any method`.
        methods: String,
        /// What both match, e.g. `/users/:id` or `prefix /api`.
        pattern: String,
        /// e.g. `host api.example.com`, `host *.example.com`, `the default host`.
        host: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidPattern {
                route,
                pattern,
                reason,
            } => {
                write!(f, "route {route:?}: path {pattern:?} {reason}")
            }
            BuildError::InvalidHost {
                route,
                host,
                reason,
            } => {
                write!(f, "route {route:?}: host {host:?} {reason}")
            }
            BuildError::InvalidMethod { route, method } => {
                write!(f, "route {route:?}: {method:?} is not a method token")
            }
            BuildError::NoMethods { route } => {
                write!(
                    f,
                    "route {route:?}: an empty method list matches nothing (omit it for any method)"
                )
            }
            BuildError::TooManyExtensionMethods { route, method, max } => write!(
                f,
                "route {route:?}: method {method:?} is one more than the {max} extension methods a table can hold"
            ),
            BuildError::DuplicateName { route } => write!(f, "route {route:?} is defined twice"),
            BuildError::Conflict {
                route,
                other,
                methods,
                pattern,
                host,
            } => write!(
                f,
                "route {route:?} conflicts with route {other:?}: both match {methods} {pattern} on {host}"
            ),
        }
    }
}

impl std::error::Error for BuildError {}
