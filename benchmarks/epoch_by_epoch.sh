#!/usr/bin/env bash
# Long CPU convergence runs, one epoch per invocation of reproduce.py, so that every
# finished epoch leaves its own result JSON (…__e<k>.json) to commit, whatever
# happens to the session that runs it.
#
#   benchmarks/epoch_by_epoch.sh DATASET ROW MAX_EPOCHS [THREADS] [PROTOCOL]
#   e.g. nice -n 19 benchmarks/epoch_by_epoch.sh diginetica tagnn 10 1 paper
#   TAGNNPP_PRESET=released-padded benchmarks/epoch_by_epoch.sh diginetica tagnnpp 10 1 paper
#   (TAGNNPP_PRESET: reproduce.py's --tagnnpp-preset, default paper)
#
# Epoch k resumes epoch k-1's checkpoints (its run folder is renamed to epoch k's),
# and inside an epoch the mid-epoch checkpoints (--checkpoint-every 500) let a killed
# run continue from its last 500th batch. Rerunning the same command continues where
# it stopped. RUNS_DIR (checkpoints, default /work/runs/reproduce) and RESULTS_DIR
# (the JSONs, default /work/runs/results: copy finished ones into
# benchmarks/results/reproduce/ to commit them) stay outside the repository.
set -u
ds=$1; row=$2; max=$3; thr=${4:-1}; proto=${5:-paper}
runs=${RUNS_DIR:-/work/runs/reproduce}; results=${RESULTS_DIR:-/work/runs/results}
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
py=${PYTHON:-.venv/bin/python}
kind=${TAGNNPP_PRESET:-paper}
case "$row:$kind" in
  tagnnpp*:released) tag="${row}__released" ;;
  tagnnpp*:released-padded) tag="${row}__released_padded" ;;
  *:paper|*:released|*:released-padded) tag="$row" ;;  # only TAGNN++ rows change
  *) echo "TAGNNPP_PRESET must be paper, released or released-padded, got $kind" >&2; exit 2 ;;
esac
for k in $(seq 1 "$max"); do
  id="${ds}__${tag}__${proto}__seed0__e${k}"
  [ -f "$results/$id.json" ] && continue
  prev="$runs/${ds}__${tag}__${proto}__seed0__e$((k-1))"
  cur="$runs/$id"
  if [ "$k" -gt 1 ] && [ -d "$prev" ] && [ ! -d "$cur" ]; then mv "$prev" "$cur"; fi
  "$py" benchmarks/reproduce.py --datasets "$ds" --rows "$row" --protocols "$proto" \
     --seeds 0 --tagnnpp-preset "$kind" --epochs "$k" --device cpu --threads "$thr" --checkpoint-every 500 \
     --runs-dir "$runs" --results-dir "$results" --no-progress || exit 1
done
