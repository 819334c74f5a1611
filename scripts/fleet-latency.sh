#!/usr/bin/env bash
# Cross-node decision latency of fleet mode: line appended on node B → the
# newcomer's key in B's set, while node A holds the user's first device,
# with Redis on a local unix socket; and, in the same run, the same measure
# for a violation B sees alone. Two daemons with the kernel enforcer, each
# in a network namespace of its own (created and removed by the test,
# tests/kernel/fleet.rs `fleet_latency`), a Redis of the test's own.
#
#   sudo scripts/fleet-latency.sh [N]      (default 1000 users)
#
# Output: `fleet-latency fleet n=N p50_us=… p99_us=…`, the same for
# `local`, and the Redis requests node A sent; `SKIPPED: why` instead when
# the test could not run (not root, a tool missing). On a failure, the
# test's last lines on stderr and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
refract_install_deps bench
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if ! REFRACT_FLEET_N=${1:-1000} cargo test --release --quiet --test kernel fleet_latency \
    -- --ignored --nocapture >"$out" 2>&1; then
    tail -n 40 "$out" >&2
    exit 1
fi
grep -E '^(fleet-latency|SKIPPED: )' "$out"
