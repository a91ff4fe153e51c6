//! A client connection's life: wait (holding no buffer) until the client
//! sends something, serve requests until one of them closes the connection,
//! tunnel if the protocol switches.

use crate::pipeline::{self, Client, IpText, Next};
use crate::shard::Shard;
use crate::tunnel;
use monoio::net::TcpStream;
use std::mem::take;
use std::net::SocketAddr;
use std::rc::Rc;

pub(crate) async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    shard.stats.open_connections.incr();
    let mut client = Client {
        stream,
        ip: IpText::new(peer.ip()),
    };
    let mut carried = Vec::new();
    loop {
        let buf = if carried.is_empty() {
            // Idle: no buffer is held while waiting. Not "relaxed": on the
            // epoll driver a relaxed wait trusts readiness left over from the
            // last read and would pin a buffer on an idle connection.
            let idle = shard.snapshot.timeouts.idle;
            let deadline = std::time::Instant::now() + idle;
            match shard
                .timers
                .within(deadline, client.stream.readable(false))
                .await
            {
                Ok(Ok(())) => shard.buffers.take(),
                _ => break,
            }
        } else {
            take(&mut carried)
        };
        match pipeline::handle(&shard, &mut client, buf).await {
            Next::KeepAlive(rest) => {
                if rest.is_empty() {
                    shard.buffers.give(rest);
                } else {
                    carried = rest;
                }
            }
            Next::Close => break,
            Next::Upgrade(up) => {
                tunnel::run(&shard, client.stream, up).await;
                shard.stats.open_connections.decr();
                return;
            }
        }
    }
    shard.stats.open_connections.decr();
}
