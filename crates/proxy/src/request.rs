//! One request's state, shared by the phases of the request path (pipeline,
//! upstream, downstream) and read by the access log: the connection's client
//! side, the buffers a request borrows, the record of what it did, the
//! values passed between phases, and the guards that give back what a
//! request holds (a try's in-flight count, a pool slot, a breaker
//! admission) when they drop, on every path, cancellation included.
//!
//! A leaf of the proxy's module graph: it names no phase, so the phases
//! import it and not each other in a circle.

use crate::body::Pace;
use crate::limit::Limits;
use crate::metrics;
use crate::pool::EndpointId;
use crate::route::RouteId;
use crate::timer::Clock;
use shardgate_http::{ChunkedDecoder, RequestInfo};
use shardgate_upstream::breaker::{Ticket, Verdict};
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A shard's state for one upstream group, shared by the snapshot and the
/// guards of the requests in it.
pub(crate) type GroupState = Rc<RefCell<shardgate_upstream::Group>>;

/// The client side of a connection.
pub(crate) struct Client {
    pub stream: crate::stream::Transport,
    pub addr: IpAddr,
    /// The configured listener (its index) the connection came in on.
    pub listener: u8,
}

/// What the connection does after a request.
pub(crate) enum Next {
    /// Serve the next request; the buffer holds bytes already read.
    KeepAlive(Vec<u8>),
    Close,
    /// The upstream switched protocols: tunnel bytes both ways.
    Upgrade(crate::stream::Transport),
}

/// One request's working state: the buffers it borrows from the shard
/// (`c` holds bytes read from the client, `u` bytes read from the upstream,
/// `w` heads being written) and the record of what it did.
pub(crate) struct Bufs {
    pub c: Vec<u8>,
    pub u: Vec<u8>,
    pub w: Vec<u8>,
    /// Header lines the route's filters add to the response (empty, and
    /// without a buffer, for routes without filters).
    pub x: Vec<u8>,
    pub rec: Record,
}

/// What a request did, for metrics and the access log.
pub(crate) struct Record {
    pub started: Instant,
    pub route: Option<RouteId>,
    /// Index into `metrics::METHODS`.
    pub method: usize,
    /// The status sent; 0 when no response was sent.
    pub status: u16,
    /// The request is a HEAD (`None` until its head has parsed): nothing
    /// may follow the head of its response, the gateway's own answers
    /// included.
    pub head_request: Option<bool>,
    pub upstream: Option<EndpointId>,
    /// From sending the request upstream to its response head.
    pub upstream_time: Option<Duration>,
    /// Bytes read from the client for this request (head and body).
    pub bytes_in: u64,
    /// Bytes written to the client for this request.
    pub bytes_out: u64,
    /// Upstream connections this request took (from the pool or new).
    pub upstream_conns: u64,
    /// The circuit breaker's admission, settled with the request's verdict
    /// when the record drops.
    pub admission: Option<Admitted>,
    /// The try this request counts as in flight on (until the record drops,
    /// or the next try).
    pub flight: Option<InFlight>,
    /// The connection slot this request holds (pool limits).
    pub permit: Option<Permit>,
    /// What the access log needs of the head (captured only when logging).
    pub head: LogHead,
    /// The peer's address as text, made once per request (not kept on the
    /// connection, whose idle state it would widen).
    pub peer: IpText,
    /// The client a trusted proxy reported, when it is not the peer.
    pub client: Option<IpText>,
    /// What an upstream's `101` must say, when the request asks to upgrade.
    pub upgrade: Option<UpgradeExpect>,
    /// The time spent waiting for the request body, against its deadline.
    pub body_pace: Pace,
    /// The time spent blocked writing to the client, against its deadline.
    pub send_pace: Pace,
    /// What the request's spans say, when its trace is sampled and spans
    /// are exported.
    pub trace: Option<Box<crate::tracing::SpanRecord>>,
}

/// The protocol a request asked to switch to, and for a WebSocket the
/// `Sec-WebSocket-Accept` its `101` must carry.
#[derive(Clone, Copy)]
pub(crate) struct UpgradeExpect {
    protocol: [u8; 32],
    len: u8,
    pub accept: Option<[u8; 28]>,
}

impl UpgradeExpect {
    /// From the request's `Upgrade` value (its first protocol) and its
    /// `Sec-WebSocket-Key`, if any.
    pub(crate) fn new(upgrade: &[u8], key: Option<&[u8]>) -> UpgradeExpect {
        let first = upgrade
            .split(|&b| b == b',')
            .next()
            .unwrap_or(b"")
            .trim_ascii();
        let mut protocol = [0u8; 32];
        let len = first.len().min(32);
        protocol[..len].copy_from_slice(&first[..len]);
        let websocket = first.eq_ignore_ascii_case(b"websocket");
        UpgradeExpect {
            protocol,
            len: len as u8,
            accept: websocket.then(|| shardgate_http::websocket_accept(key.unwrap_or(b""))),
        }
    }

