#!/usr/bin/env bash
# A real local Kubernetes cluster (1.37, see e2e/lib/common.sh) for tests, CI and the demo, built from Go modules.
#
#   e2e/local-cluster.sh up [--with-node|--no-node] [--kwok]
#                                                      build once (cached), start, wait until ready; no-op when up;
#                                                      --kwok adds kwok + kube-scheduler (fake GPU nodes; e2e/README.md)
#   e2e/local-cluster.sh down                          stop what up started, remove what it created (idempotent)
#   e2e/local-cluster.sh env                           print `export KUBECONFIG=...` (eval "$(... env)")
#   e2e/local-cluster.sh status [--json]               components, readiness; exit 0 when the control plane is up, else 3
#   e2e/local-cluster.sh build                         only build/cache the Kubernetes binaries and images
#
# Node default: with a node when INFERENCE_PLACEMENT_NODE=1, or when CI=true and INFERENCE_PLACEMENT_NODE is unset;
# otherwise control plane only (etcd, kube-apiserver, kube-controller-manager). KWOK: with --kwok, or when
# INFERENCE_PLACEMENT_KWOK=1 (an `up --kwok` on a running cluster adds it). See e2e/README.md.
set -Eeuo pipefail
trap 'log "failed (exit $?) at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/lib/common.sh
source "$E2E_DIR/lib/common.sh"
# shellcheck source=e2e/lib/install.sh
source "$E2E_DIR/lib/install.sh"
# shellcheck source=e2e/lib/build.sh
source "$E2E_DIR/lib/build.sh"
# shellcheck source=e2e/lib/control-plane.sh
source "$E2E_DIR/lib/control-plane.sh"
# shellcheck source=e2e/lib/images.sh
source "$E2E_DIR/lib/images.sh"
# shellcheck source=e2e/lib/node.sh
source "$E2E_DIR/lib/node.sh"
# shellcheck source=e2e/lib/kwok.sh
source "$E2E_DIR/lib/kwok.sh"

CONTROL_PLANE=(etcd kube-apiserver kube-controller-manager)
NODE_COMPONENTS=(containerd kube-scheduler kubelet)
RUN_MARKER="$RUN_DIR/.inference-placement-run"

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

truthy() { [[ ${1,,} =~ ^(1|true|yes|on)$ ]]; }

node_wanted_default() {
  if [[ -n ${INFERENCE_PLACEMENT_NODE:-} ]]; then
    truthy "$INFERENCE_PLACEMENT_NODE"
  else
    [[ ${CI:-} == true ]]
  fi
}

take_lock() {
  mkdir -p "$CACHE_DIR"
  exec 9>"$LOCK_FILE"
  if ! flock -n 9; then
    log "another local-cluster.sh holds $LOCK_FILE; waiting (up to 30 min)"
    flock -w 1800 9 || die "could not take $LOCK_FILE"
  fi
}

all_alive() { local c; for c in "$@"; do pid_alive "$c" || return 1; done; }
control_plane_up() { all_alive "${CONTROL_PLANE[@]}" && apiserver_ready; }
node_up() { all_alive "${NODE_COMPONENTS[@]}" && node_ready; }
kwok_up() { all_alive kwok kube-scheduler && kwok_healthy; }
kwok_wanted_default() { [[ -n ${INFERENCE_PLACEMENT_KWOK:-} ]] && truthy "$INFERENCE_PLACEMENT_KWOK"; }

json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

