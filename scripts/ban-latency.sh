#!/usr/bin/env bash
# Ban latency of the real daemon in kernel mode, against the shell path, in
# network namespaces this script creates and always removes.
#
#   sudo scripts/ban-latency.sh [N [IDLE [EHASH [FLOOD [MODE]]]]]
#       (defaults: 240 bans, 10000 idle, 16384 buckets, no flood, window)
#   REFRACT=path/to/refract sudo scripts/ban-latency.sh
#
# EHASH: buckets of the node namespace's own TCP established hash
# (net.ipv4.tcp_child_ehash_entries, set in a throwaway parent namespace).
# A sock_diag dump walks every bucket of the table the namespace uses, so
# the kill costs time in proportion to it. On a real node refract runs in
# the initial namespace, whose table the kernel sizes by RAM (pages / 32:
# 16384 buckets on a 2 GiB VPS) and which holds only the node's sockets;
# a plain child namespace instead shares the host's table (262144 buckets
# on a 23 GiB machine) with every other namespace's sockets, here the
# client's 10,000 too. EHASH=0 measures that shared case.
#
# Sandbox: namespaces rfb-node-PID and rfb-cli-PID joined by a veth; the
# node is 192.0.2.1, the client holds 192.0.2.2 (the IDLE idle ESTABLISHED
# connections to node:443) and 198.51.100.1..N / 203.0.113.1..N (one live
# connection each). A python server in the node accepts and holds every
# connection. refract runs in the node (kernel enforcer, its DROP rule and
# sets live in the node namespace only) following a log in a temp dir.
#
# Per trial, from ONE client process with ONE clock (CLOCK_MONOTONIC):
#   refract: append a violating line for 198.51.100.i → the client's socket
#            of that address sees the RST (poll(2), no polling loop). refract
#            adds the key to the set inside the same sendmsg before it
#            starts the kill, so "reset seen" means "in set and reset";
#            every banned key is checked in the set afterwards.
#   shell:   write 203.0.113.i to a FIFO read by a per-event shell follower
#            in the node (`ipset add` + `ss -K` as processes, what follower
#            scripts do; it gets the address for free, no log parsing) →
#            the reset.
# Trials alternate refract/shell so machine noise hits both alike.
# Output: `ban-latency refract p50_us=… p99_us=…` and `… shell …` lines.
#
# MODE live: bans decided by liveness instead (no shell path, no flood).
# The daemon runs with --window=1s; per trial user, device 1 is a real
# connection from 203.0.113.i that carries traffic (the node's server
# sends it a byte every 100 ms; the client only ACKs, like a download)
# and whose only log line, with its real source port, was written more
# than the window before; device 2's line (198.51.100.i) is then one the
# window rule alone would admit, so the ban needs the daemon's exact
# sock_diag lookup of device 1's socket. Timed the same way: line
# appended → device 2's socket sees the reset, one trial per 15 ms (the
# refract trials' cadence in the default mode). Output: `ban-latency live
# p50_us=… p99_us=…`, `ban-latency dev1 dev1_alive=… of N` (device 1 must
# be untouched) and the daemon's `stats:` line (its liveness_checks,
# liveness_facts and deferred count the trials).
#
# FLOOD > 0: after the trials, the same daemon with the same IDLE idle
# connections gets a flood of FLOOD violating lines (one user, FLOOD
# distinct addresses 10.1.0.0 + i, written as fast as they go); timed until
# every ban reached the enforcer and every ban's kill is finished (its
# `ended …` report). Output: `ban-latency flood bans=… secs=… bans_per_s=…`
# and `ban-latency flood_in_set=… set_full=…`: each flood ban must be in
# the set or counted as refused by a full set. The flood's lines name
# connections that do not exist; `ban-latency listener_alive=1|0` says
# whether the node's listener on :443 survived every ban (it must).
#
# FIREWALL=nftables runs refract with its nftables backend (--firewall
# nftables: its own inet refract table) instead of ipset; the shell
# reference stays ipset + ss -K.
set -euo pipefail
cd "$(dirname "$0")/.."
firewall=${FIREWALL:-iptables}
# members REGEX: how many of refract's IPv4 bans in the node start so.
members() {
    if [[ $firewall == nftables ]]; then
        ip netns exec "$node" nft list set inet refract banned4 |
            grep -oE "(^|[ {,])$1[0-9.]+" | wc -l
    else
        ip netns exec "$node" ipset list refract_banned_users | grep -c "^$1" || true
    fi
}
n=${1:-240}
idle=${2:-10000}
ehash=${3:-16384}
flood=${4:-0}
mode=${5:-window}
case $mode in
    window) window=1h talk=() ;;
    live) window=1s talk=(203.0.113) flood=0 ;;
    *) echo "ban-latency: MODE must be window or live" >&2; exit 2 ;;
