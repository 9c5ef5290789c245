#!/usr/bin/env bash
# Debian packages that a test needs, for CI:  apt_install.sh TEST PACKAGE...
#   apt_install.sh tests/test_slurm.py slurmctld slurmd slurm-client munge
# Package services are kept from starting (a test starts what it needs and stops it afterwards). This
# script never fails the build: where the packages cannot be installed (not root, no apt, no package
# repository), it says so, and TEST skips with the reason.
set -uo pipefail
test_name="$1"
shift
packages=("$@")
if dpkg -s "${packages[@]}" >/dev/null 2>&1; then
  exit 0
fi
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
  echo "apt_install.sh: not root or no apt-get: ${packages[*]} not installed; ${test_name} will skip" >&2
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
  echo "apt_install.sh: installed ${packages[*]} for ${test_name}"
else
  echo "apt_install.sh: could not install ${packages[*]}; ${test_name} will skip. apt said:" >&2
  tail -n 20 "$log" >&2
fi
if [[ "$no_services" == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
rm -f "$log"
exit 0
