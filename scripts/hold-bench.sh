#!/usr/bin/env bash
# Many long-lived connections through `shardgate proxy` with 2 shards and its defaults (no
# environment variable), in front of an nginx backend, for each driver:
#   - long connections: `loadtest hold` opens CONNS connections, one request each, then a
#     heartbeat request on each every 10 s for HOLD_S seconds; prints alive/failed, heartbeat
#     p50/p99, each shard's accepted connections (from the admin API) and KiB per connection;
#   - a burst: CONNS connections held for 6 s, then closed at once; prints RSS while held,
#     its peak during the close (sampled every 20 ms) and a second later;
#   - a reconnect storm: as many connections again, opened at once, held 3 s: peak RSS.
#
#   scripts/hold-bench.sh
#
# Knobs: CONNS [19000] HOLD_S [60] DRIVERS ["uring legacy"] BASE_PORT [18980]
#        SHARDGATE_BIN [target/release/shardgate] LOADTEST_BIN [target/release/loadtest]
# Needs an open-file limit above CONNS for each process. Loopback only; every process started
# here is stopped on exit.
set -euo pipefail

CONNS=${CONNS:-19000}
HOLD_S=${HOLD_S:-60}
DRIVERS=${DRIVERS:-"uring legacy"}
BASE_PORT=${BASE_PORT:-18980}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARDGATE=${SHARDGATE_BIN:-$ROOT/target/release/shardgate}
LOADTEST=${LOADTEST_BIN:-$ROOT/target/release/loadtest}

TAG=hold-bench
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
command -v python3 >/dev/null || die "needs python3"
NGINX=$(find_nginx)
[[ -x $SHARDGATE && -x $LOADTEST ]] ||
    die "needs $SHARDGATE and $LOADTEST (cargo build --release -p shardgate -p loadtest)"

work_dir hold-bench

UP=$BASE_PORT
PORT=$((BASE_PORT + 1))
ADMIN=$((BASE_PORT + 2))
backend_conf "$WORK" "$UP"
"$NGINX" -c "$WORK/backend.conf" -p "$WORK" &
sleep 0.5

json() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

# hold DRIVER SECONDS INTERVAL: starts the proxy and a holder; sets PROXY, HOLDER.
hold() {
    "$SHARDGATE" proxy --listen "127.0.0.1:$PORT" --to "127.0.0.1:$UP" --workers 2 \
        --driver "$1" --admin "127.0.0.1:$ADMIN" 2>"$WORK/proxy-$1.log" &
    PROXY=$!
    PIDS+=("$PROXY")
    sleep 1
    BEFORE=$(rss_kib "$PROXY")
    rm -f "$WORK/ready"
    "$LOADTEST" hold -t 1 -c "$CONNS" -k "$3" -d "$2" --no-progress --ready-file "$WORK/ready" \
        --json "$WORK/hold.json" "http://127.0.0.1:$PORT/" >/dev/null 2>"$WORK/hold.err" &
    HOLDER=$!
    PIDS+=("$HOLDER")
    wait_ready "$WORK/ready" "$HOLDER" 90 || die "the holder stopped: $(cat "$WORK/hold.err")"
    sleep 2
}

for driver in $DRIVERS; do
    hold "$driver" "${HOLD_S}s" 10s
    held=$(rss_kib "$PROXY")
    accepted=$(curl -s -H "Host: 127.0.0.1:$ADMIN" "http://127.0.0.1:$ADMIN/metrics" |
        awk '/^shardgate_accepted_connections_total/ {printf "%s%s", sep, $2; sep = " / "}')
    wait "$HOLDER" || true
    kill "$PROXY"
    wait "$PROXY" 2>/dev/null || true
    echo "$driver, long connections: $(json "$WORK/hold.json" "j['alive']") alive, $(json "$WORK/hold.json" "j['failed']") failed over ${HOLD_S}s;" \
        "heartbeat p50 $(json "$WORK/hold.json" "round(j['heartbeat_latency']['p50_us'])") µs," \
        "p99 $(json "$WORK/hold.json" "round(j['heartbeat_latency']['p99_us'])") µs;" \
        "accepted by shard $accepted;" \
        "$(python3 -c "print(round(($held - $BEFORE) / $CONNS, 3))") KiB per connection"

    hold "$driver" 6s 300s
    held=$(rss_kib "$PROXY")
    peak=$held
    while kill -0 "$HOLDER" 2>/dev/null; do
        r=$(rss_kib "$PROXY")
        ((r > peak)) && peak=$r
        sleep 0.02
    done
    for _ in $(seq 50); do
        r=$(rss_kib "$PROXY")
        ((r > peak)) && peak=$r
        sleep 0.02
    done
    sleep 1
    after=$(rss_kib "$PROXY")
    echo "$driver, burst: RSS $((held / 1024)) MiB with $CONNS held, peak $((peak / 1024)) MiB as they closed at once, $((after / 1024)) MiB a second later"

    # A reconnect storm: all of them come back at once (one request each), stay 3 s, leave.
    "$LOADTEST" hold -t 1 -c "$CONNS" -k 300s -d 3s --no-progress \
        --json "$WORK/storm.json" "http://127.0.0.1:$PORT/" >/dev/null 2>"$WORK/storm.err" &
    HOLDER=$!
    PIDS+=("$HOLDER")
    storm=$(rss_kib "$PROXY")
    while kill -0 "$HOLDER" 2>/dev/null; do
        r=$(rss_kib "$PROXY")
        ((r > storm)) && storm=$r
        sleep 0.02
    done
    sleep 1
    end=$(rss_kib "$PROXY")
    kill "$PROXY"
    wait "$PROXY" 2>/dev/null || true
    echo "$driver, reconnect storm: $(json "$WORK/storm.json" "j['alive']") reconnected at once, peak $((storm / 1024)) MiB (held before: $((held / 1024)) MiB), $((end / 1024)) MiB after they left"
done
