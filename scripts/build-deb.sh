#!/usr/bin/env bash
# Builds a Debian package from this checkout with dpkg-deb (no cargo-deb
# needed): /usr/bin/refract, the unit (ExecStart and ExecReload pointed at
# /usr/bin), the env file and the logrotate file as conffiles, the man page
# refract(8), bash completion, and the maintainer scripts of
# packaging/debian.
#
#   scripts/build-deb.sh [--bin PATH] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="" out="target/debian"
while (($#)); do
    case "$1" in
        --bin) bin=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "build-deb: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [[ -z $bin ]]; then
    cargo build --release --locked
    bin=target/release/refract
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -Dm755 "$bin" "$root/usr/bin/refract"
install -d "$root/lib/systemd/system"
sed 's|/usr/local/bin/refract|/usr/bin/refract|' refract.service >"$root/lib/systemd/system/refract.service"
chmod 644 "$root/lib/systemd/system/refract.service"
install -Dm644 packaging/default/refract "$root/etc/default/refract"
install -Dm644 README.md "$root/usr/share/doc/refract/README.md"
install -d "$root/usr/share/man/man8"
gzip -9n <packaging/man/refract.8 >"$root/usr/share/man/man8/refract.8.gz"
chmod 644 "$root/usr/share/man/man8/refract.8.gz"
install -Dm644 packaging/completion/refract.bash "$root/usr/share/bash-completion/completions/refract"
install -Dm755 packaging/hooks/webhook "$root/usr/share/refract/hooks/webhook"
install -Dm755 packaging/hooks/telegram "$root/usr/share/refract/hooks/telegram"
install -d "$root/etc/logrotate.d"
sed 's|/usr/local/bin/refract|/usr/bin/refract|' packaging/logrotate/refract >"$root/etc/logrotate.d/refract"
chmod 644 "$root/etc/logrotate.d/refract"
install -Dm644 LICENSE "$root/usr/share/doc/refract/copyright"
install -d "$root/DEBIAN"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" packaging/debian/control >"$root/DEBIAN/control"
install -m644 packaging/debian/conffiles "$root/DEBIAN/conffiles"
install -m755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
mkdir -p "$out"
deb="$out/refract_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "$deb"
