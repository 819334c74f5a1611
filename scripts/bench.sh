#!/usr/bin/env bash
# refract's performance suite: one markdown table on stdout and in
# target/bench/latest.md. Every figure is measured in this run next to its
# reference (ratios, medians), so tables from different machines and
# versions compare.
#
#   sudo scripts/bench.sh [--quick] [--only SECTION[,SECTION...]]
#       --only: just these of throughput, latency, fleet, shape, footprint, scale
#       (the table's header says so; default all)
#   REFRACT_BASE=path/to/previous/refract [REFRACT_BASE_NAME=label] sudo scripts/bench.sh
#       also measures that binary in this run: the first latency row's
#       setup (right after that row) and the follow CPU, each its own row
#       (before/after; the label names it in the table, e.g. a commit)
#
# Sections (the table's format is stable; add rows, don't reorder):
#   throughput  `refract replay` of two generated 1,000,000-line logs, the
#               easy one and the realistic mix of issue 17
#               (benches/gen/realistic.rs), vs fail2ban-regex with an
#               equivalent failregex (one run each; --quick: the first
#               100,000 lines), `grep -c 'email:'` and `wc -l` (the
#               memory-bandwidth reference); medians of 5, the six commands
#               interleaved (one of each per round) so that the machine's
#               load hits them alike
#   latency     scripts/ban-latency.sh: the daemon in kernel mode in network
#               namespaces, 10,000 idle connections, line appended → key in
#               set and RST at the client, vs `ipset add` + `ss -K` processes
#               (needs root; skipped otherwise). The first run then also
#               floods the same daemon with 100,000 violating lines (--quick:
#               20,000) and times them until every ban is in the set (or
#               counted as set_full) and every ban's kill is reported: bans/s.
#               Then `ban-latency.sh ... live` for the own and the host's
#               shared hash: bans the window rule alone would not make,
#               decided by the daemon's exact sock_diag lookup of device
#               1's connection (in use, its only line older than the
#               window); the daemon's liveness counters in the row
#   fleet       (a latency row) scripts/fleet-latency.sh: two daemons in
#               namespaces of their own sharing a real redis-server (on a
#               unix socket: a namespace cannot reach the host's loopback),
#               line on node B → key in B's set while node A holds the
#               user's first device, beside the same measure for a violation
#               B sees alone, alternated in the same run; 1000 users
#               (--quick: 200). Skipped, saying why, without root or redis
#   shape       (a latency row) scripts/shape-latency.sh: the daemon with
#               --rate-down/--rate-up in a namespace, a trickling TCP
#               connection: line appended → the connection's peer in
#               refract's nftables map (from then on its next packet takes
#               the mark), and → the mark on its conntrack entry; for a
#               user's first line and a further connection; vs one
#               `conntrack -U --mark` process per line (what log-following
#               shell scripts run). 200 connections each (--quick: 50)
#   footprint   scripts/footprint.sh (--quick: 10 s phases instead of 60 s),
#               the daemon with liveness on (--proto=tcp --dport=443, in a
#               namespace of its own); the follow phase again without
#               liveness (--proto=udp), the difference is liveness's cost
#   scale       1,000,000 lines cycling over N = 10k, 100k, 1M distinct users
#               (all tracked, --window=1h): `refract replay` wall ns/line
#               (median of 3), and the dry-run daemon reading the same file:
#               CPU ns/line, RssAnon (its tables) and VmHWM
#
# Nothing here touches the host's firewall: kernel work happens only in the
# namespaces ban-latency.sh creates and removes.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0 only=
while (($#)); do
    case $1 in
        --quick) quick=1 ;;
        --only)
            only=${2:?--only needs a list of sections}
            shift
            ;;
        --only=*) only=${1#--only=} ;;
        *)
            echo "usage: scripts/bench.sh [--quick] [--only throughput,latency,fleet,shape,footprint,scale]" >&2
            exit 2
            ;;
    esac
    shift
