#!/usr/bin/env bash
# `make bench-peers`: Myco side by side with the membership systems an operator would otherwise
# pick, in one run on this machine (docs/benchmarks.md, "Side by side"). Prints one table, one
# line per system and figure.
#
# In MycoSim's network (same loss, latency and seeds): foca's SWIM (bench/peers/foca-sim) and
# Myco's nodes (`myco-sim formation --kill`), 50 nodes at 10% and 50% loss.
#
# On loopback with real loss (nftables, as myco-testkit's loss.rs: `numgen random` drops of UDP
# on the input hook; needs root and nft): memberlist (Debian's Go package, built offline in
# GOPATH mode; apt-get installs it if missing), chitchat (quickwit's scuttlebutt, crates.io;
# bench/peers/chitchat-loopback) and Myco's daemons, NODES each on its own
# 127.201.X.0/24. Bytes on the wire are counted the same way for all: an nft counter ahead of the
# drop rule, on every packet (UDP and TCP) to the system's network, so it counts what was sent,
# IP and transport headers included.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
nodes=${NODES:-50}
seed=${SEED:-1}
# One loopback run of each system per loss percentage in LOSS_PCT (a list).
losses=${LOSS_PCT:-10}
settle_s=${SETTLE_SECONDS:-10}
rest_s=${REST_SECONDS:-20}
work=$(mktemp -d)
table=myco_peers_$$
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    nft delete table inet "$table" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

if [ "$(id -u)" != 0 ] || ! command -v nft >/dev/null; then
    echo "bench-peers: needs root and nft (apt-get install nftables) for the loopback part" >&2
    exit 1
fi
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/hashicorp/memberlist ]; then
    apt-get install -y golang-go golang-github-hashicorp-memberlist-dev >/dev/null
fi
cargo build --quiet --release -p myco-host -p myco-cli --manifest-path "$repo/Cargo.toml"

cargo build --quiet --profile sim -p myco-sim --manifest-path "$repo/Cargo.toml"
cargo build --quiet --release --manifest-path "$repo/bench/peers/Cargo.toml"
sim=$repo/target/sim/myco-sim
foca=$repo/bench/peers/target/release/foca-sim
(cd "$repo/bench/peers" && GOPATH=/usr/share/gocode GO111MODULE=off go build \
    -o target/memberlist-bench ./memberlist)

rows=$work/rows
# kv LINE KEY: the value of KEY=.. in LINE.
kv() { sed -n "s/.*[ ]$2=\([^ ]*\).*/\1/p" <<<"$1"; }
row() { printf '%-10s %-34s %10s   %s\n' "$@" >>"$rows"; }

for loss in 0.1 0.5; do
    pct=$(awk -v l="$loss" 'BEGIN { print l * 100 }')
    where="MycoSim, $nodes nodes, ${pct}% loss, seed $seed"
    # myco-sim exits 1 when a live member was declared dead: that is a figure here, not a failure.
    myco=$("$sim" formation --seed "$seed" --nodes "$nodes" --loss "$loss" --seconds 60 --settle-seconds 30 \
        --rest-seconds 30 --kill || true)
    formed=$(head -1 <<<"$myco")
    killed=$(tail -1 <<<"$myco")
    frames=$(kv "$formed" rest_frames_per_node_s)
    # Myco's frames are a fixed 1024 bytes of UDP payload.
    row myco "formation_s" "$(kv "$formed" last_start_to_all_alive_s)" "$where"
    row myco "false_dead" "$(kv "$formed" false_dead)" "$where"
    row myco "rest_bytes_per_node_s" "$(awk -v f="$frames" 'BEGIN { printf "%.0f", f * 1024 }')" "$where"
    row myco "detect_first_s" "$(kv "$killed" first_detect_s)" "$where"
    row myco "detect_all_s" "$(kv "$killed" all_detect_s)" "$where"
    f=$("$foca" --seed "$seed" --nodes "$nodes" --loss "$loss" --seconds 60 --settle-seconds 30 --rest-seconds 30)
    row foca "formation_s" "$(kv "$f" last_start_to_all_alive_s)" "$where"
    row foca "false_dead" "$(kv "$f" false_down)" "$where"
    row foca "rest_bytes_per_node_s" "$(kv "$f" rest_bytes_per_node_s)" "$where"
    row foca "detect_first_s" "$(kv "$f" first_detect_s)" "$where"
    row foca "detect_all_s" "$(kv "$f" all_detect_s)" "$where"
