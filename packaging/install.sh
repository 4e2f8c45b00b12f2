#!/usr/bin/env bash
# Installs Myco into DESTDIR/PREFIX, the one list of what an installation holds (docs/install.md):
# `make install` and `make deb` both call it, so a package and a hand installation hold the same
# files in the same places.
#
#   packaging/install.sh BIN_DIR MAN_DIR
#
# BIN_DIR holds the myco-d, myco-priv and myco to install (of any architecture); MAN_DIR the pages `make man`
# wrote. The shell completions come from `myco completions`, run from COMPLETIONS_MYCO (default
# BIN_DIR/myco; a cross build passes a myco that runs on this machine). Environment:
#   DESTDIR   staging root, empty for a real installation
#   PREFIX    default /usr/local
#   UNITDIR   where the units go (myco-d.service, myco-d-dns.socket, myco-priv.socket,
#             myco-priv.service), default
#             PREFIX/lib/systemd/system (systemd reads /usr/local/lib/systemd/system too); the
#             Debian package passes /lib/systemd/system
#   SYSUSERSDIR  where the user myco's sysusers.d file goes (as myco.conf), default
#             PREFIX/lib/sysusers.d (systemd-sysusers reads /usr/local/lib/sysusers.d too)
#   TMPFILESDIR  where the GC root directory's tmpfiles.d file goes (as myco.conf), default
#             PREFIX/lib/tmpfiles.d (systemd-tmpfiles reads /usr/local/lib/tmpfiles.d too)
#   DOCDIR    default PREFIX/share/doc/myco
#   ZSHDIR    default PREFIX/share/zsh/vendor-completions for PREFIX=/usr (Debian's zsh reads it),
#             else PREFIX/share/zsh/site-functions (zsh's own default for its prefix)
# The units' ExecStart name PREFIX/bin/myco-d and PREFIX/bin/myco-priv. Nothing under /etc is
# written and no user is made: the operator makes /etc/myco and runs `systemd-sysusers` and
# `systemd-tmpfiles --create` (the
# Debian package's postinst does both; docs/install.md).

set -euo pipefail

bin_dir=${1:?usage: install.sh BIN_DIR MAN_DIR}
man_dir=${2:?usage: install.sh BIN_DIR MAN_DIR}
repo=$(cd "$(dirname "$0")/.." && pwd)
destdir=${DESTDIR:-}
prefix=${PREFIX:-/usr/local}
unitdir=${UNITDIR:-$prefix/lib/systemd/system}
sysusersdir=${SYSUSERSDIR:-$prefix/lib/sysusers.d}
tmpfilesdir=${TMPFILESDIR:-$prefix/lib/tmpfiles.d}
docdir=${DOCDIR:-$prefix/share/doc/myco}
if [[ $prefix == /usr ]]; then zshdir=${ZSHDIR:-$prefix/share/zsh/vendor-completions}; else
	zshdir=${ZSHDIR:-$prefix/share/zsh/site-functions}; fi
completions_myco=${COMPLETIONS_MYCO:-$bin_dir/myco}
root=$destdir$prefix

install -d -m 0755 "$root/bin" "$destdir$unitdir" "$destdir$sysusersdir" "$destdir$tmpfilesdir" \
	"$destdir$docdir/examples" \
	"$root/share/man/man1" "$root/share/man/man5" "$root/share/man/man8" \
	"$root/share/bash-completion/completions" "$destdir$zshdir"
install -m 0755 "$bin_dir/myco-d" "$bin_dir/myco-priv" "$bin_dir/myco" "$root/bin/"
# unit PROGRAM FILE: installs systemd/FILE with its ExecStart moved from /usr/bin to PREFIX/bin.
unit() {
	sed "s|^ExecStart=/usr/bin/$1 |ExecStart=$prefix/bin/$1 |" "$repo/systemd/$2" >"$destdir$unitdir/$2"
	chmod 0644 "$destdir$unitdir/$2"
	grep -q "^ExecStart=$prefix/bin/$1 " "$destdir$unitdir/$2" \
		|| { echo "install.sh: $2's ExecStart no longer starts with /usr/bin/$1" >&2; exit 1; }
}
unit myco-d myco-d.service
unit myco-priv myco-priv.service
install -m 0644 "$repo/systemd/myco-d-dns.socket" "$repo/systemd/myco-priv.socket" "$destdir$unitdir/"
install -m 0644 "$repo/systemd/myco.sysusers" "$destdir$sysusersdir/myco.conf"
install -m 0644 "$repo/systemd/myco.tmpfiles" "$destdir$tmpfilesdir/myco.conf"
install -m 0644 "$repo/systemd/myco-d.env.example" "$repo/systemd/myco-resolved.conf" \
	"$destdir$docdir/examples/"
install -m 0644 "$man_dir/myco.1" "$root/share/man/man1/"
install -m 0644 "$man_dir/myco.json.5" "$root/share/man/man5/"
install -m 0644 "$man_dir/myco-d.8" "$man_dir/myco-priv.8" "$root/share/man/man8/"
"$completions_myco" completions bash >"$root/share/bash-completion/completions/myco"
"$completions_myco" completions zsh >"$destdir$zshdir/_myco"
chmod 0644 "$root/share/bash-completion/completions/myco" "$destdir$zshdir/_myco"