    /// Whether a `101` with these `Upgrade` and `Sec-WebSocket-Accept` values
    /// completes the handshake asked for.
    pub(crate) fn answered_by(&self, upgrade: &[u8], accept: Option<&[u8]>) -> bool {
        let asked = &self.protocol[..usize::from(self.len)];
        let to = upgrade
            .split(|&b| b == b',')
            .next()
            .unwrap_or(b"")
            .trim_ascii();
        to.eq_ignore_ascii_case(asked)
            && self
                .accept
                .is_none_or(|want| accept.is_some_and(|a| a.trim_ascii() == want))
    }
}

/// What the access log records instead of the request's own fields.
#[derive(Default, Clone, Copy)]
pub(crate) struct LogOverrides<'a> {
    pub path: Option<&'a [u8]>,
    pub request_id: Option<&'a [u8]>,
    pub trace_id: Option<&'a [u8]>,
}

/// Copies of request-head fields for the access log, bounded in size so
/// the record never allocates.
pub(crate) struct LogHead {
    buf: [u8; LogHead::CAP],
    /// End offsets of method, path, request id, trace id in `buf`.
    ends: [u16; 4],
}

impl LogHead {
    const CAP: usize = 448;
    const LIMITS: [usize; 4] = [16, 256, 128, 32];

    pub(crate) fn empty() -> LogHead {
        LogHead {
            buf: [0; LogHead::CAP],
            ends: [0; 4],
        }
    }

    /// Copies the request's fields; what the route's filters settled on
    /// (the path with an API key taken out of its query, the request and
    /// trace ids) wins over what came in.
    pub(crate) fn capture(
        &mut self,
        req: &shardgate_http::Request<'_, '_>,
        over: LogOverrides<'_>,
    ) {
        let mut incoming_id: &[u8] = b"";
        let mut incoming_trace: &[u8] = b"";
        for h in req.headers {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"x-request-id") {
                incoming_id = h.value;
            } else if name.eq_ignore_ascii_case(b"traceparent") && h.value.len() >= 35 {
                // version "-" trace-id "-" ...: the 32 hex digits of the trace id.
                incoming_trace = &h.value[3..35];
            }
        }
        let request_id = over.request_id.unwrap_or(incoming_id);
        let trace_id = over.trace_id.unwrap_or(incoming_trace);
        let path = over.path.unwrap_or(req.path);
        let mut at = 0;
        for (i, field) in [req.method.as_bytes(), path, request_id, trace_id]
            .into_iter()
            .enumerate()
        {
            let n = field.len().min(Self::LIMITS[i]);
            self.buf[at..at + n].copy_from_slice(&field[..n]);
            at += n;
            self.ends[i] = at as u16;
        }
    }

    fn field(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            usize::from(self.ends[i - 1])
        };
        &self.buf[start..usize::from(self.ends[i])]
    }

    pub(crate) fn method(&self) -> &[u8] {
        self.field(0)
    }

    pub(crate) fn path(&self) -> &[u8] {
        self.field(1)
    }

    pub(crate) fn request_id(&self) -> &[u8] {
        self.field(2)
    }

    pub(crate) fn trace_id(&self) -> &[u8] {
        self.field(3)
    }
}

/// A request on its way upstream; `w` holds the head to send.
#[derive(Clone, Copy)]
pub(crate) struct Forward {
    pub info: RequestInfo,
    pub group: usize,
    /// The endpoint's position in its group.
    pub index: usize,
    /// The consistent-hash key, when the group hashes.
    pub key: Option<u64>,
    /// The request body limit (the configuration's, or a smaller one of
    /// the route's filters).
    pub max_body: Option<u64>,
}

/// The client's IP address as text, formatted once per connection.
#[derive(Clone, Copy)]
pub(crate) struct IpText {
    buf: [u8; 45],
    len: u8,
}

impl IpText {
    pub(crate) fn new(ip: IpAddr) -> IpText {
        use std::io::Write;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let mut buf = [0u8; 45];
        let len = match ip {
            // By hand, as this runs for every request.
            IpAddr::V4(v4) => {
                let mut n = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        buf[n] = b'.';
                        n += 1;
                    }
                    if octet >= 100 {
                        buf[n] = b'0' + octet / 100;
                        n += 1;
                    }
                    if octet >= 10 {
                        buf[n] = b'0' + octet / 10 % 10;
                        n += 1;
                    }
                    buf[n] = b'0' + octet % 10;
                    n += 1;
                }
                n
            }
            IpAddr::V6(_) => {
                let mut cursor = &mut buf[..];
                let _ = write!(cursor, "{ip}");
                45 - cursor.len()
            }
        };
        IpText {
            buf,
            len: len as u8,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl std::fmt::Display for IpText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(self.as_bytes()).unwrap_or("?"))
    }
}

