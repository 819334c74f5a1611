#!/usr/bin/env bash
# refract doing its job, in a throwaway sandbox: a proxy node and two
# client devices of the same user, each in its own network namespace. A
# small simulator writes the node's access log as the two devices connect;
# the real refract daemon (kernel mode) bans the second device, resets its
# open connection and leaves the first one alone. Everything is removed at
# the end, also on Ctrl-C. Needs root; installs what it needs.
#
#   sudo scripts/demo.sh
#   sudo REFRACT_DEMO_FIREWALL=nftables scripts/demo.sh   # refract's own nftables table
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "demo: needs root (network namespaces, ipset, iptables): sudo $0" >&2
    exit 1
fi
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
refract_install_deps demo

if [[ -t 1 ]]; then
    bold() { printf '\033[1m%s\033[0m\n' "$*"; }
    step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }
else
    bold() { printf '%s\n' "$*"; }
    step() { printf '\n==> %s\n' "$*"; }
fi

# The backend: iptables (ipset and DROP rules, the default) or nftables.
fw=${REFRACT_DEMO_FIREWALL:-iptables}
case $fw in
    iptables | nftables) ;;
    *) echo "demo: REFRACT_DEMO_FIREWALL is iptables or nftables, not '$fw'" >&2; exit 2 ;;
esac
if [[ $fw == nftables ]] && ! command -v nft >/dev/null 2>&1; then
    echo "demo: REFRACT_DEMO_FIREWALL=nftables needs nft (apt-get install nftables) to show the table" >&2
    exit 1
fi

# REFRACT_BIN: use a binary that is already built (the test suite does).
if [[ -n ${REFRACT_BIN:-} ]]; then
    bin=$REFRACT_BIN
else
    step "building refract (release)"
    cargo build --release --locked --quiet
    bin=$PWD/target/release/refract
fi

tag="rfdemo$$"
node="$tag-node" c1="$tag-c1" c2="$tag-c2"
work=$(mktemp -d "/tmp/refract-demo.XXXXXX")
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    for ns in "$node" "$c1" "$c2"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for SECONDS WHAT CMD...: polls CMD every 50 ms, at most SECONDS; on
# timeout says what it waited for and fails. Every wait in the demo is one
# of these, bounded, on the thing itself (never a fixed sleep).
wait_for() {
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 20; i++)); do
        "$@" && return 0
        sleep 0.05
    done
    echo "demo: no $what within ${secs}s" >&2
    return 1
}

step "sandbox: node 192.0.2.1 and 198.51.100.1, phone 192.0.2.11, laptop 198.51.100.12"
for ns in "$node" "$c1" "$c2"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done
ip link add "${tag}a" netns "$node" type veth peer name eth0 netns "$c1"
ip link add "${tag}b" netns "$node" type veth peer name eth0 netns "$c2"
ip -n "$node" addr add 192.0.2.1/24 dev "${tag}a"
ip -n "$node" addr add 198.51.100.1/24 dev "${tag}b"
ip -n "$c1" addr add 192.0.2.11/24 dev eth0
ip -n "$c2" addr add 198.51.100.12/24 dev eth0
for l in "$node ${tag}a" "$node ${tag}b" "$c1 eth0" "$c2 eth0"; do
    read -r ns dev <<<"$l"
    ip -n "$ns" link set "$dev" up
done
ip -n "$c1" route add default via 192.0.2.1
ip -n "$c2" route add default via 198.51.100.1

# The "proxy": a TCP service on 443 that sends each client a tick every 200 ms.
cat >"$work/server.py" <<'EOF'
import socket, threading, time
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 443)); s.listen(16)
def serve(c):
    try:
        for i in range(10000):
            c.sendall(b"tick %d\n" % i); time.sleep(0.2)
    except OSError:
        pass
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
# A client device: holds one connection open and reports what happens to it.
cat >"$work/client.py" <<'EOF'
import socket, sys, time
name = sys.argv[1]
s = socket.create_connection(("192.0.2.1" if name == "phone" else "198.51.100.1", 443), timeout=5)
start, n = time.time(), 0
try:
    while time.time() - start < float(sys.argv[2]):
        d = s.recv(100)
        if not d:
            print(f"  {name}: connection closed by the node after {n} ticks", flush=True); break
        n += d.count(b"\n")
    else:
        print(f"  {name}: connection alive, {n} ticks received", flush=True)
