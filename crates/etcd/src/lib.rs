//! A blocking client for etcd's v3 API through its JSON gateway: `/v3/kv/range`,
//! `/v3/kv/txn` (a put that compares a revision first), `/v3/kv/put`, `/v3/watch` and
//! `/v3/auth/authenticate`. Keys and values travel base64-encoded and 64-bit numbers as
//! strings, as the gateway's protobuf-to-JSON mapping has them.
//!
//! It runs on control-plane threads (the configuration watcher, `shardgate config`), never on
//! a shard: a call blocks for at most [`CALL_TIMEOUT`] per endpoint tried.

use serde_json::{Value, json};
use shardgate_common::units::{encode_base64, parse_base64};
use std::fmt;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long one unary call may take on one endpoint.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to one endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A watch that has said nothing for this long ends with [`Error::Quiet`], so that a peer
/// gone silent (a partition rather than a closed socket) is noticed; the caller watches again
/// from where it was.
pub const WATCH_QUIET: Duration = Duration::from_secs(60);
/// Where Debian, Ubuntu and Alpine keep the system's CA bundle, then Fedora and RHEL: the
/// roots for `https://` endpoints when no `ca` is given.
const SYSTEM_CA_BUNDLES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];
/// The largest answer read from a unary call (etcd's own request limit is 1.5 MiB).
const MAX_ANSWER: u64 = 32 << 20;

/// Where etcd is and how to talk to it.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `http://host:port` or `https://host:port`, tried in turn.
    pub endpoints: Vec<String>,
    /// With `password`: etcd's authentication (a token is asked for, and again when it expires).
    pub username: Option<String>,
    pub password: Option<String>,
    /// The CA bundle etcd's certificate must chain to (default: the system's).
    pub ca: Option<PathBuf>,
    /// A client certificate and key (PEM), for etcd's `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No endpoint answered (each one's reason).
    Unreachable(String),
    /// etcd answered with an error.
    Refused { status: u16, message: String },
    /// The answer is not what the API describes.
    Protocol(String),
    /// A watch said nothing for [`WATCH_QUIET`].
    Quiet,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unreachable(why) => write!(f, "etcd is unreachable: {why}"),
            Error::Refused { status, message } => write!(f, "etcd refused ({status}): {message}"),
            Error::Protocol(why) => write!(f, "unexpected answer from etcd: {why}"),
            Error::Quiet => write!(f, "the watch was quiet for {}s", WATCH_QUIET.as_secs()),
        }
    }
}

impl std::error::Error for Error {}

/// One key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// What a range read found, at the store's revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub revision: i64,
    /// The cluster that answered: a restored or re-created cluster has a new one.
    pub cluster: String,
    pub kvs: Vec<Kv>,
}

/// One change a watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// A delete (the key carries only its name and revision), else a put.
    pub deleted: bool,
    pub kv: Kv,
}

/// What a watch says next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Changes up to `revision` (none: a progress report).
    Changes { revision: i64, changes: Vec<Change> },
    /// The revision asked for is compacted away: read in full, then watch from there.
    Compacted { revision: i64 },
    /// etcd ended the watch.
    Canceled(String),
}

/// A client for one etcd cluster. Calls may come from several threads.
pub struct Client {
    endpoints: Vec<String>,
    unary: ureq::Agent,
    streaming: ureq::Agent,
    credentials: Option<(String, String)>,
    token: Mutex<Option<String>>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `settings`; an error names what is wrong with them.
    pub fn new(settings: &Settings) -> Result<Client, String> {
        if settings.endpoints.is_empty() {
            return Err("no etcd endpoint given".into());
        }
        let mut endpoints = Vec::new();
        for e in &settings.endpoints {
            let e = e.trim().trim_end_matches('/');
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(format!(
                    "etcd endpoint {e:?}: give http://host:port or https://host:port"
                ));
            }
            endpoints.push(e.to_string());
        }
        let credentials = match (&settings.username, &settings.password) {
            (None, None) => None,
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            _ => return Err("etcd username and password come together".into()),
        };
        let tls = tls_config(settings)?;
        let agent = |streaming: bool| -> ureq::Agent {
            let builder = ureq::Agent::config_builder()
                .tls_config(tls.clone())
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_connect(Some(CONNECT_TIMEOUT))
                .user_agent("shardgate");
            let builder = if streaming {
                builder
                    .timeout_recv_response(Some(CALL_TIMEOUT))
                    .timeout_per_read(Some(WATCH_QUIET))
            } else {
                builder.timeout_global(Some(CALL_TIMEOUT))
            };
            builder.build().into()
        };
        Ok(Client {
            endpoints,
            unary: agent(false),
            streaming: agent(true),
            credentials,
            token: Mutex::new(None),
            preferred: AtomicUsize::new(0),
        })
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The endpoint that answered last.
    pub fn current_endpoint(&self) -> &str {
        &self.endpoints[self.preferred.load(Ordering::Relaxed) % self.endpoints.len()]
    }

