#!/usr/bin/env bash
# Latency of the live daemon: appends a violating access line and measures
# the time until its audit line is in the block log, N times; prints p50,
# p99 and max in microseconds.
#
#   scripts/latency.sh [N]            (default 200)
#   REFRACT=path/to/refract scripts/latency.sh
#
# Runs `refract --dry-run` on files in a temp dir: touches nothing in the
# kernel. The measurement loop uses only bash builtins ($EPOCHREALTIME,
# printf, mapfile), so it adds no fork to the figure; polling granularity
# is one loop turn (tens of microseconds).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
bin=${REFRACT:-target/release/refract}
if [[ ! -x $bin ]]; then
    cargo build --release --quiet
fi
((BASH_VERSINFO[0] >= 5)) || { echo "latency.sh: needs bash 5 (\$EPOCHREALTIME)" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/refract-latency.XXXXXX")
pid=
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT
log=$dir/access.log
block=$dir/block.log
: >"$log"
REFRACT_LOG=stderr "$bin" --dry-run --window=1h --timeout=1h \
    --access.log="$log" --block.log="$block" 2>"$dir/stderr" &
pid=$!
for _ in $(seq 500); do
    grep -q 'refract: ready: ' "$dir/stderr" 2>/dev/null && break
    sleep 0.01
done
grep -q 'refract: ready: ' "$dir/stderr" || { cat "$dir/stderr" >&2; exit 1; }

line() { printf '2026/01/30 17:03:38.067799 from %s:58676 accepted tcp:www.example.com:443 [vless-in >> direct] email: %s\n' "$2" "$1"; }

samples=()
for ((i = 1; i <= n; i++)); do
    user="lat$i@example.com"
    line "$user" 198.51.100.1 >>"$log"
    # Then the violating line, from an address never banned before (a new
    # /64 each time).
    printf -v hex '%x' "$i"
    t0=${EPOCHREALTIME/[.,]/}
    line "$user" "[2001:db8:$hex::1]" >>"$log"
    while :; do
        mapfile -t got <"$block" 2>/dev/null || got=()
        ((${#got[@]} >= 1)) && break
        t=${EPOCHREALTIME/[.,]/}
        if ((t - t0 > 5000000)); then
            echo "latency.sh: no audit line after 5 s (is the parser/policy in this build?)" >&2
            exit 1
        fi
    done
    t1=${EPOCHREALTIME/[.,]/}
    samples+=($((t1 - t0)))
    # Empty the audit log (the daemon appends with O_APPEND, so it keeps
    # writing at the new end) to keep each poll a small read.
    : >"$block"
done
kill -TERM "$pid"; wait "$pid" || true; pid=

mapfile -t sorted < <(printf '%s\n' "${samples[@]}" | sort -n)
p() { local idx=$(( ($1 * ${#sorted[@]} + 99) / 100 - 1 )); ((idx < 0)) && idx=0; echo "${sorted[$idx]}"; }
echo "audit latency over $n violations ($bin): p50 $(p 50) us, p99 $(p 99) us, max ${sorted[-1]} us"
