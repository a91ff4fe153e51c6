//! W3C Trace Context (`traceparent`, version 00): continue an incoming trace with a new span id
//! for this hop, or start a new trace.
//!
//! `traceparent` is `00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>`, lowercase,
//! 55 bytes. A value is accepted when the version is two lowercase hex digits other than `ff`;
//! for version `00` the length is exactly 55, for a later version at least 55 with a `-` after
//! the first 55 (later versions only append fields). Ids must not be all zeros. The outgoing
//! header is always version `00`: the same trace-id and flags, and this hop's new span id as the
//! parent-id. When the incoming value is missing or invalid a new trace starts, and the
//! incoming `tracestate` must be dropped ([`Hop::keep_tracestate`]); otherwise `tracestate`
//! passes through untouched.

use crate::chain::{Cx, Declare, Flow, line};
use crate::filter::{BuildContext, BuiltIn};
use crate::request_id::hex_into;
use crate::syntax::ParseCx;
use serde::Deserialize;
use shardgate_common::hash::Rng;

/// The header names, lowercase.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// Length of a version-00 value.
pub const LEN: usize = 55;
/// The `sampled` bit of the flags.
pub const FLAG_SAMPLED: u8 = 0x01;

/// The fields of a `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

fn lower_hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn decode<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = lower_hex(pair[0])? << 4 | lower_hex(pair[1])?;
    }
    Some(out)
}

/// Parse an incoming `traceparent`; `None` when it is not valid.
pub fn parse(value: &[u8]) -> Option<TraceContext> {
    let value = value.trim_ascii();
    if value.len() < LEN {
        return None;
    }
    let version = decode::<1>(&value[..2])?[0];
    if version == 0xff
        || (version == 0 && value.len() != LEN)
        || (value.len() > LEN && value[LEN] != b'-')
    {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = decode::<16>(&value[3..35])?;
    let parent_id = decode::<8>(&value[36..52])?;
    let flags = decode::<1>(&value[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceContext {
        trace_id,
        parent_id,
        flags,
    })
}

impl TraceContext {
    /// The version-00 header value.
    pub fn write(&self, out: &mut [u8; LEN]) {
        out[..3].copy_from_slice(b"00-");
        hex_into(&self.trace_id, &mut out[3..35]);
        out[35] = b'-';
        hex_into(&self.parent_id, &mut out[36..52]);
        out[52] = b'-';
        hex_into(&[self.flags], &mut out[53..55]);
    }
}

/// This hop's trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// What to send upstream: same trace, this hop's span id as parent-id.
    pub outgoing: TraceContext,
    /// The span id of this hop (= `outgoing.parent_id`), for logs.
    pub span_id: [u8; 8],
    /// The caller's span, when the trace was continued.
    pub caller_span: Option<[u8; 8]>,
    /// Pass `tracestate` on (only when an incoming trace was continued).
    pub keep_tracestate: bool,
}

impl Hop {
    /// The outgoing `traceparent` value.
    pub fn value(&self) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        self.outgoing.write(&mut out);
        out
    }
}

fn nonzero<const N: usize>(rng: &mut Rng) -> [u8; N] {
    loop {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let bytes = rng.next_u64().to_be_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        if out != [0; N] {
            return out;
        }
    }
}

/// Continue `incoming` (if valid) with a new span id, or start a new trace whose flags say
/// `sample_new`.
pub fn next_hop(incoming: Option<&[u8]>, rng: &mut Rng, sample_new: bool) -> Hop {
    next_hop_with(incoming, rng, |_| sample_new)
}

/// [`next_hop`], with the sampling of a new trace decided from its id.
pub fn next_hop_with(
    incoming: Option<&[u8]>,
    rng: &mut Rng,
    sample_new: impl FnOnce(&[u8; 16]) -> bool,
) -> Hop {
    let span_id = nonzero::<8>(rng);
    match incoming.and_then(parse) {
        Some(ctx) => Hop {
            outgoing: TraceContext {
                parent_id: span_id,
                ..ctx
            },
            span_id,
            caller_span: Some(ctx.parent_id),
            keep_tracestate: true,
        },
        None => {
            let trace_id = nonzero::<16>(rng);
            Hop {
                outgoing: TraceContext {
                    trace_id,
                    parent_id: span_id,
                    flags: if sample_new(&trace_id) {
                        FLAG_SAMPLED
                    } else {
                        0
                    },
                },
                span_id,
                caller_span: None,
                keep_tracestate: false,
            }
        }
    }
}

impl Hop {
    /// The caller, or the gateway's sampler for a new trace, asked for this
    /// trace to be recorded.
    pub fn sampled(&self) -> bool {
        self.outgoing.flags & FLAG_SAMPLED != 0
    }
}

/// Samples new traces by ratio, from the trace id (as OpenTelemetry's
/// `TraceIdRatioBased` does): its last 8 bytes, read as a number, below
/// `ratio × 2⁶⁴`. Every hop with the same ratio decides a trace alike.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    threshold: u64,
    always: bool,
}

impl Sampler {
    pub fn new(ratio: f64) -> Sampler {
        let ratio = ratio.clamp(0.0, 1.0);
        Sampler {
            // `as` saturates: a ratio of 1 is every trace.
            threshold: (ratio * 18_446_744_073_709_551_616.0) as u64,
            always: ratio >= 1.0,
        }
    }

    /// Whether a new trace with this id is sampled.
    pub fn sample(&self, trace_id: &[u8; 16]) -> bool {
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        self.always || u64::from_be_bytes(low) < self.threshold
    }
}

/// `trace-context`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContextConfig {
    /// Flags of traces started here: sampled or not.
    pub sample_new: bool,
}

