#!/usr/bin/env bash
# HTTP/2 side by side with nginx 1.22 (`listen ... ssl http2`), with standard tools. One
# worker each pinned to CPU 0; the load generator and the backends on CPU 1. Three figures:
#   - CPU per request: `h2load -c CONNS -m STREAMS` over TLS 1.3 (the same ECDSA P-256
#     certificate) through each proxy to the same HTTP/1.1 nginx backend (a fixed 64-byte
#     answer), interleaved rounds of DURATION seconds; proxy CPU µs per request from
#     /proc/PID/stat;
#   - memory per idle HTTP/2 connection: RSS growth while HOLD connections (Python's ssl with
#     ALPN h2, each after one request) stay open, for each proxy;
#   - gRPC: unary calls a second with h2load (-c 8 -m 16, one 5-byte message per call) to a
#     Python gRPC server (Debian's python3-grpcio) directly, through Shardgate (h2c both
#     sides) and through nginx (`grpc_pass`), with each proxy's CPU per call.
#
#   scripts/h2-bench.sh
#
# Knobs: ROUNDS [3] DURATION [8] CONNS [64] STREAMS [10] HOLD [10000] BASE_PORT [18700]
#        ONLY=cpu|idle|grpc  one part only
#        SHARDGATE_BIN [target/release/shardgate]
# Loopback only; every process started here is stopped on exit. HOLD needs an open-file
# limit above it for each process.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-64}
STREAMS=${STREAMS:-10}
HOLD=${HOLD:-10000}
BASE_PORT=${BASE_PORT:-18700}
ONLY=${ONLY:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARDGATE=${SHARDGATE_BIN:-$ROOT/target/release/shardgate}

TAG=h2-bench
source "$ROOT/scripts/lib.sh"
for tool in h2load openssl python3 taskset; do
    command -v "$tool" >/dev/null || die "needs $tool"
done
NGINX=$(find_nginx)
[[ -x $SHARDGATE ]] || die "no shardgate binary at $SHARDGATE (cargo build --release -p shardgate)"
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

WORK=$(mktemp -d /tmp/shardgate-h2-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in "$WORK"/*.pid; do [[ -f $f ]] && kill "$(cat "$f" 2>/dev/null)" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

UP=$BASE_PORT
SG=$((BASE_PORT + 1))
NG=$((BASE_PORT + 2))
GRPC_UP=$((BASE_PORT + 3))
SG_GRPC=$((BASE_PORT + 4))
NG_GRPC=$((BASE_PORT + 5))
TCK=$(getconf CLK_TCK)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

cat >"$WORK/backend.conf" <<EOF
worker_processes 1; daemon off; error_log $WORK/backend.err; pid $WORK/backend.pid;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$UP; keepalive_requests 1000000;
  location / { return 200 "0123456789012345678901234567890123456789012345678901234567890123"; } } }
EOF
taskset -c 1 "$NGINX" -c "$WORK/backend.conf" -p "$WORK" &
PIDS+=($!)

cat >"$WORK/front.conf" <<EOF
worker_processes 1; daemon off; master_process off; error_log $WORK/front.err;
pid $WORK/front.pid; worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http { access_log off;
  upstream backend { server 127.0.0.1:$UP; keepalive 128; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NG ssl http2; ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem; ssl_protocols TLSv1.3; keepalive_requests 1000000;
    keepalive_timeout 300s;
    location / { proxy_pass http://backend; proxy_http_version 1.1;
      proxy_set_header Connection ""; } } }
EOF
cat >"$WORK/shardgate.toml" <<EOF
workers = 1
[[listeners]]
address = "127.0.0.1:$SG"
http2 = true
[listeners.tls]
certificates = [{ cert = "$WORK/cert.pem", key = "$WORK/key.pem" }]
[timeouts]
idle = "300s"
[upstreams.backend]
endpoints = ["127.0.0.1:$UP"]
[[routes]]
prefix = "/"
upstream = "backend"
EOF

start_proxies() {
    taskset -c 0 "$NGINX" -c "$WORK/front.conf" -p "$WORK" &
    PIDS+=($!)
    NGINX_PID=$!
    taskset -c 0 "$SHARDGATE" run -c "$WORK/shardgate.toml" 2>"$WORK/shardgate.log" &
    PIDS+=($!)
    SG_PID=$!
    wait_port "$NG" "$WORK/front.err" "$NGINX_PID"
    wait_port "$SG" "$WORK/shardgate.log" "$SG_PID"
}

# h2load PORT: "succeeded µs-per-request" for the proxy PID $2.
h2load_round() {
    local c0 c1 out ok
    c0=$(cpu_ticks "$2")
    out=$(taskset -c 1 h2load -c "$CONNS" -m "$STREAMS" -D "$DURATION" --warm-up-time 1 \
        "https://127.0.0.1:$1/" 2>&1)
    c1=$(cpu_ticks "$2")
    ok=$(awk '/^requests:/ {print $8}' <<<"$out")
    [[ ${ok:-0} -gt 0 ]] || die "h2load failed: $out"
    python3 -c "import sys; t,n,tck=map(float,sys.argv[1:]); print(int(n), round(t/tck*1e6/n, 2))" \
        "$((c1 - c0))" "$ok" "$TCK"
}

if [[ -z $ONLY || $ONLY == cpu ]]; then
    start_proxies
    log "h2load -c $CONNS -m $STREAMS over TLS, $ROUNDS interleaved rounds of ${DURATION}s"
    declare -a SG_US NG_US
    for round in $(seq "$ROUNDS"); do
        read -r n us < <(h2load_round "$SG" "$SG_PID")
        SG_US+=("$us")
        read -r m vs < <(h2load_round "$NG" "$NGINX_PID")
        NG_US+=("$vs")
        printf 'round %d: shardgate %s µs/request (%d requests), nginx %s µs/request (%d), ratio %s\n' \
            "$round" "$us" "$n" "$vs" "$m" "$(python3 -c "print(round($us/$vs, 2))")"
    done
    sg=$(median "${SG_US[@]}")
    ng=$(median "${NG_US[@]}")
    printf 'median: shardgate %s, nginx %s µs/request: ratio %s\n' "$sg" "$ng" \
        "$(python3 -c "print(round($sg/$ng, 2))")"
    kill "$SG_PID" "$NGINX_PID"
    wait "$SG_PID" "$NGINX_PID" 2>/dev/null || true
fi

if [[ -z $ONLY || $ONLY == idle ]]; then
    cat >"$WORK/hold.py" <<'EOF'
"""Opens N TLS connections with ALPN h2 to 127.0.0.1:PORT, sends one GET on each (the
preface, SETTINGS, the SETTINGS ACK, one HEADERS frame), reads its answer, then holds them
all open until stdin closes. Prints "held N" once they are."""
import asyncio, ssl, sys

PORT, N = int(sys.argv[1]), int(sys.argv[2])
PLAIN = len(sys.argv) > 3 and sys.argv[3] == "h2c"
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["h2"])
# HPACK: :method GET, :scheme https, :path /, :authority 127.0.0.1 (static indexes, a literal).
BLOCK = bytes([0x82, 0x86 if PLAIN else 0x87, 0x84, 0x01, 0x09]) + b"127.0.0.1"

def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload

async def one(sem, held):
    async with sem:
        r, w = await asyncio.open_connection("127.0.0.1", PORT, ssl=None if PLAIN else ctx)
        w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(4, 1, 0) + frame(1, 5, 1, BLOCK))
        await w.drain()
        while True:  # frames until the answer ends (END_STREAM on stream 1)
            head = await r.readexactly(9)
            n = int.from_bytes(head[:3], "big")
            await r.readexactly(n)
            stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            if stream == 1 and head[4] & 1:
                break
        held.append((r, w))

async def main():
    held, sem = [], asyncio.Semaphore(200)
    await asyncio.gather(*(one(sem, held) for _ in range(N)))
    print("held", len(held), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
EOF
    log "memory per idle HTTP/2 connection over TLS, $HOLD connections"
    for name in shardgate nginx; do
        start_proxies
        if [[ $name == shardgate ]]; then pid=$SG_PID port=$SG; else pid=$NGINX_PID port=$NG; fi
        before=$(rss_kib "$pid")
        mkfifo "$WORK/hold.in"
        taskset -c 1 "$PY" "$WORK/hold.py" "$port" "$HOLD" <"$WORK/hold.in" >"$WORK/hold.out" &
        holder=$!
        exec 7>"$WORK/hold.in"
        for _ in $(seq 600); do grep -q held "$WORK/hold.out" 2>/dev/null && break; sleep 0.1; done
        grep -q "held $HOLD" "$WORK/hold.out" || die "$name: the holder did not hold $HOLD: $(cat "$WORK/hold.out")"
        sleep 2
        after=$(rss_kib "$pid")
        printf '%s: RSS %d KiB before, %d KiB with %d idle HTTP/2 connections: %s KiB each\n' \
            "$name" "$before" "$after" "$HOLD" "$(python3 -c "print(round(($after-$before)/$HOLD, 2))")"
        exec 7>&-
        wait "$holder" 2>/dev/null || true
        rm -f "$WORK/hold.in"
        kill "$SG_PID" "$NGINX_PID"
        wait "$SG_PID" "$NGINX_PID" 2>/dev/null || true
    done
fi

if [[ -z $ONLY || $ONLY == grpc ]]; then
    log "gRPC unary: direct, then through Shardgate (h2c both sides)"
    taskset -c 1 "$PY" "$ROOT/crates/shardgate/tests/grpc/peer.py" server "$GRPC_UP" \
        < <(sleep 100000) >"$WORK/grpc.out" &
    PIDS+=($!)
    for _ in $(seq 100); do grep -q ready "$WORK/grpc.out" 2>/dev/null && break; sleep 0.1; done
    cat >"$WORK/grpc.toml" <<EOF
workers = 1
[[listeners]]
address = "127.0.0.1:$SG_GRPC"
http2 = true
[upstreams.grpc]
endpoints = ["127.0.0.1:$GRPC_UP"]
protocol = "h2c"
[[routes]]
prefix = "/"
upstream = "grpc"
EOF
    taskset -c 0 "$SHARDGATE" run -c "$WORK/grpc.toml" 2>"$WORK/grpc-gw.log" &
    PIDS+=($!)
    GPID=$!
    wait_port "$SG_GRPC" "$WORK/grpc-gw.log" "$GPID"
    printf '\0\0\0\0\005hello' >"$WORK/call.bin"
    grpc_load() {
        taskset -c 1 h2load -c 8 -m 16 -D "$DURATION" --warm-up-time 1 -d "$WORK/call.bin" \
            -H "content-type: application/grpc" -H "te: trailers" \
            "http://127.0.0.1:$1/test.Echo/Unary" 2>&1
    }
    cat >"$WORK/grpc-nginx.conf" <<EOF
worker_processes 1; daemon off; master_process off; error_log $WORK/grpc-nginx.err;
pid $WORK/grpc-nginx.pid; events { worker_connections 1024; }
http { access_log off; upstream g { server 127.0.0.1:$GRPC_UP; keepalive 16; }
  server { listen 127.0.0.1:$NG_GRPC http2; location / { grpc_pass grpc://g; } } }
EOF
    taskset -c 0 "$NGINX" -c "$WORK/grpc-nginx.conf" -p "$WORK" &
    PIDS+=($!)
    NPID=$!
    wait_port "$NG_GRPC" "$WORK/grpc-nginx.err" "$NPID"
    # through PORT PID: "calls/s µs-per-call" for the proxy PID.
    through() {
        local c0 c1 out ok
        c0=$(cpu_ticks "$2")
        out=$(grpc_load "$1")
        c1=$(cpu_ticks "$2")
        ok=$(awk '/^requests:/ {print $8}' <<<"$out")
        [[ ${ok:-0} -gt 0 ]] || die "h2load failed: $out"
        echo "$(awk '/^finished in/ {print $4}' <<<"$out")" \
            "$(python3 -c "print(round($((c1 - c0))/$TCK*1e6/$ok, 2))")"
    }
    for round in $(seq "$ROUNDS"); do
        direct=$(grpc_load "$GRPC_UP" | awk '/^finished in/ {print $4}')
        read -r sg_rate sg_us < <(through "$SG_GRPC" "$GPID")
        read -r ng_rate ng_us < <(through "$NG_GRPC" "$NPID")
        printf 'round %d: direct %s calls/s; Shardgate %s calls/s at %s µs/call; nginx %s calls/s at %s µs/call\n' \
            "$round" "$direct" "$sg_rate" "$sg_us" "$ng_rate" "$ng_us"
    done
fi
