#!/usr/bin/env bash
# Plain HTTP side by side with nginx, with the standard tools a user would reach for: wrk as
# the load generator and nginx as the backend (a fixed 64-byte answer), both on CPU 1; each
# proxy one worker pinned to CPU 0 with its default settings and no environment variables.
# Interleaved rounds; per proxy the median proxy CPU µs per request (from /proc/PID/stat),
# requests a second and wrk's p50, and the CPU ratio to nginx of the same run; each round
# also prints the upstream connections the proxy opened (the backend's stub_status).
#
#   scripts/wrk-bench.sh
#
# Knobs: ROUNDS [5] DURATION [8] CONNS [64] BASE_PORT [18900]
#        SHARDGATE_BIN [target/release/shardgate]
#        BASELINE_BIN  another shardgate build, run as "baseline" (io_uring) beside it
# Loopback only; every process started here is stopped on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
CONNS=${CONNS:-64}
BASE_PORT=${BASE_PORT:-18900}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARDGATE=${SHARDGATE_BIN:-$ROOT/target/release/shardgate}

die() { echo "wrk-bench: $*" >&2; exit 1; }
for tool in wrk python3 taskset; do
    command -v "$tool" >/dev/null || die "needs $tool"
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "needs nginx (apt-get install -y nginx)"
[[ -x $SHARDGATE ]] || die "no shardgate binary at $SHARDGATE (cargo build --release -p shardgate)"

WORK=$(mktemp -d /tmp/shardgate-wrk-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for f in "$WORK"/*.pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

UP=$BASE_PORT
NGX=$((BASE_PORT + 1))
declare -A PORT=([nginx]=$NGX [uring]=$((BASE_PORT + 2)) [epoll]=$((BASE_PORT + 3)) [baseline]=$((BASE_PORT + 4)))

# nginx keeps twice the client connections idle upstream (at least 64), so it never churns.
KEEP=$((CONNS * 2 > 64 ? CONNS * 2 : 64))
cat >"$WORK/backend.conf" <<EOF
worker_processes 1; daemon off; error_log $WORK/backend.err; pid $WORK/backend.pid;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$UP; keepalive_requests 1000000;
  location = /backend-status { stub_status; }
  location / { return 200 "0123456789012345678901234567890123456789012345678901234567890123"; } } }
EOF
cat >"$WORK/proxy.conf" <<EOF
worker_processes 1; daemon off; error_log $WORK/proxy.err; pid $WORK/proxy.pid;
events { worker_connections 20000; }
http { access_log off; upstream b { server 127.0.0.1:$UP; keepalive $KEEP; }
  server { listen 127.0.0.1:$NGX; keepalive_requests 1000000;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF

taskset -c 1 "$NGINX" -c "$WORK/backend.conf" -p "$WORK" &
taskset -c 0 "$NGINX" -c "$WORK/proxy.conf" -p "$WORK" &
declare -A PID
start() { # name binary driver
    taskset -c 0 "$2" proxy --listen "127.0.0.1:${PORT[$1]}" --to "127.0.0.1:$UP" \
        --workers 1 --driver "$3" 2>"$WORK/$1.log" &
    PIDS+=($!)
    PID[$1]=$!
}
NAMES=(nginx uring epoll)
start uring "$SHARDGATE" uring
start epoll "$SHARDGATE" legacy
if [[ -n ${BASELINE_BIN:-} ]]; then
    start baseline "$BASELINE_BIN" uring
    NAMES+=(baseline)
fi
sleep 2
PID[nginx]=$(pgrep -P "$(cat "$WORK/proxy.pid")" | head -1)
TCK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Connections the backend has accepted so far (nginx's stub_status): the difference over a
# run is how many upstream connections the proxy under test opened (a pool that churns
# shows here).
accepts() { curl -s "http://127.0.0.1:$UP/backend-status" | awk 'NR == 3 {print $1}'; }

declare -A US RPS P50
for round in $(seq "$ROUNDS"); do
    for name in "${NAMES[@]}"; do
        c0=$(cpu "${PID[$name]}")
        a0=$(accepts)
        out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:${PORT[$name]}/" 2>&1)
        c1=$(cpu "${PID[$name]}")
        a1=$(accepts)
        reqs=$(awk '/requests in/ {print $1}' <<<"$out")
        us=$(python3 -c "print(round(($c1 - $c0) * 1e6 / $TCK / $reqs, 2))")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
        echo "round $round $name: $us µs/request, $rps req/s, p50 $p50, $((a1 - a0 - 1)) upstream connects"
        US[$name]+="$us "
        RPS[$name]+="$rps "
        P50[$name]+="$p50 "
    done
done

med() { python3 -c "import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))" "$@"; }
echo
echo "medians of $ROUNDS rounds of ${DURATION}s, wrk -t1 -c$CONNS:"
# shellcheck disable=SC2086
nginx_us=$(med ${US[nginx]})
for name in "${NAMES[@]}"; do
    # shellcheck disable=SC2086
    us=$(med ${US[$name]})
    # shellcheck disable=SC2086
    printf '%-9s %7s µs/request  %10s req/s  p50s %s  %sx nginx\n' "$name" "$us" \
        "$(med ${RPS[$name]})" "${P50[$name]}" "$(python3 -c "print(round($us / $nginx_us, 3))")"
done
