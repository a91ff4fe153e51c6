#!/usr/bin/env bash
# Reproduces the README's benchmark table on this machine: Shardgate (io_uring and epoll
# drivers) next to nginx configured as an equivalent one-worker keep-alive reverse proxy, all
# in front of the same `loadtest upstream`, loaded by `loadtest`.
#
#   scripts/bench.sh                 # build, run, print the table, write bench-results.json
#
# Environment knobs (defaults in brackets):
#   ROUNDS [3]  DURATION [10] seconds per run  CONNS [64]  MEM_CONNS [10000] idle connections
#   PROXIES ["shardgate-uring shardgate-legacy shardgate-uring-log nginx"]  BASE_PORT [18100]
#   (shardgate-uring-log: io_uring with the JSON access log on, written to the work dir;
#    shardgate-uring-chain: io_uring with a route filter chain of api-key, rate-limit,
#    request-id and headers, every request carrying a valid key and admitted)
#   SHARDGATE_BIN  use this binary instead of building crates/shardgate
#   BASELINE_BIN   another shardgate binary, run as proxy "shardgate-baseline" (io_uring),
#                  to compare two builds in one interleaved run
#   LOADTEST_BIN   use this binary instead of building loadtest
#   OUT [bench-results.json]  NO_INSTALL=1 never apt-get  NO_BUILD=1 never cargo build
#
# Every run is bounded in time; every process started here is stopped on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
MEM_CONNS=${MEM_CONNS:-10000}
PROXIES=${PROXIES:-"shardgate-uring shardgate-legacy shardgate-uring-log nginx"}
BASE_PORT=${BASE_PORT:-18100}
OUT=${OUT:-bench-results.json}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/shardgate-bench.XXXXXX)
CLK_TCK=$(getconf CLK_TCK)
UP_PORT=$BASE_PORT
PIDS=()