done
for s in ${only//,/ }; do
    case $s in
        throughput | latency | fleet | shape | footprint | scale) ;;
        *) echo "bench: unknown section '$s' (throughput, latency, fleet, shape, footprint, scale)" >&2 && exit 2 ;;
    esac
done
# want SECTION: whether this run measures SECTION.
want() { [[ -z $only || ,$only, == *,$1,* ]]; }
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
refract_install_deps bench
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
out=$CARGO_TARGET_DIR/bench
mkdir -p "$out"
helper=scripts/bench.py
runs=5
lines=1000000

say() { echo "bench: $*" >&2; }

# The generator is a bench target (the `bench` profile writes into
# target/release too), so generate first, then build the release binary
# and keep a copy that a later `cargo bench` cannot overwrite.
log=$out/log-1m
if [[ ! -s $log ]]; then
    say "generating $lines lines"
    cargo bench --quiet --bench replay -- --write-log "$log" "$lines" >/dev/null
fi
rlog=$out/log-1m-realistic
if want throughput && [[ ! -s $rlog ]]; then
    say "generating $lines lines, realistic mix"
    cargo bench --quiet --bench replay -- --write-log "$rlog" "$lines" --realistic >/dev/null
fi
say "building release"
cargo build --release --quiet
bin=$out/refract
cp "$CARGO_TARGET_DIR/release/refract" "$bin.tmp"
mv -f "$bin.tmp" "$bin"
export REFRACT=$bin

load0=$(cut -d' ' -f1-3 /proc/loadavg)
rows=()
row() { rows+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "-" }'; }
ns_line() { awk -v s="$1" -v n="$2" 'BEGIN { printf "%.1f", s * 1e9 / n }'; }
per_s() { awk -v s="$1" -v n="$2" 'BEGIN { printf "%.0f", n / s }'; }
yes_no() { awk "BEGIN { print ($1) ? \"yes\" : \"**no**\" }"; }

