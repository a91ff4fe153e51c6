#!/usr/bin/env bash
# User-space memory per idle keep-alive connection, for one or two Shardgate builds side by
# side: `shardgate proxy` with one shard and its defaults (no environment variable) on CPU 0,
# in front of an nginx backend; `loadtest hold` on CPU 1 opens CONNS connections, sends one
# request on each and keeps them idle. The figure is the proxy's RSS growth over a warm
# start, divided by the connections held. Each round starts every proxy afresh, in turn;
# prints each round and the medians.
#
#   scripts/idle-bench.sh
#
# Knobs: ROUNDS [5] CONNS [19000] DRIVER [uring] BASE_PORT [18960]
#        SHARDGATE_BIN [target/release/shardgate] LOADTEST_BIN [target/release/loadtest]
#        BASELINE_BIN  another shardgate build, measured as "baseline" in the same rounds
# Needs an open-file limit above CONNS for each process. Loopback only; every process started
# here is stopped on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-19000}
DRIVER=${DRIVER:-uring}
BASE_PORT=${BASE_PORT:-18960}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARDGATE=${SHARDGATE_BIN:-$ROOT/target/release/shardgate}
LOADTEST=${LOADTEST_BIN:-$ROOT/target/release/loadtest}

TAG=idle-bench
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
command -v python3 >/dev/null || die "needs python3"
NGINX=$(find_nginx)
[[ -x $SHARDGATE ]] || die "no shardgate binary at $SHARDGATE (cargo build --release -p shardgate)"
[[ -x $LOADTEST ]] || die "no loadtest binary at $LOADTEST (cargo build --release -p loadtest)"

work_dir idle-bench

UP=$BASE_PORT
PORT=$((BASE_PORT + 1))
backend_conf "$WORK" "$UP"
taskset -c 1 "$NGINX" -c "$WORK/backend.conf" -p "$WORK" &
wait_port "$UP" "$WORK/backend.err"

declare -A BIN=([shardgate]=$SHARDGATE)
NAMES=(shardgate)
if [[ -n ${BASELINE_BIN:-} ]]; then
    BIN[baseline]=$BASELINE_BIN
    NAMES+=(baseline)
fi

declare -A KIB
for round in $(seq "$ROUNDS"); do
    for name in "${NAMES[@]}"; do
        taskset -c 0 "${BIN[$name]}" proxy --listen "127.0.0.1:$PORT" --to "127.0.0.1:$UP" \
            --workers 1 --driver "$DRIVER" 2>"$WORK/$name.log" &
        pid=$!
        PIDS+=("$pid")
        wait_port "$PORT" "$WORK/$name.log" "$pid"
        # Warm: the shard's buffers and pools are made before the figure starts.
        taskset -c 1 "$LOADTEST" -t 1 -c 64 -d 1s "http://127.0.0.1:$PORT/" >/dev/null 2>&1
        sleep 1
        before=$(rss_kib "$pid")
        rm -f "$WORK/ready"
        taskset -c 1 "$LOADTEST" hold -t 1 -c "$CONNS" -k 300s -d 6s --no-progress \
            --ready-file "$WORK/ready" --json "$WORK/hold.json" "http://127.0.0.1:$PORT/" \
            >/dev/null 2>&1 &
        hold=$!
        wait_ready "$WORK/ready" "$hold" 90 || true
        sleep 2
        after=$(rss_kib "$pid")
        wait "$hold" || true
        held=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['alive'])" "$WORK/hold.json")
        kib=$(python3 -c "print(round(($after - $before) / $held, 3))")
        echo "round $round $name ($DRIVER): $kib KiB per idle connection, $held held, RSS $before -> $after KiB"
        KIB[$name]+="$kib "
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
done

echo
echo "medians of $ROUNDS rounds, $CONNS idle keep-alive connections, $DRIVER:"
for name in "${NAMES[@]}"; do
    # shellcheck disable=SC2086
    printf '%-10s %s KiB per idle connection\n' "$name" "$(median ${KIB[$name]})"
done
