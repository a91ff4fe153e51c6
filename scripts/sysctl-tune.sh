#!/usr/bin/env bash
# Kernel settings for a proxy that holds many connections.
#
#   scripts/sysctl-tune.sh [show]            dry run: current value, suggested value, why
#   scripts/sysctl-tune.sh apply [--busy-poll]
#                                            write /etc/sysctl.d/90-shardgate.conf, apply it
#                                            now, and remember the previous values
#   scripts/sysctl-tune.sh revert            restore the remembered values, remove the file
#
# Nothing is changed without `apply`. A setting already better than the suggestion (a larger
# limit, a wider port range) is left alone. `--busy-poll` adds busy polling, which trades CPU
# for latency and is off unless asked for.
#
# Paths can be moved for testing: SYSCTL_CONF (default /etc/sysctl.d/90-shardgate.conf),
# STATE_FILE (default /var/lib/shardgate/sysctl-previous.conf), PROC_SYS (default /proc/sys).
set -euo pipefail

SYSCTL_CONF=${SYSCTL_CONF:-/etc/sysctl.d/90-shardgate.conf}
STATE_FILE=${STATE_FILE:-/var/lib/shardgate/sysctl-previous.conf}
PROC_SYS=${PROC_SYS:-/proc/sys}

# key | suggested value | rule (raise: only ever increase; lower: only decrease; range:
# widen a "low high" pair; buffers: min and default as given, max never lowered; set: exact)
# | why
SETTINGS=(
    "net.core.somaxconn|65535|raise|accept queue per listener: bursts of new connections are dropped when it is full"
    "net.ipv4.tcp_max_syn_backlog|65535|raise|half-open connections waiting for their handshake to finish, during bursts"
    "net.ipv4.ip_local_port_range|1024 65535|range|ephemeral ports for upstream connections (and a load generator on this host)"
    "net.ipv4.tcp_tw_reuse|1|set|let new outgoing (upstream) connections reuse ports still in TIME_WAIT"
    "fs.nr_open|1048576|raise|ceiling for a process's open-file limit (RLIMIT_NOFILE): one file per connection"
    "fs.file-max|2097152|raise|open files for the whole system"
    "net.core.netdev_max_backlog|16384|raise|packets queued per CPU before the network stack handles them, under bursts"
    "net.ipv4.tcp_rmem|4096 65536 16777216|buffers|receive buffer min/default/max: small default keeps idle connections cheap, autotuning grows busy ones"
    "net.ipv4.tcp_wmem|4096 16384 16777216|buffers|send buffer min/default/max: same idea for the send side"
    "net.ipv4.tcp_fin_timeout|15|lower|free orphaned connections stuck in FIN_WAIT_2 sooner than the 60 s default"
    "net.ipv4.tcp_migrate_req|1|set|on a binary upgrade, move connections queued on the old process's SO_REUSEPORT listeners to the new ones instead of resetting them (Linux 5.14+)"
)
BUSY_POLL=(
    "net.core.busy_poll|50|raise|microseconds poll/epoll spin on the device queue before sleeping: lower latency, more CPU"
    "net.core.busy_read|50|raise|microseconds a blocking socket read spins before sleeping: lower latency, more CPU"
)

die() { echo "sysctl-tune: $*" >&2; exit 1; }

path_of() { echo "$PROC_SYS/${1//.//}"; }

# Current value with runs of whitespace (tabs in the pairs and triples) made single spaces.
current() {
    local p
    p=$(path_of "$1")
    [[ -r $p ]] || { echo "unavailable"; return; }
    tr -s ' \t' ' ' <"$p" | sed 's/ *$//'
}

# The value to write, given the current one, or "" when the current one is as good.
target() {
    local cur=$1 want=$2 rule=$3 clo chi wlo whi cmax wmin wdef wmax
    [[ $cur == unavailable ]] && { echo ""; return; }
    case $rule in
        raise) [[ $cur -ge $want ]] && echo "" || echo "$want" ;;
        lower) [[ $cur -le $want ]] && echo "" || echo "$want" ;;
        set) [[ $cur == "$want" ]] && echo "" || echo "$want" ;;
        range)
            read -r clo chi <<<"$cur"
            read -r wlo whi <<<"$want"
            ((wlo > clo)) && wlo=$clo
            ((whi < chi)) && whi=$chi
            [[ "$wlo $whi" == "$cur" ]] && echo "" || echo "$wlo $whi"
            ;;
        buffers)
            read -r _ _ cmax <<<"$cur"
            read -r wmin wdef wmax <<<"$want"
            ((wmax < cmax)) && wmax=$cmax
            [[ "$wmin $wdef $wmax" == "$cur" ]] && echo "" || echo "$wmin $wdef $wmax"
            ;;
        *) die "bad rule $rule" ;;
    esac
}