# ---- throughput ----
if want throughput; then
    say "throughput"
    # Interleaved medians: each round runs every command once, so a burst
    # of the other sessions' load lands on all of them, not on one.
    declare -A tt=()
    # il_time NAME CMD...: one timed run of CMD, added to NAME's times.
    il_time() {
        local name=$1
        shift
        tt[$name]+=" $(python3 "$helper" time 1 "$@" | cut -d' ' -f1)"
    }
    # il_med NAME: the median of NAME's times (bench.py's: the middle one).
    il_med() { tr ' ' '\n' <<<"${tt[$1]}" | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
    for ((i = 0; i < runs; i++)); do
        il_time refract "$bin" replay "$log"
        il_time refract_r "$bin" replay "$rlog"
        il_time grep grep -c 'email:' "$log"
        il_time grep_r grep -c 'email:' "$rlog"
        il_time wc wc -l "$log"
        il_time wc_r wc -l "$rlog"
    done
    t_refract=$(il_med refract) t_grep=$(il_med grep) t_wc=$(il_med wc)
    t_rr=$(il_med refract_r) t_gr=$(il_med grep_r) t_wcr=$(il_med wc_r)
    f2b_conf=$out/refract-f2b.conf
    cat >"$f2b_conf" <<'EOF'
# Matches the lines refract counts: `from [tcp:|udp:]ADDR:PORT accepted ... email: USER`.
[Definition]
failregex = ^\s*(?:\S+\s+)*?from (?:tcp:|udp:)?\[?<HOST>\]?:\d+ accepted .*\bemail: ?\S+
ignoreregex =
datepattern = ^%%Y/%%m/%%d %%H:%%M:%%S(?:\.%%f)?
EOF
    f2b_log=$log f2b_rlog=$rlog
    f2b_lines=$lines
    if ((quick)); then
        f2b_lines=100000
        f2b_log=$out/log-100k f2b_rlog=$out/log-100k-realistic
        head -n "$f2b_lines" "$log" >"$f2b_log"
        head -n "$f2b_lines" "$rlog" >"$f2b_rlog"
    fi
    if command -v fail2ban-regex >/dev/null; then
        t_f2b=$(python3 "$helper" time 1 fail2ban-regex "$f2b_log" "$f2b_conf" | cut -d' ' -f1)
        f2b_ns=$(ns_line "$t_f2b" "$f2b_lines")
        t_f2br=$(python3 "$helper" time 1 fail2ban-regex "$f2b_rlog" "$f2b_conf" | cut -d' ' -f1)
        f2b_rns=$(ns_line "$t_f2br" "$f2b_lines")
    else
        say "fail2ban-regex not installed: its rows are empty"
        t_f2b=0 f2b_ns=0 t_f2br=0 f2b_rns=0
    fi
    r_ns=$(ns_line "$t_refract" "$lines")
    row throughput "refract replay, easy log, 1M lines (median of $runs)" "$r_ns ns/line, $(per_s "$t_refract" "$lines") lines/s" "" "" ""
    if [[ $f2b_ns != 0 ]]; then
        row throughput "fail2ban-regex, easy log, $f2b_lines lines (1 run)" "$f2b_ns ns/line, $(per_s "$t_f2b" "$f2b_lines") lines/s" \
            "refract is $(ratio "$f2b_ns" "$r_ns")x faster" "≥ 100x" "$(yes_no "$f2b_ns >= 100 * $r_ns")"
    fi
    row throughput "grep -c 'email:', easy log (median of $runs)" "$(ns_line "$t_grep" "$lines") ns/line" "refract / grep: $(ratio "$t_refract" "$t_grep")x" "" ""
    row throughput "wc -l, newline count, easy log (median of $runs)" "$(ns_line "$t_wc" "$lines") ns/line" "refract / wc -l: $(ratio "$t_refract" "$t_wc")x" "≤ 5x" "$(yes_no "$t_refract <= 5 * $t_wc")"
    # The realistic mix (issue 17, benches/gen/realistic.rs): the same
    # commands, interleaved with the easy log's above.
    rr_ns=$(ns_line "$t_rr" "$lines")
    row throughput "refract replay, realistic mix (issue 17), 1M lines (median of $runs)" "$rr_ns ns/line, $(per_s "$t_rr" "$lines") lines/s" \
        "refract / wc -l: $(ratio "$t_rr" "$t_wcr")x" "≤ 5x" "$(yes_no "$t_rr <= 5 * $t_wcr")"
    if [[ $f2b_rns != 0 ]]; then
        row throughput "fail2ban-regex, realistic mix, $f2b_lines lines (1 run)" "$f2b_rns ns/line, $(per_s "$t_f2br" "$f2b_lines") lines/s" \
            "refract is $(ratio "$f2b_rns" "$rr_ns")x faster" "≥ 100x" "$(yes_no "$f2b_rns >= 100 * $rr_ns")"
    else
        row throughput "fail2ban-regex, realistic mix" "not measured (fail2ban-regex not installed)" "" "≥ 100x" "-"
    fi
    row throughput "grep -c 'email:', realistic mix (median of $runs)" "$(ns_line "$t_gr" "$lines") ns/line" "refract / grep: $(ratio "$t_rr" "$t_gr")x" "" ""
    row throughput "wc -l, realistic mix (median of $runs)" "$(ns_line "$t_wcr" "$lines") ns/line" "" "" ""
fi

# ---- latency ----
late_rows=()
late_row() { late_rows+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); }
if want latency; then
    say "latency (network namespaces)"
    bans=240
    ((quick)) && bans=200
    # ehash: the node namespace's own TCP hash like a 2 GiB node (16384
    # buckets; the realistic case), then the host's shared table (0).
    # Then with no idle connections: what the sock_diag dump over 10k sockets
    # costs is the difference.
    flood=100000
    ((quick)) && flood=20000
    # stat_of LAT FIELD: a field of the daemon's last `stats:` line in
    # ban-latency.sh's output LAT (the counters that show the liveness path ran).
    stat_of() { sed -n "/^ban-latency refract stats: /s/.* $2=\([0-9]*\).*/\1/p" <<<"$1" | head -1; }
    first_p50=-1 first_p99=-1 shared_p50=-1 shared_p99=-1
    for run in "16384 10000 $flood" "0 10000 0" "16384 0 0"; do
        read -r ehash idle nflood <<<"$run"
        if ((ehash)); then where="own TCP hash of $ehash buckets"; else where="host's shared TCP hash"; fi
        if lat=$(scripts/ban-latency.sh "$bans" "$idle" "$ehash" "$nflood") && [[ -n $lat ]]; then
            get() { sed -n "s/^ban-latency $1 .*$2=\([0-9-]*\).*/\1/p" <<<"$lat" | head -1; }
            rp50=$(get refract p50_us) rp99=$(get refract p99_us) rlost=$(get refract lost)
            sp50=$(get shell p50_us) sp99=$(get shell p99_us) slost=$(get shell lost)
            alive=$(sed -n 's/^ban-latency idle idle_alive=\([0-9]*\).*/\1/p' <<<"$lat")
            inset=$(sed -n 's/^ban-latency refract_keys_in_set=\([0-9]*\).*/\1/p' <<<"$lat")
            row latency "refract: line appended → in set + RST at client; $bans bans, $idle idle conns, $where" \
                "p50 $rp50 µs, p99 $rp99 µs (lost $rlost; $inset/$bans in set; $alive/$idle idle untouched)" "" "p99 < 2 ms" "$(yes_no "$rp99 >= 0 && $rp99 < 2000")"
            if ((idle)); then
                if ((ehash)); then first_p50=$rp50 first_p99=$rp99; else shared_p50=$rp50 shared_p99=$rp99; fi
            fi
            if ((ehash && idle)) && [[ -n ${REFRACT_BASE:-} ]]; then
                # The previous binary, same setup, next in time to this run.
                say "latency, previous binary $REFRACT_BASE"
                if blat=$(REFRACT=$REFRACT_BASE scripts/ban-latency.sh "$bans" "$idle" "$ehash" 0) && [[ -n $blat ]]; then
                    bp50=$(sed -n "s/^ban-latency refract .*p50_us=\([0-9-]*\).*/\1/p" <<<"$blat" | head -1)
                    bp99=$(sed -n "s/^ban-latency refract .*p99_us=\([0-9-]*\).*/\1/p" <<<"$blat" | head -1)
                    blost=$(sed -n "s/^ban-latency refract .*lost=\([0-9-]*\).*/\1/p" <<<"$blat" | head -1)
                    late_row latency "previous version (${REFRACT_BASE_NAME:-$REFRACT_BASE}): the first latency row's setup, run right after it" \
                        "p50 $bp50 µs, p99 $bp99 µs (lost $blost)" "this version / previous: p50 $(ratio "$rp50" "$bp50")x, p99 $(ratio "$rp99" "$bp99")x" "" ""
                fi
            fi
            row latency "shell: ipset add + ss -K as processes, same run" "p50 $sp50 µs, p99 $sp99 µs (lost $slost)" \
                "shell / refract: p50 $(ratio "$sp50" "$rp50")x, p99 $(ratio "$sp99" "$rp99")x" "≥ 5x" "$(yes_no "$sp99 >= 5 * $rp99")"
            if ((nflood)); then
                fget() { sed -n "/^ban-latency flood/s/.* $1=\([0-9.-]*\).*/\1/p" <<<"$lat" | head -1; }
                fps=$(fget bans_per_s) fsecs=$(fget secs) fin=$(fget flood_in_set) ffull=$(fget set_full)
                # The flood's lines name connections that do not exist: their
                # exact kills must spare the node's listener.
                lst=$(sed -n 's/^ban-latency listener_alive=\([0-9]*\).*/\1/p' <<<"$lat")
                lst_txt=$(awk -v l="${lst:-0}" 'BEGIN { print (l > 0) ? "alive" : "**destroyed**" }')
                first_fps=$fps
                row latency "ban flood: $nflood violating lines, each a ban, with $idle idle conns, $where (same daemon as the row above)" \
                    "$fps bans/s ($nflood in ${fsecs:-?} s; $fin in set + ${ffull:-0} set_full; every kill reported; the node's listener on :443 after it: $lst_txt)" "" "≥ 10,000 bans/s, listener alive" \
                    "$(yes_no "${fps:--1} >= 10000 && ${fin:-0} + ${ffull:-0} == $nflood && ${lst:-0} > 0")"
            fi
        else
            say "ban-latency skipped or failed"
            row latency "ban latency, $where" "not measured (needs root, ip, ipset, iptables, ss)" "" "p99 < 2 ms" "-"
        fi
    done
    # The nftables backend (--firewall nftables), the first row's setup and
    # flood, right after it: no slower than ipset is the goal.
    if ((first_p99 >= 0)) && command -v nft >/dev/null 2>&1; then
        say "latency, nftables backend"
        if nlat=$(FIREWALL=nftables scripts/ban-latency.sh "$bans" 10000 16384 "$flood") && [[ -n $nlat ]]; then
            nget() { sed -n "s/^ban-latency $1 .*$2=\([0-9.-]*\).*/\1/p" <<<"$nlat" | head -1; }
            np50=$(nget refract p50_us) np99=$(nget refract p99_us) nlost=$(nget refract lost)
            nfps=$(sed -n "/^ban-latency flood/s/.* bans_per_s=\([0-9.-]*\).*/\1/p" <<<"$nlat" | head -1)
            nin=$(sed -n "/^ban-latency flood_in_set/s/.*flood_in_set=\([0-9]*\).*/\1/p" <<<"$nlat" | head -1)
            nlst=$(sed -n 's/^ban-latency listener_alive=\([0-9]*\).*/\1/p' <<<"$nlat")
            row latency "--firewall nftables: line appended → in set + RST at client; $bans bans, 10000 idle conns, own TCP hash of 16384 buckets" \
                "p50 $np50 µs, p99 $np99 µs (lost $nlost)" "nftables / ipset (first row): p50 $(ratio "$np50" "$first_p50")x, p99 $(ratio "$np99" "$first_p99")x" \
                "p99 < 2 ms" "$(yes_no "${np99:--1} >= 0 && ${np99:--1} < 2000")"
            row latency "--firewall nftables: ban flood of $flood lines, same setup" \
                "$nfps bans/s ($nin in the set; listener alive: ${nlst:-0})" "nftables / ipset flood: $(ratio "${nfps:-0}" "${first_fps:-1}")x" \
                "no slower than ipset" "$(yes_no "${nfps:--1} >= ${first_fps:-0} && ${nlst:-0} > 0")"
        fi
    fi

    # Bans decided by liveness (ban-latency.sh MODE live): device 1 in use,
    # its only line older than the daemon's --window=1s.
    for ehash in 16384 0; do
        if ((ehash)); then
            where="own TCP hash of $ehash buckets" goal=2000 ref_p50=$first_p50 ref_p99=$first_p99
        else
            where="host's shared TCP hash" goal=5000 ref_p50=$shared_p50 ref_p99=$shared_p99
        fi
        say "latency, bans decided by liveness, $where"
        if lat=$(scripts/ban-latency.sh "$bans" 10000 "$ehash" 0 live) && [[ -n $lat ]]; then
            lget() { sed -n "s/^ban-latency live .*$1=\([0-9-]*\).*/\1/p" <<<"$lat" | head -1; }
            lp50=$(lget p50_us) lp99=$(lget p99_us) llost=$(lget lost)
            alive=$(sed -n 's/^ban-latency idle idle_alive=\([0-9]*\).*/\1/p' <<<"$lat")
            dev1=$(sed -n 's/^ban-latency dev1 dev1_alive=\([0-9]*\).*/\1/p' <<<"$lat")
            inset=$(sed -n 's/^ban-latency refract_keys_in_set=\([0-9]*\).*/\1/p' <<<"$lat")
            checks=$(stat_of "$lat" liveness_checks) lookups=$(stat_of "$lat" liveness_lookups)
            facts=$(stat_of "$lat" liveness_facts) deferred=$(stat_of "$lat" deferred)
            touts=$(stat_of "$lat" deferred_timeouts) lbans=$(stat_of "$lat" bans)
            vs=""
            ((ref_p99 > 0)) && vs="liveness / window-rule row above (same hash): p50 $(ratio "$lp50" "$ref_p50")x, p99 $(ratio "$lp99" "$ref_p99")x"
            late_row latency "refract, ban decided by liveness: line appended → RST at client; device 1's only line older than --window=1s, its connection in use (a byte every 100 ms from the node); $bans bans, 10000 idle conns, $where" \
                "p50 $lp50 µs, p99 $lp99 µs (lost $llost; $inset/$bans in set; $dev1/$bans device 1 untouched; $alive/10000 idle untouched; daemon: liveness_checks=$checks liveness_lookups=$lookups liveness_facts=$facts deferred=$deferred deferred_timeouts=$touts bans=$lbans)" \
                "$vs" "p99 < $((goal / 1000)) ms" "$(yes_no "$lp99 >= 0 && $lp99 < $goal && $llost == 0 && $inset == $bans && $dev1 == $bans && ${facts:-0} == $bans")"
        else
            say "ban-latency live skipped or failed"
            late_row latency "refract, ban decided by liveness, $where" "not measured (needs root, ip, ipset, iptables, ss)" "" "p99 < $((goal / 1000)) ms" "-"
        fi
    done
