#!/usr/bin/env bash
# The accelerator benchmarks of docs/performance.md, one after another, in a few minutes on one GPU:
#
#   bash benchmarks/accelerator.sh DATA_DIR DOWNLOAD_DIR OUT_DIR
#
# DATA_DIR: a TFDS data directory with MNIST prepared (reading it needs no TensorFlow); DOWNLOAD_DIR: the raw
# MNIST files as DOWNLOAD_DIR/mnist/*-ubyte.gz (the PyTorch side reads them). Writes every benchmark's output to
# OUT_DIR/accelerator.log and its results as JSON beside it. Each benchmark has a time limit, so one that
# overruns costs only its own row. Most important first: ResNet-50's train step, time to 99% on MNIST, the loop
# against its step, the small models' steps, tiled_conv at a GPU-sized shape.
set -uo pipefail
if [ $# -ne 3 ]; then
  echo "usage: bash benchmarks/accelerator.sh DATA_DIR DOWNLOAD_DIR OUT_DIR" >&2
  exit 2
fi
mkdir -p "$3"
data=$(realpath "$1") raw=$(realpath "$2") out=$(realpath "$3")
cd "$(dirname "$0")/.." || exit
log=$out/accelerator.log

bench() {  # bench NAME SECONDS COMMAND...: run COMMAND with a time limit, its output appended to the log
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date +%T), limit ${limit}s): $*" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  echo "== $name: exit status ${PIPESTATUS[0]}" | tee -a "$log"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$log"
bench resnet50_step 220 python3 benchmarks/train_step.py --cases gpu --models resnet50 --seconds 2 \
  --json "$out/resnet50_step.json"
# First with DATA_DIR as prepared (ours decodes MNIST's PNGs and keeps the arrays), then again once they are kept.
bench time_to_accuracy 55 python3 benchmarks/time_to_accuracy.py --download_dir="$raw" --data_dir="$data" \
  --json "$out/time_to_accuracy.json"
bench loop 70 python3 benchmarks/loop.py --config=experiments/configs/lenet5_mnist.py --batch=128 \
  --data_dir="$data" --download_dir="$raw" --settings device:16 device:64 host:1 --json "$out/loop.json"
bench time_to_accuracy_decoded 30 python3 benchmarks/time_to_accuracy.py --download_dir="$raw" --data_dir="$data" \
  --who ours --json "$out/time_to_accuracy_decoded.json"
bench small_steps 110 python3 benchmarks/train_step.py --cases gpu --models resnet20 lenet5 \
  --variants ours flax torch --seconds 2 --json "$out/small_steps.json"
bench tiled 45 python3 benchmarks/ops.py --only tiled --tiled_shape gpu
