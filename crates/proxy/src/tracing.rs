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

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span, status};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use shardgate_config::Tracing;
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
    pub method: String,
    pub path: String,
    pub host: String,
    pub scheme: &'static str,
    pub client: Option<std::net::IpAddr>,
    pub peer: std::net::IpAddr,
    pub consumer: String,
    /// The upstream group, once routed.
    pub group: Option<String>,
    /// Where the parent-id of the `traceparent` sent upstream sits in the
    /// outgoing head, so each try can name its own span there.
    pub traceparent_at: Option<usize>,
    pub tries: Vec<TrySpan>,
    /// The gateway answered itself: who (`api-key`, `rate-limit`, or the
    /// proxy) and why.
    pub answer: Option<(&'static str, String)>,
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

impl SpanRecord {
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

fn text(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// `status.code`: error for a 5xx a server answered, or any failure of a
/// client try (OpenTelemetry's HTTP conventions).
fn error_status(message: String) -> Option<Status> {
    Some(Status {
        message,
        code: status::StatusCode::Error as i32,
    })
}

/// The names the spans of a request carry.
pub(crate) struct Names<'a> {
    pub route: &'a str,
    pub tenant: &'a str,
}

/// Encodes the request's server span and its client spans onto `out`, each
/// as a `ScopeSpans.spans` entry; returns how many.
pub(crate) fn encode(rec: &SpanRecord, status: u16, names: &Names<'_>, out: &mut Vec<u8>) -> usize {
    let end = unix_nanos();
    let mut attributes = vec![
        text("http.request.method", rec.method.as_str()),
        text("url.path", rec.path.as_str()),
        text("url.scheme", rec.scheme),
        int("http.response.status_code", i64::from(status)),
        text("server.address", rec.host.as_str()),
        text("client.address", rec.client.unwrap_or(rec.peer).to_string()),
        text("network.peer.address", rec.peer.to_string()),
    ];
    if !names.route.is_empty() {
        attributes.push(text("http.route", names.route));
    }
    if !names.tenant.is_empty() {
        attributes.push(text("shardgate.tenant", names.tenant));
    }
    if !rec.consumer.is_empty() {
        attributes.push(text("shardgate.consumer", rec.consumer.as_str()));
    }
    if let Some(g) = &rec.group {
        attributes.push(text("shardgate.upstream", g.as_str()));
    }
    let events = rec
        .answer
        .iter()
        .map(|(by, reason)| span::Event {
            time_unix_nano: end,
            name: "gateway answer".into(),
            attributes: vec![
                text("shardgate.answered_by", *by),
                text("shardgate.reason", reason.as_str()),
                int("http.response.status_code", i64::from(status)),
            ],
            ..Default::default()
        })
        .collect();
    let name = if names.route.is_empty() {
        rec.method.clone()
    } else {
        format!("{} {}", rec.method, names.route)
    };
    let server = Span {
        trace_id: rec.trace_id.to_vec(),
        span_id: rec.span_id.to_vec(),
        parent_span_id: rec.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: u32::from(rec.flags) | 0x100 | if rec.parent.is_some() { 0x200 } else { 0 },
        name,
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: rec.start,
        end_time_unix_nano: end.max(rec.start),
        attributes,
        events,
        status: if status >= 500 {
            error_status(format!("answered {status}"))
        } else {
            None
        },
        ..Default::default()
    };
    put(&server, out);
    for (n, t) in rec.tries.iter().enumerate() {
        let mut attributes = vec![
            text("http.request.method", rec.method.as_str()),
            text("server.address", t.endpoint.ip().to_string()),
            int("server.port", i64::from(t.endpoint.port())),
            text("network.peer.address", t.endpoint.ip().to_string()),
        ];
        if n > 0 {
            attributes.push(int("http.request.resend_count", n as i64));
        }
        if t.status != 0 {
            attributes.push(int("http.response.status_code", i64::from(t.status)));
        }
        if let Some(e) = t.error {
            attributes.push(text("error.type", e));
        }
        if let Some(g) = &rec.group {
            attributes.push(text("shardgate.upstream", g.as_str()));
        }
        let status = match t.error {
            Some(e) => error_status(e.into()),
            None if t.status >= 500 => error_status(format!("answered {}", t.status)),
            None => None,
        };
        let client = Span {
            trace_id: rec.trace_id.to_vec(),
            span_id: t.span_id.to_vec(),
            parent_span_id: rec.span_id.to_vec(),
            flags: u32::from(rec.flags) | 0x100,
            name: rec.method.clone(),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: t.start,
            end_time_unix_nano: t.end.max(t.start),
            attributes,
            status,
            ..Default::default()
        };
        put(&client, out);
    }
    1 + rec.tries.len()
}

/// `span` as field 2 of a `ScopeSpans`.
fn put(span: &Span, out: &mut Vec<u8>) {
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(span.encoded_len() as u64, out);
    span.encode_raw(out);
}

/// One shard's side: spans encoded here, handed to the exporter at ticks.
pub(crate) struct ShardTraces {
    buf: RefCell<Vec<u8>>,
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
        let n = encode(rec, status, names, &mut self.buf.borrow_mut());
        self.spans.set(held + n);
    }

    /// Hands what is buffered to the exporter (every tick).
    pub(crate) fn flush(&self) {
        let spans = self.spans.replace(0);
        if spans == 0 {
            return;
        }
        let batch = std::mem::take(&mut *self.buf.borrow_mut());
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
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
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
        let mut roots: Vec<Certificate<'static>> = Vec::new();
        if config.otlp_endpoint.starts_with("https://") {
            let path = shardgate_config::SYSTEM_CA_BUNDLES
                .iter()
                .find(|p| std::path::Path::new(p).exists())
                .ok_or_else(|| {
                    std::io::Error::other("no system CA bundle for an https collector")
                })?;
            let pem = std::fs::read(path)?;
            roots = CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .map(|der| Certificate::from_der(&der).to_owned())
                .collect();
        }
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::new_with_certs(&roots))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
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

    /// The `ExportTraceServiceRequest` around encoded spans.
    fn request(&self, spans: &[Vec<u8>]) -> Vec<u8> {
        let spans_len: usize = spans.iter().map(Vec::len).sum();
        let scope_spans_len = self.scope.len() + spans_len;
        let mut resource_spans = Vec::with_capacity(self.resource.len() + scope_spans_len + 16);
        resource_spans.extend_from_slice(&self.resource);
        encode_key(2, WireType::LengthDelimited, &mut resource_spans);
        encode_varint(scope_spans_len as u64, &mut resource_spans);
        resource_spans.extend_from_slice(&self.scope);
        for s in spans {
            resource_spans.extend_from_slice(s);
        }
        let mut out = Vec::with_capacity(resource_spans.len() + 8);
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(resource_spans.len() as u64, &mut out);
        out.extend_from_slice(&resource_spans);
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

    fn record() -> SpanRecord {
        SpanRecord {
            trace_id: [7; 16],
            span_id: [1; 8],
            parent: Some([9; 8]),
            flags: 1,
            start: 1_000,
            method: "GET".into(),
            path: "/a".into(),
            host: "example.com".into(),
            scheme: "http",
            client: None,
            peer: "127.0.0.1".parse().unwrap(),
            consumer: "alice".into(),
            group: Some("app".into()),
            traceparent_at: None,
            tries: Vec::new(),
            answer: None,
        }
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
            tenant: "",
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert_eq!(encode(&rec, 502, &names, &mut a), 2);
        assert_eq!(encode(&record(), 200, &names, &mut b), 1);
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