except ConnectionResetError:
    print(f"  {name}: connection RESET after {n} ticks", flush=True)
except socket.timeout:
    print(f"  {name}: connection stalled after {n} ticks", flush=True)
EOF
ip netns exec "$node" python3 "$work/server.py" &
pids+=($!)
listening() { [[ -n $(ip netns exec "$node" ss -Hltn 'sport = :443') ]]; }
wait_for 30 "listener on the node's port 443" listening

log="$work/access.log" audit="$work/block.log"
: >"$log"
step "refract follows the node's access log (limit 1 device per user)"
echo "  ip netns exec node refract --firewall=$fw --proto=tcp --dport=443 --window=5s --timeout=1m --access.log=$log --block.log=$audit"
REFRACT_LOG=stderr ip netns exec "$node" "$bin" --firewall="$fw" --proto=tcp --dport=443 --window=5s --timeout=1m \
    --access.log="$log" --block.log="$audit" 2>"$work/refract.err" &
pids+=($!)
refract_pid=$!
# refract's readiness: its one "ready:" line, logged once the log is
# followed, the sets and rules exist, the kernel sockets are open and
# capabilities are dropped. The simulated lines are written only after it.
ready() {
    # -s: the background shell may not have created the file yet.
    grep -qs 'refract: ready: ' "$work/refract.err" && return 0
    kill -0 "$refract_pid" 2>/dev/null || { cat "$work/refract.err" >&2; exit 1; }
    return 1
}
wait_for 60 "ready line from refract" ready || { cat "$work/refract.err" >&2; exit 1; }
grep 'refract: ready: ' "$work/refract.err" | sed 's/^/  /'

step "alice's phone (192.0.2.11) and laptop (198.51.100.12) connect"
ip netns exec "$c1" python3 "$work/client.py" phone 4 >"$work/phone.out" &
pids+=($!)
ip netns exec "$c2" python3 "$work/client.py" laptop 4 >"$work/laptop.out" &
pids+=($!)
connected() { (($(ip netns exec "$node" ss -Htn state established 'sport = :443' | wc -l) >= 2)); }
wait_for 30 "connections from both devices" connected
ts() { date '+%Y/%m/%d %H:%M:%S.%6N'; }
# What Xray writes for each new connection (the simulator).
echo "$(ts) from 192.0.2.11:51000 accepted tcp:example.com:443 [vless-in >> direct] email: alice@example.com" | tee -a "$log"
sleep 1
echo "$(ts) from 198.51.100.12:40000 accepted tcp:example.com:443 [vless-in >> direct] email: alice@example.com" | tee -a "$log"
banned() { grep -q 'ended .* tcp connection' "$work/refract.err"; }
wait_for 30 "ban with its connections ended" banned || { cat "$work/refract.err" >&2; exit 1; }

step "refract's audit line ($audit)"
sed 's/^/  /' "$audit" 2>/dev/null || echo "  (none: see $work/refract.err)"
step "refract's log"
grep -E ' ban |ended' "$work/refract.err" | sed 's/^/  /'
step "the kernel set"
if [[ $fw == nftables ]]; then
    ip netns exec "$node" nft list set inet refract banned4 | sed 's/^/  /'
else
    ip netns exec "$node" ipset list refract_banned_users | sed -n '/^Members:/,$p' | sed 's/^/  /'
fi
step "what the devices saw"
wait "${pids[2]}" "${pids[3]}" 2>/dev/null || true
cat "$work/phone.out" "$work/laptop.out"
step "a new connection from the laptop"
if ip netns exec "$c2" timeout 2 python3 -c 'import socket; socket.create_connection(("198.51.100.1", 443), timeout=1.5)' 2>/dev/null; then
    echo "  laptop: connected (unexpected)"
else
    echo "  laptop: blocked by the DROP rule"
fi
if [[ $fw == nftables ]]; then
    ip netns exec "$node" nft list chain inet refract input | grep drop | sed 's/^\s*/  rule: /'
else
    ip netns exec "$node" iptables -S INPUT | grep refract | sed 's/^/  rule: /'
fi
echo
bold "done: one device per user enforced in the kernel; the sandbox is removed now."
