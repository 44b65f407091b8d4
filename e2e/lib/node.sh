# shellcheck shell=bash
# One real node: a bridge + CNI, Debian's containerd (CRI), the kubelet and the kube-scheduler.

SNAPSHOTTER_FILE="$RUN_DIR/snapshotter"

# snapshotter: overlayfs when an overlay mount works on the run dir's filesystem, else native (copying).
snapshotter() {
  if [[ -n ${INFERENCE_PLACEMENT_SNAPSHOTTER:-} ]]; then echo "$INFERENCE_PLACEMENT_SNAPSHOTTER"; return; fi
  if [[ ! -f $SNAPSHOTTER_FILE ]]; then
    local t
    mkdir -p "$RUN_DIR"
    t=$(mktemp -d "$RUN_DIR/overlay-probe.XXXXXX")
    mkdir -p "$t/l" "$t/u" "$t/w" "$t/m"
    if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
      umount "$t/m"
      echo overlayfs >"$SNAPSHOTTER_FILE"
    else
      echo native >"$SNAPSHOTTER_FILE"
    fi
    rm -rf "$t"
  fi
  cat "$SNAPSHOTTER_FILE"
}

bridge_has_our_ip() { ip -4 addr show dev "$BRIDGE" 2>/dev/null | grep -q "inet $BRIDGE_IP/24"; }

setup_network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  bridge_has_our_ip || ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Pod-to-pod traffic crosses the host's FORWARD chain when bridge netfilter is on.
  iptables -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null ||
    iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  mkdir -p "$CNI_CONF_DIR" "$CNI_IPAM_DIR"
  cat >"$CNI_CONF_DIR/10-inference-placement.conflist" <<CNI
{
  "cniVersion": "0.4.0",
  "name": "inference-placement",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$BRIDGE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$CNI_IPAM_DIR"
      }
    }
  ]
}
CNI
}

containerd_ready() { ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; }

start_containerd() {
  mkdir -p "$CONTAINERD_DIR/root" "$CONTAINERD_DIR/state" "$CONTAINERD_DIR/opt"
  # netns entries that exist before our containerd runs are not ours to remove on down
  [[ -f $RUN_DIR/netns-before ]] || ls -1 /run/netns 2>/dev/null >"$RUN_DIR/netns-before" || true
  cat >"$CONTAINERD_DIR/config.toml" <<TOML
version = 2
root = "$CONTAINERD_DIR/root"
state = "$CONTAINERD_DIR/state"
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$CONTAINERD_DIR/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    # root here may not lower oom_score_adj: without this every sandbox fails in runc
    # ("can't get final child's PID from pipe: EOF")
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "$(snapshotter)"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$CNI_BIN_DIR"
      conf_dir = "$CNI_CONF_DIR"
      max_conf_num = 1
TOML
  start_daemon containerd "$(command -v containerd)" --config "$CONTAINERD_DIR/config.toml"
  wait_daemon containerd "containerd's socket" 30 containerd_ready
}

