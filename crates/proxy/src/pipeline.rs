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
use crate::downstream::send_to_client;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::io::{IoFail, read_more};
use crate::metrics;
use crate::request::{Bufs, Client, Forward, IpText, LogOverrides, Next, Record, UpConn};
use crate::route::RouteId;
use crate::shard::Shard;
use crate::snapshot::Snapshot;
use crate::upstream;
use shardgate_config::{ForwardPath, Underscores};
use shardgate_filters::chain;
use shardgate_http::ParseError;
use shardgate_http::{
    BodyFraming, ForwardContext, GatewayResponse, HeadEdits, Target, canned_response,
    empty_headers, encode_request_head, gateway_response, parse_request,
};
use shardgate_router::Lookup;
use std::io::Write;
use std::mem::take;
use std::net::IpAddr;
use std::rc::Rc;

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
        rec: Record::new(client.addr),
    };
    let next = run(shard, &snap, client, &mut bufs).await;
    // The record's guards (in-flight count, pool slot, breaker admission)
    // give back what the request held when `bufs` drops at the end.
    let rec = &bufs.rec;
    for _ in 0..rec.upstream_conns {
        shard.stats.upstream_active.decr();
    }
    if rec.status != 0 {
        let m = rec
            .route
            .map_or(&snap.no_route_metrics, |r| &snap.route_metrics[r]);
        m.record(rec.method, rec.status, rec.started.elapsed());
        if let Some(log) = &shard.log {
            let route = rec.route.map_or("", |r| snap.route_names[r].as_str());
            let tenant = rec.route.map_or("", |r| snap.tenant_of(r));
            let ip = rec.client.as_ref().unwrap_or(&rec.peer);
            log.append(rec, ip, tenant, route, &shard.pools);
        }
        if let (Some(span), Some(traces)) = (&rec.trace, &shard.traces) {
            let names = crate::tracing::Names {
                route: rec.route.map_or("", |r| snap.route_names[r].as_str()),
                tenant: rec.route.map_or("", |r| snap.tenant_of(r)),
                group: span
                    .group
                    .and_then(|g| snap.groups.get(g))
                    .map_or("", |g| g.name.as_str()),
            };
            traces.append(span, rec.status, &names);
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
            if let Some(plan) = prepare(shard, snap, client, b)? {
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
            Err(IoFail::Io(c)) => {
                return Err(ProxyError::new(ErrorKind::ClientGone).because(Some(c)));
            }
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
    client: &Client,
    b: &mut Bufs,
) -> Result<Option<Plan>, ProxyError> {
    let ip = b.rec.peer;
    let mut headers = empty_headers();
    let req = match parse_request(&b.c, &mut headers, &snap.http_limits) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(e) => return Err(ProxyError::new(ErrorKind::BadRequest(e))),
    };
    let listener = snap.listeners.get(usize::from(client.listener));
    let underscores = listener.map_or(Underscores::Drop, |l| l.underscores);
    if underscores == Underscores::Reject && req.headers.iter().any(|h| h.name.contains('_')) {
        return Err(ProxyError::new(ErrorKind::BadRequest(
            ParseError::BadHeaderName,
        )));
    }
    if req.info.upgrade {
        let key = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
            .map(|h| h.value);
        b.rec.upgrade = Some(crate::request::UpgradeExpect::new(req.upgrade, key));
    }
    // Behind a trusted proxy the client is who it says; otherwise the peer.
    let trusted_peer = snap.trusted_proxies.iter().any(|c| c.contains(client.addr));
    let client_addr = if trusted_peer {
        let said = forwarded_client(&req, &snap.trusted_proxies).unwrap_or(client.addr);
        if said != client.addr {
            b.rec.client = Some(IpText::new(said));
        }
        said
    } else {
        client.addr
    };
    let info = req.info;
    if let Some(sampler) = snap.sampler {
        let incoming = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("traceparent"))
            .map(|h| h.value);
        let hop = shardgate_filters::traceparent::next_hop_with(
            incoming,
            shard.ids.borrow_mut().rng(),
            |id| sampler.sample(id),
        );
        b.rec.trace = span_record(&hop, &req, client, client_addr, ip);
    }
    b.rec.method = metrics::method_index(req.method.as_bytes());
    b.rec.bytes_in = info.head_len as u64;
    let has_body = info.body != BodyFraming::None;
    let head_only = info.method == shardgate_http::Method::Head;
    b.rec.head_request = Some(head_only);
    let close = !info.keep_alive || has_body || shard.drain.is_on();
    let logging = shard.log.is_some();
    let mut edits = shard.edits.borrow_mut();
    let edits = &mut *edits;
    // Secrets in the query never reach the log, whatever becomes of the
    // request (refused, unrouted, or proxied).
    let secrets = &snap.query_secrets;
    let keyless = logging
        && !secrets.is_empty()
        && shardgate_filters::api_key::strip_query_params(
            req.path,
            |name| secrets.iter().any(|s| **s == *name),
            &mut edits.log,
        );
    let log_path = keyless.then_some(edits.log.as_slice());
    if logging {
        let over = LogOverrides {
            path: log_path,
            ..LogOverrides::default()
        };
        b.rec.head.capture(&req, over);
    }
    let respond = |status: u16, extra: &[(&str, &[u8])], w: &mut Vec<u8>| {
        canned_response(status, close, head_only, extra, w);
        Ok(Some(Plan::Respond {
            status,
            close,
            head_len: info.head_len,
        }))
    };
    if let Some(port) = listener.and_then(|l| l.redirect_to_https) {
        // The same host (without its port) and target, over https.
        let host = match req.host.iter().rposition(|&c| c == b':') {
            Some(i)
                if req.host[i + 1..].iter().all(u8::is_ascii_digit)
                    && !req.host.ends_with(b"]") =>
            {
                &req.host[..i]
            }
            _ => req.host,
        };
        if host.is_empty() {
            return Err(ProxyError::new(ErrorKind::BadRequest(ParseError::BadHost)));
        }
        let mut location = [0u8; 512];
        let len = {
            let mut cursor = &mut location[..];
            let _ = cursor.write_all(b"https://");
            let _ = cursor.write_all(host);
            if port != 443 {
                let _ = write!(cursor, ":{port}");
            }
            let _ = cursor.write_all(req.path);
            512 - cursor.len()
        };
        if len == location.len() {
            return Err(ProxyError::new(ErrorKind::BadRequest(
                ParseError::RequestLineTooLong,
            )));
        }
        return respond(308, &[("Location", &location[..len])], &mut b.w);
    }
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
    let paths = listener.map(|l| l.paths).unwrap_or_default();
    let bad_target = || ProxyError::new(ErrorKind::BadRequest(ParseError::BadRequestLine));
    let target: &[u8] = match shardgate_router::normalize_path_with(req.path, &mut scratch, &paths)
    {
        Ok(shardgate_router::Normalized::Unchanged) => req.path,
        Ok(shardgate_router::Normalized::Rewritten) => &scratch,
        Err(_) => return Err(bad_target()),
    };
    // Forwarded as received, the target must mean what was routed.
    let as_received = listener.is_some_and(|l| l.forward_path == ForwardPath::AsReceived);
    if as_received
        && target.as_ptr() != req.path.as_ptr()
        && !shardgate_router::differs_only_in_spelling(
            shardgate_router::split_query(req.path).0,
            shardgate_router::split_query(target).0,
        )
    {
        return Err(bad_target());
    }
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
            answered(&mut b.rec, "router", "no route takes this method");
            return respond(405, &[("Allow", &text[..len])], &mut b.w);
        }
        Lookup::NotFound => {
            answered(&mut b.rec, "router", "no route matches");
            return respond(404, &[], &mut b.w);
        }
    };
    let route = *found.value;
    b.rec.route = Some(route);

    // The route's filters: they may answer here, and say what to change in
    // the head sent upstream and in the response.
    let chain = &snap.chains[route];
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
            quotas: &snap.quotas,
            ids: &mut ids,
            upstream: &mut edits.upstream,
            response: &mut b.x,
            path: &mut edits.path,
            rewritten: false,
            request_id: ([0; 128], 0),
            trace: None,
            sampler: snap.sampler,
            consumer: shardgate_filters::global_rate::RateKey::of(b""),
            consumer_name: ([0; 64], 0),
            answered_by: "",
            rate: None,
            secrets,
            client_cert: client.stream.client_subject().unwrap_or_default(),
        };
        let flow = chain.on_request(&mut cx);
        rewritten = cx.rewritten;
        let (id, hop) = (cx.request_id, cx.trace);
        let trace = hop.map(|h| {
            let mut hex = [0u8; 32];
            shardgate_filters::request_id::hex_into(&h.outgoing.trace_id, &mut hex);
            hex
        });
        if logging && (id.1 > 0 || trace.is_some()) {
            let over = LogOverrides {
                path: log_path,
                request_id: (id.1 > 0).then(|| &id.0[..usize::from(id.1)]),
                trace_id: trace.as_ref().map(|t| t.as_slice()),
            };
            b.rec.head.capture(&req, over);
        }
        // The trace-context filter's hop is the one carried upstream: the
        // span takes its ids and its sampling.
        if snap.sampler.is_some()
            && let Some(hop) = hop
        {
            match &mut b.rec.trace {
                Some(span) if hop.sampled() => span.take_ids(&hop),
                _ => b.rec.trace = span_record(&hop, &req, client, client_addr, ip),
            }
        }
        if let Some(span) = &mut b.rec.trace {
            let (name, len) = cx.consumer_name;
            if len > 0 {
                span.set_consumer(&name[..usize::from(len)]);
            }
        }
        let answered_by = cx.answered_by;
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
            answered(
                &mut b.rec,
                answered_by,
                shardgate_http::Canned::for_status(status).reason,
            );
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
    // A group whose every endpoint comes from etcd registrations may have none yet.
    if snap.groups[group].endpoints.is_empty() {
        answered(&mut b.rec, "proxy", "the upstream group has no endpoints");
        return respond(503, &[("Retry-After", b"1")], &mut b.w);
    }
    if let Some(span) = &mut b.rec.trace {
        span.group = Some(group);
    }
    let key = hash_key(&snap.groups[group], &req, client_addr);
    let index = snap.groups[group]
        .state
        .borrow_mut()
        .pick(key, shard.timers.now(), &[]);
    let endpoint = snap.groups[group].endpoints[index];
    let forward_path = if rewritten {
        Some(edits.path.as_slice())
    } else {
        (!as_received && target.as_ptr() != req.path.as_ptr()).then_some(target)
    };
    shard.pools.with_host(endpoint, |fallback_host| {
        let ctx = ForwardContext {
            client_ip: ip.as_bytes(),
            keep_forwarded_for: trusted_peer,
            drop_underscored: underscores == Underscores::Drop,
            proto: if client.stream.is_tls() {
                b"https"
            } else {
                b"http"
            },
            path: forward_path,
            fallback_host,
            edits: HeadEdits {
                drop: chain.request_drop(),
                add: &edits.upstream,
            },
            identity: listener
                .and_then(|l| l.tls.as_ref())
                .and_then(|t| t.client_subject_header.as_deref())
                .map(|name| (name.as_bytes(), client.stream.client_subject())),
        };
        encode_request_head(&req, &ctx, &mut b.w);
    });
    if let Some(span) = &mut b.rec.trace {
        span.traceparent_at = crate::tracing::traceparent_offset(&b.w);
    }
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

