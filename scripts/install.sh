#!/usr/bin/env bash
# Installs refract from this source checkout on Debian, Ubuntu or Alpine:
# ipset and iptables, a release build, the binary in /usr/local/bin (plus
# /opt/refract/refract for units written for refract 0.2), the systemd unit
# or OpenRC script, the settings file (never overwriting yours), the man
# page refract(8), bash completion and the logrotate file of the audit log.
# Idempotent: run it again to upgrade.
#
#   scripts/install.sh [--uninstall] [--init systemd|openrc] [--bin PATH] [--no-deps]
#
# --uninstall stops the service, then runs `refract cleanup` with the
# installed settings (the sets and DROP rules go); if anything remains it
# says what and exits 1 without removing a file, so you can fix it and run
# it again.
#
# DESTDIR=/some/root installs into that tree instead of / (no packages, no
# service manager calls, no cleanup): what packagers and the tests use.
# --with-cleanup runs the cleanup of --uninstall in DESTDIR mode too, with
# DESTDIR's binary and settings, in the caller's network namespace (the
# tests run it inside one of their own).
set -euo pipefail
cd "$(dirname "$0")/.."

uninstall=0 init="" bin="" deps=1 with_cleanup=0
while (($#)); do
    case "$1" in
        --uninstall) uninstall=1; shift ;;
        --with-cleanup) with_cleanup=1; shift ;;
        --init) init=${2:?--init needs systemd or openrc}; shift 2 ;;
        --bin) bin=${2:?--bin needs a path}; shift 2 ;;
        --no-deps) deps=0; shift ;;
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
root=${DESTDIR:-}
live=1
[[ -n $root ]] && live=0
cleanup=$live
((with_cleanup)) && cleanup=1

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
man_page=/usr/share/man/man8/refract.8.gz
completion=/usr/share/bash-completion/completions/refract
hooks=/usr/share/refract/hooks
logrotate=/etc/logrotate.d/refract
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

# Removes an installed config file unless the operator changed it.
#   keep_if_changed INSTALLED SOURCE NAME
keep_if_changed() {
    [[ -f $1 ]] || return 0
    if cmp -s "$1" "$2"; then
        rm -f "$1"
    else
        say "kept $3 (it has your changes)"
    fi
}

# `refract cleanup` with the installed settings: the service's settings
# file is sourced (`set -a`: every assignment exported, so refract reads
# the REFRACT_* variables itself, and --env-file is not needed), in a
# subshell so nothing leaks into this script. A service configured as a
# dry run still made its sets on an earlier run: cleanup is never one.
# Exits 1, removing nothing, when cleanup fails or leaves something.
refract_cleanup() {
    local out
    if [[ ! -x $root$bin_path ]]; then
        say "no $bin_path: cannot check for refract's sets and DROP rules (remove them with 'refract cleanup' from a build of refract)"
        return 0
    fi
    if ! out=$(
        set -a
        # shellcheck disable=SC1090 # the settings file is the operator's
        [[ -r $root$settings ]] && . "$root$settings"
        set +a
        REFRACT_DRY_RUN=false "$root$bin_path" cleanup 2>&1
    ); then
        printf '%s\n' "$out" >&2
        echo "install: refract's sets or DROP rules remain (above); nothing was uninstalled: fix it and run --uninstall again" >&2
        exit 1
    fi
    say "${out#refract }"
}

if ((uninstall)); then
    if ((live)); then
        if [[ $init == systemd ]] && command -v systemctl >/dev/null 2>&1; then
            systemctl disable --now refract.service >/dev/null 2>&1 || true
        elif command -v rc-service >/dev/null 2>&1; then
            rc-service refract stop >/dev/null 2>&1 || true
            rc-update del refract default >/dev/null 2>&1 || true
        fi
    fi
    if ((cleanup)); then
        refract_cleanup
    fi
    rm -f "$root$bin_path" "$root$compat_link" "$root$unit" "$root$man_page" "$root$completion"
    rm -f "$root$hooks/webhook" "$root$hooks/telegram"
    rmdir "$root$hooks" "$root${hooks%/hooks}" 2>/dev/null || true
    rmdir "$root/opt/refract" 2>/dev/null || true
    keep_if_changed "$root$settings" "$settings_src" "$settings"
    keep_if_changed "$root$logrotate" packaging/logrotate/refract "$logrotate"
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
install -d "$root${man_page%/*}"
gzip -9n <packaging/man/refract.8 >"$root$man_page"
chmod 644 "$root$man_page"
install -Dm644 packaging/completion/refract.bash "$root$completion"
install -Dm755 packaging/hooks/webhook "$root$hooks/webhook"
install -Dm755 packaging/hooks/telegram "$root$hooks/telegram"
if [[ -e $root$logrotate ]] && ! cmp -s "$root$logrotate" packaging/logrotate/refract; then
    say "kept your $logrotate"
else
    install -Dm644 packaging/logrotate/refract "$root$logrotate"
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
