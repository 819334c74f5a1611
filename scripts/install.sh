#!/usr/bin/env bash
# Installs refract from this source checkout on Debian, Ubuntu or Alpine:
# ipset and iptables, a release build, the binary in /usr/local/bin (plus
# /opt/refract/refract for units written for refract 0.2), the systemd unit
# or OpenRC script, and the settings file (never overwriting yours).
# Idempotent: run it again to upgrade.
#
#   scripts/install.sh [--uninstall] [--init systemd|openrc] [--bin PATH] [--no-deps]
#
# DESTDIR=/some/root installs into that tree instead of / (no packages, no
# service manager calls): what packagers and the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

uninstall=0 init="" bin="" deps=1
while (($#)); do
    case "$1" in
        --uninstall) uninstall=1; shift ;;
        --init) init=${2:?--init needs systemd or openrc}; shift 2 ;;
        --bin) bin=${2:?--bin needs a path}; shift 2 ;;
        --no-deps) deps=0; shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
root=${DESTDIR:-}
live=1
[[ -n $root ]] && live=0

if [[ -z $init ]]; then
    if [[ -d /run/systemd/system ]] || command -v systemctl >/dev/null 2>&1; then
        init=systemd
    elif command -v openrc-run >/dev/null 2>&1 || [[ -x /sbin/openrc-run ]]; then
        init=openrc
    else
        init=systemd
    fi
fi
case "$init" in systemd|openrc) ;; *) echo "install: --init must be systemd or openrc" >&2; exit 2 ;; esac

if ((live)) && [[ $(id -u) -ne 0 ]]; then
    echo "install: run as root (or set DESTDIR to install into a directory)" >&2
    exit 1
fi

bin_path=/usr/local/bin/refract
compat_link=/opt/refract/refract
if [[ $init == systemd ]]; then
    unit=/etc/systemd/system/refract.service
    settings=/etc/default/refract
    settings_src=packaging/default/refract
else
    unit=/etc/init.d/refract
    settings=/etc/conf.d/refract
    settings_src=packaging/openrc/refract.confd
fi

say() { printf 'install: %s\n' "$*"; }

if ((uninstall)); then
    if ((live)); then
        if [[ $init == systemd ]] && command -v systemctl >/dev/null 2>&1; then
            systemctl disable --now refract.service >/dev/null 2>&1 || true
        elif command -v rc-service >/dev/null 2>&1; then
            rc-service refract stop >/dev/null 2>&1 || true
            rc-update del refract default >/dev/null 2>&1 || true
        fi
        "$root$bin_path" cleanup >/dev/null 2>&1 || true
    fi
    rm -f "$root$bin_path" "$root$compat_link" "$root$unit"
    rmdir "$root/opt/refract" 2>/dev/null || true
    if [[ -f $root$settings ]]; then
        if cmp -s "$root$settings" "$settings_src"; then
            rm -f "$root$settings"
        else
            say "kept $settings (it has your changes)"
        fi
    fi
    if ((live)) && [[ $init == systemd ]] && [[ -d /run/systemd/system ]]; then
        systemctl daemon-reload || true
    fi
    say "refract removed"
    exit 0
fi

if ((live && deps)); then
    if command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ipset iptables >/dev/null
    elif command -v apk >/dev/null 2>&1; then
        apk add --no-cache ipset iptables ip6tables >/dev/null
    else
        say "no apt-get or apk: make sure ipset and iptables are installed"
    fi
fi

if [[ -z $bin ]]; then
    if ! command -v cargo >/dev/null 2>&1; then
        echo "install: cargo is missing (apt-get install cargo, or apk add cargo)" >&2
        exit 1
    fi
    cargo build --release --locked
    bin=target/release/refract
fi

install -Dm755 "$bin" "$root$bin_path"
install -d "$root/opt/refract"
ln -sfn "$bin_path" "$root$compat_link"
if [[ $init == systemd ]]; then
    install -Dm644 refract.service "$root$unit"
else
    install -Dm755 packaging/openrc/refract "$root$unit"
fi
if [[ -e $root$settings ]]; then
    say "kept your $settings"
else
    install -Dm644 "$settings_src" "$root$settings"
fi

if ((live)); then
    if [[ $init == systemd ]] && [[ -d /run/systemd/system ]]; then
        systemctl daemon-reload
        systemctl enable refract.service >/dev/null 2>&1
    elif [[ $init == openrc ]] && command -v rc-update >/dev/null 2>&1; then
        rc-update add refract default >/dev/null 2>&1 || true
    fi
fi

say "installed $bin_path ($("$root$bin_path" --version 2>/dev/null || echo refract))"
cat <<EOF
Next:
  1. edit $settings (port, log path, limit)
  2. refract check          # validates settings, log and kernel support
  3. refract replay $([[ -r /var/log/xray/access.log ]] && echo /var/log/xray/access.log || echo /path/to/access.log)   # who would be banned
  4. $([[ $init == systemd ]] && echo "systemctl start refract" || echo "rc-service refract start")
EOF
