#!/usr/bin/env bash
# Where `refract replay` spends its time, on the two generated logs (the
# realistic mix of issue 17 and the easy one; benches/gen). Prints
# `profile KEY=VALUE` lines and, with --top, callgrind's top functions:
#   ir_line_LOG       callgrind instructions per line, `refract replay` of
#                     the first 100,000 lines (stable on a noisy machine)
#   wall_ns_line_LOG  wall ns/line, median of 5, of `refract replay` on the
#                     1,000,000-line log, next to `wc -l` and `grep -c
#                     email:` on the same file in the same run (medians of
#                     5), and the ratios to them
#
#   idle_*            with --idle BIN...: for each binary, footprint.sh's
#                     idle measure (a --dry-run daemon following an empty
#                     log, 1 s after ready): VmRSS, RssAnon, Pss (KiB) and
#                     the file size; nothing else runs
#
#   scripts/profile.sh [--top] [--no-wall]
#   scripts/profile.sh --idle BIN...
#   REFRACT=path/to/refract scripts/profile.sh     (default target/release)
# The logs are kept in target/profile/ (regenerated when missing). The
# release binary has no symbols; --top builds a copy with them
# (CARGO_PROFILE_RELEASE_STRIP=false, CARGO_PROFILE_RELEASE_DEBUG=0) into
# target/profile-build and profiles that.
set -euo pipefail
cd "$(dirname "$0")/.."
top=0 wall=1
if [[ ${1:-} == --idle ]]; then
    shift
    dir=$(mktemp -d "${TMPDIR:-/tmp}/refract-profile.XXXXXX")
    pid=
    trap '[[ -n $pid ]] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
    for bin in "$@"; do
        : >"$dir/access.log"
        : >"$dir/err"
        REFRACT_LOG=stderr "$bin" --dry-run --access.log="$dir/access.log" \
            --block.log="$dir/block.log" 2>"$dir/err" &
        pid=$!
        for _ in $(seq 500); do
            grep -q 'refract: ready: ' "$dir/err" && break
            sleep 0.01
        done
        grep -q 'refract: ready: ' "$dir/err" || { cat "$dir/err" >&2; exit 1; }
        sleep 1
        f() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/$2"; }
        echo "profile idle bin=$bin bytes=$(stat -c %s "$bin") vmrss_kib=$(f VmRSS status) rssanon_kib=$(f RssAnon status) rssfile_kib=$(f RssFile status) pss_kib=$(f Pss smaps_rollup)"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        pid=
    done
    exit 0
fi
for a in "$@"; do
    case $a in
        --top) top=1 ;;
        --no-wall) wall=0 ;;
        *) echo "usage: scripts/profile.sh [--top] [--no-wall]" >&2; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || { echo "profile: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
out=${CARGO_TARGET_DIR:-$PWD/target}/profile
mkdir -p "$out"
for log in realistic easy; do
    if [[ ! -s $out/$log-1m ]]; then
        flag=
        [[ $log == realistic ]] && flag=--realistic
        cargo bench --quiet --bench replay -- --write-log "$out/$log-1m" 1000000 $flag >/dev/null
    fi
    [[ -s $out/$log-100k ]] || head -n 100000 "$out/$log-1m" >"$out/$log-100k"
done
bin=${REFRACT:-target/release/refract}
if ((top)); then
    CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=0 \
        cargo build --release --quiet --target-dir target/profile-build
    bin=target/profile-build/release/refract
elif [[ ! -x $bin ]]; then
    cargo build --release --quiet
fi
med() { python3 scripts/bench.py time 5 "$@" | cut -d' ' -f1; }
for log in realistic easy; do
    cg=$out/callgrind.$log
    valgrind --tool=callgrind --callgrind-out-file="$cg" "$bin" replay "$out/$log-100k" \
        >/dev/null 2>"$out/valgrind.$log"
    callgrind_annotate --inclusive=no "$cg" >"$cg.txt"
    ir=$(awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }' "$cg.txt")
    echo "profile ir_line_$log=$(awk -v i="$ir" 'BEGIN { printf "%.0f", i / 100000 }')"
    if ((top)); then
        sed -n '/file:function/,/^$/p' "$cg.txt" | sed -n 1,25p
    fi
    if ((wall)); then
        f=$out/$log-1m
        r=$(med "$bin" replay "$f")
        w=$(med wc -l "$f")
        g=$(med grep -c 'email:' "$f")
        awk -v r="$r" -v w="$w" -v g="$g" -v l="$log" 'BEGIN {
            printf "profile wall_ns_line_%s=%.1f wc_ns_line=%.1f grep_ns_line=%.1f x_wc=%.1f x_grep=%.1f\n",
                l, r * 1e3, w * 1e3, g * 1e3, r / w, r / g }'
    fi
done
