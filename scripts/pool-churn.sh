#!/usr/bin/env bash
# How many upstream connections `shardgate proxy` opens under a steady closed loop, measured
# with standard tools: wrk as the client, nginx as the backend (its stub_status counts the
# connections it accepted). The proxy runs one shard on CPU 0 with its defaults; wrk and
# nginx share CPU 1.
#
#   scripts/pool-churn.sh                      # 256 connections, 8 s, default pool
#   CONNS=256 DURATION=8 EXTRA="--pool-idle 64" scripts/pool-churn.sh
#
# Knobs: CONNS [256] DURATION [8] seconds  EXTRA [] more `shardgate proxy` flags
#        SHARDGATE_BIN [target/release/shardgate]  BASE_PORT [18300]
# Loopback only; every process started here is stopped on exit.
set -euo pipefail

CONNS=${CONNS:-256}
DURATION=${DURATION:-8}
EXTRA=${EXTRA:-}
BASE_PORT=${BASE_PORT:-18300}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARDGATE=${SHARDGATE_BIN:-$ROOT/target/release/shardgate}

die() { echo "pool-churn: $*" >&2; exit 1; }
command -v wrk >/dev/null || die "needs wrk (apt-get install -y wrk)"
command -v nginx >/dev/null || NGINX=/usr/sbin/nginx
NGINX=${NGINX:-$(command -v nginx)}
[[ -x $NGINX ]] || die "needs nginx (apt-get install -y nginx)"
[[ -x $SHARDGATE ]] || die "no shardgate binary at $SHARDGATE (cargo build --release -p shardgate)"

WORK=$(mktemp -d /tmp/shardgate-pool-churn.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -f $WORK/nginx.pid ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

UP=$BASE_PORT STATUS=$((BASE_PORT + 1)) LISTEN=$((BASE_PORT + 2))
mkdir -p "$WORK/logs"
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon on;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$UP;
        location / { return 200 "ok\n"; }
    }
    server {
        listen 127.0.0.1:$STATUS;
        location / { stub_status; }
    }
}
EOF
taskset -c 1 "$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/logs/error.log"
accepts() { curl -s "http://127.0.0.1:$STATUS/" | awk 'NR == 3 { print $1 }'; }

# shellcheck disable=SC2086
taskset -c 0 "$SHARDGATE" proxy --listen "127.0.0.1:$LISTEN" --to "127.0.0.1:$UP" \
    --workers 1 $EXTRA >"$WORK/shardgate.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    grep -q "listening on" "$WORK/shardgate.log" && break
    sleep 0.05
done
grep -q "listening on" "$WORK/shardgate.log" || die "shardgate did not start: $(cat "$WORK/shardgate.log")"

before=$(accepts)
taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$LISTEN/" >"$WORK/wrk.txt"
after=$(accepts)
# The status requests themselves are accepted connections too (one per read).
opened=$((after - before - 1))
requests=$(awk '/requests in/ { print $1 }' "$WORK/wrk.txt")
errors=$(awk '/Non-2xx|Socket errors/ { print }' "$WORK/wrk.txt")
echo "shardgate proxy ${EXTRA:-(defaults)}: $CONNS connections, ${DURATION}s: $requests requests," \
    "$opened upstream connections opened${errors:+; $errors}"
