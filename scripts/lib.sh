# shellcheck shell=bash
# Shared by the scripts in this folder (sourced, not run): messages and waiting for a port.
# Set TAG before sourcing: it prefixes every message.

log() { printf '[%s] %s\n' "${TAG:-shardgate}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits up to WAIT_PORT_SECONDS (10) for port $1 to be served. With a process $3, gives up as
# soon as it exits, showing the end of its log $2.
wait_port() {
    local _
    for _ in $(seq $((${WAIT_PORT_SECONDS:-10} * 10))); do
        port_busy "$1" && return 0
        if [[ -n ${3:-} ]]; then kill -0 "$3" 2>/dev/null || break; fi
        sleep 0.1
    done
    [[ -n ${2:-} && -s $2 ]] && tail -n 20 "$2" >&2
    die "nothing listens on port $1${3:+ (process $3 exited or took too long)}"
}

# The nginx binary (Debian installs it in /usr/sbin, which may not be on PATH), or die.
find_nginx() {
    local n
    n=$(command -v nginx || echo /usr/sbin/nginx)
    [[ -x $n ]] || die "needs nginx (apt-get install -y nginx)"
    echo "$n"
}

# CPU time of process $1 so far (user + system), in clock ticks (getconf CLK_TCK a second).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# The median of the numbers given.
median() { python3 -c "import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))" "$@"; }

# Writes $1/backend.conf: the benchmarks' backend, one nginx worker on 127.0.0.1:$2 answering
# every request with the same 64-byte body; its pid file is $1/backend.pid.
backend_conf() {
    cat >"$1/backend.conf" <<EOC
worker_processes 1; daemon off; error_log $1/backend.err; pid $1/backend.pid;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$2; keepalive_requests 1000000;
  location / { return 200 "0123456789012345678901234567890123456789012345678901234567890123"; } } }
EOC
}

# Resident memory of process $1, in KiB.
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# Makes WORK, a temporary directory named after $1, and PIDS; on exit, stops the processes in
# PIDS and the nginx whose pid file is WORK/backend.pid, then removes WORK.
work_dir() {
    WORK=$(mktemp -d "/tmp/shardgate-$1.XXXXXX")
    PIDS=()
    trap stop_all EXIT
    trap 'exit 130' INT TERM
}
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -f $WORK/backend.pid ]] && kill "$(cat "$WORK/backend.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}

# Waits up to $3 seconds (60) for file $1 to appear while process $2 runs; fails if the process
# exits first.
wait_ready() {
    local _
    for _ in $(seq $((${3:-60} * 10))); do
        [[ -e $1 ]] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
}