/// The spans' record of a request whose trace `hop` is sampled.
fn span_record(
    hop: &shardgate_filters::traceparent::Hop,
    req: &shardgate_http::Request<'_, '_>,
    client: &Client,
    client_addr: IpAddr,
    peer: IpText,
) -> Option<Box<crate::tracing::SpanRecord>> {
    if !hop.sampled() {
        return None;
    }
    let facts = crate::tracing::RequestFacts {
        method: req.method,
        path: shardgate_router::split_query(req.path).0,
        host: req.host,
        scheme: if client.stream.is_tls() {
            "https"
        } else {
            "http"
        },
        client: (client_addr != client.addr).then(|| IpText::new(client_addr)),
        peer,
    };
    Some(crate::tracing::SpanRecord::new(hop, facts))
}

/// The gateway answered the request itself: the span says who and why.
fn answered(rec: &mut Record, by: &'static str, why: &'static str) {
    if let Some(span) = &mut rec.trace {
        span.answer = Some((by, why.into()));
    }
}

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
        Side::Client => log::debug!("shard {}: {} from {}: {status}", shard.id, e, client.addr),
        Side::Upstream => shard.log_limited(|| format!("{e}: answering {status}")),
    }
    shard.stats.record_status(status);
    b.rec.status = status;
    if let Some(span) = &mut b.rec.trace {
        span.answer = Some(("proxy", e.to_string().into()));
    }
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