fi

# ---- fleet (a latency row, after the others) ----
# scripts/fleet-latency.sh (tests/kernel/fleet.rs `fleet_latency`): the
# same daemon's fleet and local decisions, alternated in one run.
if want fleet; then
    say "latency, --fleet (two namespaces sharing a redis-server)"
    fleet_n=1000
    ((quick)) && fleet_n=200
    fleet_label="ban latency with --fleet (a real redis-server, on a unix socket both nodes' namespaces reach), p50/p99: line on node B → key in B's set while node A holds the user's first device"
    fleet_goal="fleet p99 < 5 ms (the issue's), p50 ≤ local p50 + 5 ms"
    fleet_why=
    if [[ $(id -u) -ne 0 ]]; then
        fleet_why="needs root (network namespaces)"
    elif ! command -v redis-server >/dev/null && ! command -v redis-check-rdb >/dev/null; then
        fleet_why="no redis-server (scripts/deps.sh bench installs redis-tools)"
    elif ! flat=$(scripts/fleet-latency.sh "$fleet_n"); then
        fleet_why="scripts/fleet-latency.sh $fleet_n failed (its error above)"
    fi
    if [[ -z $fleet_why ]]; then
        flget() { sed -n "s/^fleet-latency $1 .*$2=\([0-9-]*\).*/\1/p" <<<"$flat" | head -1; }
        ff50=$(flget fleet p50_us) ff99=$(flget fleet p99_us)
        fl50=$(flget local p50_us) fl99=$(flget local p99_us)
        freq=$(sed -n 's/^fleet-latency redis_requests_a=\([0-9]*\).*/\1/p' <<<"$flat" | head -1)
        if [[ -z $ff50 || -z $fl50 ]]; then
            fleet_why=$(sed -n 's/^SKIPPED: //p' <<<"$flat" | head -1)
            fleet_why=${fleet_why:-"no figures in the output of scripts/fleet-latency.sh"}
        fi
    fi
    if [[ -z $fleet_why ]]; then
        late_row latency "$fleet_label; $fleet_n users" \
            "fleet p50 $ff50 µs, p99 $ff99 µs; local (a violation B sees alone, same daemon, alternated) p50 $fl50 µs, p99 $fl99 µs (node A's Redis requests: ${freq:-?} for its $fleet_n lines)" \
            "fleet / local: p50 $(ratio "$ff50" "$fl50")x ($(awk -v a="$ff50" -v b="$fl50" 'BEGIN { printf "%+.1f", (a - b) / 1000 }') ms), p99 $(ratio "$ff99" "$fl99")x" \
            "$fleet_goal" "$(yes_no "$ff50 >= 0 && $ff99 < 5000 && $ff50 <= $fl50 + 5000")"
    else
        say "fleet latency skipped: $fleet_why"
        late_row latency "$fleet_label" "skipped: $fleet_why" "" "$fleet_goal" "-"
    fi
