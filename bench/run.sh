#!/usr/bin/env bash
# Run the placement benchmark on the reference scenario and the visible traces (../shared relative to the repo).
# Usage: bench/run.sh [OUT.json] [extra bench flags...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-bench/results.json}
shift || true
shared=${SHARED_DIR:-../shared}
exec .venv/bin/inference-placement bench --scenario "$shared/scenario/reference.yaml" --traces "$shared/traces" \
    --json "$out" "$@"
