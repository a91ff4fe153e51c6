//! OpenTelemetry spans from `shardgate run`: a collector in the test decodes the OTLP/HTTP
//! protobuf the gateway POSTs and checks the spans, their parents, attributes and retries;
//! sampling; and that a collector that is down or slow costs no request.

#[allow(dead_code)]
#[path = "ops/harness.rs"]
mod harness;

use harness::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span};
use prost::Message;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the test collector answers.
#[derive(Clone, Copy)]
enum Mode {
    Ok,
    /// Waits this long before answering (a collector that is slow).
    Slow(Duration),
}

/// An OTLP/HTTP receiver: keeps every span of every export, with the resource's attributes.
struct Collector {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
    resource: Arc<Mutex<Vec<KeyValue>>>,
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl Collector {
    fn start(mode: Mode) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let resource = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (s, r, q) = (spans.clone(), resource.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let (s, r, q) = (s.clone(), r.clone(), q.clone());
                std::thread::spawn(move || serve(conn, mode, &s, &r, &q));
            }
        });
        Collector {
            port,
            spans,
            resource,
            requests,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until spans satisfy `cond`.
    fn wait(&self, what: &str, cond: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let ok = wait_for(Duration::from_secs(10), || cond(&self.spans()));
        let spans = self.spans();
        assert!(ok, "{what}: {} spans: {:#?}", spans.len(), names(&spans));
        spans
    }
}

