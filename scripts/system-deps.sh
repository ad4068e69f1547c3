#!/usr/bin/env bash
# Debian packages the pip wheels cannot carry: libb64 for perf_analyzer, the shared
# libpython3.11 the Triton python-backend stub links against, and Prometheus (with promtool)
# for the embedded stack's monitoring, tmux for the terminal test of `tritonrag top`, Chromium
# for the browser tests of the page (Playwright drives Debian's build), kubectl to render the
# Kubernetes manifests offline (tests/unit/test_k8s.py; its kustomize), HAProxy as the load
# balancer of the cluster rehearsal (tests/reliability/test_rehearsal.py). Idempotent.
set -euo pipefail
missing=()
ldconfig -p | grep -q 'libb64\.so\.0d' || missing+=(libb64-0d)
ldconfig -p | grep -q 'libpython3\.11\.so\.1\.0' || missing+=(libpython3.11)
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
command -v tmux >/dev/null || missing+=(tmux)  # `tritonrag top` is tested in a real terminal
command -v chromium >/dev/null || missing+=(chromium fonts-liberation)  # the page's browser tests
command -v kubectl >/dev/null || missing+=(kubectl)  # `kubectl kustomize deploy/k8s/overlays/*`
command -v haproxy >/dev/null || missing+=(haproxy)  # the rehearsal's load balancer
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
# Debian's prometheus package starts its own service on :9090; `tritonrag up` runs ours there,
# with the project's config and its data in .runtime/. So no service starts during the
# install, and where systemd runs, the package's unit is disabled.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
[ "$own_policy" -eq 1 ] && rm -f "$policy"
if [ -d /run/systemd/system ]; then
  systemctl disable --now prometheus.service haproxy.service 2>/dev/null || true
fi
