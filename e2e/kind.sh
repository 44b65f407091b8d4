#!/usr/bin/env bash
# The same flow as e2e/local-cluster.sh on kind, for users who have Docker (not used by this project's CI,
# which has no Docker engine: there e2e/local-cluster.sh builds a real 1.37 cluster from Go modules).
#
#   e2e/kind.sh up        create the cluster, load the model-server image, install the CRDs from crds/
#   e2e/kind.sh install   up, then build the operator image from the Dockerfile, load it into kind and
#                         `helm install` the chart from charts/ (release inference-placement, namespace
#                         placement-system); waits for the operator's rollout
#   e2e/kind.sh env       print `export KUBECONFIG=...`
#   e2e/kind.sh down      delete the cluster
#
# Env: KIND_CLUSTER_NAME (default inference-placement), KIND_NODE_IMAGE (default kindest/node:v1.37.0 pinned by the
# digest kind v0.33.0 publishes for it: the same minor as the local cluster's 1.37.2, whose patch release kind does
# not prebuild; `kind build node-image v1.37.2` makes that one), KIND_KUBECONFIG. Kind images 1.35+ need cgroup v2.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${KIND_CLUSTER_NAME:-inference-placement}
NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5}
KUBECONFIG_FILE=${KIND_KUBECONFIG:-${INFERENCE_PLACEMENT_CACHE:-$HOME/.cache/inference-placement}/kind-$CLUSTER.kubeconfig}
MODEL_SERVER_IMAGE=localhost/inference-placement/model-server:dev
OPERATOR_IMAGE_REPOSITORY=localhost/inference-placement/operator
OPERATOR_IMAGE_TAG=dev
RELEASE=${KIND_RELEASE:-inference-placement}
RELEASE_NAMESPACE=${KIND_RELEASE_NAMESPACE:-placement-system}

need() {
  local tool
  for tool in "$@"; do command -v "$tool" >/dev/null || { echo "kind.sh: $tool not found" >&2; exit 1; }; done
}

up() {
  need kind docker kubectl
  mkdir -p "$(dirname "$KUBECONFIG_FILE")"
  if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --kubeconfig "$KUBECONFIG_FILE" --wait 180s
  else
    kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE"
  fi
  # The same model server as the local cluster's image; kind nodes cannot pull localhost/ images, so load it.
  # Pods use imagePullPolicy: Never, exactly as on the local cluster.
  docker build -t "$MODEL_SERVER_IMAGE" -f - "$REPO/e2e" <<'DOCKERFILE'
FROM python:3.11-slim
COPY model_server.py /app/model_server.py
ENV PORT=8080 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
ENTRYPOINT ["python3", "-u", "/app/model_server.py"]
DOCKERFILE
  kind load docker-image "$MODEL_SERVER_IMAGE" --name "$CLUSTER"
  if compgen -G "$REPO/crds/*.yaml" >/dev/null; then
    kubectl --kubeconfig "$KUBECONFIG_FILE" apply -f "$REPO/crds/"
    kubectl --kubeconfig "$KUBECONFIG_FILE" wait --for condition=established --timeout 60s -f "$REPO/crds/"
  fi
  echo "export KUBECONFIG=$KUBECONFIG_FILE"
}

# install: the operator as a user installs it, from this checkout: the image built by Docker from the repository's
# Dockerfile (where no Docker engine runs, e2e/operator-image.sh builds the same file with buildah and
# `kind load image-archive` takes its tarball), loaded into the kind node, and the chart installed with helm.
install() {
  up
  local helm
  helm=$(command -v helm || bash "$REPO/e2e/helm.sh" --path) # helm from PATH, else the pinned one e2e/helm.sh fetches
  docker build -t "$OPERATOR_IMAGE_REPOSITORY:$OPERATOR_IMAGE_TAG" \
    --build-arg "REVISION=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)" "$REPO"
  kind load docker-image "$OPERATOR_IMAGE_REPOSITORY:$OPERATOR_IMAGE_TAG" --name "$CLUSTER"
  # imagePullPolicy Never: the image exists only inside the kind node; the rest are the chart's defaults.
  "$helm" upgrade --install "$RELEASE" "$REPO/charts/inference-placement" --kubeconfig "$KUBECONFIG_FILE" \
    --namespace "$RELEASE_NAMESPACE" --create-namespace \
    --set image.repository="$OPERATOR_IMAGE_REPOSITORY" --set image.tag="$OPERATOR_IMAGE_TAG" \
    --set image.pullPolicy=Never --wait --timeout 5m
  kubectl --kubeconfig "$KUBECONFIG_FILE" -n "$RELEASE_NAMESPACE" rollout status "deployment/$RELEASE" --timeout 180s
  echo "export KUBECONFIG=$KUBECONFIG_FILE"
}

case ${1:-} in
  up) up ;;
  install) install ;;
  env) echo "export KUBECONFIG=$KUBECONFIG_FILE" ;;
  down) need kind; kind delete cluster --name "$CLUSTER"; rm -f "$KUBECONFIG_FILE" ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
