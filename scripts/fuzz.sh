#!/usr/bin/env bash
# Runs refract's cargo-fuzz (libFuzzer) targets, one after the other.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Defaults: 600 seconds each, all targets (accesslog netlink limits args json resp).
# FUZZ_KEEP_GOING=1 runs libFuzzer in fork mode with crashes, timeouts and
# OOMs ignored, so every target gets its whole time and every crash is
# collected (the default stops a target at its first crash).
# Installs cargo-fuzz if it is missing. Each target starts from a working
# corpus (fuzz/corpus/TARGET, gitignored) seeded from the committed
# fuzz/seeds/TARGET; crash inputs land in fuzz/artifacts/TARGET/. Exits 1
# if any target crashed, and prints how to reproduce each crash.
#
# Toolchain: cargo-fuzz passes nightly-only rustc flags (-Z sanitizer=address,
# -Z instrument-coverage style options) to instrument the code for libFuzzer.
# When the active toolchain is stable (this project builds with stable, and
# the build hosts cannot fetch a nightly), RUSTC_BOOTSTRAP=1 lets that stable
# rustc accept those -Z flags. It is set only for this script's cargo-fuzz
# runs, never for the normal build. With a nightly toolchain it is harmless.
#
# The machine is shared: fuzzers run under `nice -n 10`, one at a time, with
# a single libFuzzer job each.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-600}
case $secs in
'' | *[!0-9]*)
	echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
	exit 2
	;;
esac
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	targets=(accesslog netlink limits args json resp)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
	echo "fuzz: installing cargo-fuzz" >&2
	nice -n 10 cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
# The fuzz crate has its own target directory (fuzz/target), whatever the
# caller's CARGO_TARGET_DIR says, so it never mixes with refract's build.
unset CARGO_TARGET_DIR

keep_going=()
if [ "${FUZZ_KEEP_GOING:-0}" = 1 ]; then
	keep_going=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
fi

crashed=()
for t in "${targets[@]}"; do
	if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
		echo "fuzz: no such target: $t" >&2
		exit 2
	fi
	mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
	cp -n "fuzz/seeds/$t/"* "fuzz/corpus/$t/" 2>/dev/null || true
	before=$(find "fuzz/artifacts/$t" -type f | wc -l)
	echo "fuzz: $t for ${secs}s" >&2
	status=0
	# cargo-fuzz's default build: optimised, with debug assertions and
	# overflow checks. No AddressSanitizer: the code under test is safe Rust
	# (refract keeps `unsafe` to src/sys/, which no target reaches), so ASan
	# would only halve the exec rate. One job; libFuzzer's per-input timeout
	# catches hangs.
	nice -n 10 cargo fuzz run --sanitizer none "$t" "fuzz/corpus/$t" -- \
		-max_total_time="$secs" -timeout=10 -print_final_stats=1 \
		"${keep_going[@]}" || status=$?
	after=$(find "fuzz/artifacts/$t" -type f | wc -l)
	if [ "$status" -ne 0 ] || [ "$after" -gt "$before" ]; then
		crashed+=("$t")
		echo "fuzz: $t FAILED (exit $status); inputs in fuzz/artifacts/$t/:" >&2
		find "fuzz/artifacts/$t" -type f -newer "fuzz/seeds/$t" -print >&2 || true
		echo "fuzz: reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run $t <file>" >&2
	else
		echo "fuzz: $t ok" >&2
	fi
done

if [ ${#crashed[@]} -gt 0 ]; then
	echo "fuzz: crashes in: ${crashed[*]}" >&2
	exit 1
fi
echo "fuzz: no crashes (${targets[*]}, ${secs}s each)" >&2
