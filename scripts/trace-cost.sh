#!/usr/bin/env bash
# What exported spans cost per request: `shardgate run` without [tracing], with every trace
# sampled, and with 1% sampled, each one worker pinned to CPU 0, under wrk (CPU 1) against a
# fixed-response nginx backend (CPU 1). The collector is a small OTLP/HTTP receiver (python3,
# CPU 1) that answers 200 and decodes one export in 20 with the opentelemetry-proto package
# when it is installed (pip install opentelemetry-proto), to count the spans received.
# Interleaved rounds; per configuration the median proxy CPU µs per request (the exporter
# thread included, from /proc/PID/stat) and requests a second.
#
#   scripts/trace-cost.sh
#
# Knobs: ROUNDS [5] DURATION [8] CONNS [64] BASE_PORT [18950]
#        SHARDGATE_BIN [target/release/shardgate]
# Loopback only; every process started here is stopped on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
CONNS=${CONNS:-64}
BASE_PORT=${BASE_PORT:-18950}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARDGATE=${SHARDGATE_BIN:-$ROOT/target/release/shardgate}

TAG=trace-cost
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
for tool in wrk python3 taskset; do
    command -v "$tool" >/dev/null || die "needs $tool"
done
NGINX=$(find_nginx)
[[ -x $SHARDGATE ]] || die "no shardgate binary at $SHARDGATE (cargo build --release -p shardgate)"

WORK=$(mktemp -d /tmp/shardgate-trace-cost.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -f $WORK/backend.pid ]] && kill "$(cat "$WORK/backend.pid")" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

UP=$BASE_PORT
COLLECTOR=$((BASE_PORT + 1))
declare -A PORT=([off]=$((BASE_PORT + 2)) [all]=$((BASE_PORT + 3)) [one_percent]=$((BASE_PORT + 4)))
declare -A TRACING=(
    [off]=""
    [all]="[tracing]
otlp_endpoint = \"http://127.0.0.1:$COLLECTOR/v1/traces\"
sample_ratio = 1.0
interval = \"1s\"
queue = 65536"
    [one_percent]="[tracing]
otlp_endpoint = \"http://127.0.0.1:$COLLECTOR/v1/traces\"
sample_ratio = 0.01
interval = \"1s\"
queue = 65536"
)

cat >"$WORK/backend.conf" <<EOF
worker_processes 1; daemon off; error_log $WORK/backend.err; pid $WORK/backend.pid;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$UP; keepalive_requests 1000000;
  location / { return 200 "0123456789012345678901234567890123456789012345678901234567890123"; } } }
EOF
cat >"$WORK/collector.py" <<'EOF'
import http.server, sys, threading
try:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
except ImportError:
    ExportTraceServiceRequest = None
count = {"requests": 0, "bytes": 0, "decoded": 0, "spans": 0}
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            count["requests"] += 1
            count["bytes"] += len(body)
            n = count["requests"]
        if ExportTraceServiceRequest is not None and n % 20 == 1:
            req = ExportTraceServiceRequest.FromString(body)
            spans = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
            with lock:
                count["decoded"] += 1
                count["spans"] += spans
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        with lock:
            text = " ".join(f"{k}={v}" for k, v in count.items()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF

taskset -c 1 "$NGINX" -c "$WORK/backend.conf" -p "$WORK" &
PIDS+=($!)
taskset -c 1 python3 "$WORK/collector.py" "$COLLECTOR" &
PIDS+=($!)
declare -A PID
NAMES=(off all one_percent)
for name in "${NAMES[@]}"; do
    cat >"$WORK/$name.toml" <<EOF
workers = 1
[[listeners]]
address = "127.0.0.1:${PORT[$name]}"
[upstreams.app]
endpoints = ["127.0.0.1:$UP"]
[[routes]]
name = "all"
prefix = "/"
upstream = "app"
${TRACING[$name]}
EOF
    taskset -c 0 "$SHARDGATE" run -c "$WORK/$name.toml" 2>"$WORK/$name.log" &
    PIDS+=($!)
    PID[$name]=$!
done
sleep 2
TCK=$(getconf CLK_TCK)

declare -A US RPS
for round in $(seq "$ROUNDS"); do
    for name in "${NAMES[@]}"; do
        c0=$(cpu_ticks "${PID[$name]}")
        out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:${PORT[$name]}/" 2>&1)
        # The last spans of the round reach the exporter within the interval.
        sleep 1.2
        c1=$(cpu_ticks "${PID[$name]}")
        reqs=$(awk '/requests in/ {print $1}' <<<"$out")
        us=$(python3 -c "print(round(($c1 - $c0) * 1e6 / $TCK / $reqs, 2))")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        echo "round $round $name: $us µs/request, $rps req/s"
        US[$name]+="$us "
        RPS[$name]+="$rps "
    done
done

echo
echo "medians of $ROUNDS rounds of ${DURATION}s, wrk -t1 -c$CONNS:"
# shellcheck disable=SC2086
off_us=$(median ${US[off]})
for name in "${NAMES[@]}"; do
    # shellcheck disable=SC2086
    us=$(median ${US[$name]})
    # shellcheck disable=SC2086
    printf '%-12s %7s µs/request  %10s req/s  +%s µs over no tracing\n' "$name" "$us" \
        "$(median ${RPS[$name]})" "$(python3 -c "print(round($us - $off_us, 2))")"
done
echo "collector: $(curl -s "http://127.0.0.1:$COLLECTOR/")"