fi

# ---- shape (a latency row, after fleet) ----
# scripts/shape-latency.sh (tests/kernel/shape.rs `shape_latency`).
if want shape; then
    say "latency, bandwidth marks (--rate-down/--rate-up)"
    shape_n=200
    ((quick)) && shape_n=50
    shape_label="bandwidth mark latency, p50/p99: line appended → the connection's peer in refract's map (its next packet takes the mark) / → the mark on its conntrack entry (a trickling connection: a packet every 100 µs)"
    shape_goal="peer in the map: p50 < 1 ms"
    shape_why=
    if [[ $(id -u) -ne 0 ]]; then
        shape_why="needs root (network namespaces)"
    elif ! slat=$(scripts/shape-latency.sh "$shape_n"); then
        shape_why="scripts/shape-latency.sh $shape_n failed (its error above)"
    fi
    if [[ -z $shape_why ]]; then
        slget() { sed -n "s/^shape-latency $1 .*$2=\([0-9-]*\).*/\1/p" <<<"$slat" | head -1; }
        sf50=$(slget first p50_us) sf99=$(slget first p99_us)
        sn50=$(slget next p50_us) sn99=$(slget next p99_us)
        sfm50=$(slget first-marked p50_us) snm50=$(slget next-marked p50_us)
        st50=$(slget conntrack-tool p50_us) st99=$(slget conntrack-tool p99_us)
        if [[ -z $sf50 || -z $st50 ]]; then
            shape_why=$(sed -n 's/^SKIPPED: //p' <<<"$slat" | head -1)
            shape_why=${shape_why:-"no figures in the output of scripts/shape-latency.sh"}
        fi
    fi
    if [[ -z $shape_why ]]; then
        late_row latency "$shape_label; $shape_n connections each" \
            "a user's first line: p50 $sf50 µs, p99 $sf99 µs (marked: p50 $sfm50 µs); a further connection: p50 $sn50 µs, p99 $sn99 µs (marked: p50 $snm50 µs); conntrack -U process: p50 $st50 µs, p99 $st99 µs" \
            "conntrack -U / refract (further connection, p50): $(ratio "$st50" "$sn50")x" \
            "$shape_goal" "$(yes_no "$sn50 >= 0 && $sn50 < 1000 && $sf50 < 1000")"
    else
        say "shape latency skipped: $shape_why"
        late_row latency "$shape_label" "skipped: $shape_why" "" "$shape_goal" "-"
    fi
