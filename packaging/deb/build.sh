#!/usr/bin/env bash
# Builds myco_VERSION_ARCH.deb with dpkg-deb from binaries already built (`make deb`,
# docs/install.md):
#
#   packaging/deb/build.sh ARCH BIN_DIR MAN_DIR OUT_DIR
#
# ARCH is the Debian architecture (amd64, arm64) of the binaries in BIN_DIR. The files come from
# packaging/install.sh (PREFIX=/usr, the unit in /lib/systemd/system); this script adds the
# package's metadata: control (version from the workspace's Cargo.toml plus the Debian revision
# DEB_REVISION, default 1; libc6 from the newest GLIBC_ symbol version the binaries need),
# maintainer scripts, copyright, changelog.Debian.gz, md5sums and the lintian overrides. The
# shell completions are printed by COMPLETIONS_MYCO, a myco that runs on this machine.
# `build.sh --version` prints the package version and nothing else (the Makefile's DEB_VERSION).

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
upstream=$(sed -nE '/^\[workspace.package\]/,/^\[/s/^version *= *"([^"]+)"/\1/p' "$repo/Cargo.toml")
[[ -n $upstream ]] || { echo "build.sh: no version in [workspace.package] of Cargo.toml" >&2; exit 1; }
version=$upstream-${DEB_REVISION:-1}
if [[ ${1:-} == --version ]]; then
	echo "$version"
	exit 0
fi

arch=${1:?usage: build.sh ARCH BIN_DIR MAN_DIR OUT_DIR}
bin_dir=$(realpath "${2:?usage: build.sh ARCH BIN_DIR MAN_DIR OUT_DIR}")
man_dir=$(realpath "${3:?usage: build.sh ARCH BIN_DIR MAN_DIR OUT_DIR}")
out_dir=$(realpath "${4:?usage: build.sh ARCH BIN_DIR MAN_DIR OUT_DIR}")
# The changelog's date is the last commit's, so that two builds of one commit are identical.
date=$(date -R -u -d "@$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)")

# The newest glibc symbol version either binary needs (readelf reads any architecture).
glibc=$(readelf -V --wide "$bin_dir/myco-d" "$bin_dir/myco" | grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' \
	| sed 's/GLIBC_//' | sort -uV | tail -n 1)
[[ -n $glibc ]] || { echo "build.sh: no GLIBC_ version in $bin_dir's binaries" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/myco_${version}_$arch
DESTDIR=$root PREFIX=/usr UNITDIR=/lib/systemd/system COMPLETIONS_MYCO=${COMPLETIONS_MYCO:-} \
	"$repo/packaging/install.sh" "$bin_dir" "$man_dir"

doc=$root/usr/share/doc/myco
install -m 0644 "$here/copyright" "$doc/copyright"
sed -e "s/@VERSION@/$version/" -e "s/@DATE@/$date/" "$here/changelog" | gzip -9n >"$doc/changelog.Debian.gz"
gzip -9n "$root"/usr/share/man/man?/*
install -d -m 0755 "$root/usr/share/lintian/overrides"
install -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/myco"

install -d -m 0755 "$root/DEBIAN"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
	>"$root/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
	-e "s/@DEPENDS@/libc6 (>= $glibc)/" "$here/control.in" >"$root/DEBIAN/control"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$root/DEBIAN/"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

mkdir -p "$out_dir"
SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0) \
	dpkg-deb --root-owner-group -Zxz --build "$root" "$out_dir/myco_${version}_$arch.deb" >/dev/null
echo "$out_dir/myco_${version}_$arch.deb"
