#!/usr/bin/env bash
# A sharded medssl study on ONE machine with several GPUs: prepare once, one shard process per GPU
# (CUDA_VISIBLE_DEVICES=<gpu> each), wait for all, then collect the report.
#
#   CONFIG=configs/chexpert_mocov2_r18.yaml docker/study_shards.sh [--set key=value ...]
#   GPUS="0 1 2 3" N_SHARDS=8 CONFIG=... docker/study_shards.sh     # 8 shards, two per GPU
#
# Variables: CONFIG (required), GPUS [every GPU nvidia-smi lists; empty: CUDA_VISIBLE_DEVICES is
# left as it is], N_SHARDS [one per GPU, at least 1], MEDSSL [medssl], LOG_DIR [study-logs].
# Arguments go to every medssl command. Rerunning after a crash continues: finished cells are kept,
# and a killed shard's cell locks are taken over (same host, dead process). With the image, put the
# whole `docker run ... -e CUDA_VISIBLE_DEVICES medssl:gpu` command in MEDSSL.
set -euo pipefail

CONFIG=${CONFIG:?set CONFIG to the study config}
MEDSSL=${MEDSSL:-medssl}
LOG_DIR=${LOG_DIR:-study-logs}
if [ -z "${GPUS+x}" ]; then
    GPUS=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | tr '\n' ' ' || true)
fi
read -r -a gpus <<< "$GPUS"
N=${N_SHARDS:-${#gpus[@]}}
[ "$N" -ge 1 ] || N=1

# shellcheck disable=SC2086  # MEDSSL may be a command with arguments
$MEDSSL study --config "$CONFIG" --prepare "$@"   # budgets, cache, pretraining: once, before the shards

mkdir -p "$LOG_DIR"
pids=()
for ((i = 0; i < N; i++)); do
    gpu=""
    [ "${#gpus[@]}" -eq 0 ] || gpu=${gpus[$((i % ${#gpus[@]}))]}
    # one GPU per shard; with no GPU list the environment is left as it is
    # shellcheck disable=SC2086
    ( if [ -n "$gpu" ]; then export CUDA_VISIBLE_DEVICES=$gpu; fi
      exec $MEDSSL study --config "$CONFIG" --shard "$i/$N" "$@" ) > "$LOG_DIR/shard-$i-of-$N.log" 2>&1 &
    pids+=("$!")
    echo "shard $i/$N: pid $!, GPU ${gpu:-none}, log $LOG_DIR/shard-$i-of-$N.log"
done
failed=0
for pid in "${pids[@]}"; do
    wait "$pid" || failed=$((failed + 1))
done
if [ "$failed" -gt 0 ]; then
    echo "$failed shard(s) failed (see $LOG_DIR); rerun this script: finished cells are kept" >&2
    exit 1
fi
# shellcheck disable=SC2086
exec $MEDSSL study --config "$CONFIG" --collect "$@"
