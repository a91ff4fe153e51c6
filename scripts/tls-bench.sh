#!/usr/bin/env bash
# HTTPS side by side with nginx, with standard tools: the same ECDSA P-256 certificate, TLS
# 1.3, one worker each pinned to CPU 0; wrk and an nginx backend (a fixed 64-byte answer) on
# CPU 1. Three figures:
#   - keep-alive HTTPS: proxy CPU µs per request (from /proc/PID/stat) at CONNS connections,
#     interleaved rounds of DURATION seconds, for Shardgate on io_uring and on epoll and nginx;
#   - full handshakes: the same with `Connection: close` on every request (wrk opens a new
#     connection, and so runs a full TLS 1.3 handshake, for each), as handshakes a second and
#     proxy CPU µs per handshake;
#   - user-space memory per idle TLS connection: RSS growth while HOLD connections (Python's
#     ssl, each after one request) stay open;
#   - established connections during a handshake flood: 16 keep-alive connections' rate and
#     p99 alone, then while another wrk opens a new connection for every request, then while
#     a ClientHello flood (Python, canned hellos, nice 19) makes the proxy do handshakes.
#
#   scripts/tls-bench.sh
#
#   - resumed handshakes: proxy CPU µs per TLS 1.3 resumption (Python's ssl client reusing
#     each session ticket it gets, one connection at a time);
#
# Knobs: ROUNDS [3] DURATION [8] CONNS [64] HOLD [4000] BASE_PORT [18600]
#        ONLY=flood  only the last part (established connections during a flood)
#        SHARDGATE_BIN [target/release/shardgate]
# Loopback only; every process started here is stopped on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-64}
HOLD=${HOLD:-4000}
BASE_PORT=${BASE_PORT:-18600}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARDGATE=${SHARDGATE_BIN:-$ROOT/target/release/shardgate}

die() { echo "tls-bench: $*" >&2; exit 1; }
for tool in wrk openssl python3 taskset; do
    command -v "$tool" >/dev/null || die "needs $tool"
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "needs nginx (apt-get install -y nginx)"
[[ -x $SHARDGATE ]] || die "no shardgate binary at $SHARDGATE (cargo build --release -p shardgate)"