selected() {
    printf '%s\n' "${SETTINGS[@]}"
    if [[ ${1:-} == --busy-poll ]]; then
        printf '%s\n' "${BUSY_POLL[@]}"
    fi
}

show() {
    local key want rule why cur new changes=0
    printf '%-32s %-24s %-24s %s\n' setting current suggested ""
    while IFS='|' read -r key want rule why; do
        cur=$(current "$key")
        new=$(target "$cur" "$want" "$rule")
        if [[ -n $new ]]; then
            changes=$((changes + 1))
            printf '%-32s %-24s %-24s <- change\n' "$key" "$cur" "$new"
        else
            printf '%-32s %-24s %-24s ok\n' "$key" "$cur" "${want}"
        fi
        printf '    # %s\n' "$why"
    done < <(selected "${1:-}")
    echo
    if [[ ${1:-} != --busy-poll ]]; then
        echo "Busy polling (net.core.busy_poll, net.core.busy_read) is off; 'apply --busy-poll' adds it."
    fi
    echo "$changes setting(s) would change. Nothing was changed: run '$0 apply' as root to apply."
}

write_value() {
    local key=$1 value=$2
    printf '%s\n' "$value" >"$(path_of "$key")" || die "cannot set $key (are you root?)"
}

apply() {
    [[ -w $(path_of net.core.somaxconn) ]] || die "apply needs root (cannot write $PROC_SYS)"
    [[ -e $STATE_FILE ]] && die "already applied ($STATE_FILE exists): revert first"
    local key want rule why cur new tmp_conf tmp_state i
    local keys=() values=()
    mkdir -p "$(dirname "$SYSCTL_CONF")" "$(dirname "$STATE_FILE")"
    tmp_conf=$(mktemp)
    tmp_state=$(mktemp)
    echo "# Written by shardgate scripts/sysctl-tune.sh apply; undo with 'sysctl-tune.sh revert'." \
        >"$tmp_conf"
    echo "# Values before shardgate scripts/sysctl-tune.sh apply (key = value)." >"$tmp_state"
    while IFS='|' read -r key want rule why; do
        cur=$(current "$key")
        new=$(target "$cur" "$want" "$rule")
        [[ -z $new ]] && continue
        printf '# %s\n%s = %s\n' "$why" "$key" "$new" >>"$tmp_conf"
        printf '%s = %s\n' "$key" "$cur" >>"$tmp_state"
        keys+=("$key")
        values+=("$new")
    done < <(selected "${1:-}")
    if [[ ${#keys[@]} -eq 0 ]]; then
        rm -f "$tmp_conf" "$tmp_state"
        echo "Every setting is already at or above the suggestion: nothing to do."
        return
    fi
    # Remember first, so a failure half-way can still be reverted.
    mv "$tmp_state" "$STATE_FILE"
    mv "$tmp_conf" "$SYSCTL_CONF"
    chmod 644 "$SYSCTL_CONF"
    for i in "${!keys[@]}"; do
        write_value "${keys[$i]}" "${values[$i]}"
        echo "set ${keys[$i]} = ${values[$i]}"
    done
    echo "Wrote $SYSCTL_CONF (applied at boot) and remembered the old values in $STATE_FILE."
}

revert() {
    [[ -e $STATE_FILE ]] || die "nothing to revert ($STATE_FILE does not exist)"
    local key value line
    while IFS= read -r line; do
        [[ $line == \#* || -z $line ]] && continue
        key=${line%% = *}
        value=${line#* = }
        write_value "$key" "$value"
        echo "restored $key = $value"
    done <"$STATE_FILE"
    rm -f "$SYSCTL_CONF" "$STATE_FILE"
    echo "Removed $SYSCTL_CONF."
}

case ${1:-show} in
    show) show "${2:-}" ;;
    apply) apply "${2:-}" ;;
    revert) revert ;;
    -h | --help | help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command ${1} (show | apply [--busy-poll] | revert)" ;;
esac