/// Before closing on a client that may still be sending (an unread body),
/// stop writing and drain what it sends for a short while, so the kernel
/// does not answer its data with a reset that destroys our response.
async fn linger(shard: &Shard, client: &mut Client) {
    const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
    const LINGER_BYTES: usize = 1 << 20;
    let _ = crate::stream::Stream::shutdown(&mut client.stream).await;
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

/// The client a trusted proxy reported: walking `X-Forwarded-For` from the
/// right (the entry the nearest proxy wrote), the first address that is not a
/// trusted proxy itself; the leftmost when every one is. An entry that is not
/// an address breaks the chain there: the last trusted proxy before it is the
/// client as far as anyone can tell. `None` without a usable entry.
fn forwarded_client(
    req: &shardgate_http::Request<'_, '_>,
    trusted: &[shardgate_filters::cidr::Cidr],
) -> Option<IpAddr> {
    let mut last = None;
    for h in req.headers.iter().rev() {
        if !h.name.eq_ignore_ascii_case("x-forwarded-for") {
            continue;
        }
        for item in h.value.rsplit(|&b| b == b',') {
            let parsed = std::str::from_utf8(item.trim_ascii()).map(str::parse::<IpAddr>);
            let Ok(Ok(addr)) = parsed else {
                return last;
            };
            if !trusted.iter().any(|c| c.contains(addr)) {
                return Some(addr);
            }
            last = Some(addr);
        }
    }
    last
}

/// Phase 5: a finished upstream connection goes back to its pool unless it
/// has served its share of requests.
fn release(shard: &Shard, snap: &Snapshot, mut conn: UpConn) {
    // A TLS session holding bytes past the response belongs to no request;
    // one that holds none gives its record buffers back while it waits.
    if conn.stream.idle_socket().is_none() {
        return;
    }
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
