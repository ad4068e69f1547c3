#!/usr/bin/env bash
# Debian packages the pip wheels cannot carry: libb64 for perf_analyzer, and the shared
# libpython3.11 the Triton python-backend stub links against. Idempotent.
set -euo pipefail
missing=()
ldconfig -p | grep -q 'libb64\.so\.0d' || missing+=(libb64-0d)
ldconfig -p | grep -q 'libpython3\.11\.so\.1\.0' || missing+=(libpython3.11)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