/// An upstream connection in use.
pub(crate) struct UpConn {
    pub stream: crate::stream::Transport,
    pub endpoint: EndpointId,
    /// Requests completed on it before this one.
    pub requests: u32,
}

/// A request sent and a response head received.
pub(crate) struct Exchanged {
    pub conn: UpConn,
    pub response: ResponsePlan,
}

/// What is left of the response body after the first write.
pub(crate) enum BodyLeft {
    Done,
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// How a response travels back.
pub(crate) struct ResponsePlan {
    pub status: u16,
    pub body: BodyLeft,
    /// Chunked upstream, plain (close-delimited) to an HTTP/1.0 client.
    pub dechunk: bool,
    /// The upstream connection may be pooled once the body is through.
    pub upstream_reusable: bool,
    /// The client connection stays open after this response.
    pub client_keep_alive: bool,
}

impl Record {
    /// The record of a request that starts now.
    pub(crate) fn new(peer: IpAddr) -> Record {
        Record {
            peer: IpText::new(peer),
            started: Instant::now(),
            route: None,
            method: metrics::METHODS.len() - 1,
            status: 0,
            head_request: None,
            upstream: None,
            upstream_time: None,
            bytes_in: 0,
            bytes_out: 0,
            upstream_conns: 0,
            admission: None,
            flight: None,
            permit: None,
            head: LogHead::empty(),
            client: None,
            upgrade: None,
            body_pace: Pace::default(),
            send_pace: Pace::default(),
            trace: None,
        }
    }
}

impl Drop for Record {
    /// The breaker learns how the request ended: no response sent
    /// (abandoned), a 5xx (failure), anything else (success).
    fn drop(&mut self) {
        if let Some(a) = self.admission.as_mut() {
            a.verdict = match self.status {
                0 => Verdict::Abandoned,
                500..=599 => Verdict::Failure,
                _ => Verdict::Success,
            };
        }
    }
}

/// A try in flight on one endpoint of a group: counted there (for
/// least-request and probation) until dropped.
pub(crate) struct InFlight {
    group: GroupState,
    index: usize,
}

impl InFlight {
    /// Starts a try on endpoint `index`, recording it in `tries`.
    pub(crate) fn begin(
        group: &GroupState,
        tries: &mut shardgate_upstream::retry::Tries,
        index: usize,
    ) -> InFlight {
        group.borrow_mut().begin_try(tries, index);
        InFlight {
            group: group.clone(),
            index,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.group.borrow_mut().end_try(self.index);
    }
}

/// A connection slot on one endpoint (pool limits), given back when dropped.
pub(crate) struct Permit {
    limits: Rc<Limits>,
    endpoint: EndpointId,
}

impl Permit {
    /// Holds the slot `limits` granted on `endpoint`.
    pub(crate) fn held(limits: &Rc<Limits>, endpoint: EndpointId) -> Permit {
        Permit {
            limits: limits.clone(),
            endpoint,
        }
    }

    pub(crate) fn endpoint(&self) -> EndpointId {
        self.endpoint
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limits.release(self.endpoint);
    }
}

/// The breaker's admission of a request, settled when dropped with the
/// verdict last set (abandoned unless the request's record says otherwise).
pub(crate) struct Admitted {
    group: GroupState,
    ticket: Option<Ticket>,
    verdict: Verdict,
    clock: Clock,
    shard: usize,
}

impl Admitted {
    pub(crate) fn new(group: &GroupState, ticket: Ticket, clock: Clock, shard: usize) -> Admitted {
        Admitted {
            group: group.clone(),
            ticket: Some(ticket),
            verdict: Verdict::Abandoned,
            clock,
            shard,
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take()
            && let Some(t) = self
                .group
                .borrow_mut()
                .settle(ticket, self.verdict, self.clock.now())
        {
            log::warn!("shard {}: {t}", self.shard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IpText;
    use std::net::IpAddr;

    /// The hand-written IPv4 text is what `Display` writes; an IPv4-mapped
    /// IPv6 address is written as IPv4.
    #[test]
    fn ip_text_matches_display() {
        for a in [
            "0.0.0.0",
            "1.2.3.4",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "10.200.7.65",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(IpText::new(ip).as_bytes(), a.as_bytes());
        }
        let mapped: IpAddr = "::ffff:192.168.0.9".parse().unwrap();
        assert_eq!(IpText::new(mapped).as_bytes(), b"192.168.0.9");
        let v6: IpAddr = "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(IpText::new(v6).to_string(), v6.to_string());
    }
}
