#!/usr/bin/env bash
# The demo: installs what is missing, builds, then runs the simulator, the service and a tap on loopback
# and shows live what comes out (denoised spectra, model snapshots, status). Ctrl-C stops it early.
#   bash tools/demo.sh [--seconds S] [--modality eels|eds|xrd|raman] [--rate SPECTRA_PER_S]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=20 modality=eels rate=20000
while (($#)); do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --modality) modality=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
bash tools/install_deps.sh
bash tools/build.sh
bin=build/bin
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
frames=$(port) publish=$(port) control=$(port) metrics=$(port)
logdir=$(mktemp -d)
pids=()
cleanup() { kill -INT "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "== specwatch on publish tcp://127.0.0.1:$publish, control tcp://127.0.0.1:$control, metrics http://127.0.0.1:$metrics/metrics"
$bin/specwatch --frames tcp://127.0.0.1:$frames --publish @tcp://127.0.0.1:$publish \
  --control @tcp://127.0.0.1:$control --metrics 127.0.0.1:$metrics --rank 6 2>"$logdir/specwatch.log" &
pids+=($!)
sleep 0.5
echo "== specwatch-tap (one line per message; residual_median is the typical ||raw - denoised|| in counts)"
$bin/specwatch-tap --endpoint tcp://127.0.0.1:$publish --seconds "$seconds" &
tap=$!
sleep 0.3
passes=$(( seconds * rate / (128 * 128) + 1 ))
echo "== specwatch-sim: $modality, 2048 channels, 128x128 scan, $rate spectra/s, $passes passes"
$bin/specwatch-sim --modality "$modality" --channels 2048 --scan 128x128 --passes "$passes" --rate "$rate" \
  --endpoint @tcp://127.0.0.1:$frames --phases 3 --inclusion 0.002 --seed 1 \
  --truth "$logdir/truth.json" >"$logdir/sim.log" 2>&1 &
pids+=($!)
wait "$tap" || true
echo "== service metrics (excerpt)"
curl -sS --noproxy "*" "http://127.0.0.1:$metrics/metrics" | grep -E '^specwatch_(spectra_received|spectra_published|frames_dropped|model_rank|model_spectra)_total|^specwatch_model_rank ' || true
echo "== logs in $logdir"
