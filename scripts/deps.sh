#!/usr/bin/env bash
# Installs what refract's build, tests and demo need on Debian/Ubuntu (or
# Alpine), skipping whatever is already there. Sourced by scripts/test.sh
# and scripts/demo.sh; run it directly to just install.
#
#   scripts/deps.sh [build|test|demo]
set -euo pipefail

refract_need_cmds() {
    local missing=()
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    printf '%s\n' "${missing[@]}"
}

refract_install_deps() {
    local what=${1:-build}
    # command -> Debian package
    local -A deb=(
        [cargo]=cargo [cc]=gcc [ip]=iproute2 [ss]=iproute2 [ipset]=ipset
        [iptables]=iptables [conntrack]=conntrack [shellcheck]=shellcheck
        [v2ray]=v2ray [systemd-analyze]=systemd [fail2ban-regex]=fail2ban [dpkg-deb]=dpkg
        [hyperfine]=hyperfine [python3]=python3 [curl]=curl
    )
    local cmds=(cargo cc)
    case "$what" in
        build) ;;
        demo) cmds+=(ip ss ipset iptables conntrack python3) ;;
        test) cmds+=(ip ss ipset iptables conntrack shellcheck v2ray systemd-analyze python3 curl dpkg-deb) ;;
        bench) cmds+=(ip ss ipset iptables conntrack fail2ban-regex python3) ;;
        *) echo "deps: unknown set '$what' (build, demo, test, bench)" >&2; return 2 ;;
    esac
    local missing
    missing=$(refract_need_cmds "${cmds[@]}")
    [[ -z $missing ]] && return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "deps: missing $(echo "$missing" | tr '\n' ' ')- run as root to install them" >&2
        return 0
    fi
    local pkgs=() c
    for c in $missing; do pkgs+=("${deb[$c]}"); done
    if command -v apt-get >/dev/null 2>&1; then
        echo "deps: installing ${pkgs[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        # v2ray is only in Debian/Ubuntu's universe; the tests skip without it.
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 ||
            for p in "${pkgs[@]}"; do
                apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 ||
                    echo "deps: could not install $p (tests that need it will skip)" >&2
            done
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
