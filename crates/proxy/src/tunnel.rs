//! Two-way byte tunnel after a protocol switch (WebSocket). Waits for either
//! side to become readable before borrowing a buffer, so an idle tunnel holds
//! no buffer. When one side finishes sending, the other side's write half is
//! shut down and the tunnel carries on one way until that side finishes too.

use crate::io::{read_more, write_from};
use crate::shard::Shard;
use monoio::io::AsyncWriteRent;
use monoio::net::TcpStream;
use std::mem::take;
use std::rc::Rc;

pub(crate) async fn run(shard: Rc<Shard>, mut client: TcpStream, mut up: TcpStream) {
    let idle = shard.timeouts().idle;
    let send = shard.timeouts().send;
    let mut client_open = true;
    let mut up_open = true;
    while client_open || up_open {
        let ready = async {
            monoio::select! {
                r = client.readable(false), if client_open => r.map(|()| true),
                r = up.readable(false), if up_open => r.map(|()| false),
            }
        };
        let from_client = match shard.timers.within(shard.timers.now() + idle, ready).await {
            Ok(Ok(side)) => side,
            _ => return,
        };
        let (src, dst) = if from_client {
            (&mut client, &mut up)
        } else {
            (&mut up, &mut client)
        };
        let mut buf = shard.buffers.take();
        let deadline = shard.timers.now() + idle;
        let (r, b) = read_more(&shard.timers, src, take(&mut buf), deadline).await;
        buf = b;
        match r {
            Ok(0) => {
                let _ = dst.shutdown().await;
                if from_client {
                    client_open = false;
                } else {
                    up_open = false;
                }
            }
            Ok(_) => {
                let (w, b) =
                    write_from(&shard.timers, dst, buf, 0, shard.timers.now() + send).await;
                buf = b;
                if w.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
        shard.buffers.give(buf);
    }
}