WORK=$(mktemp -d /tmp/shardgate-tls-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in "$WORK"/*.pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

UP=$BASE_PORT NGX=$((BASE_PORT + 1)) URING=$((BASE_PORT + 2)) EPOLL=$((BASE_PORT + 3))
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat >"$WORK/backend.conf" <<EOF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$UP; keepalive_requests 1000000;
  location / { return 200 "0123456789012345678901234567890123456789012345678901234567890123"; } } }
EOF
cat >"$WORK/proxy.conf" <<EOF
worker_processes 1; daemon off; pid $WORK/proxy.pid; error_log $WORK/proxy.err;
events { worker_connections 20000; }
http { access_log off; upstream b { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NGX ssl; ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem; ssl_protocols TLSv1.3; keepalive_requests 1000000;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF
for driver in uring legacy; do
    port=$URING
    [[ $driver == legacy ]] && port=$EPOLL
    cat >"$WORK/$driver.toml" <<EOF
workers = 1
driver = "$driver"
[[listeners]]
address = "127.0.0.1:$port"
[listeners.tls]
certificates = [{ cert = "$WORK/cert.pem", key = "$WORK/key.pem" }]
[upstreams.b]
endpoints = ["127.0.0.1:$UP"]
[[routes]]
prefix = "/"
upstream = "b"
EOF
done
cat >"$WORK/hold.py" <<'EOF'
import socket, ssl, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
held = []
for _ in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="bench.test")
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n")
    data = b""
    while not data.endswith(b"0123"):
        data += s.recv(4096)
    held.append(s)
print(len(held), flush=True)
sys.stdin.readline()
EOF

cat >"$WORK/hello_flood.py" <<'EOF'
# A handshake flood as attackers send it: a canned TLS 1.3 ClientHello on each new connection,
# read until the server's first flight arrives (so it did its key exchange and signature), close.
import selectors, socket, ssl, sys, time
port, seconds, inflight = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(inc, out, server_hostname="bench.test")
try:
    obj.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = out.read()
sel = selectors.DefaultSelector()
done = 0
def start():
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    sel.register(s, selectors.EVENT_WRITE, [0])
end = time.monotonic() + seconds
for _ in range(inflight):
    start()
while time.monotonic() < end:
    for key, ev in sel.select(0.5):
        s, st = key.fileobj, key.data
        try:
            if ev & selectors.EVENT_WRITE:
                s.send(hello)
                sel.modify(s, selectors.EVENT_READ, st)
                continue
            got = s.recv(65536)
            st[0] += len(got)
            if got and st[0] < 600:
                continue
            if got:
                done += 1
        except OSError:
            pass
        sel.unregister(s)
        s.close()
        start()
print(round(done / seconds, 1), flush=True)
EOF

cat >"$WORK/resume.py" <<'EOF'
import socket, ssl, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
session, n, resumed = None, 0, 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                        server_hostname="bench.test", session=session)
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
    while s.recv(4096):
        pass
    n += 1
    resumed += s.session_reused
    session = s.session
    s.close()
print(n, resumed, flush=True)
EOF

taskset -c 1 "$NGINX" -c "$WORK/backend.conf" -p "$WORK" &
taskset -c 0 "$NGINX" -c "$WORK/proxy.conf" -p "$WORK" &
taskset -c 0 "$SHARDGATE" run -c "$WORK/uring.toml" 2>"$WORK/uring.log" &
PIDS+=($!)
taskset -c 0 "$SHARDGATE" run -c "$WORK/legacy.toml" 2>"$WORK/legacy.log" &
PIDS+=($!)
sleep 2
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/proxy.pid")" | head -1)
declare -A PID=([nginx]=$NGINX_WORKER [shardgate-uring]=${PIDS[0]} [shardgate-epoll]=${PIDS[1]})
declare -A PORT=([nginx]=$NGX [shardgate-uring]=$URING [shardgate-epoll]=$EPOLL)
NAMES=(shardgate-uring shardgate-epoll nginx)
TCK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# One wrk run: "requests/s CPU-µs-per-request".
measure() {
    local name=$1
    shift
    local c0 c1 out reqs rps
    c0=$(cpu "${PID[$name]}")
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" "$@" "https://127.0.0.1:${PORT[$name]}/" 2>&1)
    c1=$(cpu "${PID[$name]}")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    echo "$rps $(python3 -c "print(round(($c1 - $c0) / $TCK * 1e6 / $reqs, 2))")"
}

# One run of resumed handshakes (Python's ssl, one connection at a time, each resuming the
# session the last one got): "resumed-per-second CPU-µs-per-handshake", or "- -" when the
# proxy did not resume them.
resumed() {
    local name=$1 c0 c1 n hits
    c0=$(cpu "${PID[$name]}")
    read -r n hits < <(taskset -c 1 python3 "$WORK/resume.py" "${PORT[$name]}" "$DURATION")
    c1=$(cpu "${PID[$name]}")
    if ((hits * 10 < n * 9)); then
        echo "- -"
        return
    fi
    python3 -c "print(round($n / $DURATION, 1), round(($c1 - $c0) / $TCK * 1e6 / $n, 2))"
}

declare -A ALL HS HSCPU RES RESCPU
[[ ${ONLY:-} == flood ]] && ROUNDS=0
for round in $(seq "$ROUNDS"); do
    for name in "${NAMES[@]}"; do
        read -r rps us < <(measure "$name")
        echo "[tls-bench] round $round $name: keep-alive $rps req/s, $us CPU µs/request"
        ALL[$name]+="$us "
        read -r rps us < <(measure "$name" -H "Connection: close")
        echo "[tls-bench] round $round $name: $rps full handshakes/s, $us CPU µs each"
        HS[$name]+="$rps "
        HSCPU[$name]+="$us "
        read -r rps us < <(resumed "$name")
        echo "[tls-bench] round $round $name: $rps resumed handshakes/s (one client), $us CPU µs each"
        RES[$name]+="$rps "
        RESCPU[$name]+="$us "
    done
done

echo
med() { python3 -c "import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))" "$@"; }
if ((ROUNDS > 0)); then
printf '%-18s %14s %14s %16s %16s %22s\n' proxy "CPU µs/request" "handshakes/s" "CPU µs/handshake" "µs/resumed one" "KiB per idle TLS conn"
for name in "${NAMES[@]}"; do
    # shellcheck disable=SC2086
    median=$(med ${ALL[$name]})
    # shellcheck disable=SC2086
    hs=$(med ${HS[$name]})
    # shellcheck disable=SC2086
    hscpu=$(med ${HSCPU[$name]})
    before=$(rss "${PID[$name]}")
    coproc HOLDER { taskset -c 1 python3 "$WORK/hold.py" "${PORT[$name]}" "$HOLD"; }
    read -r held <&"${HOLDER[0]}"
    after=$(rss "${PID[$name]}")
    echo >&"${HOLDER[1]}"
    wait "$HOLDER_PID" 2>/dev/null || true
    per=$(python3 -c "print(round(($after - $before) / $held, 2))")
    # shellcheck disable=SC2086
    rescpu=$(med ${RESCPU[$name]//-/} 2>/dev/null || echo -)
    printf '%-18s %14s %14s %16s %16s %22s\n' "$name" "$median" "$hs" "$hscpu" "$rescpu" "$per"
    sleep 1
done
echo "(medians; wrk -t1 -c$CONNS, $ROUNDS interleaved rounds of ${DURATION}s; resumed: Python's ssl, one connection at a time; memory: RSS growth / $HOLD idle TLS 1.3 connections)"
fi

echo
echo "established connections (wrk -c16, ${DURATION}s) alone, and during a handshake flood (wrk -c64, Connection: close; both wrk on CPU 1):"
steady() {
    taskset -c 1 wrk -t1 -c16 -d"${DURATION}s" --latency "https://127.0.0.1:$1/" 2>&1 |
        awk '/Requests\/sec/ {r = $2} / 99%/ {p = $2} END {print r " req/s, p99 " p}'
}
for name in "${NAMES[@]}"; do
    alone=$(steady "${PORT[$name]}")
    taskset -c 1 wrk -t1 -c64 -d"$((DURATION + 3))s" -H "Connection: close" \
        "https://127.0.0.1:${PORT[$name]}/" >"$WORK/flood-$name.txt" 2>&1 &
    flood=$!
    sleep 1
    during=$(steady "${PORT[$name]}")
    wait "$flood" || true
    rate=$(awk '/Requests\/sec/ {print $2}' "$WORK/flood-$name.txt")
    printf '%-18s alone %-28s during %s handshakes/s: %s\n' "$name" "$alone" "$rate" "$during"
done

echo
echo "the same during a ClientHello flood (64 connections at a time each sending a canned TLS 1.3"
echo "ClientHello and leaving once the server's first flight arrives, the attack's usual shape; at"
echo "nice 19 on CPU 1 so that the proxy, not the shared client CPU, is what runs short):"
for name in "${NAMES[@]}"; do
    alone=$(steady "${PORT[$name]}")
    taskset -c 1 nice -n 19 python3 "$WORK/hello_flood.py" "${PORT[$name]}" "$((DURATION + 3))" 64 \
        >"$WORK/hello-$name.txt" &
    flood=$!
    sleep 1
    during=$(steady "${PORT[$name]}")
    wait "$flood" || true
    printf '%-18s alone %-28s during %s ClientHellos/s: %s\n' "$name" "$alone" "$(cat "$WORK/hello-$name.txt")" "$during"
done