    /// `key` alone, or every key starting with it when `prefix`.
    pub fn range(&self, key: &str, prefix: bool) -> Result<Range, Error> {
        let mut body = json!({ "key": encode_base64(key.as_bytes()) });
        if prefix {
            body["range_end"] = encode_base64(&prefix_end(key.as_bytes())).into();
        }
        let v = self.call("/v3/kv/range", &body)?;
        Ok(Range {
            revision: header_revision(&v)?,
            cluster: v
                .get("header")
                .and_then(|h| h.get("cluster_id"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            kvs: kvs(v.get("kvs"))?,
        })
    }

    /// Writes `value` at `key` unconditionally; the store's new revision.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<i64, Error> {
        let body = json!({
            "key": encode_base64(key.as_bytes()),
            "value": encode_base64(value),
        });
        header_revision(&self.call("/v3/kv/put", &body)?)
    }

    /// Writes `value` at `key` only if the key's modification revision is still `expected`
    /// (0: the key does not exist). `Ok(Ok(revision))` when written; `Ok(Err(current))` with
    /// the key's modification revision now (0: absent) when the comparison failed.
    pub fn put_if(
        &self,
        key: &str,
        value: &[u8],
        expected: i64,
    ) -> Result<Result<i64, i64>, Error> {
        let k = encode_base64(key.as_bytes());
        let body = json!({
            "compare": [{
                "key": k,
                "target": "MOD",
                "result": "EQUAL",
                "mod_revision": expected.to_string(),
            }],
            "success": [{ "request_put": { "key": k, "value": encode_base64(value) } }],
            "failure": [{ "request_range": { "key": k } }],
        });
        let v = self.call("/v3/kv/txn", &body)?;
        if v.get("succeeded").and_then(Value::as_bool) == Some(true) {
            return Ok(Ok(header_revision(&v)?));
        }
        let current = v
            .get("responses")
            .and_then(|r| r.get(0))
            .and_then(|r| r.get("response_range"))
            .map(|r| kvs(r.get("kvs")))
            .transpose()?
            .and_then(|kvs| kvs.first().map(|kv| kv.mod_revision))
            .unwrap_or(0);
        Ok(Err(current))
    }

    /// Watches every key starting with `prefix`, from `start_revision` on.
    pub fn watch(&self, prefix: &str, start_revision: i64) -> Result<Watch, Error> {
        let body = json!({
            "create_request": {
                "key": encode_base64(prefix.as_bytes()),
                "range_end": encode_base64(&prefix_end(prefix.as_bytes())),
                "start_revision": start_revision.to_string(),
                "progress_notify": true,
            }
        });
        let response =
            self.authenticated(|token| self.send(&self.streaming, "/v3/watch", &body, token))?;
        let (parts, body) = response.into_parts();
        if parts.status != 200 {
            let text = body
                .into_with_config()
                .limit(MAX_ANSWER)
                .read_to_string()
                .unwrap_or_default();
            return Err(refusal(parts.status.as_u16(), &text));
        }
        let reader = BufReader::new(body.into_reader());
        Ok(Watch {
            messages: serde_json::Deserializer::from_reader(reader).into_iter(),
        })
    }

    /// A unary call: the answer's JSON, or why there is none.
    fn call(&self, path: &str, body: &Value) -> Result<Value, Error> {
        let response = self.authenticated(|token| self.send(&self.unary, path, body, token))?;
        answer(path, response)
    }

    /// Runs `send` with the current token, asking for one first when there is none, and once
    /// more when etcd says the token is no longer valid.
    fn authenticated(
        &self,
        send: impl Fn(Option<&str>) -> Result<ureq::http::Response<ureq::Body>, Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, Error> {
        if self.credentials.is_none() {
            return send(None);
        }
        for attempt in 0..2 {
            let token = self.token()?;
            let response = send(Some(&token))?;
            if response.status() == 401 && attempt == 0 {
                *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
                continue;
            }
            return Ok(response);
        }
        unreachable!("the loop returns on its second pass")
    }

    fn token(&self) -> Result<String, Error> {
        let mut slot = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let Some((name, password)) = &self.credentials else {
            return Err(Error::Protocol("no credentials".into()));
        };
        let body = json!({ "name": name, "password": password });
        let path = "/v3/auth/authenticate";
        let v = answer(path, self.send(&self.unary, path, &body, None)?)?;
        let token = v
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Protocol("/v3/auth/authenticate: no token".into()))?
            .to_string();
        *slot = Some(token.clone());
        Ok(token)
    }

    /// POSTs `body` to `path` on the preferred endpoint, then on the others in turn.
    fn send(
        &self,
        agent: &ureq::Agent,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, Error> {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut reasons = Vec::new();
        let text = body.to_string();
        for k in 0..n {
            let i = (first + k) % n;
            let mut request = agent
                .post(format!("{}{path}", self.endpoints[i]))
                .header("content-type", "application/json");
            if let Some(t) = token {
                request = request.header("authorization", t);
            }
            match request.send(text.as_str()) {
                Ok(response) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(e) => reasons.push(format!("{}: {e}", self.endpoints[i])),
            }
        }
        Err(Error::Unreachable(reasons.join("; ")))
    }
}

/// An open watch: its messages as they come.
pub struct Watch {
    messages: serde_json::StreamDeserializer<
        'static,
        serde_json::de::IoRead<BufReader<ureq::BodyReader<'static>>>,
        Value,
    >,
}

impl Watch {
    /// The next change, compaction or cancellation; blocks until one comes (progress reports
    /// included), the stream ends, or it is quiet for [`WATCH_QUIET`].
    pub fn next_event(&mut self) -> Result<WatchEvent, Error> {
        loop {
            let v = match self.messages.next() {
                None => return Err(Error::Unreachable("the watch stream ended".into())),
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    return Err(match e.io_error_kind() {
                        Some(std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
                            Error::Quiet
                        }
                        Some(_) => Error::Unreachable(format!("the watch stream broke: {e}")),
                        None => Error::Protocol(format!("a watch message: {e}")),
                    });
                }
            };
            if let Some(err) = v.get("error") {
                // What the gateway says when etcd goes away mid-stream ("transport is closing").
                let message = err
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| err.to_string(), str::to_string);
                return Err(Error::Unreachable(format!("the watch ended: {message}")));
            }
            let Some(r) = v.get("result") else {
                return Err(Error::Protocol(format!(
                    "a watch message without a result: {v}"
                )));
            };
            let compacted = int(r.get("compact_revision"))?;
            if compacted > 0 {
                return Ok(WatchEvent::Compacted {
                    revision: compacted,
                });
            }
            if r.get("canceled").and_then(Value::as_bool) == Some(true) {
                let reason = r.get("cancel_reason").and_then(Value::as_str).unwrap_or("");
                return Ok(WatchEvent::Canceled(reason.to_string()));
            }
            let events = r.get("events").and_then(Value::as_array);
            if r.get("created").and_then(Value::as_bool) == Some(true) && events.is_none() {
                continue;
            }
            let mut changes = Vec::new();
            for e in events.into_iter().flatten() {
                let kv = e
                    .get("kv")
                    .ok_or_else(|| Error::Protocol("a watch event without a kv".into()))?;
                changes.push(Change {
                    deleted: e.get("type").and_then(Value::as_str) == Some("DELETE"),
                    kv: parse_kv(kv)?,
                });
            }
            return Ok(WatchEvent::Changes {
                revision: header_revision(r)?,
                changes,
            });
        }
    }
}

