#!/usr/bin/env bash
# The rank a real specwatch settles on for a seeded simulated stream, run after run (issue 15 §2). Starts the
# service (its defaults, or the config text given) on free loopback ports, sends one simulated EDS stream
# (2,048 channels, 64x64, 6 passes) and prints the final rank, the rank changes and the spectra learnt/skipped
# from its metrics. Assumes tools/build.sh ran.
#   bash tools/rank_runs.sh RATE SEED [PHASES] [CONFIG_TEXT]      e.g.  bash tools/rank_runs.sh 10000 11 4
#   THREADS=1 bash tools/rank_runs.sh 0 11 4 'model_updates: "all"'
set -uo pipefail
cd "$(dirname "$0")/.."
bin=build/bin
rate=$1 seed=$2 phases=${3:-4} cfg=${4:-}
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
frames=$(port) publish=$(port) control=$(port) metrics=$(port)
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
extra=()
if [ -n "$cfg" ]; then printf '%s\n' "$cfg" > "$d/c.conf"; extra=(--config "$d/c.conf"); fi
$bin/specwatch --frames ">tcp://127.0.0.1:$frames" --publish "@tcp://127.0.0.1:$publish" \
  --control "@tcp://127.0.0.1:$control" --metrics "127.0.0.1:$metrics" "${extra[@]}" ${THREADS:+--threads $THREADS} \
  2>"$d/log" &
svc=$!
sleep 0.5
$bin/specwatch-sim --modality eds --channels 2048 --scan 64x64 --passes 6 --rate "$rate" --phases "$phases" \
  --seed "$seed" --endpoint "@tcp://127.0.0.1:$frames" --start-delay-s 0.3 --hwm 100000 >"$d/sim.log" 2>&1
sleep 2
m=$(curl -sS --noproxy "*" "http://127.0.0.1:$metrics/metrics")
kill -TERM $svc; wait $svc 2>/dev/null
value() { echo "$m" | grep "^$1" | awk '{print $2}'; }
echo "rate $rate seed $seed phases $phases: rank $(value 'specwatch_model_rank ') changes" \
     "$(value specwatch_model_rank_changes_total) learnt $(value specwatch_model_spectra_total)" \
     "skipped $(value specwatch_model_spectra_skipped_total) weight refreshes $(value specwatch_model_weight_refreshes_total)"
