#!/usr/bin/env bash
# Footprint of the live daemon (`--dry-run`, files in a temp dir: bans
# nothing in the kernel). Prints `footprint KEY=VALUE` lines:
#   binary_bytes      the stripped release binary
#   idle_rss_kib      VmRSS after start, following an empty log; also
#                     idle_anon_kib (RssAnon: refract's own memory) and
#                     idle_pss_kib (Pss: shared library pages divided among
#                     the processes that map them)
#   idle_wakeups      context switches (voluntary + involuntary, from
#                     /proc/PID/status) over IDLE_SECS with no log activity
#   users100k_rss_kib / users100k_hwm_kib
#                     VmRSS / VmHWM after 100,000 lines of distinct users
#                     (window 1h: all of them tracked)
#   follow_cpu_pct    utime+stime (/proc/PID/stat) of a daemon following a
#                     log growing at 10,000 lines/s for FOLLOW_SECS, as a
#                     percentage of one core; with the daemon's liveness
#                     counters at the end of the phase (follow_attributed,
#                     follow_liveness_checks, follow_liveness_lookups, ...:
#                     its last `stats:` line's fields, prefixed)
#
# The daemon runs as on a node, with liveness on (`--proto=tcp
# --dport=443`, the defaults, spelled out: every counted line with
# address:port is attributed to a connection, newcomers of users with
# other connections wait for exact sock_diag lookups, users over their
# limit are re-checked every second),
# in a network namespace of its own (`unshare --net`, gone with the
# process; `--map-root-user` when not root) whose veth pair holds
# 192.0.2.1 and 2001:db8::1, so lines of both families are attributed and
# every lookup asks that namespace, never the host's. Its sockets are not
# there, so each lookup is answered ENOENT (the connection closed) and
# the connection forgotten. Prints `footprint liveness=on|off`.
#
#   scripts/footprint.sh [--quick]    (--quick: 10 s phases instead of 60 s)
#   scripts/footprint.sh --follow [--quick] [--no-liveness]
#                     only the follow phase (follow_* lines); for the
#                     previous version's figure beside this one's, and
#                     (--no-liveness: --proto=udp, which leaves the
#                     policy's work as it is and turns liveness off, a TCP
#                     matter) the same without liveness
#   scripts/footprint.sh --tracked FILE LINES
#                     only: a daemon (--window=1h, caps raised to 2M;
#                     liveness on, in its namespace as below) reads FILE
#                     (LINES lines) from its start; prints
#                     tracked_cpu_ns_line (utime+stime per line),
#                     tracked_anon_kib (RssAnon at the end: the tables; the
#                     log's mmap window is file-backed and not in it),
#                     tracked_hwm_kib (VmHWM) and tracked_users
#   REFRACT=path/to/refract scripts/footprint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
secs=60
tracked=
follow_only=0
case ${1:-} in
    --quick) secs=10 ;;
    --tracked) tracked=${2:?FILE} tracked_lines=${3:?LINES} ;;
    --follow) follow_only=1 ;;
esac
# Liveness on unless --no-liveness (only with --follow).
live_args=(--proto=tcp --dport=443)
if ((follow_only)); then
    for a in "${@:2}"; do
        case $a in
            --quick) secs=10 ;;
            --no-liveness) live_args=(--proto=udp --dport=443) ;;
            *) echo "footprint: unknown option $a" >&2; exit 2 ;;
        esac
    done
fi
bin=${REFRACT:-target/release/refract}
if [[ ! -x $bin ]]; then
    cargo build --release --quiet
fi
helper=scripts/bench.py
rate=10000