TAG=bench
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools and binaries
install_missing() {
    local missing=()
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    command -v wrk >/dev/null || missing+=(wrk)
    [[ ${#missing[@]} -eq 0 ]] && return
    [[ -n ${NO_INSTALL:-} ]] && die "missing ${missing[*]} (NO_INSTALL is set)"
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}: run as root or install them"
    log "installing ${missing[*]} from the distribution"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

wants() { [[ " $PROXIES " == *" $1 "* ]]; }

build() {
    local pkgs=()
    [[ -z ${LOADTEST_BIN:-} ]] && pkgs+=(-p loadtest)
    if [[ -z ${SHARDGATE_BIN:-} ]] && [[ " $PROXIES " == *" shardgate-"* ]]; then
        pkgs+=(-p shardgate)
    fi
    if [[ ${#pkgs[@]} -gt 0 && -z ${NO_BUILD:-} ]]; then
        log "cargo build --release ${pkgs[*]}"
        (cd "$ROOT" && cargo build --release "${pkgs[@]}") >&2
    fi
    LOADTEST=${LOADTEST_BIN:-$ROOT/target/release/loadtest}
    SHARDGATE=${SHARDGATE_BIN:-$ROOT/target/release/shardgate}
    [[ -x $LOADTEST ]] || die "no loadtest binary at $LOADTEST"
    if [[ " $PROXIES " == *" shardgate-"* ]]; then
        [[ -x $SHARDGATE ]] || die "no shardgate binary at $SHARDGATE"
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# ---------------------------------------------------------------- CPUs
# The proxy gets one CPU, the load generator and the upstream another (when there are two).
if [[ $(nproc) -ge 2 ]]; then
    PROXY_CPU=(taskset -c 0)
    LOAD_CPU=(taskset -c 1)
else
    PROXY_CPU=()
    LOAD_CPU=()
fi

# ---------------------------------------------------------------- process readings
# The process and all its descendants (nginx's workers are children of its master).
tree() {
    local pids=("$1") stat pid rest fields
    local -A parent=()
    for stat in /proc/[0-9]*/stat; do
        { read -r rest <"$stat"; } 2>/dev/null || continue
        pid=${stat#/proc/}
        pid=${pid%/stat}
        read -ra fields <<<"${rest##*) }"
        parent[$pid]=${fields[1]}
    done
    local changed=1
    while [[ $changed -eq 1 ]]; do
        changed=0
        for pid in "${!parent[@]}"; do
            if [[ " ${pids[*]} " == *" ${parent[$pid]} "* && " ${pids[*]} " != *" $pid "* ]]; then
                pids+=("$pid")
                changed=1
            fi
        done
    done
    echo "${pids[@]}"
}

# utime + stime of a process tree, in clock ticks (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() {
    local total=0 pid rest fields
    for pid in $(tree "$1"); do
        { read -r rest <"/proc/$pid/stat"; } 2>/dev/null || continue
        # After "comm) " the first field is field 3 (state): utime is [11], stime [12].
        read -ra fields <<<"${rest##*) }"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

# Resident set of a process tree's connection holders, KiB (VmRSS).
rss_kib() {
    local total=0 pid kib
    for pid in $(tree "$1"); do
        kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${kib:-0}))
    done
    echo "$total"
}

# First number after "key": in a JSON object path like latency.p50_us (pretty-printed input).
json_get() {
    local file=$1 path=$2
    local section=${path%.*} key=${path##*.}
    if [[ $section == "$path" ]]; then
        awk -v k="\"$key\":" '$1 == k { gsub(/[,]/, "", $2); print $2; exit }' "$file"
    else
        awk -v s="\"$section\":" -v k="\"$key\":" \
            '$1 == s { inside = 1 } inside && $1 == k { gsub(/[,]/, "", $2); print $2; exit }' "$file"
    fi
}

# ---------------------------------------------------------------- the contenders
start_upstream() {
    port_busy "$UP_PORT" && die "port $UP_PORT is taken (set BASE_PORT)"
    "${LOAD_CPU[@]}" "$LOADTEST" upstream --listen "127.0.0.1:$UP_PORT" --threads 1 \
        >"$WORK/upstream.log" 2>&1 &
    PIDS+=($!)
    wait_port "$UP_PORT" "$WORK/upstream.log" "${PIDS[-1]}"
}

write_nginx_conf() {
    local port=$1 nofile
    nofile=$(ulimit -Hn)
    [[ $nofile == unlimited || $nofile -gt 65536 ]] && nofile=65536
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<EOF
# One worker, keep-alive on both sides: the same shape as 'shardgate proxy --workers 1'.
worker_processes 1;
worker_rlimit_nofile $nofile;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events {
    worker_connections $((nofile - 64));
}
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream backend {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

# Extra request headers proxy $1 needs, as loadtest/wrk arguments.
headers_for() {
    [[ $1 == shardgate-uring-chain ]] && printf '%s\n' -H 'X-Api-Key: bench-key'
    return 0
}

# Starts proxy $1 on port $2; sets PROXY_PID.
start_proxy() {
    local name=$1 port=$2
    port_busy "$port" && die "port $port is taken (set BASE_PORT)"
    case $name in
        shardgate-uring | shardgate-legacy | shardgate-baseline)
            # mimalloc commits whole arenas eagerly by default; with it off an idle
            # connection's memory is what it really touches (measured: about half).
            local bin=$SHARDGATE driver=${name#shardgate-}
            if [[ $name == shardgate-baseline ]]; then
                bin=${BASELINE_BIN:?shardgate-baseline needs BASELINE_BIN}
                driver=uring
            fi
            "${PROXY_CPU[@]}" "$bin" proxy \
                --listen "127.0.0.1:$port" --to "127.0.0.1:$UP_PORT" --workers 1 \
                --driver "$driver" >"$WORK/$name.log" 2>&1 &
            ;;
        shardgate-uring-log | shardgate-uring-chain)
            printf '%s\n' 'workers = 1' 'driver = "uring"' '[[listeners]]' \
                "address = \"127.0.0.1:$port\"" '[upstreams.backend]' \
                "endpoints = [\"127.0.0.1:$UP_PORT\"]" '[[routes]]' 'name = "all"' 'prefix = "/"' \
                'upstream = "backend"' >"$WORK/$name.toml"
            if [[ $name == shardgate-uring-log ]]; then
                printf '%s\n' '[access_log]' "path = \"$WORK/access.log\"" 'format = "json"' \
                    >>"$WORK/$name.toml"
            else
                # sha256("bench-key"); the limit is far above what one core can offer.
                printf '%s\n' 'filters = [' \
                    '  { type = "api-key", keys = [{ sha256 = "'"$(printf bench-key | sha256sum | cut -d' ' -f1)"'", consumer = "bench" }] },' \
                    '  { type = "rate-limit", rate = 10000000, burst = 10000000, key = "consumer" },' \
                    '  { type = "request-id" },' \
                    '  { type = "headers", request = { set = { "X-Env" = "bench" } }, response = { remove = ["Server"] } },' \
                    ']' >>"$WORK/$name.toml"
            fi
            "${PROXY_CPU[@]}" "$SHARDGATE" run -c "$WORK/$name.toml" \
                >"$WORK/$name.log" 2>&1 &
            ;;
        nginx)
            write_nginx_conf "$port"
            "${PROXY_CPU[@]}" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" \
                -e "$WORK/nginx/error.log" >"$WORK/nginx.log" 2>&1 &
            ;;
        *) die "unknown proxy $name (known: shardgate-uring shardgate-legacy shardgate-uring-log shardgate-uring-chain shardgate-baseline nginx)" ;;
    esac
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_port "$port" "$WORK/$name.log" "$PROXY_PID"
    # It must really proxy: a few requests, all 200.
    mapfile -t extra < <(headers_for "$name")
    "$LOADTEST" -c 2 -t 1 -n 20 -d 5s -w 0 --no-progress --json "$WORK/smoke.json" \
        "${extra[@]}" "http://127.0.0.1:$port/" >/dev/null
    [[ $(json_get "$WORK/smoke.json" requests) == 20 && $(json_get "$WORK/smoke.json" non_2xx) == 0 ]] \
        || die "$name on port $port does not answer 200 through the upstream"
}

# One measured run against proxy $1 (pid $2, port $3), round $4: prints "qps p50 p99 cpu_us".
measure() {
    local name=$1 pid=$2 port=$3 round=$4 json before after reqs
    json="$WORK/$name-$round.json"
    mapfile -t extra < <(headers_for "$name")
    before=$(cpu_ticks "$pid")
    "${LOAD_CPU[@]}" "$LOADTEST" -t 1 -c "$CONNS" -d "${DURATION}s" -w 0 --no-progress \
        --json "$json" "${extra[@]}" "http://127.0.0.1:$port/" >/dev/null
    after=$(cpu_ticks "$pid")
    reqs=$(json_get "$json" requests)
    [[ $(json_get "$json" errors_total) == 0 ]] || log "$name round $round had errors: see $json"
    awk -v q="$(json_get "$json" throughput_rps)" -v p50="$(json_get "$json" latency.p50_us)" \
        -v p99="$(json_get "$json" latency.p99_us)" -v t=$((after - before)) -v hz="$CLK_TCK" \
        -v n="$reqs" 'BEGIN { printf "%.0f %.1f %.1f %.3f\n", q, p50, p99, (n > 0 ? t / hz * 1e6 / n : 0) }'
}

# Idle memory: RSS before and while $MEM_CONNS keep-alive connections sit idle.
measure_memory() {
    local name=$1 pid=$2 port=$3 before after held hold_pid
    local ready="$WORK/$name.ready"
    before=$(rss_kib "$pid")
    rm -f "$ready"
    "${LOAD_CPU[@]}" "$LOADTEST" hold -t 1 -c "$MEM_CONNS" -k 300s -d 6s --no-progress \
        --ready-file "$ready" --json "$WORK/$name-hold.json" "http://127.0.0.1:$port/" \
        >/dev/null &
    hold_pid=$!
    PIDS+=("$hold_pid")
    wait_ready "$ready" "$hold_pid" || true
    # Idle for 3 s: past the second after which Shardgate parks an idle connection.
    sleep 3
    after=$(rss_kib "$pid")
    wait "$hold_pid" || true
    held=$(json_get "$WORK/$name-hold.json" alive)
    [[ ${held:-0} -gt 0 ]] || { echo "0 0"; return; }
    awk -v b="$before" -v a="$after" -v n="$held" 'BEGIN { printf "%.3f %d\n", (a - b) / n, n }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

# ---------------------------------------------------------------- main
install_missing
build
read -ra NAMES <<<"$PROXIES"
log "proxies: ${NAMES[*]}; $ROUNDS rounds of ${DURATION}s at $CONNS connections; $MEM_CONNS idle connections"
[[ ${#PROXY_CPU[@]} -gt 0 ]] && log "proxy on CPU 0; load generator and upstream on CPU 1"
start_upstream

declare -A PID_OF PORT_OF
port=$((BASE_PORT + 1))
for name in "${NAMES[@]}"; do
    start_proxy "$name" "$port"
    PID_OF[$name]=$PROXY_PID
    PORT_OF[$name]=$port
    # Warm up (connections, pools, caches); not measured.
    mapfile -t extra < <(headers_for "$name")
    "${LOAD_CPU[@]}" "$LOADTEST" -t 1 -c "$CONNS" -d 2s -w 0 --no-progress \
        "${extra[@]}" "http://127.0.0.1:$port/" >/dev/null
    port=$((port + 1))
done

# Interleaved rounds: A B C, A B C, ... so drift on the machine hits everyone alike.
for round in $(seq "$ROUNDS"); do
    for name in "${NAMES[@]}"; do
        row=$(measure "$name" "${PID_OF[$name]}" "${PORT_OF[$name]}" "$round")
        log "round $round $name: qps p50_us p99_us cpu_us_per_req = $row"
        echo "$row" >>"$WORK/$name.rows"
    done
done

# Cross-check with a generator everyone knows: one wrk run per proxy.
for name in "${NAMES[@]}"; do
    mapfile -t extra < <(headers_for "$name")
    "${LOAD_CPU[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" "${extra[@]}" \
        "http://127.0.0.1:${PORT_OF[$name]}/" >"$WORK/$name.wrk" 2>&1 || true
    log "wrk cross-check $name: $(awk '/Requests\/sec/ {print $2}' "$WORK/$name.wrk") req/s"
done

for name in "${NAMES[@]}"; do
    log "holding $MEM_CONNS idle connections through $name"
    measure_memory "$name" "${PID_OF[$name]}" "${PORT_OF[$name]}" >"$WORK/$name.mem"
done

# ---------------------------------------------------------------- table and JSON
col() { awk -v c="$1" '{ print $c }' "$WORK/$2.rows" | median; }
declare -A QPS P50 P99 CPU MEM HELD WRK
for name in "${NAMES[@]}"; do
    WRK[$name]=$(awk '/Requests\/sec/ {print $2; exit}' "$WORK/$name.wrk")
    QPS[$name]=$(col 1 "$name")
    P50[$name]=$(col 2 "$name")
    P99[$name]=$(col 3 "$name")
    CPU[$name]=$(col 4 "$name")
    read -r "MEM[$name]" "HELD[$name]" <"$WORK/$name.mem"
done

fmt_us() { awk -v v="$1" 'BEGIN { if (v < 1000) printf "%.0fus", v; else printf "%.2fms", v / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "-" }'; }
printf '\n%-17s %9s %9s %9s %11s %14s %10s %10s %10s %11s\n' proxy QPS p50 p99 "CPU us/req" \
    "KiB/idle conn" "QPS/nginx" "CPU/nginx" "mem/nginx" "wrk QPS"
for name in "${NAMES[@]}"; do
    if wants nginx; then
        rq=$(ratio "${QPS[$name]}" "${QPS[nginx]}")
        rc=$(ratio "${CPU[$name]}" "${CPU[nginx]}")
        rm_=$(ratio "${MEM[$name]}" "${MEM[nginx]}")
    else
        rq=- rc=- rm_=-
    fi
    printf '%-17s %9.0f %9s %9s %11.2f %14.2f %10s %10s %10s %11.0f\n' "$name" "${QPS[$name]}" \
        "$(fmt_us "${P50[$name]}")" "$(fmt_us "${P99[$name]}")" "${CPU[$name]}" "${MEM[$name]}" \
        "$rq" "$rc" "$rm_" "${WRK[$name]:-0}"
done
# Each round's CPU per request against the first proxy's in the same round: pairing rounds
# cancels most of the drift a shared machine adds between them.
first=${NAMES[0]}
for name in "${NAMES[@]:1}"; do
    paired=$(paste "$WORK/$name.rows" "$WORK/$first.rows" | awk '{ print $4 / $8 }' | median)
    printf 'CPU per request, %s against %s in the same round: median ratio %.3f\n' \
        "$name" "$first" "$paired"
done
printf '\n(loadtest medians of %s rounds of %ss at %s connections; CPU from /proc/PID/stat;\n' \
    "$ROUNDS" "$DURATION" "$CONNS"
printf ' memory: RSS growth / %s idle keep-alive connections; wrk QPS: one wrk run as a cross-check)\n' \
    "$MEM_CONNS"

{
    printf '{\n  "machine": {"cpus": %s, "kernel": "%s", "pinned": %s},\n' "$(nproc)" \
        "$(uname -r)" "$([[ ${#PROXY_CPU[@]} -gt 0 ]] && echo true || echo false)"
    printf '  "settings": {"rounds": %s, "duration_s": %s, "connections": %s, "idle_connections": %s},\n' \
        "$ROUNDS" "$DURATION" "$CONNS" "$MEM_CONNS"
    printf '  "results": {\n'
    sep=""
    for name in "${NAMES[@]}"; do
        rounds_json=$(awk '{ printf "%s{\"qps\": %s, \"p50_us\": %s, \"p99_us\": %s, \"cpu_us_per_req\": %s}", (NR > 1 ? ", " : ""), $1, $2, $3, $4 }' "$WORK/$name.rows")
        printf '%s    "%s": {"qps": %s, "p50_us": %s, "p99_us": %s, "cpu_us_per_req": %s, "kib_per_idle_conn": %s, "idle_conns_held": %s, "wrk_qps": %s, "rounds": [%s]}' \
            "$sep" "$name" "${QPS[$name]}" "${P50[$name]}" "${P99[$name]}" "${CPU[$name]}" \
            "${MEM[$name]}" "${HELD[$name]}" "${WRK[$name]:-0}" "$rounds_json"
        sep=$',\n'
    done
    printf '\n  }\n}\n'
} >"$OUT"
log "results written to $OUT"
