"""A gRPC server and client for Shardgate's tests (Debian's python3-grpcio).

Messages are raw bytes (no protobuf): the method handlers are generic.

  peer.py server PORT            serve test.Echo (and the same methods under other
                                 service names) on 127.0.0.1:PORT; prints "ready"
  peer.py client HOST:PORT       run every case through the gateway at HOST:PORT and
                                 print one line per case: "<case> <result>"
"""
import os
import sys
import threading
import time
from concurrent import futures

import grpc

BIG = 1 << 20  # bytes per message of the large stream
BIG_COUNT = 24


def unary(request, context):
    if request == b"fail":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if request == b"slow":
        time.sleep(2)
    context.set_trailing_metadata((("x-trailer", "yes"),))
    return b"echo:" + request


def count(request, context):
    if request == b"big":
        for _ in range(BIG_COUNT):
            yield b"b" * BIG
        return
    for i in range(int(request)):
        yield b"m%d" % i


def forever(request, context):
    """Streams until the call is cancelled; then writes $GRPC_CANCEL_MARK."""
    mark = os.environ.get("GRPC_CANCEL_MARK")

    def on_done():
        if mark and not context.is_active():
            with open(mark, "w") as f:
                f.write("cancelled\n")

    context.add_callback(on_done)
    i = 0
    while context.is_active():
        yield b"f%d" % i
        i += 1
        time.sleep(0.02)


def wait(request, context):
    """Answers after 5 s, unless the call is cancelled first: then writes
    $GRPC_CANCEL_MARK.unary."""
    for _ in range(250):
        if not context.is_active():
            mark = os.environ.get("GRPC_CANCEL_MARK")
            if mark:
                with open(mark + ".unary", "w") as f:
                    f.write("cancelled\n")
            return b""
        time.sleep(0.02)
    return b"waited"


def chat(requests, context):
    for r in requests:
        yield b"re:" + r


def serve(port):
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Forever": grpc.unary_stream_rpc_method_handler(forever),
        "Wait": grpc.unary_unary_rpc_method_handler(wait),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    for service in ("test.Echo", "test.Locked", "test.Limited"):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_insecure_port("127.0.0.1:%d" % port)
    server.start()
    print("ready", flush=True)
    # Stops when the test kills it, or when its stdin closes.
    sys.stdin.read()
    server.stop(0)


def status_of(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as e:
        return "%s %s" % (e.code().name, e.details())


def client(target):
    ch = grpc.insecure_channel(target)
    unary_call = ch.unary_unary("/test.Echo/Unary")
    resp, call = unary_call.with_call(b"hi", timeout=10)
    trailer = dict(call.trailing_metadata()).get("x-trailer", "-")
    print("unary", resp.decode(), "trailer=" + trailer, flush=True)
    print("error", status_of(lambda: unary_call(b"fail", timeout=10)), flush=True)
    print("deadline", status_of(lambda: unary_call(b"slow", timeout=0.5)), flush=True)

    count_call = ch.unary_stream("/test.Echo/Count")
    got = list(count_call(b"1000", timeout=10))
    print("stream", len(got), got[0].decode(), got[-1].decode(), flush=True)

    # Many tiny messages that pile up while the client waits: small DATA frames the
    # gateway buffers from its upstream, which h2's default budget would take for a flood.
    tiny = count_call(b"5000", timeout=20)
    time.sleep(0.5)
    print("tiny", sum(1 for _ in tiny), flush=True)

    # A large stream read slowly: the gateway must hold back rather than buffer it all.
    total = 0
    for m in count_call(b"big", timeout=60):
        total += len(m)
        time.sleep(0.05)
    print("big", total, flush=True)

    chat_call = ch.stream_stream("/test.Echo/Chat")
    replies = [r.decode() for r in chat_call(iter([b"a%d" % i for i in range(100)]), timeout=10)]
    ok = replies == ["re:a%d" % i for i in range(100)]
    print("bidi", len(replies), "in-order" if ok else "OUT-OF-ORDER", flush=True)

    # The client cancels a stream midway: the reset goes through to the server.
    forever_call = ch.unary_stream("/test.Echo/Forever")(b"", timeout=30)
    seen = [next(forever_call) for _ in range(3)]
    forever_call.cancel()
    print("cancel", len(seen), flush=True)

    # The client cancels a unary call the server is still thinking about.
    # The connection stays open meanwhile, and the server must see the cancel within
    # 0.4 s: before the gateway's own upstream timeout (1 s in the test) would reset it.
    waiting = ch.unary_unary("/test.Echo/Wait").future(b"", timeout=30)
    time.sleep(0.3)
    cancelled = waiting.cancel()
    mark = os.environ.get("GRPC_CANCEL_MARK", "") + ".unary"
    deadline = time.time() + 0.4
    while not os.path.exists(mark) and time.time() < deadline:
        time.sleep(0.02)
    seen = "seen" if os.path.exists(mark) else "not-seen"
    print("cancel_unary", cancelled, seen, flush=True)

    print("unauthenticated", status_of(lambda: ch.unary_unary("/test.Locked/Unary")(b"x", timeout=10)), flush=True)
    limited = ch.unary_unary("/test.Limited/Unary")
    status_of(lambda: limited(b"x", timeout=10))
    print("exhausted", status_of(lambda: limited(b"x", timeout=10)), flush=True)
    print("unimplemented", status_of(lambda: ch.unary_unary("/other.Svc/Unary")(b"x", timeout=10)), flush=True)
    print("unavailable", status_of(lambda: ch.unary_unary("/test.Dead/Unary")(b"x", timeout=10)), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        client(sys.argv[2])