/// The end of the range of keys that start with `prefix`: its last byte that is not 0xff,
/// plus one (an all-0xff prefix has no end: every key after it, `\0`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn tls_config(settings: &Settings) -> Result<ureq::tls::TlsConfig, String> {
    use ureq::tls::{
        Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig, TlsProvider,
    };
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut builder = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ));
    let ca = settings.ca.clone().or_else(|| {
        SYSTEM_CA_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    });
    if let Some(ca) = &ca {
        let pem = read(ca)?;
        let roots: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if roots.is_empty() {
            return Err(format!("{}: no certificate in it", ca.display()));
        }
        builder = builder.root_certs(RootCerts::new_with_certs(&roots));
    }
    match (&settings.cert, &settings.key) {
        (None, None) => {}
        (Some(cert), Some(key)) => {
            let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(&read(cert)?)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if chain.is_empty() {
                return Err(format!("{}: no certificate in it", cert.display()));
            }
            let key =
                PrivateKey::from_pem(&read(key)?).map_err(|e| format!("{}: {e}", key.display()))?;
            builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        _ => return Err("an etcd client certificate and its key come together".into()),
    }
    Ok(builder.build())
}

/// A unary answer's JSON, or etcd's refusal.
fn answer(path: &str, response: ureq::http::Response<ureq::Body>) -> Result<Value, Error> {
    let status = response.status().as_u16();
    let text = response
        .into_body()
        .into_with_config()
        .limit(MAX_ANSWER)
        .read_to_string()
        .map_err(|e| Error::Unreachable(format!("reading the answer: {e}")))?;
    if status != 200 {
        return Err(refusal(status, &text));
    }
    serde_json::from_str(&text).map_err(|e| Error::Protocol(format!("{path}: {e}")))
}

