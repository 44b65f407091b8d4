#!/usr/bin/env bash
# The operator image from the repository's Dockerfile, without a Docker engine: buildah (Debian's package, chroot
# isolation, no daemon) on a base that debootstrap makes from Debian's packages (bookworm minbase + python3 +
# python3-venv), pinned by its digest. Built once per set of inputs and cached in ~/.cache/inference-placement/images.
#
#   e2e/operator-image.sh build    build when an input changed; print image=, tar=, key= lines
#   e2e/operator-image.sh load     build, then import the image into the local node's containerd (k8s.io namespace)
#   e2e/operator-image.sh key      print the cache key of the current inputs
#
# Inputs of the key: this script, Dockerfile, .dockerignore, pyproject.toml, requirements.lock, README.md, operator/ (without
# byte-code), the base image's digest, the version and the git revision (OCI labels). A new commit that leaves the
# other inputs alone re-runs buildah, whose layer cache then rebuilds only the label layer (seconds).
# Env: OPERATOR_IMAGE_NAME (default localhost/inference-placement/operator:dev), OPERATOR_IMAGE_BASE (an image
# reference to build on instead of the debootstrap base, e.g. the Dockerfile's default where a registry is
# reachable), INFERENCE_PLACEMENT_CACHE, INFERENCE_PLACEMENT_RUN (which local cluster `load` imports into).
set -Eeuo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_DIR/.." && pwd)
# shellcheck source=e2e/lib/common.sh
source "$E2E_DIR/lib/common.sh"
# shellcheck source=e2e/lib/install.sh
source "$E2E_DIR/lib/install.sh"
# shellcheck source=e2e/lib/images.sh
source "$E2E_DIR/lib/images.sh"
# shellcheck source=e2e/lib/node.sh
source "$E2E_DIR/lib/node.sh"
trap 'log "operator-image.sh failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