done

# loss_table NET PCT: a fresh table that counts every packet to 127.NET.0/24, then drops PCT% of
# its UDP datagrams.
loss_table() {
    nft delete table inet "$table" 2>/dev/null || true
    nft -f - <<NFT
add table inet $table
add chain inet $table input { type filter hook input priority 0; policy accept; }
add rule inet $table input ip daddr 127.$1.0/24 counter
add rule inet $table input ip daddr 127.$1.0/24 meta l4proto udp numgen random mod 100 < $2 counter drop
NFT
}
# counter N: the Nth counter's bytes (1: everything sent, 2: dropped) or packets (N=2p).
counter() {
    nft list table inet "$table" | sed -n 's/.*counter packets \([0-9]*\) bytes \([0-9]*\).*/\1 \2/p' \
        | sed -n "${1}p"
}

# fig FIGURE VALUE WHERE: a row of the current loopback system, noted as seen.
fig() {
    seen="$seen $1"
    row "$system" "$@"
}

# loopback SYSTEM NET COMMAND...: runs one harness under loss and turns its lines into rows.
loopback() {
    local system=$1 net=$2 where before=0 line seen="" figure
    shift 2
    where="loopback, $nodes nodes, ${loss_pct}% UDP loss (nft)"
    loss_table "$net" "$loss_pct"
    rm -f "$work/$system.out"
    mkfifo "$work/$system.out"
    "$@" >"$work/$system.out" 2>"$work/$system.err" &
    pids+=($!)
    while IFS= read -r line; do
        case $line in
        "JOIN "*)
            fig join_s "$(kv " $line" s)" "$where"
            # Myco's daemons are processes: also from the moment the last one was ready.
            [ -z "$(kv "$line" after_ready_s)" ] ||
                fig join_after_ready_s "$(kv "$line" after_ready_s)" "$where"
            ;;
        "KV "*) fig kv_to_all_s "$(kv " $line" s)" "$where" ;;
        "REST begin") before=$(counter 1 | cut -d' ' -f2) ;;
        "REST end")
            local after
            after=$(counter 1 | cut -d' ' -f2)
            fig rest_bytes_per_node_s \
                "$(awk -v b="$((after - before))" -v n="$nodes" -v s="$rest_s" 'BEGIN { printf "%.0f", b / n / s }')" "$where"
            ;;
        "DETECT "*) fig detect_all_s "$(kv " $line" s)" "$where" ;;
        "FALSE "*) fig false_dead "$(kv " $line" n)" "$where" ;;
        esac
    done <"$work/$system.out"
    wait "${pids[-1]}" || { echo "bench-peers: $system failed:" >&2; tail -20 "$work/$system.err" >&2; }
    # A harness that gave up (a figure not reached in its limit) still has a line per figure.
    for figure in join_s kv_to_all_s rest_bytes_per_node_s detect_all_s false_dead; do
        [[ " $seen " == *" $figure "* ]] || row "$system" "$figure" - "$where"
    done
    row "$system" dropped_datagrams "$(counter 2 | cut -d' ' -f1)" "$where"
    nft delete table inet "$table"
}

for loss_pct in $losses; do
    loopback memberlist 201.1 "$repo/bench/peers/target/memberlist-bench" -net 127.201.1 \
        -nodes "$nodes" -settle "${settle_s}s" -rest "${rest_s}s"
    loopback chitchat 201.2 "$repo/bench/peers/target/release/chitchat-loopback" --net 127.201.2 \
        --nodes "$nodes" --settle-seconds "$settle_s" --rest-seconds "$rest_s"
    MYCO_BIN_DIR=$repo/target/release loopback myco 201.3 \
        "$repo/bench/peers/target/release/myco-loopback" --net 201.3 --nodes "$nodes" \
        --settle-seconds "$settle_s" --rest-seconds "$rest_s"
done

echo "bench-peers: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)"
printf '%-10s %-34s %10s   %s\n' system figure value where
cat "$rows"