dir=$(mktemp -d "${TMPDIR:-/tmp}/refract-footprint.XXXXXX")
pid=
stop() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    pid=
}
cleanup() {
    stop
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

unshare_args=(--net)
[[ $(id -u) -ne 0 ]] && unshare_args+=(--map-root-user)
# The namespace's addresses, then the daemon in its place (`exec`: $! is
# the daemon's pid).
# shellcheck disable=SC2016 # expanded by the inner sh
in_ns='ip link add rfbfp0 type veth peer name rfbfp1 && ip addr add 192.0.2.1/24 dev rfbfp0 &&
    ip addr add 2001:db8::1/64 dev rfbfp0 nodad && ip link set rfbfp0 up && ip link set rfbfp1 up && exec "$@"'

# start ARGS...: a dry-run daemon with liveness on, on $dir/access.log
# (emptied), its pid in $pid
start() {
    : >"$dir/access.log"
    : >"$dir/err"
    REFRACT_LOG=stderr unshare "${unshare_args[@]}" sh -c "$in_ns" sh "$bin" --dry-run \
        "${live_args[@]}" --access.log="$dir/access.log" \
        --block.log="$dir/block.log" "$@" 2>"$dir/err" &
    pid=$!
    for _ in $(seq 500); do
        grep -q 'refract: ready: ' "$dir/err" && return 0
        sleep 0.01
    done
    cat "$dir/err" >&2
    exit 1
}
field() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status"; }
switches() { echo $(($(field voluntary_ctxt_switches) + $(field nonvoluntary_ctxt_switches))); }
# utime + stime in clock ticks: fields 14 and 15 of /proc/PID/stat, counted
# after the `(comm)` field, which may contain spaces.
ticks() {
    local s
    s=$(<"/proc/$pid/stat")
    s=${s##*) }
    # shellcheck disable=SC2086 # split on purpose
    set -- $s
    echo $((${12} + ${13}))
}

if [[ -n $tracked ]]; then
    : >"$dir/err"
    REFRACT_LOG=stderr unshare "${unshare_args[@]}" sh -c "$in_ns" sh "$bin" --dry-run \
        "${live_args[@]}" --from-start --window=1h --max-users=2000000 --max-keys=2000000 \
        --access.log="$tracked" --block.log="$dir/block.log" 2>"$dir/err" &
    pid=$!
    python3 "$helper" wait-lines "$pid" "$dir/err" "$tracked_lines" 600
    t=$(ticks)
    hz=$(getconf CLK_TCK)
    users=$(grep -o 'stats: .*' "$dir/err" | tail -1 | grep -o ' users=[0-9]*' | cut -d= -f2)
    echo "footprint tracked_cpu_ns_line=$(awk -v t="$t" -v hz="$hz" -v n="$tracked_lines" 'BEGIN { printf "%.0f", t / hz * 1e9 / n }') tracked_anon_kib=$(field RssAnon) tracked_hwm_kib=$(field VmHWM) tracked_users=$users"
    exit 0
fi

if ((!follow_only)); then
echo "footprint binary_bytes=$(stat -c %s "$bin")"

start
if grep -q 'liveness on' "$dir/err"; then echo "footprint liveness=on"; else echo "footprint liveness=off"; fi
sleep 1
pss=$(awk '$1 == "Pss:" { print $2 }' "/proc/$pid/smaps_rollup")
echo "footprint idle_rss_kib=$(field VmRSS) idle_anon_kib=$(field RssAnon) idle_pss_kib=$pss"
before=$(switches)
sleep "$secs"
echo "footprint idle_wakeups=$(($(switches) - before)) idle_secs=$secs"
stop

start --window=1h --max-users=200000
python3 "$helper" users 100000 100000 "$dir/users"
cat "$dir/users" >>"$dir/access.log"
python3 "$helper" wait-lines "$pid" "$dir/err" 100000 60
echo "footprint users100k_rss_kib=$(field VmRSS) users100k_hwm_kib=$(field VmHWM) users100k_anon_kib=$(field RssAnon)"
stop
fi

# A realistic stream (the generated log: many users, mux, IPv6, noise).
gen=${REFRACT_GEN_LOG:-}
if [[ -z $gen ]]; then
    gen=$dir/gen.log
    cargo bench --quiet --bench replay -- --write-log "$gen" $((rate * 6)) >/dev/null
fi
start
t0=$(ticks)
written=$(python3 "$helper" writer "$rate" "$secs" "$gen" "$dir/access.log")
python3 "$helper" wait-lines "$pid" "$dir/err" "$written" 30
t1=$(ticks)
hz=$(getconf CLK_TCK)
echo "footprint follow_cpu_pct=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v s="$secs" 'BEGIN { printf "%.2f", 100 * t / hz / s }') follow_secs=$secs follow_lines=$written follow_rss_kib=$(field VmRSS)"
# The liveness work of the phase: the counters of the last `stats:` line
# (an older version without liveness has none of them).
grep -o 'stats: .*' "$dir/err" | tail -1 | tr ' ' '\n' |
    grep -E '^(bans|attributed|unattributed|liveness_[a-z]+|deferred[a-z_]*|conns|suspects|conns_gone)=' |
    sed 's/^/follow_/' | tr '\n' ' ' | sed 's/^/footprint /; s/ $/\n/'
stop
