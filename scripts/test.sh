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
# A distribution toolchain may come without clippy (scripts/deps.sh installs
# it where the distribution has it): then this one step is skipped, saying
# why. Wherever `cargo clippy` runs (CI's toolchain), it is never skipped.
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --all-targets -- -D warnings
else
    echo "test: skip: cargo clippy is unavailable with this toolchain ($(cargo --version)); the lint step is not run" >&2
fi
cargo test 2>&1
