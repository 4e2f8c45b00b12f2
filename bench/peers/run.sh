#!/usr/bin/env bash
# `make bench-peers`: Myco side by side with the membership systems an operator would otherwise
# pick, in one run on this machine (docs/benchmarks.md, "Side by side"). Prints one table, one
# line per system and figure.
#
# In MycoSim's network (same loss, latency and seeds): foca's SWIM (bench/peers/foca-sim) and
# Myco's nodes (`myco-sim formation --kill`), 50 nodes at 10% and 50% loss.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
nodes=${NODES:-50}
seed=${SEED:-1}
work=$(mktemp -d)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

cargo build --quiet --profile sim -p myco-sim --manifest-path "$repo/Cargo.toml"
cargo build --quiet --release --manifest-path "$repo/bench/peers/Cargo.toml"
sim=$repo/target/sim/myco-sim
foca=$repo/bench/peers/target/release/foca-sim

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

printf '%-10s %-34s %10s   %s\n' system figure value where
cat "$rows"