esac
bin=${REFRACT:-target/release/refract}
((n >= 1 && n <= 250)) || { echo "ban-latency: N must be 1..250 (one /24 of trial addresses)" >&2; exit 2; }
if [[ $(id -u) -ne 0 ]]; then
    echo "ban-latency: skip: needs root (network namespaces)" >&2
    exit 0
fi
for c in ip ipset iptables ss python3; do
    command -v "$c" >/dev/null || { echo "ban-latency: skip: $c not installed" >&2; exit 0; }
done
if [[ ! -x $bin ]]; then
    cargo build --release --quiet
fi
bin=$(realpath "$bin")
# Each side holds IDLE + 2N sockets.
ulimit -n $((idle + 2 * n + 1024))

node=rfb-node-$$
cli=rfb-cli-$$
outer=rfb-outer-$$
dir=$(mktemp -d "${TMPDIR:-/tmp}/refract-banlat.XXXXXX")
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    ip netns del "$node" 2>/dev/null || true
    ip netns del "$cli" 2>/dev/null || true
    ip netns del "$outer" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ((ehash > 0)); then
    # The node namespace is created from inside $outer, whose
    # tcp_child_ehash_entries sizes the new namespace's table, then named.
    ip netns add "$outer"
    ip netns exec "$outer" sysctl -qw net.ipv4.tcp_child_ehash_entries="$ehash"
    ip netns exec "$outer" unshare --net sleep 600 &
    holder=$!
    pids+=("$holder")
    outer_ino=$(stat -L -c %i "/run/netns/$outer")
    for _ in $(seq 500); do
        ino=$(stat -L -c %i "/proc/$holder/ns/net" 2>/dev/null || echo "$outer_ino")
        [[ $ino != "$outer_ino" ]] && break
        sleep 0.01
    done
    ip netns attach "$node" "$holder"
    ip netns del "$outer"
else
    ip netns add "$node"
fi
ip netns add "$cli"
ip link add "rfbn$$" netns "$node" type veth peer name "rfbc$$" netns "$cli"
{
    echo "link set lo up"
    echo "link set rfbn$$ up"
    echo "addr add 192.0.2.1/24 dev rfbn$$"
    echo "route add 198.51.100.0/24 dev rfbn$$"
    echo "route add 203.0.113.0/24 dev rfbn$$"
} | ip -n "$node" -batch -
{
    echo "link set lo up"
    echo "link set rfbc$$ up"
    echo "addr add 192.0.2.2/24 dev rfbc$$"
    for ((i = 1; i <= n; i++)); do
        echo "addr add 198.51.100.$i/32 dev rfbc$$"
        echo "addr add 203.0.113.$i/32 dev rfbc$$"
    done
} | ip -n "$cli" -batch -
# Enough ephemeral ports and accept backlog for the idle connections.
ip netns exec "$cli" sysctl -qw net.ipv4.ip_local_port_range="1024 65000"
ip netns exec "$node" sysctl -qw net.core.somaxconn=4096

helper=$PWD/scripts/ban-latency.py
# listening: 1 while the node's server still listens on :443, else 0. A
# ban must never end the proxy's listener: an exact SOCK_DESTROY of a
# connection that is gone falls back, in the kernel's lookup
# (inet_lookup() → the listening hash), to the listener on that port.
listening() {
    ip netns exec "$node" ss -ltnH 'sport = :443' | grep -c '^LISTEN' || true
}
ip netns exec "$node" python3 "$helper" server 0.0.0.0 443 "$dir/ready" "${talk[@]}" &
pids+=($!)
log=$dir/access.log
: >"$log"
# --set-size: room for the flood's bans beside the trials' (hash:ip grows).
REFRACT_LOG=stderr ip netns exec "$node" "$bin" --firewall="$firewall" --dport=443 --window="$window" --timeout=10m --set-size=262144 \
    --access.log="$log" --block.log="$dir/block.log" 2>"$dir/refract.err" &
