#!/usr/bin/env bash
# N training processes on this machine, each with M (forced) CPU devices, joined by jax.distributed:
# the way to run and test multi-host code on one machine.
#
#   launch/local.sh -n 2 -d 2 -- --config=experiments/configs/cnn1d_mnist1d.py --workdir=runs/local
#   launch/local.sh -n 2 -d 2 --dry-run -- --config=...      # print the commands, run nothing
#
# Options: -n PROCESSES (2), -d DEVICES_PER_PROCESS (1), --port PORT (a free one), --log_dir DIR
# (logs/local-<time>), --heartbeat SECONDS (20), --dry-run. Everything after -- goes to experiments.train.
# Process 0's output is shown here; every process's output is in LOG_DIR/process_<i>.log.
# If one process fails, JAX's coordination service makes the others fail within the heartbeat timeout
# (they abort with "another task died", or at once with a gloo error if they were in a collective with
# it); anything still running HEARTBEAT + 30 s later is killed (status 137). Every exit status after the
# first failure is reported; the launcher's exit status is the first failure's.
set -euo pipefail

processes=2 devices=1 port="" log_dir="logs/local-$(date +%Y%m%d-%H%M%S)" heartbeat=20 dry_run=0
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) processes="${2:?-n needs a value}"; shift 2 ;;
    -d) devices="${2:?-d needs a value}"; shift 2 ;;
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --log_dir) log_dir="${2:?--log_dir needs a value}"; shift 2 ;;
    --heartbeat) heartbeat="${2:?--heartbeat needs a value}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "local.sh: unknown option '$1'; training flags go after --" >&2; usage ;;
  esac
done
for value in "$processes" "$devices" "$heartbeat"; do
  [[ "$value" =~ ^[1-9][0-9]*$ ]] || { echo "local.sh: '$value' must be a positive integer" >&2; exit 2; }
done
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
if [[ -z "$port" ]]; then
  port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi

command_for() {  # the command of process $1 (then the training flags), one word per line
  local id="$1"
  shift
  printf '%s\n' env "XLA_FLAGS=--xla_force_host_platform_device_count=$devices" JAX_PLATFORMS=cpu \
    "$python" -m experiments.train --distributed "--coordinator_address=127.0.0.1:$port" \
    "--num_processes=$processes" "--process_id=$id" "--heartbeat_timeout_s=$heartbeat" "$@"
}

if [[ "$dry_run" == 1 ]]; then
  for ((i = 0; i < processes; i++)); do
    mapfile -t words < <(command_for "$i" "$@")
    printf '%q ' "${words[@]}"
    echo "> $log_dir/process_$i.log 2>&1"
  done
  exit 0
fi

mkdir -p "$log_dir"
pids=()
for ((i = 0; i < processes; i++)); do
  mapfile -t words < <(command_for "$i" "$@")
  if [[ "$i" == 0 ]]; then
    "${words[@]}" > >(tee "$log_dir/process_0.log") 2>&1 &
  else
    "${words[@]}" > "$log_dir/process_$i.log" 2>&1 &
  fi
  pids+=("$!")
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM

status=0 watchdog=""
running=("${pids[@]}")
while [[ ${#running[@]} -gt 0 ]]; do
  finished=""
  set +e
  wait -n -p finished "${running[@]}"
  rc=$?
  set -e
  [[ -n "$finished" ]] || continue  # a trapped signal interrupted the wait
  for ((i = 0; i < processes; i++)); do [[ "${pids[$i]}" == "$finished" ]] && break; done
  mapfile -t running < <(printf '%s\n' "${running[@]}" | grep -vx "$finished" || true)
  if [[ "$status" != 0 ]]; then
    echo "local.sh: process $i exited with status $rc" >&2
  elif [[ "$rc" != 0 ]]; then
    status="$rc"
    echo "local.sh: process $i exited with status $rc (log: $log_dir/process_$i.log); the others stop" \
      "within the ${heartbeat}s heartbeat timeout, or are killed after $((heartbeat + 30))s" >&2
    # The watchdog's sleep must not outlive it holding our stdout/stderr open (callers read them to EOF).
    (sleep $((heartbeat + 30)) & sleeper=$!; trap 'kill "$sleeper"; exit 0' TERM; wait "$sleeper"
     kill -KILL "${pids[@]}") >/dev/null 2>&1 &
    watchdog=$!
  fi
done
# Wait for the watchdog too: nothing of this launch (the watchdog is a copy of this script) outlives it.
[[ -z "$watchdog" ]] || { kill "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null; } || true
if [[ "$status" != 0 ]]; then
  echo "local.sh: failed with status $status; logs in $log_dir" >&2
fi
exit "$status"