fi
rows+=("${late_rows[@]}")

# ---- footprint ----
if want footprint; then
    say "footprint"
    stream=$out/log-stream
    head -n 600000 "$log" >"$stream"
    fp_args=()
    ((quick)) && fp_args+=(--quick)
    fp=$(REFRACT_GEN_LOG=$stream scripts/footprint.sh "${fp_args[@]}")
    fget() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<<"$fp" | head -1; }
    fget2() { sed -n "s/.*\b$1=\([a-z]*\).*/\1/p" <<<"$fp" | head -1; }
    bytes=$(fget binary_bytes)
    row footprint "stripped release binary" "$(awk -v b="$bytes" 'BEGIN { printf "%.0f KiB", b / 1024 }')" "" "< 1 MiB" "$(yes_no "$bytes < 1048576")"
    idle=$(fget idle_rss_kib)
    row footprint "RSS idle (VmRSS, following an empty log)" "$idle KiB (RssAnon $(fget idle_anon_kib) KiB, Pss $(fget idle_pss_kib) KiB)" "" "< 2 MiB" "$(yes_no "$idle < 2048")"
    row footprint "RSS after 100,000 tracked users" "$(fget users100k_rss_kib) KiB (VmHWM $(fget users100k_hwm_kib) KiB, RssAnon $(fget users100k_anon_kib) KiB)" "" "" ""
    wk=$(fget idle_wakeups) ws=$(fget idle_secs)
    row footprint "wakeups idle (context switches over $ws s; liveness $(fget2 liveness))" "$wk ($(awk -v w="$wk" -v s="$ws" 'BEGIN { printf "%.1f", w * 60 / s }')/min)" "" "0" "$(yes_no "$wk == 0")"
    cpu=$(fget follow_cpu_pct) fsecs=$(fget follow_secs)
    # The liveness work the followed log made, per second of the phase.
    rate_of() { awk -v n="$(fget "follow_$1")" -v s="$fsecs" 'BEGIN { if (n == "") print "-"; else printf "%.0f", n / s }'; }
    live_work="liveness: $(rate_of attributed) attributed lines/s, $(rate_of liveness_checks) checks/s ($(rate_of deferred) newcomer lines/s waiting for one, $(fget follow_deferred_timeouts) ran out of time), $(rate_of liveness_lookups) lookups/s, $(rate_of liveness_facts) facts/s, $(fget follow_suspects) suspects at the end"
    row footprint "CPU following 10,000 lines/s for $fsecs s (liveness on)" "$cpu % of one core ($live_work)" "" "< 3 %" "$(yes_no "$cpu < 3")"
    say "footprint, follow without liveness"
    nl=$(REFRACT_GEN_LOG=$stream scripts/footprint.sh --follow "${fp_args[@]}" --no-liveness)
    cpu_nl=$(sed -n 's/.*\bfollow_cpu_pct=\([0-9.]*\).*/\1/p' <<<"$nl" | head -1)
    row footprint "CPU following the same stream without liveness (--proto=udp: the same policy work, no TCP liveness)" "$cpu_nl % of one core" \
        "liveness costs $(awk -v a="$cpu" -v b="$cpu_nl" 'BEGIN { printf "%.2f", a - b }') points ($(ratio "$cpu" "$cpu_nl")x)" "" ""
    if [[ -n ${REFRACT_BASE:-} ]]; then
        say "footprint, follow with the previous binary"
        bl=$(REFRACT=$REFRACT_BASE REFRACT_GEN_LOG=$stream scripts/footprint.sh --follow "${fp_args[@]}")
        cpu_b=$(sed -n 's/.*\bfollow_cpu_pct=\([0-9.]*\).*/\1/p' <<<"$bl" | head -1)
        row footprint "CPU following the same stream, previous version (${REFRACT_BASE_NAME:-$REFRACT_BASE}, same flags)" "$cpu_b % of one core" \
            "this version / previous: $(ratio "$cpu" "$cpu_b")x" "" ""
    fi