cluster_json() {
  local up=false node=false kwok=false admin="" unpriv=""
  control_plane_up && up=true
  $up && node_up && node=true
  $up && kwok_up && kwok=true
  if [[ -r $PKI_DIR/tokens.csv ]]; then
    admin=$(admin_token)
    unpriv=$(awk -F, '$2=="inference-placement:unprivileged"{print $1}' "$PKI_DIR/tokens.csv")
  fi
  cat <<JSON
{
  "up": $up,
  "kubernetes_version": $(json_str "$K8S_VERSION"),
  "node_enabled": $node,
  "kwok_enabled": $kwok,
  "kwok_version": $(json_str "$KWOK_VERSION"),
  "kwok_node_annotation": $(json_str "$KWOK_NODE_ANNOTATION"),
  "api_url": $(json_str "$API_URL"),
  "kubeconfig": $(json_str "$KUBECONFIG_FILE"),
  "ca_file": $(json_str "$PKI_DIR/ca.crt"),
  "admin_token": $(json_str "$admin"),
  "unprivileged_token": $(json_str "$unpriv"),
  "node_name": $(json_str "$NODE_NAME"),
  "pod_cidr": $(json_str "$POD_CIDR"),
  "bridge": $(json_str "$BRIDGE"),
  "bridge_ip": $(json_str "$BRIDGE_IP"),
  "model_server_image": $(json_str "$MODEL_SERVER_IMAGE"),
  "router_image": $(json_str "$ROUTER_IMAGE"),
  "pause_image": $(json_str "$PAUSE_IMAGE"),
  "kubectl": $(json_str "$BIN_DIR/kubectl"),
  "bin_dir": $(json_str "$BIN_DIR"),
  "run_dir": $(json_str "$RUN_DIR"),
  "log_dir": $(json_str "$LOG_DIR"),
  "ports": {"apiserver": $APISERVER_PORT, "etcd_client": $ETCD_CLIENT_PORT, "etcd_peer": $ETCD_PEER_PORT,
            "controller_manager": $CONTROLLER_MANAGER_PORT, "scheduler": $SCHEDULER_PORT,
            "kubelet": $KUBELET_PORT, "kubelet_healthz": $KUBELET_HEALTHZ_PORT, "kwok": $KWOK_PORT}
}
JSON
}

print_env() {
  echo "export KUBECONFIG=$KUBECONFIG_FILE"
  echo "export INFERENCE_PLACEMENT_API_URL=$API_URL"
  echo "export INFERENCE_PLACEMENT_KUBECTL=$BIN_DIR/kubectl"
}

cmd_up() {
  local want_node=$1 want_kwok=$2
  need_root
  take_lock
  if control_plane_up && { ! $want_node || node_up; } && { ! $want_kwok || kwok_up; }; then
    log "already up (pids alive, /readyz ok$($want_node && echo ', node Ready')$($want_kwok && echo ', kwok')): nothing to do"
    log "use: eval \"\$($0 env)\""
    return 0
  fi
  mkdir -p "$RUN_DIR" "$PID_DIR" "$LOG_DIR"
  touch "$RUN_MARKER"
  log "cache $CACHE_DIR, run dir $RUN_DIR, node: $($want_node && echo yes || echo no), kwok: $($want_kwok && echo yes || echo no)"
  local pkgs=("${PKGS_CONTROL_PLANE[@]}") rootfs_pid=""
  $want_node && pkgs+=("${PKGS_NODE[@]}" "${PKGS_ROOTFS[@]}")
  phase "packages" ensure_packages "${pkgs[@]}"
  if $want_node && [[ ! -f $ROOTFS_TAR ]]; then
    # debootstrap waits mostly on the network and dpkg: overlap it with the compile-bound Kubernetes build
    log "building the model-server rootfs in the background (log $LOG_DIR/rootfs.log)"
    (phase "model-server rootfs (debootstrap, in background)" ensure_rootfs) >"$LOG_DIR/rootfs.log" 2>&1 &
    rootfs_pid=$!
  fi
  phase "kubernetes binaries" build_k8s
  up_control_plane
  if [[ -n $rootfs_pid ]]; then
    if ! wait "$rootfs_pid"; then
      cat "$LOG_DIR/rootfs.log" >&2
      die "building the model-server rootfs failed"
    fi
    cat "$LOG_DIR/rootfs.log" >&2
  fi
  if $want_node; then
    up_node
  elif all_alive "${NODE_COMPONENTS[@]}"; then
    log "node components already running: kept (down stops them)"
  fi
  $want_kwok && up_kwok
  log "cluster up in $(elapsed_total)s: $API_URL ($(node_up && echo "node $NODE_NAME Ready, pod CIDR $POD_CIDR" || echo 'no node'))"
  log "use: eval \"\$($0 env)\""
}

