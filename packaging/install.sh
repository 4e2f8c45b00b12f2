#!/usr/bin/env bash
# Installs Myco into DESTDIR/PREFIX, the one list of what an installation holds (docs/install.md):
# `make install` and `make deb` both call it, so a package and a hand installation hold the same
# files in the same places.
#
#   packaging/install.sh BIN_DIR MAN_DIR
#
# BIN_DIR holds the myco-d and myco to install (of any architecture); MAN_DIR the pages `make man`
# wrote. The shell completions come from `myco completions`, run from COMPLETIONS_MYCO (default
# BIN_DIR/myco; a cross build passes a myco that runs on this machine). Environment:
#   DESTDIR   staging root, empty for a real installation
#   PREFIX    default /usr/local
#   UNITDIR   where the unit goes, default PREFIX/lib/systemd/system (systemd reads
#             /usr/local/lib/systemd/system too); the Debian package passes /lib/systemd/system
#   DOCDIR    default PREFIX/share/doc/myco
#   ZSHDIR    default PREFIX/share/zsh/vendor-completions for PREFIX=/usr (Debian's zsh reads it),
#             else PREFIX/share/zsh/site-functions (zsh's own default for its prefix)
# The unit's ExecStart names PREFIX/bin/myco-d. Nothing under /etc is written: the operator makes
# /etc/myco (the Debian package's postinst does).

set -euo pipefail

bin_dir=${1:?usage: install.sh BIN_DIR MAN_DIR}
man_dir=${2:?usage: install.sh BIN_DIR MAN_DIR}
repo=$(cd "$(dirname "$0")/.." && pwd)
destdir=${DESTDIR:-}
prefix=${PREFIX:-/usr/local}
unitdir=${UNITDIR:-$prefix/lib/systemd/system}
docdir=${DOCDIR:-$prefix/share/doc/myco}
if [[ $prefix == /usr ]]; then zshdir=${ZSHDIR:-$prefix/share/zsh/vendor-completions}; else
	zshdir=${ZSHDIR:-$prefix/share/zsh/site-functions}; fi
completions_myco=${COMPLETIONS_MYCO:-$bin_dir/myco}
root=$destdir$prefix

install -d -m 0755 "$root/bin" "$destdir$unitdir" "$destdir$docdir/examples" \
	"$root/share/man/man1" "$root/share/man/man5" "$root/share/man/man8" \
	"$root/share/bash-completion/completions" "$destdir$zshdir"
install -m 0755 "$bin_dir/myco-d" "$bin_dir/myco" "$root/bin/"
sed "s|^ExecStart=/usr/bin/myco-d |ExecStart=$prefix/bin/myco-d |" "$repo/systemd/myco-d.service" \
	>"$destdir$unitdir/myco-d.service"
chmod 0644 "$destdir$unitdir/myco-d.service"
grep -q "^ExecStart=$prefix/bin/myco-d " "$destdir$unitdir/myco-d.service" \
	|| { echo "install.sh: the unit's ExecStart no longer starts with /usr/bin/myco-d" >&2; exit 1; }
install -m 0644 "$repo/systemd/myco-d.env.example" "$repo/systemd/myco-resolved.conf" \
	"$destdir$docdir/examples/"
install -m 0644 "$man_dir/myco.1" "$root/share/man/man1/"
install -m 0644 "$man_dir/myco.json.5" "$root/share/man/man5/"
install -m 0644 "$man_dir/myco-d.8" "$root/share/man/man8/"
"$completions_myco" completions bash >"$root/share/bash-completion/completions/myco"
"$completions_myco" completions zsh >"$destdir$zshdir/_myco"
chmod 0644 "$root/share/bash-completion/completions/myco" "$destdir$zshdir/_myco"
