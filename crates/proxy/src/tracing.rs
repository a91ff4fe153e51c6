//! OpenTelemetry spans, exported over OTLP/HTTP with protobuf.
//!
//! A sampled request carries a [`SpanRecord`] (boxed in its `Record`; an
//! unsampled one carries nothing). When it ends, the shard encodes one
//! server span and one client span per upstream try into its own buffer
//! ([`ShardTraces`]); every tick the buffer goes to the exporter thread in
//! one channel send, so nothing is shared between shards per request. The
//! exporter batches what the shards send and POSTs it to the collector.
//! Both queues are bounded: a collector that is down or slow makes spans
//! drop, counted, and never makes a request wait.
//!
//! Each span is encoded as a `ScopeSpans.spans` entry (field 2, length
//! delimited), so the exporter builds an `ExportTraceServiceRequest` by
//! wrapping the shards' bytes, without decoding them.

use crate::request::IpText;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::encoding::{WireType, encode_key, encode_varint};
use shardgate_config::Tracing;
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Encoded spans and how many, as a shard hands them to the exporter.
pub(crate) type SpanBatch = (Vec<u8>, usize);

/// Batches in flight from the shards to the exporter, per shard.
const QUEUE_PER_SHARD: usize = 8;

/// The time now, in nanoseconds since the Unix epoch.
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What a sampled request's spans say, gathered as it goes.
pub(crate) struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's span, when the trace came in with the request.
    pub parent: Option<[u8; 8]>,
    pub flags: u8,
    pub start: u64,
    /// The method, path, host and consumer, back to back (one allocation).
    text: String,
    /// Where each of those ends in `text`.
    ends: [usize; 4],
    pub scheme: &'static str,
    /// The client a trusted proxy reported, when it is not the peer.
    pub client: Option<IpText>,
    pub peer: IpText,
    /// The upstream group (its index in the snapshot), once routed.
    pub group: Option<usize>,
    /// Where the parent-id of the `traceparent` sent upstream sits in the
    /// outgoing head, so each try can name its own span there.
    pub traceparent_at: Option<usize>,
    pub tries: Vec<TrySpan>,
    /// The gateway answered itself: who (`api-key`, `rate-limit`, or the
    /// proxy) and why.
    pub answer: Option<(&'static str, Cow<'static, str>)>,
}

/// One upstream try.
pub(crate) struct TrySpan {
    pub span_id: [u8; 8],
    pub start: u64,
    pub end: u64,
    pub endpoint: SocketAddr,
    /// The response status, when a response head came.
    pub status: u16,
    /// Why the try failed, when it did (`error.type`).
    pub error: Option<&'static str>,
}

/// What a request's spans need that the record does not hold.
pub(crate) struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a [u8],
    pub host: &'a [u8],
    pub scheme: &'static str,
    pub client: Option<IpText>,
    pub peer: IpText,
}

impl SpanRecord {
    /// The record of a request in the sampled trace `hop`, starting now.
    pub(crate) fn new(
        hop: &shardgate_filters::traceparent::Hop,
        facts: RequestFacts<'_>,
    ) -> Box<SpanRecord> {
        let mut text =
            String::with_capacity(facts.method.len() + facts.path.len() + facts.host.len() + 16);
        let mut ends = [0; 4];
        text.push_str(facts.method);
        ends[0] = text.len();
        text.push_str(&String::from_utf8_lossy(facts.path));
        ends[1] = text.len();
        text.push_str(&String::from_utf8_lossy(facts.host));
        ends[2] = text.len();
        ends[3] = text.len();
        Box::new(SpanRecord {
            trace_id: hop.outgoing.trace_id,
            span_id: hop.span_id,
            parent: hop.caller_span,
            flags: hop.outgoing.flags,
            start: unix_nanos(),
            text,
            ends,
            scheme: facts.scheme,
            client: facts.client,
            peer: facts.peer,
            group: None,
            traceparent_at: None,
            tries: Vec::new(),
            answer: None,
        })
    }

    fn method(&self) -> &str {
        &self.text[..self.ends[0]]
    }

    fn path(&self) -> &str {
        &self.text[self.ends[0]..self.ends[1]]
    }