fn serve(
    conn: TcpStream,
    mode: Mode,
    spans: &Mutex<Vec<Span>>,
    resource: &Mutex<Vec<KeyValue>>,
    requests: &Mutex<Vec<(String, String)>>,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut length = 0usize;
        let mut fields = String::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
            fields.push_str(&h.to_ascii_lowercase());
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Mode::Slow(d) = mode {
            std::thread::sleep(d);
        }
        requests.lock().unwrap().push((target, fields));
        let req = ExportTraceServiceRequest::decode(&body[..]).expect("an OTLP export");
        for rs in req.resource_spans {
            if let Some(r) = rs.resource {
                *resource.lock().unwrap() = r.attributes;
            }
            for ss in rs.scope_spans {
                spans.lock().unwrap().extend(ss.spans);
            }
        }
        let answer =
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let kv = span.attributes.iter().find(|kv| kv.key == key)?;
    Some(match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

fn names(spans: &[Span]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} kind={} {:?}",
                s.name,
                s.kind,
                attr(s, "http.response.status_code")
            )
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One request with extra header lines; (status, raw response).
fn get(port: u16, path: &str, extra: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A gateway on `listen` with `[tracing]` sending to `endpoint` (short batches), and `rest`.
fn start(name: &str, ports: &Ports, tracing: &str, rest: &str) -> (Gateway, ConfigFile) {
    let cfg = ConfigFile::new(name);
    cfg.write(&format!(
        "workers = 2\n[[listeners]]\naddress = \"127.0.0.1:{}\"\n[admin]\naddress = \"127.0.0.1:{}\"\n\
         [tracing]\ninterval = \"50ms\"\n{tracing}\n{rest}",
        ports.listen, ports.admin
    ));
    let gw = Gateway::start(&cfg, ports);
    (gw, cfg)
}

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn spans_carry_the_request_its_tries_and_the_callers_parent() {
    let collector = Collector::start(Mode::Ok);
    let app = Upstream::start("app");
    let dead = free_port();
    let ports = Ports::pick();
    let (_gw, _cfg) = start(
        "spans",
        &ports,
        &format!(
            "otlp_endpoint = \"{}\"\nservice_name = \"edge-test\"\nresource = {{ \"deployment.environment\" = \"ci\" }}\n\
             headers = {{ \"x-collector-key\" = \"k1\" }}\n",
            collector.endpoint()
        ),
        &format!(
            "[upstreams.app]\nendpoints = [\"127.0.0.1:{dead}\", \"{}\"]\n\
             [upstreams.app.retry]\nattempts = 2\non = [\"connect-failure\"]\nbudget_percent = 100\n\
             [[tenants]]\nname = \"acme\"\nhosts = [\"api.test\"]\n\
             [[routes]]\nname = \"orders\"\ntenant = \"acme\"\nprefix = \"/orders\"\nupstream = \"app\"\n\
             filters = [{{ type = \"api-key\", keys = [{{ sha256 = \"85dbe15d75ef9308c7ae0f33c7a324cc6f4bf519a2ed2f3027bd33c140a4f9aa\", consumer = \"alice\" }}] }}]\n",
            app.addr
        ),
    );
    // Round robin over [dead, live]: within a few requests one tries the dead endpoint first.
    for _ in 0..4 {
        let (status, text) = get(
            ports.listen,
            "/orders/7?secret=1",
            &format!("x-api-key: secret-key\r\ntraceparent: {CALLER}\r\n"),
        );
        assert_eq!(status, 200, "{text}");
    }
    let spans = collector.wait("four server spans", |s| {
        s.iter()
            .filter(|s| s.kind == span::SpanKind::Server as i32)
            .count()
            >= 4
    });
    let caller_trace = hex(&[
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ]);
    let servers: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == span::SpanKind::Server as i32)
        .collect();
    for s in &servers {
        assert_eq!(hex(&s.trace_id), caller_trace, "the caller's trace");
        assert_eq!(
            hex(&s.parent_span_id),
            "00f067aa0ba902b7",
            "the caller's span is the parent"
        );
        assert_eq!(s.name, "GET orders");
        assert_eq!(attr(s, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(attr(s, "http.route").as_deref(), Some("orders"));
        assert_eq!(attr(s, "http.response.status_code").as_deref(), Some("200"));
        assert_eq!(
            attr(s, "url.path").as_deref(),
            Some("/orders/7"),
            "no query"
        );
        assert_eq!(attr(s, "server.address").as_deref(), Some("api.test"));
        assert_eq!(attr(s, "client.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(attr(s, "shardgate.tenant").as_deref(), Some("acme"));
        assert_eq!(attr(s, "shardgate.consumer").as_deref(), Some("alice"));
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0);
    }
    // Every try is a client span under its server span; a retried request shows both
    // endpoints, the dead one first.
    let tries = |server: &Span| -> Vec<Span> {
        let mut t: Vec<Span> = spans
            .iter()
            .filter(|c| {
                c.kind == span::SpanKind::Client as i32 && c.parent_span_id == server.span_id
            })
            .cloned()
            .collect();
        t.sort_by_key(|c| c.start_time_unix_nano);
        t
    };
    let retried = servers
        .iter()
        .find(|s| tries(s).len() == 2)
        .unwrap_or_else(|| panic!("no retried request in {:#?}", names(&spans)));
    let t = tries(retried);
    assert_eq!(attr(&t[0], "server.port"), Some(dead.to_string()));
    assert_eq!(attr(&t[0], "error.type").as_deref(), Some("connect_failed"));
    assert_eq!(
        attr(&t[1], "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attr(&t[1], "http.request.resend_count").as_deref(),
        Some("1")
    );
    assert_eq!(
        attr(&t[1], "server.port"),
        app.addr.rsplit(':').next().map(str::to_string)
    );
    assert!(servers.iter().all(|s| !tries(s).is_empty()));
    // The resource and the export request.
    let resource = collector.resource.lock().unwrap().clone();
    let has = |k: &str, v: &str| {
        resource.iter().any(|kv| {
            kv.key == k
                && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()),
                    Some(any_value::Value::StringValue(s)) if s == v)
        })
    };
    assert!(has("service.name", "edge-test") && has("deployment.environment", "ci"));
    let (target, fields) = collector.requests.lock().unwrap()[0].clone();
    assert_eq!(target, "/v1/traces");
    assert!(
        fields.contains("content-type: application/x-protobuf"),
        "{fields}"
    );
    assert!(fields.contains("x-collector-key: k1"), "{fields}");
    let metrics = admin_get(&ports, "/metrics");
    assert!(
        metrics.lines().any(|l| l.starts_with("shardgate_tracing_spans_exported_total ")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[test]
fn the_upstream_sees_the_try_span_as_its_parent() {
    let collector = Collector::start(Mode::Ok);
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    let sink = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut out = conn;
            let sink = sink.clone();
            std::thread::spawn(move || {
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.strip_prefix("traceparent: ") {
                            sink.lock().unwrap().push(v.trim().to_string());
                        }
                    }
                    let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                }
            });
        }
    });
    let ports = Ports::pick();
    let (_gw, _cfg) = start(
        "parent",
        &ports,
        &format!("otlp_endpoint = \"{}\"\n", collector.endpoint()),
        &format!(
            "[upstreams.app]\nendpoints = [\"{upstream}\"]\n\
             [[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"app\"\n"
        ),
    );
    // A route without a trace-context filter still carries the trace on.
    let (status, _) = get(ports.listen, "/x", &format!("traceparent: {CALLER}\r\n"));
    assert_eq!(status, 200);
    let spans = collector.wait("a client span", |s| {
        s.iter().any(|s| s.kind == span::SpanKind::Client as i32)
    });
    let client = spans
        .iter()
        .find(|s| s.kind == span::SpanKind::Client as i32)
        .unwrap();
    let sent = seen.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0],
        format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            hex(&client.span_id)
        ),
        "the upstream's parent is the try's span"
    );
    // A request that brings no trace starts one, and the upstream is told.
    assert_eq!(get(ports.listen, "/fresh", "").0, 200);
    let spans = collector.wait("the new trace's client span", |s| {
        s.iter()
            .filter(|s| s.kind == span::SpanKind::Client as i32)
            .count()
            == 2
    });
    let client = spans
        .iter()
        .filter(|s| s.kind == span::SpanKind::Client as i32)
        .find(|s| hex(&s.trace_id) != "4bf92f3577b34da6a3ce929d0e0e4736")
        .unwrap();
    let sent = seen.lock().unwrap().clone();
    assert_eq!(
        sent.get(1),
        Some(&format!(
            "00-{}-{}-01",
            hex(&client.trace_id),
            hex(&client.span_id)
        )),
        "{sent:?}"
    );
}

