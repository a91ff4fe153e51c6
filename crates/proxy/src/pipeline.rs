//! The request path, phase by phase. [`handle`] is the whole story of one
//! request on a client connection; each phase below it is a function here or
//! in a sibling module:
//!
//! 1. [`read_head`]: read until the head is complete (request-header timeout).
//! 2. [`prepare`]: parse and validate it, route it, pick an endpoint, and
//!    write the head to forward (hop-by-hop removed, `X-Forwarded-*` added).
//! 3. [`upstream::exchange`]: check out or connect an upstream connection,
//!    send the head and body, read the response head (one retry when a pooled
//!    connection turns out dead, or a connect fails).
//! 4. [`downstream::relay`]: rewrite the response head and stream the
//!    response body back.
//! 5. Give the upstream connection back to the pool and decide whether the
//!    client connection lives on.

use crate::downstream;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::io::{IoFail, read_more, write_from};
use crate::metrics;
use crate::pool::EndpointId;
use crate::route::RouteId;
use crate::shard::Shard;
use crate::snapshot::Snapshot;
use crate::upstream::{self, UpConn};
use monoio::net::TcpStream;
use shardgate_filters::chain;
use shardgate_http::ParseError;
use shardgate_http::{
    BodyFraming, ForwardContext, GatewayResponse, HeadEdits, RequestInfo, Target, canned_response,
    empty_headers, encode_request_head, gateway_response, parse_request,
};
use shardgate_router::Lookup;
use std::io::Write;
use std::mem::take;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The client side of a connection.
pub(crate) struct Client {
    pub stream: TcpStream,
    pub addr: IpAddr,
    pub ip: IpText,
}

/// What the connection does after a request.
pub(crate) enum Next {
    /// Serve the next request; the buffer holds bytes already read.
    KeepAlive(Vec<u8>),
    Close,
    /// The upstream switched protocols: tunnel bytes both ways.
    Upgrade(TcpStream),
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
    /// The circuit breaker's admission, recorded with the outcome at the end.
    pub ticket: Option<shardgate_upstream::Ticket>,
    /// (group, endpoint position) this request counts as in flight on.
    pub flight: Option<(usize, usize)>,
    /// The upstream group the request went to.
    pub group: Option<usize>,
    /// The endpoint whose connection slot this request holds (pool limits).
    pub permit: Option<EndpointId>,
    /// What the access log needs of the head (captured only when logging).
    pub head: LogHead,
}

