//! Named defaults for every knob. Each is what a setting is when the file
//! leaves it out; `configs/example.toml` lists them all.

use std::time::Duration;

/// Time a TLS handshake may take (`listeners[].tls.handshake_timeout`).
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Certificates expiring sooner than this are warned about by `shardgate check`.
pub const CERT_EXPIRY_WARNING_DAYS: i64 = 30;
/// Listen backlog (`listeners[].backlog`).
pub const BACKLOG: u32 = 4096;
/// Time to establish an upstream connection (`timeouts.connect`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for a client to send a complete request head (`timeouts.request_header`);
/// the slowloris defence.
pub const REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the upstream to send a complete response head, and the longest
/// gap between two reads of its body (`timeouts.upstream_response`).
pub const UPSTREAM_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle keep-alive client connection is kept (`timeouts.idle`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest gap between two reads of a request body (`timeouts.client_body`).
pub const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a client may spend sending a whole request body (`timeouts.request_body`),
/// extended by a second for each `limits.min_rate` bytes it sent: a client
/// trickling a byte every few seconds never trips `client_body` but is ended here.
pub const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a client that does not read may keep a response's writes waiting
/// (`timeouts.response_send`), extended by a second for each `limits.min_rate`
/// bytes sent; time spent waiting for the upstream does not count.
pub const RESPONSE_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// The average rate below which a body transfer is too slow (`limits.min_rate`),
/// in bytes a second; 0 turns the extensions off (the base times then bound
/// the whole transfer).
pub const MIN_RATE: u64 = 1024;
/// Request bodies up to this size are read whole before the upstream is
/// contacted (`limits.request_buffer`), so a slow client cannot hold an
/// upstream connection while it trickles one in; larger bodies stream.
pub const REQUEST_BUFFER: u64 = 64 * 1024;
/// Longest wait for a write to a client or upstream to progress (`timeouts.send`).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest request line (`limits.max_request_line`); 414 beyond.
pub const MAX_REQUEST_LINE: u64 = 8 * 1024;
/// Largest request head (`limits.max_head`); 431 beyond.
pub const MAX_HEAD: u64 = 16 * 1024;
/// Most request header fields (`limits.max_headers`); 431 beyond.
pub const MAX_HEADERS: u32 = 100;
/// Largest request body (`limits.max_body`); `0` means no limit; 413 beyond.
pub const MAX_BODY: u64 = 0;
/// Size of each I/O buffer a shard lends to a request (`limits.buffer_size`).
pub const BUFFER_SIZE: u64 = 16 * 1024;
/// Idle upstream connections kept per endpoint per shard (`pool.max_idle_per_endpoint`).
///
/// A cap, not a reservation: the pool only ever holds connections that
/// were opened for requests in flight at once, it hands out the freshest
/// first, and the ones a smaller load no longer reaches close after
/// `pool.idle_timeout`. So the idle pool follows demand by itself, and the
/// cap only has to be above any concurrency a shard serves; with a cap
/// below it (64 was the default once), every response beyond the cap
/// closes its connection and the next request opens one: 256 client
/// connections on one shard opened 52,000 upstream connections in 8 s.
pub const POOL_MAX_IDLE: u32 = 1024;
/// How long an idle upstream connection is kept (`pool.idle_timeout`).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Requests sent on one upstream connection before it is retired
/// (`pool.max_requests_per_connection`).
///
/// High enough that retiring is rare (at 200 requests a second a connection
/// lives over 8 minutes), low enough that no connection lives for ever.
pub const POOL_MAX_REQUESTS: u32 = 100_000;
/// How long a graceful shutdown waits for in-flight requests (`shutdown.drain_timeout`).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of access log a shard buffers before handing them to the writer (`access_log.buffer`).
pub const ACCESS_LOG_BUFFER: u64 = 64 * 1024;
/// Connections in use per endpoint per shard (`pool.max_connections_per_endpoint`); 0: no limit.
pub const POOL_MAX_CONNECTIONS: u32 = 0;
/// Requests waiting for a connection per endpoint per shard (`pool.max_waiting`).
pub const POOL_MAX_WAITING: u32 = 128;
/// How long a request waits for a connection before a 503 (`pool.wait_timeout`).
pub const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often endpoints given as host names are resolved again (`upstreams.NAME.dns_refresh`).
pub const DNS_REFRESH: Duration = Duration::from_secs(30);
/// How often a gateway exchanges fleet-limit demand with Redis.
pub const FLEET_SYNC: Duration = Duration::from_millis(100);

/// Spans per OTLP export request (the OpenTelemetry SDKs' default batch).
pub const TRACING_BATCH: usize = 512;
/// Longest a span waits in the gateway before it is exported.
pub const TRACING_INTERVAL: Duration = Duration::from_secs(5);
/// Spans waiting for export, gateway-wide, before new ones are dropped.
pub const TRACING_QUEUE: usize = 4096;
/// Time an OTLP export request may take.
pub const TRACING_TIMEOUT: Duration = Duration::from_secs(5);