kubelet_healthy() { [[ $(curl -sS --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" 2>/dev/null) == ok ]]; }

node_ready() {
  [[ $(kubectl_admin get node "$NODE_NAME" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

start_kubelet() {
  mkdir -p "$KUBELET_ROOT"
  # cgroup hierarchies without a kubepods group yet: down removes the groups the kubelet creates there
  if [[ ! -f $RUN_DIR/kubepods-cgroups-created ]]; then
    local d
    for d in /sys/fs/cgroup/*/; do
      [[ -e ${d}kubepods ]] || echo "${d}kubepods" >>"$RUN_DIR/kubepods-cgroups-created"
    done
    touch "$RUN_DIR/kubepods-cgroups-created"
  fi
  cat >"$RUN_DIR/kubelet-config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $BRIDGE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI_DIR/kubelet.crt
tlsPrivateKeyFile: $PKI_DIR/kubelet.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI_DIR/ca.crt
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
imageServiceEndpoint: unix://$CONTAINERD_SOCK
runtimeRequestTimeout: 5m
volumePluginDir: $KUBELET_ROOT/volume-plugins
# PID 1 is not systemd here; containerd 1.6 does not answer the CRI RuntimeConfig call, so this value is used
cgroupDriver: cgroupfs
# this machine is cgroup v1 (hybrid); 1.35+ kubelets refuse it unless told not to (deprecated, still supported)
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
protectKernelDefaults: false
staticPodPath: ""
podCIDR: $POD_CIDR
maxPods: 110
serializeImagePulls: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
# ConfigMap volumes (the in-cluster router's routes) are refreshed at a pod's next sync: every 10 s, not 1 min
syncFrequency: 10s
# this node shares a disk with everything else on the machine: evict only when it is really full
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
YAML
  start_daemon kubelet "$BIN_DIR/kubelet" \
    --config "$RUN_DIR/kubelet-config.yaml" \
    --kubeconfig "$RUN_DIR/kubeconfigs/kubelet.yaml" \
    --node-ip "$BRIDGE_IP" \
    --hostname-override "$NODE_NAME" \
    --root-dir "$KUBELET_ROOT" \
    --cert-dir "$KUBELET_ROOT/pki" \
    --v 1
  wait_daemon kubelet "kubelet /healthz" 60 kubelet_healthy
  wait_daemon kubelet "node $NODE_NAME Ready" 120 node_ready
}

scheduler_healthy() { [[ $(curl -sSk --max-time 2 "https://127.0.0.1:$SCHEDULER_PORT/healthz" 2>/dev/null) == ok ]]; }

start_scheduler() {
  local kc="$RUN_DIR/kubeconfigs/scheduler.yaml"
  start_daemon kube-scheduler "$BIN_DIR/kube-scheduler" \
    --kubeconfig "$kc" \
    --authentication-kubeconfig "$kc" \
    --authorization-kubeconfig "$kc" \
    --bind-address 127.0.0.1 \
    --secure-port "$SCHEDULER_PORT" \
    --cert-dir "$PKI_DIR/scheduler-certs" \
    --leader-elect=false \
    --profiling=false \
    --v 1
  wait_daemon kube-scheduler "kube-scheduler /healthz" 60 scheduler_healthy
}

up_node() {
  ensure_packages "${PKGS_NODE[@]}"
  record_fixed_paths
  touch "$RUN_DIR/node-enabled"
  phase "images (pause, model-server)" build_images
  phase "bridge + CNI" setup_network
  phase "containerd" start_containerd
  phase "import images" import_images
  phase "kube-scheduler" start_scheduler
  phase "kubelet (node Ready)" start_kubelet
}

# --- teardown -------------------------------------------------------------------------------------------

# Kill every container our containerd runs (pods' processes), then the shims it started.
kill_containers() {
  containerd_ready || return 0
  local id
  for id in $(ctr_k8s tasks ls -q 2>/dev/null); do
    ctr_k8s tasks kill --signal SIGKILL "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr_k8s tasks ls -q 2>/dev/null); do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      ctr_k8s tasks delete --force "$id" >/dev/null 2>&1 && break
      sleep 0.2
    done
  done
  for id in $(ctr_k8s containers ls -q 2>/dev/null); do
    ctr_k8s containers delete "$id" >/dev/null 2>&1 || true
  done
}

kill_leftover_shims() {
  local f pid
  while IFS= read -r f; do
    pid=$(<"$f")
    if [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q containerd-shim; then
      log "killing leftover containerd shim (pid $pid)"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done < <(find "$CONTAINERD_DIR/state" -name shim.pid 2>/dev/null)
}

remove_netns() {
  [[ -d /run/netns && -f $RUN_DIR/netns-before ]] || return 0
  local ns
  for ns in /run/netns/cni-*; do
    [[ -e $ns ]] || continue
    if ! grep -qxF "$(basename "$ns")" "$RUN_DIR/netns-before" 2>/dev/null; then
      umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
      rm -f "$ns"
    fi
  done
}

remove_kubepods_cgroups() {
  [[ -f $RUN_DIR/kubepods-cgroups-created ]] || return 0
  local g
  while IFS= read -r g; do
    [[ -d $g ]] || continue
    find "$g" -depth -type d -exec rmdir {} \; 2>/dev/null || log "could not remove cgroup $g (processes left?)"
  done <"$RUN_DIR/kubepods-cgroups-created"
}

down_node() {
  # Only a run dir whose up set a node up owns the bridge, the iptables rule, netns and cgroups.
  [[ -f $RUN_DIR/node-enabled ]] || return 0
  stop_daemon kube-scheduler
  stop_daemon kubelet
  if pid_alive containerd; then
    kill_containers
  fi
  stop_daemon containerd 20
  kill_leftover_shims
  remove_netns
  if bridge_has_our_ip; then
    ip link del "$BRIDGE" 2>/dev/null && log "deleted bridge $BRIDGE"
  fi
  while iptables -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null; do
    iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  done
  # kubelet volume mounts, overlay rootfs mounts of the containers, the containerd state
  umount_under "$RUN_DIR"
  [[ -d /run/containerd ]] && umount_under /run/containerd
  remove_kubepods_cgroups
}
