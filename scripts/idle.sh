#!/usr/bin/env bash
# Idle cost of the live daemon: resident memory and wakeups (context
# switches, voluntary + involuntary, from /proc/PID/status) over 10 s with
# no log activity, after a little activity whose windows and bans expire.
#
#   scripts/idle.sh [SECONDS]         (default 10)
#   REFRACT=path/to/refract scripts/idle.sh
#
# Runs `refract --dry-run` on files in a temp dir: touches nothing in the
# kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
bin=${REFRACT:-target/release/refract}
if [[ ! -x $bin ]]; then
    cargo build --release --quiet
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/refract-idle.XXXXXX")
pid=
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT
log=$dir/access.log
: >"$log"
REFRACT_LOG=stderr "$bin" --dry-run --window=200ms --timeout=300ms \
    --access.log="$log" --block.log="$dir/block.log" 2>"$dir/stderr" &
pid=$!
for _ in $(seq 500); do
    grep -q 'refract: ready: ' "$dir/stderr" 2>/dev/null && break
    sleep 0.01
done
line() { printf '2026/01/30 17:03:38.067799 from %s:58676 accepted tcp:www.example.com:443 [vless-in >> direct] email: %s\n' "$2" "$1"; }
line idle@example.com 198.51.100.1 >>"$log"
line idle@example.com 198.51.100.2 >>"$log"
sleep 1 # the window (200ms) and the ban (300ms) expire

field() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status"; }
switches() { echo $(($(field voluntary_ctxt_switches) + $(field nonvoluntary_ctxt_switches))); }
before=$(switches)
rss=$(field VmRSS)
sleep "$secs"
after=$(switches)
echo "idle over ${secs} s ($bin): wakeups $((after - before)), VmRSS ${rss} kB, VmHWM $(field VmHWM) kB, binary $(stat -c %s "$bin") bytes"
kill -TERM "$pid"; wait "$pid" || true; pid=