/// The TOML table: every field optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraceContext {
    sample_new: Option<bool>,
}

/// The compiled filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContextFilter(pub TraceContextConfig);

impl BuiltIn for TraceContextFilter {
    type Spec = TraceContextConfig;
    const NAME: &'static str = "trace-context";
    const ABOUT: &'static str = "W3C traceparent: continue with a new span or start";

    fn parse(cx: &mut ParseCx<'_>, body: toml::Value) -> Option<TraceContextConfig> {
        let r: RawTraceContext = cx.read(body)?;
        Some(TraceContextConfig {
            sample_new: r.sample_new.unwrap_or_default(),
        })
    }

    fn build(c: &TraceContextConfig, _: &BuildContext<'_>) -> Result<Self, Vec<String>> {
        Ok(TraceContextFilter(c.clone()))
    }

    /// `traceparent` is the gateway's to say, and `tracestate` goes on only
    /// with a trace that continues.
    fn declare(&mut self, d: &mut Declare<'_>) {
        d.own_request(TRACEPARENT);
        d.own_request(TRACESTATE);
    }

    /// Continues an incoming trace with a new span for this hop, or starts
    /// one; the trace id goes to the access log.
    fn on_request<'f>(&'f self, cx: &mut Cx<'_, '_>) -> Flow<'f> {
        let incoming = cx.header(TRACEPARENT.as_bytes());
        let sample_new = self.0.sample_new;
        let hop = match cx.sampler {
            Some(s) => next_hop_with(incoming, cx.ids.rng(), |id| s.sample(id)),
            None => next_hop(incoming, cx.ids.rng(), sample_new),
        };
        let value = hop.value();
        line(cx.upstream, TRACEPARENT.as_bytes(), &value);
        if hop.keep_tracestate {
            for h in cx.req.headers {
                if h.name.eq_ignore_ascii_case(TRACESTATE) {
                    line(cx.upstream, TRACESTATE.as_bytes(), h.value);
                }
            }
        }
        cx.trace = Some(hop);
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_sampling_takes_its_share_of_ids() {
        let mut rng = Rng::new(3);
        let s = Sampler::new(0.25);
        let n = 40_000;
        let taken = (0..n)
            .filter(|_| s.sample(&nonzero::<16>(&mut rng)))
            .count();
        let share = taken as f64 / n as f64;
        assert!((0.23..0.27).contains(&share), "{share}");
        // The decision is the id's: the same id, the same answer.
        let id = nonzero::<16>(&mut rng);
        assert_eq!(s.sample(&id), s.sample(&id));
    }

    const GOOD: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parse_table() {
        let cases: &[(&[u8], bool)] = &[
            (GOOD, true),
            (
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                true,
            ),
            (
                b" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
                true,
            ),
            (
                b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                true,
            ),
            (
                b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz",
                true,
            ),
            (
                b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01xyz",
                false,
            ),
            (
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                false,
            ),
            (
                b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                false,
            ),
            (
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                false,
            ),
            (
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                false,
            ),
            (
                b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                b"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                false,
            ),
            (
                b"0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                false,
            ),
            (b"", false),
        ];
        for (value, ok) in cases {
            assert_eq!(
                parse(value).is_some(),
                *ok,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
        let ctx = parse(GOOD).unwrap();
        assert_eq!(ctx.flags, 1);
        assert_eq!(
            ctx.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        let mut out = [0u8; LEN];
        ctx.write(&mut out);
        assert_eq!(&out[..], GOOD, "round trip");
    }

    #[test]
    fn continuing_keeps_trace_and_flags_with_a_new_span() {
        let mut rng = Rng::new(1);
        let hop = next_hop(Some(GOOD), &mut rng, true);
        let v = hop.value();
        assert_eq!(&v[..36], &GOOD[..36], "same version and trace id");
        assert_ne!(&v[36..52], &GOOD[36..52], "new parent id");
        assert_eq!(&v[52..], b"-01");
        assert_eq!(hop.caller_span, Some(parse(GOOD).unwrap().parent_id));
        assert!(hop.keep_tracestate);
        assert_eq!(parse(&v).unwrap().parent_id, hop.span_id);
        // A later version is answered in version 00.
        let later = b"02-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
        let v = next_hop(Some(later), &mut rng, true).value();
        assert_eq!(&v[..3], b"00-");
        assert_eq!(&v[52..], b"-00");
    }

    #[test]
    fn invalid_or_missing_starts_a_new_trace_and_drops_tracestate() {
        let mut rng = Rng::new(2);
        for incoming in [None, Some(&b"garbage"[..])] {
            for sample in [true, false] {
                let hop = next_hop(incoming, &mut rng, sample);
                assert!(!hop.keep_tracestate && hop.caller_span.is_none());
                let v = hop.value();
                let ctx = parse(&v).expect("we emit valid values");
                assert_eq!(ctx.flags, u8::from(sample));
            }
        }
        // The gateway's sampler decides from the id; a caller's flags win.
        for ratio in [0.0, 1.0] {
            let s = Sampler::new(ratio);
            for _ in 0..20 {
                let hop = next_hop_with(None, &mut rng, |id| s.sample(id));
                assert_eq!(hop.sampled(), ratio == 1.0);
            }
        }
        let s = Sampler::new(0.0);
        assert!(next_hop_with(Some(GOOD), &mut rng, |id| s.sample(id)).sampled());
        let a = next_hop(None, &mut rng, true).outgoing.trace_id;
        let b = next_hop(None, &mut rng, true).outgoing.trace_id;
        assert_ne!(a, b);
    }
}
