#!/usr/bin/env bash
# The binary cache against the anchor an operator would otherwise set up: a static binary cache
# (`nix copy --to file://DIR?compression=none`, served by `python3 -m http.server`). On loopback
# only, with the real Nix client, for one store path of SIZE_MB random bytes rooted as a built
# version's:
#   - seconds for `nix copy --from` each cache into a fresh chroot store (RUNS times each,
#     myco-d's upload rate unlimited; the static cache's narinfo is unsigned, so that copy
#     passes --no-check-sigs);
#   - myco-d's resident memory before and at most while serving (sampled every 20 ms);
#   - the upload rate over at most 10 s with the default throttle (5 MB/s), one client and
#     two at once.
# Prints one line: CACHE size_mb=.. myco_s=.. static_s=.. ... (docs/benchmarks.md).
# Needs release binaries (MYCO_BIN_DIR, default target/release), nix-store, nix, curl, python3.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${MYCO_BIN_DIR:-$repo/target/release}
size_mb=${SIZE_MB:-100}
runs=${RUNS:-3}
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export NIX_CONF_DIR=$repo/tests/nix/conf XDG_CACHE_HOME=$work/xdg

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

head -c "${size_mb}M" /dev/urandom >"$work/payload.bin"
path=$(nix-store --add "$work/payload.bin" 2>/dev/null)
hash=$(basename "$path" | cut -c1-32)

# A node: keys, a certificate, stand-ins for systemd's tools (the executor only roots builds).
cd "$work"
"$bin/myco" keygen --out op.key >/dev/null
"$bin/myco" keygen --out node.key >/dev/null
field() { "$bin/myco" pubkey --key "$1" | awk -v f="$2" '$1 == f { print $2 }'; }
"$bin/myco" cert --operator-key op.key --node-pubkey "$(field node.key public_key)" \
    --zone 0 --arch any --out node.cert >/dev/null
key=$(field node.key nix_cache_key)
printf '#!/bin/sh\nexit 0\n' >true.sh
printf '#!/bin/sh\nwhile [ "$1" != -- ]; do shift; done\nshift\nexec "$@"\n' >systemd-run.sh
chmod +x true.sh systemd-run.sh
mkdir -p gcroots
ln -s "$path" gcroots/bench-aaaaaaaaaaaa

# Starts myco-d with the cache on a free port and the given extra flags; sets $daemon and $port.
start_daemon() {
    port=$(free_port)
    rm -rf state api.sock
    "$bin/myco-d" --operator "$(field op.key public_key)" --key node.key --cert node.cert \
        --state-dir state --socket "$work/api.sock" --listen 127.0.0.1:0 --dns off \
        --reserve-bytes 0 --unit-dir "$work/units" --systemctl "$work/true.sh" \
        --journalctl "$work/true.sh" --systemd-run "$work/systemd-run.sh" \
        --audit-log "$work/audit.log" --store-dir "$work/no-store" --gcroot-dir "$work/gcroots" \
        --cache-listen "127.0.0.1:$port" "$@" 2>>daemon.log &
    daemon=$!
    pids+=("$daemon")
    for _ in $(seq 100); do
        grep -q 'binary cache: serving 1 store paths' daemon.log 2>/dev/null && return
        sleep 0.1
    done
    echo "myco-d did not serve the path; its log:" >&2
    cat daemon.log >&2
    exit 1
}

stop_daemon() { kill "$daemon"; wait "$daemon" 2>/dev/null || true; : >daemon.log; }

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# Seconds for `nix copy --from URL` of the path into a fresh store; extra flags after the URL.
copy_seconds() {
    local url=$1
    shift
    local to
    to=$(mktemp -d -p "$work")
    local start end
    start=$(date +%s.%N)
    nix copy --from "$url" --to "$to" "$path" "$@" 2>/dev/null
    end=$(date +%s.%N)
    cmp -s "$to$path" "$path" || { echo "the copy from $url differs" >&2; exit 1; }
    chmod -R u+w "$to"
    rm -rf "$to"
    echo "$end - $start" | bc -l | xargs printf '%.2f'
}

median() { tr ' ' '\n' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# myco-d, unlimited, with its resident memory sampled while it serves.
start_daemon --cache-upload-rate 0
rss_idle=$(rss_kb "$daemon")
echo "$rss_idle" >"$work/rss_max"
(
    max=$rss_idle
    while kill -0 "$daemon" 2>/dev/null; do
        r=$(rss_kb "$daemon" 2>/dev/null || echo 0)
        [ "$r" -gt "$max" ] && max=$r && echo "$max" >"$work/rss_max"
        sleep 0.02
    done
) &
sampler=$!
myco_times=()
for _ in $(seq "$runs"); do
    rm -rf "$XDG_CACHE_HOME"
    myco_times+=("$(copy_seconds "http://127.0.0.1:$port" --option trusted-public-keys "$key")")
done
kill "$sampler" 2>/dev/null || true
rss_max=$(cat "$work/rss_max")
stop_daemon

# The anchor: the same path as a static binary cache.
nix copy --to "file://$work/static?compression=none" "$path" 2>/dev/null
static_port=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$work/static" "$static_port" \
    >/dev/null 2>&1 &
pids+=("$!")
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$static_port/nix-cache-info" >/dev/null && break
    sleep 0.1
done
static_times=()
for _ in $(seq "$runs"); do
    rm -rf "$XDG_CACHE_HOME"
    static_times+=("$(copy_seconds "http://127.0.0.1:$static_port" --no-check-sigs)")
done

# The default throttle: the NAR's rate over at most 10 s, one client, then two at once (their
# bytes together over the wall time of both).
start_daemon
nar="http://127.0.0.1:$port/nar/$hash.nar"
fetch() { curl -s -o /dev/null --max-time 10 -w '%{size_download}\n' "$nar" || true; }
start=$(date +%s.%N)
one=$(fetch)
one_s=$(echo "$(date +%s.%N) - $start" | bc -l)
start=$(date +%s.%N)
two=$( (fetch & fetch & wait) | awk '{ s += $1 } END { print s }')
two_s=$(echo "$(date +%s.%N) - $start" | bc -l)
stop_daemon

myco_s=$(echo "${myco_times[*]}" | median)
static_s=$(echo "${static_times[*]}" | median)
mb_s() { echo "$size_mb / $1" | bc -l | xargs printf '%.1f'; }
rate() { echo "$1 / $2 / 1000000" | bc -l | xargs printf '%.2f'; }
echo "CACHE size_mb=$size_mb runs=$runs myco_s=$myco_s (${myco_times[*]}) static_s=$static_s" \
    "(${static_times[*]}) myco_mb_s=$(mb_s "$myco_s") static_mb_s=$(mb_s "$static_s")" \
    "rss_idle_kb=$rss_idle rss_max_kb=$rss_max throttle_one_mb_s=$(rate "$one" "$one_s")" \
    "throttle_two_mb_s=$(rate "$two" "$two_s")"