daemon=$!
pids+=("$daemon")
for _ in $(seq 500); do
    [[ -e $dir/ready ]] && grep -q ' following ' "$dir/refract.err" 2>/dev/null && break
    sleep 0.01
done
[[ -e $dir/ready ]] || { echo "ban-latency: the server did not start" >&2; exit 1; }
grep -q ' following ' "$dir/refract.err" || { cat "$dir/refract.err" >&2; exit 1; }

if [[ $mode == live ]]; then
    out=$(ip netns exec "$cli" python3 "$helper" live 192.0.2.1 443 "$log" "$idle" "$n" \
        192.0.2.2 203.0.113 198.51.100 1 2>"$dir/client.err") ||
        { cat "$dir/client.err" >&2; exit 1; }
    in_set=$(members '198\.51\.100\.')
    dev1_in=$(members '203\.0\.113\.')
    kill -USR1 "$daemon" 2>/dev/null || true
    sleep 0.2
    while read -r path rest; do
        case $path in
            live) echo "ban-latency live $rest" ;;
            dev1_alive=*) echo "ban-latency dev1 $path of $n (device 1 keys in set: $dev1_in)" ;;
            idle_alive=*) echo "ban-latency idle $path of $idle" ;;
        esac
    done <<<"$out"
    echo "ban-latency refract_keys_in_set=$in_set of $n"
    echo "ban-latency listener_alive=$(listening)"
    echo "ban-latency node_ehash=$(ip netns exec "$node" sysctl -n net.ipv4.tcp_ehash_entries)"
    grep -o 'stats: .*' "$dir/refract.err" | tail -1 | sed 's/^/ban-latency refract /'
    exit 0
fi

# The shell path: a per-event follower, as operators write them.
ip netns exec "$node" ipset create rfb_shell hash:ip timeout 600
mkfifo "$dir/fifo"
# shellcheck disable=SC2016 # expanded by the inner bash
ip netns exec "$node" bash -c '
    while read -r a; do
        ipset add rfb_shell "$a"
        # The node end of a client connection has local (source) port 443.
        ss -tK dst "$a" sport = :443 >/dev/null
    done' <"$dir/fifo" &
pids+=($!)

out=$(ip netns exec "$cli" python3 "$helper" client 192.0.2.1 443 "$log" "$dir/fifo" \
    "$idle" "$n" 192.0.2.2 198.51.100 203.0.113 2>"$dir/client.err") ||
    { cat "$dir/client.err" >&2; exit 1; }
in_set=$(members '198\.51\.100\.')
if ((flood > 0)); then
    fl=$(python3 "$helper" flood "$log" "$daemon" "$dir/refract.err" "$flood" 192.0.2.2) ||
        { echo "ban-latency: $fl" >&2; tail -5 "$dir/refract.err" >&2; exit 1; }
    echo "ban-latency $fl"
    flood_in=$(members '10\.')
    kill -USR1 "$daemon" 2>/dev/null || true
    sleep 0.2
    full=$(grep -o 'stats: .*' "$dir/refract.err" | tail -1 | sed -n 's/.*\bset_full=\([0-9]*\).*/\1/p')
    echo "ban-latency flood_in_set=$flood_in set_full=${full:-0} of $flood"
fi
kill -USR1 "$daemon" 2>/dev/null || true
sleep 0.2
while read -r path rest; do
    case $path in
        refract | shell) echo "ban-latency $path $rest" ;;
        idle_alive=*) echo "ban-latency idle $path of $idle" ;;
    esac
done <<<"$out"
echo "ban-latency refract_keys_in_set=$in_set of $n"
echo "ban-latency listener_alive=$(listening)"
echo "ban-latency node_ehash=$(ip netns exec "$node" sysctl -n net.ipv4.tcp_ehash_entries)"
grep -o 'stats: .*' "$dir/refract.err" | tail -1 | sed 's/^/ban-latency refract /'
