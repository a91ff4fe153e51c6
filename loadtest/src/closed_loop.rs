//! Closed loop: each connection sends its next request (or batch of `--pipeline` requests) as
//! soon as the previous responses are in. Latency runs from the write to each response.

use std::rc::Rc;
use std::time::Instant;

use crate::client::Conn;
use crate::load::WorkerCtx;
use crate::stats::ErrorKind;

/// Drives one connection slot until the run stops, reconnecting after errors.
pub async fn connection(ctx: Rc<WorkerCtx>, _slot: u64) {
    let mut req = ctx.request.clone();
    let mut buf = Vec::new();
    loop {
        let mut conn = match ctx.connect(buf).await {
            Ok(c) => c,
            Err(_) => return, // the run stopped
        };
        requests(&ctx, &mut conn, &mut req).await;
        ctx.bytes(conn.bytes_read);
        buf = conn.into_buf();
        if req.is_empty() {
            // A timed-out write kept the buffer.
            req = ctx.request.clone();
        }
    }
}

/// Sends batches on one connection until it closes, fails or the run stops.
async fn requests(ctx: &WorkerCtx, conn: &mut Conn, req: &mut Vec<u8>) {
    loop {
        let sent = Instant::now();
        if ctx.stopped(sent) {
            return;
        }
        let measured = sent >= ctx.measure_start;
        let n = ctx.take(u64::from(ctx.pipeline), measured);
        if n == 0 {
            return;
        }
        match monoio::time::timeout(ctx.timeout, batch(ctx, conn, req, n, sent, measured)).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return,
            Ok(Err(kind)) => {
                ctx.error(kind);
                return;
            }
            Err(_) => {
                ctx.error(ErrorKind::Timeout);
                return;
            }
        }
    }
}

/// Writes `n` requests in one write and reads their responses. Ok(false): the server closes.
async fn batch(
    ctx: &WorkerCtx,
    conn: &mut Conn,
    req: &mut Vec<u8>,
    n: u64,
    sent: Instant,
    measured: bool,
) -> Result<bool, ErrorKind> {
    conn.write(req, ctx.request_len * n as usize).await?;
    for i in 0..n {
        let resp = conn.read_response().await?;
        let done = Instant::now();
        ctx.response(measured, resp.status, done - sent, None, done);
        if !resp.keep_alive {
            if i + 1 < n {
                // The rest of the batch will never be answered.
                return Err(ErrorKind::Eof);
            }
            return Ok(false);
        }
    }
    Ok(true)
}