    fn host(&self) -> &str {
        &self.text[self.ends[1]..self.ends[2]]
    }

    fn consumer(&self) -> &str {
        &self.text[self.ends[2]..self.ends[3]]
    }

    /// The consumer an api-key or jwt filter named.
    pub(crate) fn set_consumer(&mut self, name: &[u8]) {
        self.text.truncate(self.ends[2]);
        self.text.push_str(&String::from_utf8_lossy(name));
        self.ends[3] = self.text.len();
    }

    /// Takes the ids of the hop a trace-context filter made.
    pub(crate) fn take_ids(&mut self, hop: &shardgate_filters::traceparent::Hop) {
        self.trace_id = hop.outgoing.trace_id;
        self.span_id = hop.span_id;
        self.parent = hop.caller_span;
        self.flags = hop.outgoing.flags;
    }

    /// Writes `span_id` as the parent-id of the `traceparent` in `head`,
    /// if it is still where it was written.
    pub(crate) fn name_try_in(&self, head: &mut [u8], span_id: &[u8; 8]) {
        let Some(at) = self.traceparent_at else {
            return;
        };
        let mut trace_hex = [0u8; 32];
        shardgate_filters::request_id::hex_into(&self.trace_id, &mut trace_hex);
        let intact = at >= 33
            && head.len() >= at + 16
            && head[at - 33..at - 1] == trace_hex
            && head[at - 1] == b'-';
        if intact {
            shardgate_filters::request_id::hex_into(span_id, &mut head[at..at + 16]);
        }
    }
}

/// Where the parent-id of a `traceparent` field sits in an encoded head.
pub(crate) fn traceparent_offset(head: &[u8]) -> Option<usize> {
    const FIELD: &[u8] = b"\r\ntraceparent: 00-";
    let at = head.windows(FIELD.len()).position(|w| w == FIELD)?;
    Some(at + FIELD.len() + 33)
}

