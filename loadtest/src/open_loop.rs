//! Open loop: each connection sends on a fixed schedule (see [`crate::schedule`]) whatever the
//! server does, and latency counts from the scheduled time (coordinated-omission correction).

use std::rc::Rc;
use std::time::Instant;

use crate::client::Conn;
use crate::load::WorkerCtx;
use crate::schedule::{Schedule, latency, latency_origin, wake_time};
use crate::stats::ErrorKind;

/// Drives one connection slot on its schedule until the run stops.
pub async fn connection(ctx: Rc<WorkerCtx>, slot: u64) {
    let rate = ctx.rate.unwrap_or(1.0);
    let mut schedule = Schedule::new(ctx.start, rate, ctx.total_connections, slot);
    let mut req = ctx.request.clone();
    let mut buf = Vec::new();
    loop {
        let mut conn = match ctx.connect(buf).await {
            Ok(c) => c,
            Err(_) => return, // the run stopped
        };
        let finished = requests(&ctx, &mut conn, &mut req, &mut schedule).await;
        ctx.bytes(conn.bytes_read);
        buf = conn.into_buf();
        if req.is_empty() {
            req = ctx.request.clone();
        }
        if finished {
            return;
        }
    }
}

/// Sends on schedule until the connection is lost (false) or the schedule is done (true).
async fn requests(
    ctx: &WorkerCtx,
    conn: &mut Conn,
    req: &mut Vec<u8>,
    schedule: &mut Schedule,
) -> bool {
    // The connection is free from now on (a reconnect counts as busy time).
    let mut free_at = Instant::now();
    loop {
        let planned = schedule.next_send();
        if planned >= ctx.deadline || ctx.stopped(Instant::now()) {
            return true;
        }
        let wake = wake_time(planned);
        if Instant::now() < wake {
            monoio::time::sleep_until(monoio::time::Instant::from_std(wake)).await;
        }
        let measured = planned >= ctx.measure_start;
        if ctx.take(1, measured) == 0 {
            return true;
        }
        let sent = Instant::now();
        let origin = latency_origin(planned, sent, free_at);
        let exchange = async {
            conn.write(req, ctx.request_len).await?;
            conn.read_response().await
        };
        match monoio::time::timeout(ctx.timeout, exchange).await {
            Ok(Ok(resp)) => {
                let done = Instant::now();
                free_at = done;
                ctx.response(
                    measured,
                    resp.status,
                    latency(origin, done),
                    Some((done - sent, sent.saturating_duration_since(planned))),
                    done,
                );
                if !resp.keep_alive {
                    return false;
                }
            }
            Ok(Err(kind)) => {
                ctx.error(kind);
                return false;
            }
            Err(_) => {
                ctx.error(ErrorKind::Timeout);
                return false;
            }
        }
    }
}