log() { printf '[operator-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

OPERATOR_IMAGE=${OPERATOR_IMAGE_NAME:-localhost/inference-placement/operator:dev}
OPERATOR_TAR="$IMAGES_DIR/operator.tar"
BASE_NAME=localhost/inference-placement/operator-base:bookworm
# Bump when the base's recipe changes (the key of the cached rootfs and base image).
BASE_RECIPE="bookworm minbase python3 python3-venv python-is-python3 ca-certificates trimmed v1"
BASE_ROOTFS_TAR="$IMAGES_DIR/operator-base-rootfs.tar"
BASE_TAR="$IMAGES_DIR/operator-base.tar"
BUILDAH_DIR="$CACHE_DIR/buildah"
LOCK="$IMAGES_DIR/.operator-image.lock"
PKGS_IMAGE_BUILD=(buildah debootstrap debian-archive-keyring)

recipe_key() { printf '%s' "$BASE_RECIPE" | sha256sum | cut -c1-16; }

# storage_driver: overlay where an overlay mount works on the cache's filesystem (fast), else vfs (copies).
storage_driver() {
  local t driver=vfs
  t=$(mktemp -d "$BUILDAH_DIR/overlay-probe.XXXXXX")
  mkdir -p "$t/l" "$t/u" "$t/w" "$t/m"
  if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
    umount "$t/m"
    driver=overlay
  fi
  rm -rf "$t"
  echo "$driver"
}

buildah_() {
  buildah --root "$BUILDAH_DIR/root" --runroot "$BUILDAH_DIR/run" --storage-driver "$STORAGE_DRIVER" "$@"
}

# build_base_rootfs: debootstrap the base's root filesystem into a tarball (cached by the recipe).
build_base_rootfs() {
  if [[ -f $BASE_ROOTFS_TAR && "$(cat "$BASE_ROOTFS_TAR.key" 2>/dev/null)" == "$(recipe_key)" ]]; then
    log "reusing cached base rootfs $BASE_ROOTFS_TAR"
    return 0
  fi
  local work old
  for old in "$IMAGES_DIR"/operator-base.*; do
    [[ -d $old ]] || continue
    umount_under "$old"
    rm -rf --one-file-system "$old" 2>/dev/null || true
  done
  work=$(mktemp -d "$IMAGES_DIR/operator-base.XXXXXX")
  log "debootstrap bookworm minbase + python3, python3-venv (log $work/debootstrap.log)"
  if ! debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$work/rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    umount_under "$work"
    die "debootstrap failed (log above)"
  fi
  umount_under "$work/rootfs"
  rm -rf "$work/rootfs"/var/cache/apt/archives/*.deb "$work/rootfs"/var/lib/apt/lists/* \
    "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/* "$work/rootfs"/usr/share/info/* \
    "$work/rootfs"/var/log/* "$work/rootfs"/var/cache/debconf/*-old
  find "$work/rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
  tar --numeric-owner -C "$work/rootfs" -cf "$work/rootfs.tar" .
  mv "$work/rootfs.tar" "$BASE_ROOTFS_TAR"
  recipe_key >"$BASE_ROOTFS_TAR.key"
  rm -f "$BASE_TAR" "$BASE_TAR.key"
  rm -rf --one-file-system "$work"
  log "base rootfs ready: $BASE_ROOTFS_TAR ($(du -h "$BASE_ROOTFS_TAR" | cut -f1))"
}

# base_ref: the base image as a digest-pinned reference in buildah's storage (prints NAME@sha256:...).
base_ref() {
  if [[ -n ${OPERATOR_IMAGE_BASE:-} ]]; then
    echo "$OPERATOR_IMAGE_BASE"
    return 0
  fi
  build_base_rootfs >&2
  local key digest
  key="$( (recipe_key; stat -c '%s %Y' "$BASE_ROOTFS_TAR"; sha256sum "$E2E_DIR/images/oci_image.py") | sha256sum | cut -c1-16)"
  if [[ ! -f $BASE_TAR || "$(cat "$BASE_TAR.key" 2>/dev/null)" != "$key" ]]; then
    "$(python_bin)" "$E2E_DIR/images/oci_image.py" --name "$BASE_NAME" --output "$BASE_TAR" \
      --layer-tar "$BASE_ROOTFS_TAR" >"$BASE_TAR.json"
    echo "$key" >"$BASE_TAR.key"
  fi
  digest=$("$(python_bin)" -c 'import json, sys; print(json.load(open(sys.argv[1]))["manifest"])' "$BASE_TAR.json")
  # pulled into buildah's storage only when it is not there (by digest: the same bytes)
  if ! buildah_ inspect --type image "$BASE_NAME@$digest" >/dev/null 2>&1; then
    buildah_ pull -q "oci-archive:$BASE_TAR" >&2
  fi
  echo "$BASE_NAME@$digest"
}

version() { sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml" | head -n1; }

INPUTS=(Dockerfile .dockerignore pyproject.toml requirements.lock README.md)

revision() {
  local rev
  rev=$(git -C "$REPO" rev-parse HEAD 2>/dev/null) || { echo unknown; return; }
  if [[ -n $(git -C "$REPO" status --porcelain -- "${INPUTS[@]}" operator 2>/dev/null) ]]; then
    rev+="-dirty"
  fi
  echo "$rev"
}

# inputs_key BASE_REF: what the image is made of, hashed.
inputs_key() {
  (
    cd "$REPO"
    {
      sha256sum "${INPUTS[@]}" e2e/operator-image.sh
      find operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 | sort -z |
        xargs -0 sha256sum
      echo "base=$1 version=$(version) revision=$(revision) name=$OPERATOR_IMAGE"
    } | sha256sum | cut -c1-16
  )
}

print_result() {
  echo "image=$OPERATOR_IMAGE"
  echo "tar=$OPERATOR_TAR"
  echo "key=$(cat "$OPERATOR_TAR.key")"
}

build() {
  ensure_packages "${PKGS_IMAGE_BUILD[@]}"
  mkdir -p "$IMAGES_DIR" "$BUILDAH_DIR"
  exec 8>"$LOCK"
  flock 8
  STORAGE_DRIVER=$(storage_driver)
  local base key
  base=$(base_ref)
  key=$(inputs_key "$base")
  if [[ -f $OPERATOR_TAR && "$(cat "$OPERATOR_TAR.key" 2>/dev/null)" == "$key" ]]; then
    log "reusing cached $OPERATOR_TAR (key $key)"
    print_result
    return 0
  fi
  local args=(--isolation chroot --layers --pull-never -f "$REPO/Dockerfile" -t "$OPERATOR_IMAGE"
    --build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$(version)" --build-arg "REVISION=$(revision)"
    # buildah 1.28's layer cache matches a LABEL step by its unexpanded text, so a new ${REVISION} alone would reuse
    # the old label layer: the values that change go on the command line as well (they win).
    --label "org.opencontainers.image.version=$(version)" --label "org.opencontainers.image.revision=$(revision)"
    --label "org.opencontainers.image.base.name=$base")
  # An egress proxy that re-signs TLS: pip in the build stage trusts the host's CA bundle, mounted for the RUN steps
  # only (never part of a layer).
  local ca=${PIP_CERT:-${SSL_CERT_FILE:-}}
  if [[ -n $ca && -f $ca ]]; then
    args+=(--volume "$ca:/etc/ssl/host-ca-bundle.crt:ro" --build-arg PIP_CERT=/etc/ssl/host-ca-bundle.crt)
  fi
  log "buildah bud ($STORAGE_DRIVER storage in $BUILDAH_DIR) on $base"
  local started=$SECONDS
  buildah_ bud "${args[@]}" "$REPO" >&2
  rm -f "$OPERATOR_TAR.tmp"
  buildah_ push -q "$OPERATOR_IMAGE" "docker-archive:$OPERATOR_TAR.tmp:$OPERATOR_IMAGE" >&2
  mv -f "$OPERATOR_TAR.tmp" "$OPERATOR_TAR"
  echo "$key" >"$OPERATOR_TAR.key"
  log "built $OPERATOR_IMAGE in $((SECONDS - started))s: $OPERATOR_TAR ($(du -h "$OPERATOR_TAR" | cut -f1))"
  print_result
}

load() {
  build
  [[ -S $CONTAINERD_SOCK ]] || die "no containerd socket at $CONTAINERD_SOCK: is the local node up (local-cluster.sh up --with-node)?"
  if grep -qxF "$OPERATOR_IMAGE" <<<"$(ctr_k8s images ls -q)"; then
    ctr_k8s images rm "$OPERATOR_IMAGE" >/dev/null
  fi
  ctr_k8s images import --snapshotter "$(snapshotter)" "$OPERATOR_TAR" >&2
  grep -qxF "$OPERATOR_IMAGE" <<<"$(ctr_k8s images ls -q)" || die "import of $OPERATOR_TAR did not create $OPERATOR_IMAGE"
  log "imported $OPERATOR_IMAGE into the node's containerd"
}

case ${1:-} in
  build) build ;;
  load) load ;;
  key)
    mkdir -p "$IMAGES_DIR" "$BUILDAH_DIR"
    STORAGE_DRIVER=$(storage_driver)
    inputs_key "$(base_ref)"
    ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
