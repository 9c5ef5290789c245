#!/usr/bin/env bash
# Training on a Cloud TPU VM pod slice: copy this checkout to every worker, install, then start one
# process per worker; jax.distributed finds the coordinator and its peers from the TPU metadata.
#
#   launch/tpu_vm.sh --tpu=my-v4-32 --zone=us-central2-b --setup -- \
#       --config=experiments/configs/resnet20_cifar10.py --workdir=/mnt/shared/runs/resnet20
#   launch/tpu_vm.sh --tpu=my-v4-32 --zone=us-central2-b --dry-run -- --config=...   # print the commands
#
# Options: --tpu NAME and --zone ZONE (required), --project PROJECT (gcloud's default), --setup (copy
# and install first; needed once per TPU VM), --data_dir DIR (TFDS_DATA_DIR on every worker), --dry-run.
# Training flags go after --. --workdir and --data_dir must be one directory every worker sees: a
# bucket mounted with gcsfuse, or a Filestore share, at the same path on each worker (launch/README.md).
set -euo pipefail

tpu="" zone="" project="" setup=0 dry_run=0 data_dir=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tpu=*) tpu="${1#*=}"; shift ;;
    --zone=*) zone="${1#*=}"; shift ;;
    --project=*) project="${1#*=}"; shift ;;
    --data_dir=*) data_dir="${1#*=}"; shift ;;
    --setup) setup=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) echo "tpu_vm.sh: unknown option '$1'; training flags go after --" >&2; exit 2 ;;
  esac
done
if [[ -z "$tpu" || -z "$zone" ]]; then
  echo "tpu_vm.sh: --tpu=NAME and --zone=ZONE are required" >&2
  exit 2
fi
cd "$(dirname "$0")/.."

quote() {  # words as one shell line, quoting only those that need it
  local word out=()
  for word; do
    if [[ "$word" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=("$word"); else out+=("${word@Q}"); fi
  done
  echo "${out[*]}"
}

gcloud=(gcloud compute tpus tpu-vm)
target=("$tpu" "--zone=$zone" --worker=all)
[[ -z "$project" ]] || target+=("--project=$project")
archive=/tmp/cnn_jax.tar.gz
env_prefix=""
[[ -z "$data_dir" ]] || env_prefix="TFDS_DATA_DIR=$(quote "$data_dir") "
train="cd ~/cnn_jax && ${env_prefix}python3 -m experiments.train --distributed $(quote "$@")"
install='mkdir -p ~/cnn_jax && tar -xzf ~/cnn_jax.tar.gz -C ~/cnn_jax && pip install -q -e ~/cnn_jax "jax[tpu]"'

steps=()
if [[ "$setup" == 1 ]]; then
  steps+=("git archive --format=tar.gz -o $archive HEAD")
  steps+=("$(quote "${gcloud[@]}" scp "$archive" "$tpu:cnn_jax.tar.gz" "${target[@]:1}")")
  steps+=("$(quote "${gcloud[@]}" ssh "${target[@]}" "--command=$install")")
fi
steps+=("$(quote "${gcloud[@]}" ssh "${target[@]}" "--command=$train")")

for step in "${steps[@]}"; do
  if [[ "$dry_run" == 1 ]]; then
    echo "$step"
  else
    echo "+ $step" >&2
    eval "$step"
  fi
done
