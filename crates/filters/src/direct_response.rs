//! The `direct-response` filter: the gateway answers with a fixed status and
//! body (health pages, maintenance), and nothing goes upstream.

use crate::chain::{Cx, Flow};
use crate::filter::{BuildContext, BuiltIn};
use crate::headers::is_value;
use crate::syntax::ParseCx;
use serde::Deserialize;

/// `direct-response`: answer with a fixed status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponseConfig {
    pub status: u16,
    pub body: String,
    pub content_type: String,
}

impl Default for DirectResponseConfig {
    fn default() -> Self {
        DirectResponseConfig {
            status: 200,
            body: String::new(),
            content_type: "text/plain; charset=utf-8".into(),
        }
    }
}

/// The TOML table: every field optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectResponse {
    status: Option<i64>,
    body: Option<String>,
    content_type: Option<String>,
}

/// The compiled filter: the checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponse(pub DirectResponseConfig);

impl BuiltIn for DirectResponse {
    type Spec = DirectResponseConfig;
    const NAME: &'static str = "direct-response";
    const ABOUT: &'static str = "answer with a fixed status and body";

    fn parse(cx: &mut ParseCx<'_>, body: toml::Value) -> Option<DirectResponseConfig> {
        let r: RawDirectResponse = cx.read(body)?;
        let d = DirectResponseConfig::default();
        Some(DirectResponseConfig {
            status: cx.status("status", r.status, d.status),
            body: r.body.unwrap_or(d.body),
            content_type: r.content_type.unwrap_or(d.content_type),
        })
    }

    fn build(c: &DirectResponseConfig, _: &BuildContext<'_>) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        if !(200..=599).contains(&c.status) {
            problems.push(format!("status: {} is not 200..=599", c.status));
        }
        if c.content_type.is_empty() || !is_value(c.content_type.as_bytes()) {
            problems.push(format!(
                "content_type: {:?} is not a header value",
                c.content_type
            ));
        }
        if problems.is_empty() {
            Ok(DirectResponse(c.clone()))
        } else {
            Err(problems)
        }
    }

    /// Answers with the configured status and body.
    fn on_request<'f>(&'f self, _: &mut Cx<'_, '_>) -> Flow<'f> {
        Flow::Answer {
            status: self.0.status,
            body: Some((self.0.content_type.as_bytes(), self.0.body.as_bytes())),
            rate_limited: false,
        }
    }
}