/// An attribute key-value (OTLP `KeyValue` of a string or an int64).
pub(crate) fn text(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// The protobuf of spans, written by hand into reused buffers (the field
/// numbers are OTLP's `trace.proto` and `common.proto`; the tests decode
/// it with the generated types): a span costs no allocation once the
/// shard's buffers have grown.
mod wire {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

    /// Length of field `tag`'s key.
    fn key_len(tag: u32) -> usize {
        encoded_len_varint(u64::from(tag << 3))
    }

    pub fn bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    fn bytes_len(tag: u32, n: usize) -> usize {
        key_len(tag) + encoded_len_varint(n as u64) + n
    }

    pub fn varint(out: &mut Vec<u8>, tag: u32, v: u64) {
        encode_key(tag, WireType::Varint, out);
        encode_varint(v, out);
    }

    pub fn fixed64(out: &mut Vec<u8>, tag: u32, v: u64) {
        encode_key(tag, WireType::SixtyFourBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn fixed32(out: &mut Vec<u8>, tag: u32, v: u32) {
        encode_key(tag, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }

    /// A `KeyValue` with a string value, as field `tag`.
    pub fn kv_str(out: &mut Vec<u8>, tag: u32, k: &str, v: &[u8]) {
        let any = bytes_len(1, v.len());
        let kv = bytes_len(1, k.len()) + bytes_len(2, any);
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(kv as u64, out);
        bytes(out, 1, k.as_bytes());
        encode_key(2, WireType::LengthDelimited, out);
        encode_varint(any as u64, out);
        bytes(out, 1, v);
    }

    /// A `KeyValue` with an int64 value, as field `tag`.
    pub fn kv_int(out: &mut Vec<u8>, tag: u32, k: &str, v: i64) {
        let any = key_len(3) + encoded_len_varint(v as u64);
        let kv = bytes_len(1, k.len()) + bytes_len(2, any);
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(kv as u64, out);
        bytes(out, 1, k.as_bytes());
        encode_key(2, WireType::LengthDelimited, out);
        encode_varint(any as u64, out);
        varint(out, 3, v as u64);
    }

    /// A `Status` with code error and `message`, as field `tag`.
    pub fn error_status(out: &mut Vec<u8>, tag: u32, message: &[u8]) {
        let len = bytes_len(2, message.len()) + key_len(3) + 1;
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        bytes(out, 2, message);
        varint(out, 3, 2);
    }
}

/// `Span` fields (OTLP trace.proto).
mod field {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START: u32 = 7;
    pub const END: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const EVENTS: u32 = 11;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;
    /// `Span.Event`.
    pub const EVENT_TIME: u32 = 1;
    pub const EVENT_NAME: u32 = 2;
    pub const EVENT_ATTRIBUTES: u32 = 3;
    /// `ScopeSpans.spans`.
    pub const SCOPE_SPANS_SPAN: u32 = 2;
}

/// `SpanKind` values.
const SERVER: u64 = 2;
const CLIENT: u64 = 3;
/// `SpanFlags`: the parent's remoteness is known, and it is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// The names the spans of a request carry.
pub(crate) struct Names<'a> {
    pub route: &'a str,
    pub tenant: &'a str,
    pub group: &'a str,
}

/// Reused buffers for encoding one span.
#[derive(Default)]
pub(crate) struct Scratch {
    span: Vec<u8>,
    nested: Vec<u8>,
}

/// A decimal number in a stack buffer.
fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Encodes the request's server span and its client spans onto `out`, each
/// as a `ScopeSpans.spans` entry; returns how many.
pub(crate) fn encode(
    rec: &SpanRecord,
    status: u16,
    names: &Names<'_>,
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) -> usize {
    use wire::*;
    let end = unix_nanos();
    let s = &mut scratch.span;
    s.clear();
    bytes(s, field::TRACE_ID, &rec.trace_id);
    bytes(s, field::SPAN_ID, &rec.span_id);
    if let Some(p) = &rec.parent {
        bytes(s, field::PARENT_SPAN_ID, p);
    }
    let method = rec.method().as_bytes();
    if names.route.is_empty() {
        bytes(s, field::NAME, method);
    } else {
        let len = method.len() + 1 + names.route.len();
        prost::encoding::encode_key(field::NAME, prost::encoding::WireType::LengthDelimited, s);
        prost::encoding::encode_varint(len as u64, s);
        s.extend_from_slice(method);
        s.push(b' ');
        s.extend_from_slice(names.route.as_bytes());
    }
    varint(s, field::KIND, SERVER);
    fixed64(s, field::START, rec.start);
    fixed64(s, field::END, end.max(rec.start));
    let a = field::ATTRIBUTES;
    kv_str(s, a, "http.request.method", method);
    kv_str(s, a, "url.path", rec.path().as_bytes());
    kv_str(s, a, "url.scheme", rec.scheme.as_bytes());
    kv_int(s, a, "http.response.status_code", i64::from(status));
    kv_str(s, a, "server.address", rec.host().as_bytes());
    let client = rec.client.as_ref().unwrap_or(&rec.peer);
    kv_str(s, a, "client.address", client.as_bytes());
    kv_str(s, a, "network.peer.address", rec.peer.as_bytes());
    if !names.route.is_empty() {
        kv_str(s, a, "http.route", names.route.as_bytes());
    }
    if !names.tenant.is_empty() {
        kv_str(s, a, "shardgate.tenant", names.tenant.as_bytes());
    }
    if !rec.consumer().is_empty() {
        kv_str(s, a, "shardgate.consumer", rec.consumer().as_bytes());
    }
    if !names.group.is_empty() {
        kv_str(s, a, "shardgate.upstream", names.group.as_bytes());
    }
    if let Some((by, reason)) = &rec.answer {
        let e = &mut scratch.nested;
        e.clear();
        fixed64(e, field::EVENT_TIME, end);
        bytes(e, field::EVENT_NAME, b"gateway answer");
        kv_str(
            e,
            field::EVENT_ATTRIBUTES,
            "shardgate.answered_by",
            by.as_bytes(),
        );
        kv_str(
            e,
            field::EVENT_ATTRIBUTES,
            "shardgate.reason",
            reason.as_bytes(),
        );
        kv_int(
            e,
            field::EVENT_ATTRIBUTES,
            "http.response.status_code",
            i64::from(status),
        );
        bytes(s, field::EVENTS, e);
    }
    if status >= 500 {
        let mut n = [0u8; 20];
        let mut m = [0u8; 32];
        m[..9].copy_from_slice(b"answered ");
        let digits = decimal(u64::from(status), &mut n);
        m[9..9 + digits.len()].copy_from_slice(digits);
        error_status(s, field::STATUS, &m[..9 + digits.len()]);
    }
    let flags =
        u32::from(rec.flags) | HAS_IS_REMOTE | if rec.parent.is_some() { IS_REMOTE } else { 0 };
    fixed32(s, field::FLAGS, flags);
    bytes(out, field::SCOPE_SPANS_SPAN, s);

    for (n, t) in rec.tries.iter().enumerate() {
        let s = &mut scratch.span;
        s.clear();
        bytes(s, field::TRACE_ID, &rec.trace_id);
        bytes(s, field::SPAN_ID, &t.span_id);
        bytes(s, field::PARENT_SPAN_ID, &rec.span_id);
        bytes(s, field::NAME, method);
        varint(s, field::KIND, CLIENT);
        fixed64(s, field::START, t.start);
        fixed64(s, field::END, t.end.max(t.start));
        let ip = IpText::new(t.endpoint.ip());
        kv_str(s, a, "http.request.method", method);
        kv_str(s, a, "server.address", ip.as_bytes());
        kv_int(s, a, "server.port", i64::from(t.endpoint.port()));
        kv_str(s, a, "network.peer.address", ip.as_bytes());
        if n > 0 {
            kv_int(s, a, "http.request.resend_count", n as i64);
        }
        if t.status != 0 {
            kv_int(s, a, "http.response.status_code", i64::from(t.status));
        }
        if let Some(e) = t.error {
            kv_str(s, a, "error.type", e.as_bytes());
        }
        if !names.group.is_empty() {
            kv_str(s, a, "shardgate.upstream", names.group.as_bytes());
        }
        match t.error {
            Some(e) => error_status(s, field::STATUS, e.as_bytes()),
            None if t.status >= 500 => error_status(s, field::STATUS, b"upstream answered 5xx"),
            None => {}
        }
        fixed32(s, field::FLAGS, u32::from(rec.flags) | HAS_IS_REMOTE);
        bytes(out, field::SCOPE_SPANS_SPAN, s);
    }
    1 + rec.tries.len()
}

/// One shard's side: spans encoded here, handed to the exporter at ticks.
pub(crate) struct ShardTraces {
    buf: RefCell<Vec<u8>>,
    scratch: RefCell<Scratch>,
    spans: Cell<usize>,
    /// Most spans held between hand-overs.
    limit: usize,
    tx: RefCell<Option<SyncSender<SpanBatch>>>,
    pub dropped: Cell<u64>,
}

impl ShardTraces {
    pub(crate) fn new(config: &Tracing, shards: usize, tx: SyncSender<SpanBatch>) -> Self {
        ShardTraces {
            buf: RefCell::new(Vec::new()),
            scratch: RefCell::new(Scratch::default()),
            spans: Cell::new(0),
            limit: (config.queue / shards.max(1)).max(config.batch_size.min(config.queue)),
            tx: RefCell::new(Some(tx)),
            dropped: Cell::new(0),
        }
    }

    /// Records a finished request's spans (or counts them dropped when the
    /// buffer is full).
    pub(crate) fn append(&self, rec: &SpanRecord, status: u16, names: &Names<'_>) {
        let held = self.spans.get();
        if held >= self.limit {
            self.dropped
                .set(self.dropped.get() + 1 + rec.tries.len() as u64);
            return;
        }
        let n = encode(
            rec,
            status,
            names,
            &mut self.scratch.borrow_mut(),
            &mut self.buf.borrow_mut(),
        );
        self.spans.set(held + n);
    }

    /// Hands what is buffered to the exporter (every tick).
    pub(crate) fn flush(&self) {
        let spans = self.spans.replace(0);
        if spans == 0 {
            return;
        }
        // The next buffer starts as large as this one grew, so it is not regrown.
        let mut buf = self.buf.borrow_mut();
        let next = Vec::with_capacity(buf.len());
        let batch = std::mem::replace(&mut *buf, next);
        drop(buf);
        let sent = match self.tx.borrow().as_ref() {
            Some(tx) => tx.try_send((batch, spans)),
            None => Err(TrySendError::Disconnected((batch, spans))),
        };
        if sent.is_err() {
            self.dropped.set(self.dropped.get() + spans as u64);
        }
    }

    /// Flushes and lets go of the exporter (the shard is stopping).
    pub(crate) fn close(&self) {
        self.flush();
        self.tx.borrow_mut().take();
    }
}

/// What the exporter has done, for `/metrics`.
#[derive(Default)]
pub(crate) struct ExportCounts {
    pub exported: AtomicU64,
    /// Spans the exporter's queue had no room for.
    pub dropped: AtomicU64,
    /// Spans in export requests that failed.
    pub failed: AtomicU64,
    pub requests_failed: AtomicU64,
    /// The last export failed (for the log: one line per outage).
    pub failing: AtomicBool,
}

/// The exporter thread.
pub(crate) struct Exporter {
    tx: Option<SyncSender<SpanBatch>>,
    thread: Option<JoinHandle<()>>,
    pub counts: Arc<ExportCounts>,
}

impl Exporter {
    pub(crate) fn start(config: &Tracing, shards: usize) -> std::io::Result<Exporter> {
        let (tx, rx) = sync_channel(QUEUE_PER_SHARD * shards.max(1));
        let counts = Arc::new(ExportCounts::default());
        let sink = Sink::new(config)?;
        let (c, settings) = (counts.clone(), config.clone());
        let thread = std::thread::Builder::new()
            .name("shardgate-otlp".into())
            .spawn(move || run(&settings, &sink, &rx, &c))?;
        log::info!(
            "tracing: exporting spans to {} (sample ratio {})",
            config.otlp_endpoint,
            config.sample_ratio
        );
        Ok(Exporter {
            tx: Some(tx),
            thread: Some(thread),
            counts,
        })
    }

    pub(crate) fn sender(&self) -> Option<SyncSender<SpanBatch>> {
        self.tx.clone()
    }

    /// Sends what the shards handed over, then stops (after the shards).
    pub(crate) fn finish(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where exports go: the endpoint, its fields, and the encoded resource and
/// scope every request repeats.
struct Sink {
    agent: ureq::Agent,
    url: String,
    headers: Vec<(String, String)>,
    /// `ResourceSpans.resource`, encoded as its field 1.
    resource: Vec<u8>,
    /// `ScopeSpans.scope`, encoded as its field 1.
    scope: Vec<u8>,
}

impl Sink {
    fn new(config: &Tracing) -> std::io::Result<Sink> {
        let mut attributes = vec![text("service.name", config.service_name.as_str())];
        attributes.extend(config.resource.iter().map(|(k, v)| text(k, v.as_str())));
        let resource = Resource {
            attributes,
            ..Default::default()
        };
        let scope = InstrumentationScope {
            name: "shardgate".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        let mut r = Vec::new();
        prost::encoding::message::encode(1, &resource, &mut r);
        let mut s = Vec::new();
        prost::encoding::message::encode(1, &scope, &mut s);
        // An https collector is verified against the system's CA bundle.
        let pem = if config.otlp_endpoint.starts_with("https://") {
            crate::jwks::system_ca_pem().map_err(std::io::Error::other)?
        } else {
            String::new()
        };
        let tls = crate::jwks::tls_config(pem.as_bytes());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(config.timeout))
            .user_agent(concat!("shardgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Sink {
            agent,
            url: config.otlp_endpoint.clone(),
            headers: config.headers.clone(),
            resource: r,
            scope: s,
        })
    }

    /// The `ExportTraceServiceRequest` around encoded spans, written in
    /// one pass (each span's bytes are copied once).
    fn request(&self, spans: &[Vec<u8>]) -> Vec<u8> {
        use prost::encoding::encoded_len_varint;
        let spans_len: usize = spans.iter().map(Vec::len).sum();
        let scope_spans_len = self.scope.len() + spans_len;
        let resource_spans_len =
            self.resource.len() + 1 + encoded_len_varint(scope_spans_len as u64) + scope_spans_len;
        let mut out = Vec::with_capacity(
            1 + encoded_len_varint(resource_spans_len as u64) + resource_spans_len,
        );
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(resource_spans_len as u64, &mut out);
        out.extend_from_slice(&self.resource);
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(scope_spans_len as u64, &mut out);
        out.extend_from_slice(&self.scope);
        for s in spans {
            out.extend_from_slice(s);
        }
        out
    }

    fn post(&self, body: &[u8]) -> Result<(), String> {
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/x-protobuf");
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let response = req.send(body).map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the collector answered {status}"))
        }
    }
}

/// Gathers the shards' batches and exports them: when `batch_size` spans
/// are waiting or `interval` has passed since the first of them came.
fn run(config: &Tracing, sink: &Sink, rx: &Receiver<SpanBatch>, counts: &ExportCounts) {
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut held = 0usize;
    let mut since: Option<Instant> = None;
    loop {
        let wait = since.map_or(Duration::from_secs(3600), |t| {
            config.interval.saturating_sub(t.elapsed())
        });
        let open = match rx.recv_timeout(wait) {
            Ok((batch, n)) => {
                if held + n > config.queue {
                    counts.dropped.fetch_add(n as u64, Ordering::Relaxed);
                } else {
                    pending.push(batch);
                    held += n;
                    since.get_or_insert_with(Instant::now);
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        };
        let due = since.is_some_and(|t| t.elapsed() >= config.interval);
        if held > 0 && (held >= config.batch_size || due || !open) {
            export(sink, &std::mem::take(&mut pending), held, counts);
            held = 0;
            since = None;
        }
        if !open {
            return;
        }
    }
}

fn export(sink: &Sink, batches: &[Vec<u8>], spans: usize, counts: &ExportCounts) {
    match sink.post(&sink.request(batches)) {
        Ok(()) => {
            counts.exported.fetch_add(spans as u64, Ordering::Relaxed);
            if counts.failing.swap(false, Ordering::Relaxed) {
                log::info!("tracing: {} takes spans again", sink.url);
            }
        }
        Err(e) => {
            counts.failed.fetch_add(spans as u64, Ordering::Relaxed);
            counts.requests_failed.fetch_add(1, Ordering::Relaxed);
            if !counts.failing.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "tracing: exporting to {} failed: {e}; spans are dropped and counted until it works",
                    sink.url
                );
            }
        }
    }
}

/// The exporter's series for `/metrics`; `shard_dropped` is the shards'
/// count of spans their buffers had no room for.
pub(crate) fn render_metrics(counts: &ExportCounts, shard_dropped: u64, out: &mut String) {
    let exporter_dropped = counts.dropped.load(Ordering::Relaxed);
    crate::metrics::plain(
        out,
        &[
            (
                "tracing_spans_exported_total",
                "counter",
                "Spans the collector accepted.",
                counts.exported.load(Ordering::Relaxed),
            ),
            (
                "tracing_spans_dropped_total",
                "counter",
                "Spans dropped because a queue to the exporter was full.",
                shard_dropped + exporter_dropped,
            ),
            (
                "tracing_spans_failed_total",
                "counter",
                "Spans in export requests that failed.",
                counts.failed.load(Ordering::Relaxed),
            ),
            (
                "tracing_export_failures_total",
                "counter",
                "Export requests that failed (collector down, slow or refusing).",
                counts.requests_failed.load(Ordering::Relaxed),
            ),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{Span, span, status};
    use prost::Message;

    fn record() -> SpanRecord {
        let hop = shardgate_filters::traceparent::Hop {
            outgoing: shardgate_filters::traceparent::TraceContext {
                trace_id: [7; 16],
                parent_id: [1; 8],
                flags: 1,
            },
            span_id: [1; 8],
            caller_span: Some([9; 8]),
            keep_tracestate: true,
        };
        let facts = RequestFacts {
            method: "GET",
            path: b"/a",
            host: b"example.com",
            scheme: "http",
            client: None,
            peer: IpText::new("127.0.0.1".parse().unwrap()),
        };
        let mut rec = *SpanRecord::new(&hop, facts);
        rec.start = 1_000;
        rec.set_consumer(b"alice");
        rec
    }

    fn attr(span: &Span, key: &str) -> Option<String> {
        let kv = span.attributes.iter().find(|kv| kv.key == key)?;
        Some(match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => s.clone(),
            any_value::Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
    }

    #[test]
    fn the_request_wraps_shard_bytes_into_one_export() {
        let config = shardgate_config::from_toml(
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:1/v1/traces\"\nservice_name = \"edge\"\n\
             [[listeners]]\naddress = \"127.0.0.1:0\"\n",
        )
        .unwrap()
        .tracing
        .unwrap();
        let sink = Sink::new(&config).unwrap();
        let mut rec = record();
        rec.answer = Some(("proxy", "circuit breaker open".into()));
        rec.tries.push(TrySpan {
            span_id: [2; 8],
            start: 1_100,
            end: 1_200,
            endpoint: "127.0.0.1:9".parse().unwrap(),
            status: 0,
            error: Some("connect_failed"),
        });
        let names = Names {
            route: "r",
            tenant: "acme",
            group: "app",
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut scratch = Scratch::default();
        assert_eq!(encode(&rec, 502, &names, &mut scratch, &mut a), 2);
        assert_eq!(encode(&record(), 200, &names, &mut scratch, &mut b), 1);
        let req = ExportTraceServiceRequest::decode(&sink.request(&[a, b])[..]).unwrap();
        let rs = &req.resource_spans[0];
        let service = &rs.resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[0].parent_span_id, vec![9; 8]);
        assert_eq!(
            spans[1].parent_span_id,
            vec![1; 8],
            "the try is the server span's child"
        );
        assert_eq!(spans[1].kind, span::SpanKind::Client as i32);
        assert_eq!(
            spans[0].status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        // Every field the hand-written encoder writes, read back by the generated types.
        let server = &spans[0];
        assert_eq!(
            (server.trace_id.clone(), server.span_id.clone()),
            (vec![7; 16], vec![1; 8])
        );
        assert_eq!(server.name, "GET r");
        assert_eq!(server.kind, span::SpanKind::Server as i32);
        assert_eq!(server.start_time_unix_nano, 1_000);
        assert!(server.end_time_unix_nano > 1_000);
        assert_eq!(server.flags, 0x301);
        assert_eq!(server.status.as_ref().unwrap().message, "answered 502");
        for (k, v) in [
            ("http.request.method", "GET"),
            ("url.path", "/a"),
            ("url.scheme", "http"),
            ("http.response.status_code", "502"),
            ("server.address", "example.com"),
            ("client.address", "127.0.0.1"),
            ("network.peer.address", "127.0.0.1"),
            ("http.route", "r"),
            ("shardgate.tenant", "acme"),
            ("shardgate.consumer", "alice"),
            ("shardgate.upstream", "app"),
        ] {
            assert_eq!(attr(server, k).as_deref(), Some(v), "{k}");
        }
        let event = &server.events[0];
        assert_eq!(event.name, "gateway answer");
        assert_eq!(event.attributes.len(), 3);
        let client = &spans[1];
        assert_eq!(
            (client.start_time_unix_nano, client.end_time_unix_nano),
            (1_100, 1_200)
        );
        assert_eq!(attr(client, "server.port").as_deref(), Some("9"));
        assert_eq!(
            attr(client, "error.type").as_deref(),
            Some("connect_failed")
        );
        assert_eq!(client.status.as_ref().unwrap().message, "connect_failed");
        assert_eq!(client.flags, 0x101);
        assert!(spans[2].events.is_empty() && spans[2].status.is_none());
    }

    #[test]
    fn each_try_names_its_span_in_the_head() {
        let mut rec = record();
        let mut head = b"GET / HTTP/1.1\r\ntraceparent: 00-07070707070707070707070707070707-0101010101010101-01\r\n\r\n".to_vec();
        rec.traceparent_at = traceparent_offset(&head);
        rec.name_try_in(&mut head, &[0xab; 8]);
        assert!(String::from_utf8_lossy(&head).contains("-abababababababab-01"));
        // Something else in the buffer is left alone.
        let mut other = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        let before = other.clone();
        rec.name_try_in(&mut other, &[0xcd; 8]);
        assert_eq!(other, before);
    }
}
