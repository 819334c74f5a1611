#!/usr/bin/env bash
# How soon a new connection carries its user's mark: line appended →
# the connection's conntrack entry marked (the daemon with --rate-down and
# --rate-up in a network namespace of its own, a client sending on the
# connection; tests/kernel/shape.rs `shape_latency`). For a user's first
# line and for a further connection of a capped user; beside it, in the
# same run, one `conntrack -U --mark` process per line (what log-following
# shell scripts do).
#
#   sudo scripts/shape-latency.sh [N]      (default 200 connections each)
#
# Output: `shape-latency first|next|conntrack-tool n=N p50_us=… p99_us=…`,
# or `SKIPPED: why` when the test could not run (not root, a tool
# missing). On a failure, the test's last lines on stderr and a non-zero
# exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
refract_install_deps bench
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if ! REFRACT_SHAPE_N=${1:-200} cargo test --release --quiet --test kernel shape_latency \
    -- --ignored --nocapture >"$out" 2>&1; then
    tail -n 40 "$out" >&2
    exit 1
fi
grep -E '^(shape-latency|SKIPPED: )' "$out"