#[test]
fn gateway_answers_carry_their_reason_as_an_event() {
    let collector = Collector::start(Mode::Ok);
    let dead = free_port();
    let app = Upstream::start("app");
    let ports = Ports::pick();
    let (_gw, _cfg) = start(
        "answers",
        &ports,
        &format!("otlp_endpoint = \"{}\"\n", collector.endpoint()),
        &format!(
            "[upstreams.app]\nendpoints = [\"{}\"]\n\
             [upstreams.down]\nendpoints = [\"127.0.0.1:{dead}\"]\n\
             [upstreams.down.breaker]\nerror_percent = 50\nmin_requests = 2\nwindow = \"10s\"\nsleep_window = \"30s\"\n\
             [[routes]]\nname = \"keyed\"\nprefix = \"/keyed\"\nupstream = \"app\"\n\
             filters = [{{ type = \"api-key\", keys = [{{ sha256 = \"85dbe15d75ef9308c7ae0f33c7a324cc6f4bf519a2ed2f3027bd33c140a4f9aa\", consumer = \"alice\" }}] }}]\n\
             [[routes]]\nname = \"limited\"\nprefix = \"/limited\"\nupstream = \"app\"\n\
             filters = [{{ type = \"rate-limit\", rate = 1, per = \"1m\", burst = 1, key = \"route\" }}]\n\
             [[routes]]\nname = \"down\"\nprefix = \"/down\"\nupstream = \"down\"\n",
            app.addr
        ),
    );
    assert_eq!(get(ports.listen, "/keyed", "").0, 401);
    let mut limited = Vec::new();
    for _ in 0..4 {
        limited.push(get(ports.listen, "/limited", "").0);
    }
    assert!(limited.contains(&429), "{limited:?}");
    // Both shards' breakers open after their failures; then 503s come from the breaker.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(get(ports.listen, "/down", "").0);
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    let event = |s: &Span| -> Option<(String, String)> {
        let e = s.events.iter().find(|e| e.name == "gateway answer")?;
        let a = |k: &str| {
            e.attributes.iter().find(|kv| kv.key == k).and_then(|kv| {
                match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                }
            })
        };
        Some((a("shardgate.answered_by")?, a("shardgate.reason")?))
    };
    let spans = collector.wait("the 401, a 429 and a breaker 503", |spans| {
        let with = |code: &str| {
            spans.iter().any(|s| {
                attr(s, "http.response.status_code").as_deref() == Some(code) && event(s).is_some()
            })
        };
        with("401") && with("429") && with("503")
    });
    let find = |code: &str| {
        spans
            .iter()
            .filter(|s| s.kind == span::SpanKind::Server as i32)
            .filter(|s| attr(s, "http.response.status_code").as_deref() == Some(code))
            .filter_map(event)
            .collect::<Vec<_>>()
    };
    assert!(
        find("401").contains(&("api-key".into(), "Unauthorized".into())),
        "{:?}",
        find("401")
    );
    assert!(
        find("429").contains(&("rate-limit".into(), "Too Many Requests".into())),
        "{:?}",
        find("429")
    );
    assert!(
        find("503").contains(&("proxy".into(), "circuit breaker open".into())),
        "{:?}",
        find("503")
    );
    // A 5xx server span is an error.
    let failed = spans
        .iter()
        .find(|s| attr(s, "http.response.status_code").as_deref() == Some("503"))
        .unwrap();
    assert_eq!(failed.status.as_ref().map(|s| s.code), Some(2));
}

