#!/usr/bin/env bash
# CPU per request of `loadtest` next to wrk, in one run, against the same `loadtest upstream`.
# The upstream is pinned to CPU 0 and the load generator to CPU 1; each generator's CPU time
# (utime + stime, as in /proc/PID/stat, taken from wait4 when it exits) is divided by the
# requests it completed. Usage: loadtest/scripts/vs-wrk.sh [SECONDS] [ROUNDS] [CONNS...]
set -euo pipefail

secs=${1:-10}
rounds=${2:-2}
shift $(( $# > 2 ? 2 : $# ))
conns=("$@")
[[ ${#conns[@]} -gt 0 ]] || conns=(64 256)
root=$(cd "$(dirname "$0")/../.." && pwd)
lt=${LOADTEST_BIN:-$root/target/release/loadtest}
port=${PORT:-18080}
url="http://127.0.0.1:$port/"
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install -y wrk)" >&2; exit 1; }
[[ -x $lt ]] || { echo "build first: cargo build --release -p loadtest" >&2; exit 1; }

taskset -c 0 "$lt" upstream --listen "127.0.0.1:$port" --threads 1 >"$work/up.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$work/up.log" && break; sleep 0.1; done

# Runs a command and prints its CPU seconds (user + system) from wait4.
cpu_of() {
    python3 - "$@" <<'PY'
import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=open(os.environ["OUT"], "w"), stderr=subprocess.STDOUT)
_, status, ru = os.wait4(p.pid, 0)
print(f"{ru.ru_utime + ru.ru_stime:.4f}")
sys.exit(os.waitstatus_to_exitcode(status))
PY
}

# tool conns round requests cpu_seconds
row() {
    awk -v t="$1" -v c="$2" -v r="$3" -v n="$4" -v cpu="$5" -v s="$secs" \
        'BEGIN { printf "%-9s %6s %5s %12d %12.0f %10.3f\n", t, c, r, n, n / s, cpu * 1e6 / n }'
}

printf '%-9s %6s %5s %12s %12s %10s\n' tool conns round requests req/s "cpu us/req"
for c in "${conns[@]}"; do
    for r in $(seq "$rounds"); do
        cpu=$(OUT="$work/wrk.txt" cpu_of taskset -c 1 wrk -t1 -c"$c" -d"${secs}s" "$url")
        reqs=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
        row wrk "$c" "$r" "$reqs" "$cpu"
        cpu=$(OUT="$work/lt.txt" cpu_of taskset -c 1 "$lt" -t 1 -c "$c" -d "${secs}s" -w 0 \
            --no-progress --json "$work/lt.json" "$url")
        reqs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$work/lt.json")
        row loadtest "$c" "$r" "$reqs" "$cpu"
    done
done