cmd_down() {
  need_root
  take_lock
  if [[ ! -d $RUN_DIR ]]; then
    log "nothing to do: $RUN_DIR does not exist"
    return 0
  fi
  phase "kwok down" down_kwok
  phase "node down" down_node
  local c
  for c in kube-controller-manager kube-apiserver etcd; do stop_daemon "$c"; done
  umount_under "$RUN_DIR"
  if [[ -f $CREATED_PATHS_FILE ]]; then
    local p
    while IFS= read -r p; do
      [[ -n $p && -e $p ]] || continue
      umount_under "$p"
      rm -rf --one-file-system "$p" && log "removed $p"
    done <"$CREATED_PATHS_FILE"
  fi
  if [[ -d $LOG_DIR ]]; then
    rm -rf "$LAST_LOGS_DIR"
    cp -a "$LOG_DIR" "$LAST_LOGS_DIR" 2>/dev/null || true
  fi
  if awk -v d="$(realpath -m "$RUN_DIR")" '{ if ($5==d || index($5, d"/")==1) found=1 } END { exit !found }' /proc/self/mountinfo; then
    die "mounts remain under $RUN_DIR; not removing it"
  fi
  if [[ -f $RUN_MARKER ]]; then
    rm -rf --one-file-system "$RUN_DIR"
  else
    log "$RUN_DIR has no $(basename "$RUN_MARKER"): left in place"
  fi
  log "down in $(elapsed_total)s (logs kept in $LAST_LOGS_DIR)"
}

cmd_status() {
  local json=$1 c ok=0
  if $json; then
    cluster_json
    if control_plane_up; then exit 0; else exit 3; fi
  fi
  for c in "${CONTROL_PLANE[@]}" "${NODE_COMPONENTS[@]}" kwok; do
    if pid_alive "$c"; then
      printf '%-24s running (pid %s)\n' "$c" "$(<"$PID_DIR/$c.pid")"
    else
      printf '%-24s stopped\n' "$c"
    fi
  done
  if apiserver_ready; then printf '%-24s ok (%s)\n' "apiserver /readyz" "$API_URL"; else printf '%-24s not ready\n' "apiserver /readyz"; ok=3; fi
  if [[ -x $BIN_DIR/kubectl && -f $KUBECONFIG_FILE ]] && node_ready; then
    printf '%-24s Ready (pod CIDR %s on %s)\n' "node $NODE_NAME" "$POD_CIDR" "$BRIDGE"
  else
    printf '%-24s not ready / absent\n' "node $NODE_NAME"
  fi
  printf '%-24s %s\n' "kubernetes binaries" "$(k8s_binaries_cached && echo "cached in $BIN_DIR" || echo 'not built')"
  all_alive "${CONTROL_PLANE[@]}" || ok=3
  exit $ok # not `return`: a non-zero status here is an answer, not an error for the ERR trap
}

cmd_build() {
  need_root
  take_lock
  phase "packages" ensure_packages "${PKGS_CONTROL_PLANE[@]}" "${PKGS_NODE[@]}"
  phase "kubernetes binaries" build_k8s
  phase "kwok binary" build_kwok
  phase "images" build_images
  log "build done in $(elapsed_total)s"
}

main() {
  local cmd=${1:-} want_node want_kwok=false json=false
  [[ -n $cmd ]] || { usage >&2; exit 2; }
  shift
  node_wanted_default && want_node=true || want_node=false
  kwok_wanted_default && want_kwok=true
  while (($#)); do
    case $1 in
      --with-node) want_node=true ;;
      --no-node) want_node=false ;;
      --kwok) want_kwok=true ;;
      --json) json=true ;;
      -h | --help) usage; exit 0 ;;
      *) log "unknown argument: $1"; usage >&2; exit 2 ;;
    esac
    shift
  done
  case $cmd in
    up) cmd_up "$want_node" "$want_kwok" ;;
    down) cmd_down ;;
    env) print_env ;;
    status) cmd_status "$json" ;;
    build) cmd_build ;;
    # internal: the detached builders started by run_detached (they hold their own build locks)
    _build-k8s) need_root; phase "kubernetes build" build_k8s_now ;;
    _build-kwok) need_root; phase "kwok build" build_kwok_now ;;
    _build-rootfs) need_root; phase "model-server rootfs (debootstrap)" build_rootfs ;;
    -h | --help | help) usage ;;
    *) log "unknown command: $cmd"; usage >&2; exit 2 ;;
  esac
}

main "$@"
exit $?
