#!/usr/bin/env bash
# Installs what refract's build, tests and demo need on Debian/Ubuntu (or
# Alpine), skipping whatever is already there. Sourced by scripts/test.sh
# and scripts/demo.sh; run it directly to just install.
#
#   scripts/deps.sh [build|test|demo|bench]
#
# The Rust toolchain: a rustc >= REFRACT_RUST_MIN on PATH (rustup's, or any)
# is kept as it is. Without one, the distribution's is installed: its
# `cargo`/`rustc` when they are new enough (Ubuntu 24.04, Debian 13, Alpine),
# else on Debian 12 (rustc 1.63) the current toolchain Debian 12 ships as
# `cargo-web`, `rustc-web`, `rustfmt-web` and `rust-web-clippy` (1.85 in
# bookworm, newer in bookworm-security; they install /usr/bin/cargo, rustc,
# rustfmt, cargo-clippy and replace Debian's old `cargo`/`rustc` packages).
set -euo pipefail

# Cargo.toml's rust-version.
REFRACT_RUST_MIN=1.75

refract_need_cmds() {
    local missing=()
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    printf '%s\n' "${missing[@]}"
}

# refract_version_ge A B: whether version A (e.g. 1.85.0) >= B (e.g. 1.75).
refract_version_ge() {
    local a b i
    IFS=. read -r -a a <<<"$1"
    IFS=. read -r -a b <<<"$2"
    for i in 0 1 2; do
        local x=${a[i]:-0} y=${b[i]:-0}
        x=${x%%[!0-9]*} y=${y%%[!0-9]*}
        ((10#${x:-0} > 10#${y:-0})) && return 0
        ((10#${x:-0} < 10#${y:-0})) && return 1
    done
    return 0
}

# The version of the rustc on PATH (empty without one).
refract_rustc_version() {
    command -v rustc >/dev/null 2>&1 || return 0
    rustc --version 2>/dev/null | awk '{print $2}'
}

# Whether cargo and a rustc new enough for refract are on PATH.
refract_rust_ok() {
    command -v cargo >/dev/null 2>&1 || return 1
    local v
    v=$(refract_rustc_version)
    [[ -n $v ]] && refract_version_ge "$v" "$REFRACT_RUST_MIN"
}

refract_apt_updated=
refract_apt_update() {
    [[ -n $refract_apt_updated ]] && return 0
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    refract_apt_updated=1
}

# The candidate version of a Debian package (empty when there is none).
# Installs PACKAGES in one apt-get call, or, when that batch fails, one at a
# time, naming each that could not be had (followed by NOTE).
#   refract_apt_install NOTE PACKAGE...
refract_apt_install() {
    local note=$1 p
    shift
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 && return 0
    for p in "$@"; do
        apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 ||
            echo "deps: could not install $p$note" >&2
    done
}

refract_apt_candidate() {
    apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}' | grep -v '(none)' || true
}

# Whether `cargo fmt` and `cargo clippy` both run.
refract_rust_tools_ok() {
    cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1
}

# Installs a Rust toolchain when there is no good one (see the top); for
# `test` also rustfmt and, where the distribution has one, clippy, when the
# toolchain is the distribution's (/usr/bin; rustup users add components
# with `rustup component add`).
refract_install_rust() {
    local what=$1 tools_wanted=
    if refract_rust_ok; then
        [[ $what == test ]] || return 0
        [[ $(command -v rustc) == /usr/bin/rustc ]] || return 0
        refract_rust_tools_ok && return 0
        tools_wanted=1
    else
        [[ $what == test ]] && tools_wanted=1
    fi
    if [[ $(id -u) -ne 0 ]]; then
        refract_rust_ok ||
            echo "deps: refract needs Rust $REFRACT_RUST_MIN or newer (found: $(refract_rustc_version)); run as root to install it, or use rustup" >&2
        return 0
    fi
    local pkgs=() tools=() p
    if command -v apt-get >/dev/null 2>&1; then
        refract_apt_update
        local rustc_v
        rustc_v=$(refract_apt_candidate rustc)
        rustc_v=${rustc_v#*:}
        if dpkg-query -W -f '${Status}' rustc-web 2>/dev/null | grep -q 'install ok installed'; then
            # Installed before: complete the same toolchain.
            pkgs=(cargo-web rustc-web) tools=(rustfmt-web rust-web-clippy)
        elif [[ -n $rustc_v ]] && refract_version_ge "${rustc_v%%+*}" "$REFRACT_RUST_MIN"; then
            pkgs=(cargo rustc) tools=(rustfmt rust-clippy)
        elif [[ -n $(refract_apt_candidate cargo-web) ]]; then
            # Debian 12: its `cargo` is 0.66 with rustc 1.63, too old.
            pkgs=(cargo-web rustc-web) tools=(rustfmt-web rust-web-clippy)
        else
            echo "deps: this distribution's rustc (${rustc_v:-none}) is older than $REFRACT_RUST_MIN and there is no cargo-web: install Rust with rustup (https://rustup.rs)" >&2
            return 1
        fi
        refract_rust_ok && pkgs=()
        [[ -n $tools_wanted ]] && pkgs+=("${tools[@]}")
        # cargo fetches the crates from crates.io over https: a minimal
        # system (debootstrap, containers) has no CA bundle.
        [[ -e /etc/ssl/certs/ca-certificates.crt ]] || pkgs+=(ca-certificates)
        echo "deps: installing ${pkgs[*]}" >&2
        # A clippy missing from the mirror is not fatal (scripts/test.sh
        # then says it skips clippy).
        refract_apt_install "" "${pkgs[@]}"
    elif command -v apk >/dev/null 2>&1; then
        refract_rust_ok || pkgs=(cargo rust)
        [[ -n $tools_wanted ]] && pkgs+=(rustfmt rust-clippy)
        apk add --no-cache "${pkgs[@]}" >/dev/null || echo "deps: apk add failed for some of: ${pkgs[*]}" >&2
    else
        echo "deps: no apt-get or apk; install Rust $REFRACT_RUST_MIN or newer (rustup)" >&2
        return 1
    fi
    # An older rustc earlier on PATH (an old rustup default) would still be
    # the one cargo runs: put the distribution's first.
    if ! refract_rust_ok && [[ -x /usr/bin/rustc ]]; then
        export PATH="/usr/bin:$PATH"
    fi
    if ! refract_rust_ok; then
        echo "deps: still no Rust $REFRACT_RUST_MIN or newer after installing (rustc: $(refract_rustc_version))" >&2
        return 1
    fi
}

# promtool (checks the metrics exposition in the tests), taken out of
# Debian's prometheus package without installing it: installing would start
# a Prometheus server on the host. Lands in $REFRACT_TOOLS (default
# /var/cache/refract-tools), where the tests look for it.
refract_install_promtool() {
    local dir=${REFRACT_TOOLS:-/var/cache/refract-tools}
    command -v promtool >/dev/null 2>&1 && return 0
    [[ -x $dir/promtool ]] && return 0
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 || return 0
    local tmp
    tmp=$(mktemp -d)
    if (cd "$tmp" && refract_apt_update && apt-get download prometheus >/dev/null 2>&1 &&
        dpkg-deb -x prometheus_*.deb x && mkdir -p "$dir" && cp x/usr/bin/promtool "$dir/"); then
        echo "deps: promtool from Debian's prometheus package in $dir" >&2
    else
        echo "deps: could not fetch promtool (the metrics test will skip its check)" >&2
    fi
    rm -rf "$tmp"
}

refract_install_deps() {
    local what=${1:-build}
    # command -> Debian package
    local -A deb=(
        [cc]=gcc [ip]=iproute2 [ss]=iproute2 [ipset]=ipset
        [iptables]=iptables [conntrack]=conntrack [shellcheck]=shellcheck
        [v2ray]=v2ray [systemd-analyze]=systemd [fail2ban-regex]=fail2ban [dpkg-deb]=dpkg
        [hyperfine]=hyperfine [python3]=python3 [curl]=curl [pgrep]=procps
        [man]=man-db [logrotate]=logrotate [openssl]=openssl [nft]=nftables
        # The Redis server is redis-tools' redis-check-rdb run under the name
        # redis-server (redis-server's package only adds the service, which
        # the fleet tests do not want: they start their own).
        [redis-check-rdb]=redis-tools
    )
    local cmds=(cc)
    case "$what" in
        build) ;;
        demo) cmds+=(ip ss ipset iptables conntrack python3) ;;
        test) cmds+=(ip ss ipset iptables nft conntrack shellcheck v2ray systemd-analyze python3 curl dpkg-deb pgrep man logrotate openssl redis-check-rdb) ;;
        bench) cmds+=(ip ss ipset iptables nft conntrack fail2ban-regex python3 redis-check-rdb) ;;
        *) echo "deps: unknown set '$what' (build, demo, test, bench)" >&2; return 2 ;;
    esac
    refract_install_rust "$what"
    [[ $what == test ]] && refract_install_promtool
    local missing
    missing=$(refract_need_cmds "${cmds[@]}")
    [[ -z $missing ]] && return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "deps: missing $(echo "$missing" | tr '\n' ' ')- run as root to install them" >&2
        return 0
    fi
    local pkgs=() c
    for c in $missing; do
        # ip and ss are both iproute2: name each package once.
        [[ " ${pkgs[*]} " == *" ${deb[$c]} "* ]] || pkgs+=("${deb[$c]}")
    done
    if command -v apt-get >/dev/null 2>&1; then
        echo "deps: installing ${pkgs[*]}" >&2
        refract_apt_update
        # v2ray is only in Debian/Ubuntu's universe; the tests skip without it.
        refract_apt_install " (tests that need it will skip)" "${pkgs[@]}"
    elif command -v apk >/dev/null 2>&1; then
        local -A apkname=([systemd]='' [v2ray]=v2ray [gcc]=build-base [iproute2]=iproute2)
        local p apks=()
        for p in "${pkgs[@]}"; do
            p=${apkname[$p]-$p}
            [[ -n $p ]] && apks+=("$p")
        done
        apk add --no-cache "${apks[@]}" >/dev/null || echo "deps: apk add failed for some of: ${apks[*]}" >&2
    else
        echo "deps: no apt-get or apk; install by hand: ${pkgs[*]}" >&2
    fi
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    refract_install_deps "${1:-build}"
fi
