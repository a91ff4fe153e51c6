#!/usr/bin/env bash
# What a route's filter chain costs the proxy, in user-space instructions per request, counted
# exactly by callgrind (CPU time on a shared VM varies by ±10% between runs; instruction counts
# do not). Two one-shard gateways on the epoll driver (valgrind does not model io_uring) in
# front of `loadtest upstream`: a plain route, and the same route with api-key, rate-limit,
# request-id and headers filters. Each is run twice, for N1 and N2 requests on one keep-alive
# connection, so start-up and shutdown cancel out: Ir per request = (Ir(N2) - Ir(N1)) / (N2 - N1).
#
#   scripts/chain-cost.sh            # N1=2000 N2=12000; needs valgrind and release binaries
#   KEEP=1 scripts/chain-cost.sh     # keep the callgrind files (callgrind_annotate them)
#
# The kernel's share of a request (about 89% of the proxy's CPU time in scripts/bench.sh) is
# the same for both routes and is not counted here; set the delta against bench.sh's
# CPU µs per request to get the chain's share of the whole.
set -euo pipefail

N1=${N1:-2000}
N2=${N2:-12000}
BASE_PORT=${BASE_PORT:-18300}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/shardgate-chain.XXXXXX)
SHARDGATE=${SHARDGATE_BIN:-$ROOT/target/release/shardgate}
LOADTEST=${LOADTEST_BIN:-$ROOT/target/release/loadtest}
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n ${KEEP:-} ]]; then log "kept $WORK (KEEP is set)"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
TAG=chain-cost
WAIT_PORT_SECONDS=30 # start-up under valgrind is slow
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

command -v valgrind >/dev/null || die "valgrind is needed (apt-get install valgrind)"
[[ -x $SHARDGATE && -x $LOADTEST ]] || die "build first: cargo build --release -p shardgate -p loadtest"

UP_PORT=$BASE_PORT
"$LOADTEST" upstream --listen "127.0.0.1:$UP_PORT" --threads 1 >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UP_PORT" "$WORK/upstream.log" "${PIDS[-1]}"

KEY=$(printf bench-key | sha256sum | cut -d' ' -f1)
config() { # $1 variant, $2 port
    printf '%s\n' 'workers = 1' 'driver = "legacy"' '[[listeners]]' "address = \"127.0.0.1:$2\"" \
        '[upstreams.backend]' "endpoints = [\"127.0.0.1:$UP_PORT\"]" '[[routes]]' 'name = "all"' \
        'prefix = "/"' 'upstream = "backend"'
    [[ $1 == chain ]] && printf '%s\n' 'filters = [' \
        "  { type = \"api-key\", keys = [{ sha256 = \"$KEY\", consumer = \"bench\" }] }," \
        '  { type = "rate-limit", rate = 10000000, burst = 10000000, key = "consumer" },' \
        '  { type = "request-id" },' \
        '  { type = "headers", request = { set = { "X-Env" = "bench" } }, response = { remove = ["Server"] } },' \
        ']'
    return 0
}

# Total instructions of one gateway run serving $3 requests of variant $1 on port $2.
instructions() {
    local variant=$1 port=$2 n=$3 pid out="$WORK/cg.$1.$3"
    config "$variant" "$port" >"$WORK/$variant.toml"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$SHARDGATE" run -c "$WORK/$variant.toml" \
        >"$WORK/$variant.$n.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port" "$WORK/$variant.$n.log" "$pid"
    local header=()
    [[ $variant == chain ]] && header=(-H 'X-Api-Key: bench-key')
    "$LOADTEST" -c 1 -t 1 -n "$n" -w 0 -d 10m --no-progress --json "$WORK/lt.json" "${header[@]}" \
        "http://127.0.0.1:$port/" >/dev/null
    grep -q '"non_2xx": 0' "$WORK/lt.json" || die "$variant: responses other than 2xx (see $WORK/lt.json)"
    kill -QUIT "$pid"
    wait "$pid" 2>/dev/null || true
    awk '/^summary:/ { print $2 }' "$out"
}

declare -A PER
port=$((BASE_PORT + 1))
for variant in plain chain; do
    a=$(instructions "$variant" "$port" "$N1")
    port=$((port + 1))
    b=$(instructions "$variant" "$port" "$N2")
    port=$((port + 1))
    PER[$variant]=$(( (b - a) / (N2 - N1) ))
    log "$variant: $a instructions for $N1 requests, $b for $N2: ${PER[$variant]} per request"
done
delta=$((PER[chain] - PER[plain]))
printf 'user-space instructions per request: plain %d, chain %d, chain adds %d (%+.1f%%)\n' \
    "${PER[plain]}" "${PER[chain]}" "$delta" "$(awk -v d="$delta" -v p="${PER[plain]}" 'BEGIN { print d / p * 100 }')"

# Of that, the API key's check (its SHA-256 and the constant-time compare), counted inclusively.
lookup() {
    callgrind_annotate --inclusive=yes "$WORK/cg.chain.$1" 2>/dev/null |
        awk '/KeyStore::lookup/ && !done { gsub(",", "", $1); print $1; done = 1 }'
}
if command -v callgrind_annotate >/dev/null; then
    l1=$(lookup "$N1") l2=$(lookup "$N2")
    [[ -n $l1 && -n $l2 ]] && printf 'of which the API key check (SHA-256 in portable code under valgrind): %d per request\n' \
        $(( (l2 - l1) / (N2 - N1) ))
fi
