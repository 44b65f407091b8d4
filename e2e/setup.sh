#!/usr/bin/env bash
# Install everything the tests and the demo need on a fresh Debian bookworm machine (idempotent, quick when done):
# Debian packages, then a virtualenv in .venv with the pinned Python dependencies (requirements.lock).
# The Kubernetes binaries are built (and cached) by e2e/local-cluster.sh itself, on first use; the Lambda runtime
# pieces by e2e/lambda-runtime.sh (a step of e2e/run-tests.sh, or `make lambda-runtime`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
started=$SECONDS

# docker-registry: the CNCF distribution registry, on loopback, for the chart's OCI push test (tests/test_packaging.py)
APT_PACKAGES=(lua5.4 prometheus prometheus-pushgateway docker-registry)
PYTHON=${PYTHON:-python3}
# Debian's python3 makes venvs only with python3-venv (ensurepip); a Python >= 3.11 from elsewhere needs nothing
if ! "$PYTHON" -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
  APT_PACKAGES+=(python3 python3-venv)
  PYTHON=/usr/bin/python3
fi
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: apt-get install ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the packaged services; the project starts its own instances on its own ports.
  for svc in prometheus prometheus-pushgateway prometheus-node-exporter docker-registry; do
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || $SUDO service "$svc" stop >/dev/null 2>&1 || true
  done
fi

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements-stamp
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "setup: pip install -c requirements.lock -e .[dev]"
  .venv/bin/pip install -q --disable-pip-version-check -c requirements.lock -e ".[dev]" 2>&1 \
    | grep -v "^WARNING: Location" || true
  .venv/bin/pip check >/dev/null
  echo "$want" > "$stamp"
fi
echo "setup: ready in $((SECONDS - started))s"