#[test]
fn sampling_follows_the_caller_and_the_ratio_for_new_traces() {
    let collector = Collector::start(Mode::Ok);
    let app = Upstream::start("app");
    let ports = Ports::pick();
    let (_gw, _cfg) = start(
        "sampling",
        &ports,
        &format!(
            "otlp_endpoint = \"{}\"\nsample_ratio = 0\n",
            collector.endpoint()
        ),
        &format!(
            "[upstreams.app]\nendpoints = [\"{}\"]\n\
             [[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"app\"\nfilters = [{{ type = \"trace-context\" }}]\n",
            app.addr
        ),
    );
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    for _ in 0..20 {
        assert_eq!(get(ports.listen, "/new", "").0, 200);
        assert_eq!(
            get(
                ports.listen,
                "/unsampled",
                &format!("traceparent: {unsampled}\r\n")
            )
            .0,
            200
        );
    }
    assert_eq!(
        get(
            ports.listen,
            "/sampled",
            &format!("traceparent: {CALLER}\r\n")
        )
        .0,
        200
    );
    let spans = collector.wait("the sampled caller's spans", |s| !s.is_empty());
    std::thread::sleep(Duration::from_millis(300));
    let spans = if spans.len() < 2 {
        collector.spans()
    } else {
        spans
    };
    assert!(
        spans
            .iter()
            .all(|s| hex(&s.trace_id) == "4bf92f3577b34da6a3ce929d0e0e4736"),
        "only the sampled caller's trace: {:#?}",
        names(&spans)
    );
    assert_eq!(spans.len(), 2, "one server and one client span");
}

#[test]
fn a_collector_down_or_slow_costs_no_request() {
    let _turn = harness_turn();
    for (name, endpoint, slow) in [
        (
            "down",
            format!("http://127.0.0.1:{}/v1/traces", free_port()),
            None,
        ),
        (
            "slow",
            String::new(),
            Some(Collector::start(Mode::Slow(Duration::from_secs(3)))),
        ),
    ] {
        let endpoint = match &slow {
            Some(c) => c.endpoint(),
            None => endpoint,
        };
        let app = Upstream::start("app");
        let ports = Ports::pick();
        let (gw, _cfg) = start(
            name,
            &ports,
            &format!(
                "otlp_endpoint = \"{endpoint}\"\ntimeout = \"1s\"\nqueue = 512\nbatch_size = 64\n"
            ),
            &format!(
                "[upstreams.app]\nendpoints = [\"{}\"]\n\
                 [[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"app\"\n",
                app.addr
            ),
        );
        let report = Load::start(&ports, 3).finish();
        assert!(report.requests > 1000, "{name}: {report:?}");
        assert_eq!(
            (report.errors, report.non_2xx),
            (0, 0),
            "{name}: {report:?}"
        );
        let metrics = admin_get(&ports, "/metrics");
        let value = |series: &str| -> u64 {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{series} ")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{series} in {metrics}"))
        };
        if slow.is_some() {
            // The exporter waits on the collector; the queues stay bounded and drops are counted.
            assert!(
                value("shardgate_tracing_spans_dropped_total") > 0,
                "{name}: {metrics}"
            );
        } else {
            assert!(
                value("shardgate_tracing_export_failures_total") > 0,
                "{name}"
            );
            assert!(
                value("shardgate_tracing_spans_failed_total") > 1000,
                "{name}"
            );
            assert!(gw.wait_log(Duration::from_secs(5), "tracing: exporting to"));
        }
    }
}

/// The load test takes its turn alone.
fn harness_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