fi

# ---- scale ----
if want scale; then
    say "scale"
    for n in 10000 100000 1000000; do
        f=$out/users-$n
        [[ -s $f ]] || python3 "$helper" users "$n" "$lines" "$f"
        read -r t _ < <(python3 "$helper" time 3 "$bin" replay --window=1h \
            --max-users=2000000 --max-keys=2000000 "$f")
        tr=$(scripts/footprint.sh --tracked "$f" "$lines")
        tget() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<<"$tr" | head -1; }
        label=$(awk -v n="$n" 'BEGIN { if (n >= 1e6) printf "%dM", n / 1e6; else printf "%dk", n / 1e3 }')
        row scale "1M lines cycling over $label users, all tracked (--window=1h)" \
            "replay $(ns_line "$t" "$lines") ns/line (wall, median of 3); daemon $(tget tracked_cpu_ns_line) ns/line (CPU), RssAnon $(tget tracked_anon_kib) KiB, VmHWM $(tget tracked_hwm_kib) KiB, users $(tget tracked_users)" "" "" ""
    done
fi

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
{
    echo "$("$bin" --version 2>/dev/null | head -1 || true) · $(date -u +%Y-%m-%d) · $(nproc) CPU ($cpu_model) · Linux $(uname -r) · load average at start $load0, at end $(cut -d' ' -f1-3 /proc/loadavg)$( ((quick)) && echo ' · --quick')$([[ -n $only ]] && echo " · --only $only")"
    echo
    echo "| section | measure | value | vs reference | goal | met |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} | tee "$out/latest.md"
