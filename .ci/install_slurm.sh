#!/usr/bin/env bash
# The Debian packages tests/test_slurm.py needs: SLURM (slurmctld, slurmd, the client commands) and munge.
# The test starts its own one-node cluster from them and stops it afterwards; the packages' own services
# are kept from starting here. This script never fails the build: where the packages cannot be installed
# (not root, no apt, no package repository), it says so and the test skips with the reason.
set -uo pipefail
packages=(slurmctld slurmd slurm-client munge)
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null; then
  exit 0
fi
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
  echo "install_slurm.sh: not root or no apt-get: SLURM not installed; tests/test_slurm.py will skip" >&2
  exit 0
fi
log="$(mktemp)"
no_services=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then  # no daemon starts from the packages' install scripts
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  no_services=1
fi
if DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >>"$log" 2>&1
then
  echo "install_slurm.sh: installed ${packages[*]} ($(slurmctld -V))"
else
  echo "install_slurm.sh: could not install ${packages[*]}; tests/test_slurm.py will skip. apt said:" >&2
  tail -n 20 "$log" >&2
fi
if [[ "$no_services" == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
rm -f "$log"
exit 0