/// etcd's error answer, `{"error": ..., "code": N, "message": ...}`, as an [`Error`].
fn refusal(status: u16, text: &str) -> Error {
    let message = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| text.trim().chars().take(200).collect());
    let message = if message.contains("user name is empty") {
        format!("{message} (etcd has authentication on: give a username and password)")
    } else {
        message
    };
    Error::Refused { status, message }
}

/// A 64-bit number: the gateway writes them as strings, and leaves out zeros.
fn int(v: Option<&Value>) -> Result<i64, Error> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| Error::Protocol(format!("{s:?} is not a number"))),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| Error::Protocol(format!("{n} is not a 64-bit number"))),
        Some(other) => Err(Error::Protocol(format!("{other} is not a number"))),
    }
}

fn header_revision(v: &Value) -> Result<i64, Error> {
    int(v.get("header").and_then(|h| h.get("revision")))
}

fn bytes(v: Option<&Value>) -> Result<Vec<u8>, Error> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => {
            parse_base64(s).ok_or_else(|| Error::Protocol(format!("{s:?} is not base64")))
        }
        Some(other) => Err(Error::Protocol(format!("{other} is not base64 text"))),
    }
}

fn parse_kv(v: &Value) -> Result<Kv, Error> {
    Ok(Kv {
        key: String::from_utf8_lossy(&bytes(v.get("key"))?).into_owned(),
        value: bytes(v.get("value"))?,
        create_revision: int(v.get("create_revision"))?,
        mod_revision: int(v.get("mod_revision"))?,
        lease: int(v.get("lease"))?,
    })
}

fn kvs(v: Option<&Value>) -> Result<Vec<Kv>, Error> {
    match v.and_then(Value::as_array) {
        None => Ok(Vec::new()),
        Some(list) => list.iter().map(parse_kv).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/shardgate/"), b"/shardgate0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn numbers_come_as_strings_and_zeros_are_left_out() {
        let v: Value = serde_json::from_str(
            r#"{"key":"L2EvYg==","value":"aGk=","mod_revision":"12","create_revision":"3"}"#,
        )
        .unwrap();
        let kv = parse_kv(&v).unwrap();
        assert_eq!(kv.key, "/a/b");
        assert_eq!(kv.value, b"hi");
        assert_eq!((kv.create_revision, kv.mod_revision, kv.lease), (3, 12, 0));
        assert!(int(Some(&Value::String("x".into()))).is_err());
    }

    #[test]
    fn refusals_carry_etcd_s_message() {
        let e = refusal(
            400,
            r#"{"error":"etcdserver: mvcc: required revision has been compacted","code":11,"message":"etcdserver: mvcc: required revision has been compacted"}"#,
        );
        assert_eq!(
            e.to_string(),
            "etcd refused (400): etcdserver: mvcc: required revision has been compacted"
        );
        assert_eq!(
            refusal(502, "bad gateway\n").to_string(),
            "etcd refused (502): bad gateway"
        );
    }

    #[test]
    fn settings_are_checked() {
        let bad = |s: Settings| Client::new(&s).unwrap_err();
        assert_eq!(bad(Settings::default()), "no etcd endpoint given");
        let e = bad(Settings {
            endpoints: vec!["127.0.0.1:2379".into()],
            ..Settings::default()
        });
        assert!(e.contains("give http://host:port"), "{e}");
        let e = bad(Settings {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            username: Some("root".into()),
            ..Settings::default()
        });
        assert!(e.contains("come together"), "{e}");
    }
}
