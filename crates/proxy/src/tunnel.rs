//! Two-way byte tunnel after a protocol switch (WebSocket). Waits for either
//! side to become readable before borrowing a buffer, so an idle tunnel holds
//! no buffer. When one side finishes sending, the other side's write half is
//! shut down and the tunnel carries on one way until that side finishes too.

use crate::io::{read_more, write_from};
use crate::shard::Shard;
use crate::stream::{Stream, Transport};
use std::rc::Rc;

pub(crate) async fn run(shard: Rc<Shard>, mut client: Transport, mut up: Transport) {
    let idle = shard.timeouts().idle;
    let mut client_open = true;
    let mut up_open = true;
    while client_open || up_open {
        let ready = async {
            monoio::select! {
                r = client.readable(), if client_open => r.map(|()| true),
                r = up.readable(), if up_open => r.map(|()| false),
            }
        };
        let from_client = match shard.timers.within(shard.timers.now() + idle, ready).await {
            Ok(Ok(side)) => side,
            _ => return,
        };
        let ok = if from_client {
            pass(&shard, &mut client, &mut up, &mut client_open).await
        } else {
            pass(&shard, &mut up, &mut client, &mut up_open).await
        };
        if !ok {
            return;
        }
    }
}

/// Moves what `src` has to `dst`; at its end, shuts `dst`'s sending side
/// and marks `src` closed. `false` when the tunnel breaks.
async fn pass<A: Stream, B: Stream>(
    shard: &Shard,
    src: &mut A,
    dst: &mut B,
    open: &mut bool,
) -> bool {
    let t = shard.timeouts();
    let buf = shard.buffers.take();
    let (r, buf) = read_more(&shard.timers, src, buf, shard.timers.now() + t.idle).await;
    let ok = match r {
        Ok(0) => {
            let _ = dst.shutdown().await;
            *open = false;
            true
        }
        Ok(_) => {
            let (w, buf) =
                write_from(&shard.timers, dst, buf, 0, shard.timers.now() + t.send).await;
            shard.buffers.give(buf);
            return w.is_ok();
        }
        Err(_) => false,
    };
    shard.buffers.give(buf);
    ok
}