/// What the access log records instead of the request's own fields.
#[derive(Default, Clone, Copy)]
struct LogOverrides<'a> {
    path: Option<&'a [u8]>,
    request_id: Option<&'a [u8]>,
    trace_id: Option<&'a [u8]>,
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

    fn empty() -> LogHead {
        LogHead {
            buf: [0; LogHead::CAP],
            ends: [0; 4],
        }
    }

    /// Copies the request's fields; what the route's filters settled on
    /// (the path with an API key taken out of its query, the request and
    /// trace ids) wins over what came in.
    fn capture(&mut self, req: &shardgate_http::Request<'_, '_>, over: LogOverrides<'_>) {
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

/// What to do with a parsed request.
pub(crate) enum Plan {
    /// `w` holds a complete response from the gateway itself.
    Respond {
        status: u16,
        close: bool,
        head_len: usize,
    },
    Forward(Forward),
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

/// Serves one request whose first bytes may already be in `c`. Owns its
/// arguments (and hands the client back) so the connection can keep this
/// future in a reused heap slot instead of inline in its own task.
pub(crate) async fn handle(shard: Rc<Shard>, mut client: Client, c: Vec<u8>) -> (Client, Next) {
    let next = handle_inner(&shard, &mut client, c).await;
    (client, next)
}

async fn handle_inner(shard: &Shard, client: &mut Client, c: Vec<u8>) -> Next {
    let snap = shard.snapshot();
    let mut bufs = Bufs {
        c,
        u: Vec::new(),
        w: shard.buffers.take(),
        x: Vec::new(),
        rec: Record {
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
            ticket: None,
            flight: None,
            group: None,
            permit: None,
            head: LogHead::empty(),
        },
    };
    let next = run(shard, &snap, client, &mut bufs).await;
    let rec = &mut bufs.rec;
    for _ in 0..rec.upstream_conns {
        shard.stats.upstream_active.decr();
    }
    if let Some((g, i)) = rec.flight.take() {
        snap.groups[g].in_flight(i, -1);
    }
    if let Some(ep) = rec.permit.take() {
        shard.limits.release(ep);
    }
    if let (Some(ticket), Some(g)) = (rec.ticket.take(), rec.group)
        && let Some(breaker) = &snap.groups[g].breaker
    {
        use shardgate_upstream::Verdict;
        let verdict = match rec.status {
            0 => Verdict::Abandoned,
            500..=599 => Verdict::Failure,
            _ => Verdict::Success,
        };
        if let Some(t) = breaker
            .borrow_mut()
            .record(ticket, verdict, shard.timers.now())
        {
            log::warn!("shard {}: {t}", shard.id);
        }
    }
    let rec = &bufs.rec;
    if rec.status != 0 {
        let m = rec
            .route
            .map_or(&snap.no_route_metrics, |r| &snap.route_metrics[r]);
        m.record(rec.method, rec.status, rec.started.elapsed());
        if let Some(log) = &shard.log {
            let route = rec.route.map_or("", |r| snap.route_names[r].as_str());
            let tenant = rec.route.map_or("", |r| snap.tenant_of(r));
            log.append(rec, &client.ip, tenant, route, &shard.pools);
        }
    }
    shard.buffers.give(take(&mut bufs.u));
    shard.buffers.give(take(&mut bufs.w));
    if bufs.x.capacity() > 0 {
        shard.lines.give(take(&mut bufs.x));
    }
    match next {
        Next::KeepAlive(_) => Next::KeepAlive(take(&mut bufs.c)),
        other => {
            shard.buffers.give(take(&mut bufs.c));
            other
        }
    }
}

async fn run(shard: &Shard, snap: &Rc<Snapshot>, client: &mut Client, b: &mut Bufs) -> Next {
    // 1 + 2: the head, validated and routed.
    let plan = match read_head(shard, snap, client, b).await {
        Ok(Some(plan)) => plan,
        Ok(None) => return Next::Close,
        Err(e) => return respond_error(shard, snap, client, b, e, false).await,
    };
    shard.stats.requests.incr();
    let fwd = match plan {
        Plan::Respond {
            status,
            close,
            head_len,
        } => {
            shard.stats.record_status(status);
            b.rec.status = status;
            b.rec.bytes_out = b.w.len() as u64;
            let r = send_to_client(shard, snap, client, b).await;
            if r.is_err() || close {
                if r.is_ok() {
                    linger(shard, client).await;
                }
                return Next::Close;
            }
            b.c.drain(..head_len);
            return Next::KeepAlive(Vec::new());
        }
        Plan::Forward(f) => f,
    };

    // 3: upstream exchange.
    if b.u.capacity() == 0 {
        b.u = shard.buffers.take();
    }
    let mut ex = match upstream::exchange(shard, snap, client, b, fwd).await {
        Ok(ex) => ex,
        Err((e, body_done)) => {
            let keep = body_done && fwd.info.keep_alive;
            return respond_error(shard, snap, client, b, e, keep).await;
        }
    };

    // 4: the response, streamed back.
    if ex.response.status == 101 {
        return downstream::switch_protocols(shard, snap, client, b, ex).await;
    }
    let outcome = downstream::relay(shard, snap, client, b, &mut ex, fwd.info).await;
    shard.stats.record_status(ex.response.status);
    b.rec.status = ex.response.status;

    // 5: pool the upstream connection, keep or close the client.
    if outcome.upstream_reusable {
        release(shard, snap, ex.conn);
    }
    if outcome.client_keep_alive {
        Next::KeepAlive(Vec::new())
    } else {
        Next::Close
    }
}

/// Phase 1: reads until [`prepare`] has a complete head to act on.
/// `Ok(None)`: the client closed before sending anything.
async fn read_head(
    shard: &Shard,
    snap: &Snapshot,
    client: &mut Client,
    b: &mut Bufs,
) -> Result<Option<Plan>, ProxyError> {
    let deadline = shard.timers.now() + snap.timeouts.request_header;
    loop {
        if !b.c.is_empty() {
            note_head_request(&mut b.rec, &b.c);
            if let Some(plan) = prepare(shard, snap, &client.ip, client.addr, b)? {
                return Ok(Some(plan));
            }
            if b.c.len() == b.c.capacity() {
                return Err(ProxyError::new(ErrorKind::BadRequest(
                    shardgate_http::ParseError::HeadTooLarge,
                )));
            }
        }
        let started = !b.c.is_empty();
        let (r, c) = read_more(&shard.timers, &mut client.stream, take(&mut b.c), deadline).await;
        b.c = c;
        note_head_request(&mut b.rec, &b.c);
        match r {
            Ok(0) if !started => return Ok(None),
            Ok(0) => return Err(ProxyError::new(ErrorKind::ClientGone)),
            Ok(_) => {}
            // Nothing at all arrived: an idle connection, closed quietly.
            Err(IoFail::Timeout) if !started => return Ok(None),
            Err(IoFail::Timeout) => return Err(ProxyError::new(ErrorKind::ClientHeadTimeout)),
            Err(IoFail::Io) => return Err(ProxyError::new(ErrorKind::ClientGone)),
        }
    }
}

/// A head that never parses still says whether it is a HEAD once its
/// method has arrived (pipelined bytes included): the 400, 408 or 431 it
/// gets has no body then. [`prepare`] records the parsed method over this.
fn note_head_request(rec: &mut Record, c: &[u8]) {
    if rec.head_request.is_none() && c.len() >= 5 {
        rec.head_request = Some(c.starts_with(b"HEAD "));
    }
}

/// Phase 2: parse, validate, route, and write the outgoing head into `w`
/// (or a complete response when the gateway answers itself).
/// `Ok(None)`: the head is not complete yet.
fn prepare(
    shard: &Shard,
    snap: &Snapshot,
    ip: &IpText,
    client_addr: IpAddr,
    b: &mut Bufs,
) -> Result<Option<Plan>, ProxyError> {
    let mut headers = empty_headers();
    let req = match parse_request(&b.c, &mut headers, &snap.http_limits) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(e) => return Err(ProxyError::new(ErrorKind::BadRequest(e))),
    };
    let info = req.info;
    b.rec.method = metrics::method_index(req.method.as_bytes());
    b.rec.bytes_in = info.head_len as u64;
    let has_body = info.body != BodyFraming::None;
    let head_only = info.method == shardgate_http::Method::Head;
    b.rec.head_request = Some(head_only);
    let close = !info.keep_alive || has_body || shard.drain.is_on();
    let logging = shard.log.is_some();
    if logging {
        b.rec.head.capture(&req, LogOverrides::default());
    }
    let respond = |status: u16, extra: &[(&str, &[u8])], w: &mut Vec<u8>| {
        canned_response(status, close, head_only, extra, w);
        Ok(Some(Plan::Respond {
            status,
            close,
            head_len: info.head_len,
        }))
    };
    if info.target == Target::Asterisk {
        return respond(
            200,
            &[("Allow", b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH")],
            &mut b.w,
        );
    }
    // Route on the normal form of the path, and forward that same form, so
    // the upstream sees exactly what was routed (`/%61dmin`, `/a/../admin`
    // and `//admin` all become `/admin`).
    let mut scratch = shard.path_scratch.borrow_mut();
    scratch.clear();
    let target: &[u8] = match shardgate_router::normalize_path(req.path, &mut scratch) {
        Ok(shardgate_router::Normalized::Unchanged) => req.path,
        Ok(shardgate_router::Normalized::Rewritten) => &scratch,
        Err(_) => {
            return Err(ProxyError::new(ErrorKind::BadRequest(
                ParseError::BadRequestLine,
            )));
        }
    };
    let (path, _query) = shardgate_router::split_query(target);
    let lookup = match preflight_route(snap, &req, path) {
        Some(m) => Lookup::Found(m),
        None => snap.routes.lookup(req.host, req.method.as_bytes(), path),
    };
    let found = match lookup {
        Lookup::Found(m) => m,
        Lookup::MethodNotAllowed(allow) => {
            let mut text = [0u8; 256];
            let len = {
                let mut cursor = &mut text[..];
                let _ = write!(cursor, "{allow}");
                256 - cursor.len()
            };
            return respond(405, &[("Allow", &text[..len])], &mut b.w);
        }
        Lookup::NotFound => return respond(404, &[], &mut b.w),
    };
    let route = *found.value;
    b.rec.route = Some(route);

    // The route's filters: they may answer here, and say what to change in
    // the head sent upstream and in the response.
    let chain = &snap.chains[route];
    let mut edits = shard.edits.borrow_mut();
    let edits = &mut *edits;
    // The scratch is the shard's: what the last filtered request left in it
    // must never reach this one's upstream.
    edits.upstream.clear();
    let mut rewritten = false;
    if !chain.is_empty() {
        let mut params = [("", b"".as_slice()); MAX_PARAMS];
        let mut n = 0;
        for (slot, p) in params.iter_mut().zip(found.params.iter()) {
            *slot = p;
            n += 1;
        }
        if b.x.capacity() == 0 {
            b.x = shard.lines.take();
        }
        let mut ids = shard.ids.borrow_mut();
        let mut cx = chain::Cx {
            req: &req,
            target,
            params: &params[..n],
            client: client_addr,
            route: &snap.route_names[route],
            tenant: snap.tenant_of(route),
            now: shard.timers.now(),
            limiters: &snap.limiters,
            ids: &mut ids,
            upstream: &mut edits.upstream,
            response: &mut b.x,
            path: &mut edits.path,
            rewritten: false,
            request_id: ([0; 128], 0),
            trace_id: None,
            consumer: shardgate_filters::global_rate::RateKey::of(b""),
            rate: None,
        };
        let flow = chain.on_request(&mut cx);
        rewritten = cx.rewritten;
        let (id, trace) = (cx.request_id, cx.trace_id);
        let keyless = logging && chain.redact(req.path, &mut edits.log);
        if logging && (id.1 > 0 || trace.is_some() || keyless) {
            let over = LogOverrides {
                path: keyless.then_some(edits.log.as_slice()),
                request_id: (id.1 > 0).then(|| &id.0[..usize::from(id.1)]),
                trace_id: trace.as_ref().map(|t| t.as_slice()),
            };
            b.rec.head.capture(&req, over);
        }
        if let chain::Flow::Answer {
            status,
            body,
            rate_limited,
        } = flow
        {
            if rate_limited {
                let m = &snap.route_metrics[route].rate_limited;
                m.set(m.get() + 1);
            }
            b.w.clear();
            let answer = GatewayResponse {
                close,
                head: head_only,
                lines: &b.x,
                body,
            };
            gateway_response(status, answer, &mut b.w);
            return Ok(Some(Plan::Respond {
                status,
                close,
                head_len: info.head_len,
            }));
        }
    }

    let group = match &snap.route_split[route] {
        Some(split) => split
            .borrow_mut()
            .pick()
            .copied()
            .unwrap_or(snap.route_group[route]),
        None => snap.route_group[route],
    };
    b.rec.group = Some(group);
    let key = hash_key(&snap.groups[group], &req, client_addr);
    let index = snap.groups[group].pick(key, shard.timers.now(), &[]);
    let endpoint = snap.groups[group].endpoints[index];
    let forward_path = if rewritten {
        Some(edits.path.as_slice())
    } else {
        (target.as_ptr() != req.path.as_ptr()).then_some(target)
    };
    shard.pools.with_host(endpoint, |fallback_host| {
        let ctx = ForwardContext {
            client_ip: ip.as_bytes(),
            proto: b"http",
            path: forward_path,
            fallback_host,
            edits: HeadEdits {
                drop: chain.request_drop(),
                add: &edits.upstream,
            },
        };
        encode_request_head(&req, &ctx, &mut b.w);
    });
    let max_body = match (snap.limits.max_body, chain.max_body()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(Some(Plan::Forward(Forward {
        info,
        group,
        index,
        key,
        max_body,
    })))
}

/// Most route parameters handed to filters (path templates).
const MAX_PARAMS: usize = 16;

/// For a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`): the route the actual request would
/// take, if its filters answer preflights. Routing the preflight by its own
/// method would find routes that take `OPTIONS` (or none) instead.
fn preflight_route<'s, 'p>(
    snap: &'s Snapshot,
    req: &shardgate_http::Request<'_, '_>,
    path: &'p [u8],
) -> Option<shardgate_router::Match<'s, 'p, RouteId>> {
    if req.method.as_bytes() != b"OPTIONS" {
        return None;
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    header("origin")?;
    let wanted = header("access-control-request-method")?;
    match snap.routes.lookup(req.host, wanted, path) {
        Lookup::Found(m) if snap.chains[*m.value].answers_preflights() => Some(m),
        _ => None,
    }
}

/// The consistent-hash key of a request, for groups that hash: the client
/// address, a header's value, or a cookie's value (`None` when absent: the
/// request is balanced round robin).
fn hash_key(
    group: &crate::snapshot::Group,
    req: &shardgate_http::Request<'_, '_>,
    client: IpAddr,
) -> Option<u64> {
    use shardgate_common::hash::{hash_bytes, hash_ip};
    use shardgate_upstream::balance::HashKey;
    match group.hash_key.as_ref()? {
        HashKey::ClientIp => Some(hash_ip(client)),
        HashKey::Header(name) => req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| hash_bytes(h.value)),
        HashKey::Cookie(name) => req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .flat_map(|h| h.value.split(|&c| c == b';'))
            .find_map(|pair| {
                let pair = pair.trim_ascii();
                let (n, v) = pair.split_at(pair.iter().position(|&c| c == b'=')?);
                (n == name.as_bytes()).then(|| hash_bytes(&v[1..]))
            }),
    }
}

/// Answers a failed request with its canned status, if the client can still
/// take one. `keep`: the request was fully read and the client may go on.
pub(crate) async fn respond_error(
    shard: &Shard,
    snap: &Snapshot,
    client: &mut Client,
    b: &mut Bufs,
    e: ProxyError,
    keep: bool,
) -> Next {
    let Some(status) = e.status() else {
        return Next::Close;
    };
    match e.side() {
        Side::Client => log::debug!("shard {}: {} from {}: {status}", shard.id, e, client.ip),
        Side::Upstream => shard.log_limited(|| format!("{e}: answering {status}")),
    }
    shard.stats.record_status(status);
    b.rec.status = status;
    let keep = keep && e.side() == Side::Upstream;
    b.w.clear();
    if b.w.capacity() == 0 {
        b.w = shard.buffers.take();
    }
    let head = b.rec.head_request == Some(true);
    gateway_response(
        status,
        GatewayResponse {
            close: !keep,
            head,
            lines: &b.x,
            body: None,
        },
        &mut b.w,
    );
    b.rec.bytes_out = b.w.len() as u64;
    let r = send_to_client(shard, snap, client, b).await;
    if r.is_err() {
        return Next::Close;
    }
    if keep {
        return Next::KeepAlive(Vec::new());
    }
    linger(shard, client).await;
    Next::Close
}

/// Writes `w` to the client in full before the send deadline (and keeps
/// `w` for reuse).
pub(crate) async fn send_to_client(
    shard: &Shard,
    snap: &Snapshot,
    client: &mut Client,
    b: &mut Bufs,
) -> Result<(), IoFail> {
    let deadline = shard.timers.now() + snap.timeouts.send;
    let (r, w) = write_from(
        &shard.timers,
        &mut client.stream,
        take(&mut b.w),
        0,
        deadline,
    )
    .await;
    b.w = w;
    r
}

/// Before closing on a client that may still be sending (an unread body),
/// stop writing and drain what it sends for a short while, so the kernel
/// does not answer its data with a reset that destroys our response.
async fn linger(shard: &Shard, client: &mut Client) {
    use monoio::io::AsyncWriteRent;
    const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
    const LINGER_BYTES: usize = 1 << 20;
    let _ = client.stream.shutdown().await;
    let deadline = shard.timers.now() + LINGER;
    let mut buf = shard.buffers.take();
    let mut drained = 0;
    while drained < LINGER_BYTES {
        buf.clear();
        let (r, b) = read_more(&shard.timers, &mut client.stream, buf, deadline).await;
        buf = b;
        match r {
            Ok(n) if n > 0 => drained += n,
            _ => break,
        }
    }
    shard.buffers.give(buf);
}

/// Phase 5: a finished upstream connection goes back to its pool unless it
/// has served its share of requests.
fn release(shard: &Shard, snap: &Snapshot, conn: UpConn) {
    let requests = conn.requests + 1;
    if requests < snap.pool.max_requests_per_connection {
        shard.pools.checkin(
            conn.endpoint,
            conn.stream,
            requests,
            snap.pool.max_idle_per_endpoint,
            shard.timers.now(),
        );
    }
}

/// The client's IP address as text, formatted once per connection.
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
        let mut cursor = &mut buf[..];
        let _ = write!(cursor, "{ip}");
        let len = 45 - cursor.len();
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
