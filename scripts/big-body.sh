#!/usr/bin/env bash
# Streams a large body through Shardgate both ways and prints how much the
# proxy's peak resident memory (VmHWM) grew: bodies must stream through
# bounded buffers, never be held whole.
#
#   scripts/big-body.sh            # 1 GiB down and 1 GiB up, on io_uring and epoll
#
# Knobs: SIZE_MIB [1024], SHARDGATE_BIN [target/release/shardgate], BASE_PORT [18400].
# Needs curl, awk and python3 (the streaming upstream). Loopback only; every process it starts
# is stopped on exit; each transfer is bounded by curl's --max-time.
set -euo pipefail

SIZE_MIB=${SIZE_MIB:-1024}
BASE_PORT=${BASE_PORT:-18400}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TAG=big-body
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
SHARDGATE=${SHARDGATE_BIN:-$ROOT/target/release/shardgate}
WORK=$(mktemp -d /tmp/shardgate-bigbody.XXXXXX)
UP_PORT=$BASE_PORT
PROXY_PORT=$((BASE_PORT + 1))
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

[[ -x $SHARDGATE ]] || { echo "no shardgate binary at $SHARDGATE (cargo build --release -p shardgate)" >&2; exit 1; }

# An upstream that answers GET with SIZE_MIB MiB of zeros (Content-Length) and reads any
# request body to its end before answering 200.
cat >"$WORK/upstream.py" <<'PY'
import socket, sys, threading
size = int(sys.argv[2]) << 20
def handle(c):
    f = c.makefile('rb')
    while True:
        line = f.readline()
        if not line:
            return
        method, length = line.split(b' ')[0], 0
        while True:
            h = f.readline()
            if h in (b'\r\n', b''):
                break
            k, _, v = h.partition(b':')
            if k.strip().lower() == b'content-length':
                length = int(v.strip())
        while length > 0:
            got = f.read(min(length, 1 << 20))
            if not got:
                return
            length -= len(got)
        if method == b'GET':
            c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n' % size)
            chunk = b'\0' * (1 << 20)
            for _ in range(size >> 20):
                c.sendall(chunk)
        else:
            c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(sys.argv[1])))
s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
PY
python3 "$WORK/upstream.py" "$UP_PORT" "$SIZE_MIB" &
PIDS+=($!)
head -c "$((SIZE_MIB << 20))" /dev/zero >"$WORK/body.bin"

wait_port "$UP_PORT"

printf '%-8s %12s %12s %10s %10s %14s\n' driver "down MB/s" "up MB/s" "RSS KiB" "peak KiB" "growth KiB"
for driver in uring legacy; do
    "$SHARDGATE" proxy --listen "127.0.0.1:$PROXY_PORT" \
        --to "127.0.0.1:$UP_PORT" --workers 1 --driver "$driver" 2>"$WORK/$driver.log" &
    pid=$!
    PIDS+=("$pid")
    wait_port "$PROXY_PORT"
    before=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    down=$(curl -sS -o /dev/null --max-time 300 -w '%{size_download} %{speed_download}' \
        "http://127.0.0.1:$PROXY_PORT/big")
    up=$(curl -sS -o /dev/null --max-time 300 -w '%{size_upload} %{speed_upload} %{http_code}' \
        -T "$WORK/body.bin" "http://127.0.0.1:$PROXY_PORT/upload")
    read -r down_bytes down_speed <<<"$down"
    read -r up_bytes up_speed up_status <<<"$up"
    [[ $down_bytes == $((SIZE_MIB << 20)) && $up_bytes == $((SIZE_MIB << 20)) && $up_status == 200 ]] \
        || { echo "$driver: transfer incomplete ($down / $up)" >&2; exit 1; }
    peak=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
    awk -v d="$driver" -v dn="$down_speed" -v u="$up_speed" -v b="$before" -v p="$peak" \
        'BEGIN { printf "%-8s %12.0f %12.0f %10d %10d %14d\n", d, dn / 1e6, u / 1e6, b, p, p - b }'
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    sleep 0.3
done
echo "($SIZE_MIB MiB each way through one connection; growth = VmHWM after - VmRSS before)"
