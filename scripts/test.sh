#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (as
# root on Debian/Ubuntu), then format, lints and every test. Kernel tests
# run in network namespaces they create and remove; without root they skip
# and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
refract_install_deps test

cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test 2>&1
