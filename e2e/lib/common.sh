# shellcheck shell=bash
# Shared settings and helpers for e2e/local-cluster.sh. Sourced, never executed.

# The Kubernetes release the local cluster runs, and the etcd that release pins (its build/dependencies.yaml). Both
# are built from Go modules pinned in e2e/k8s/go.mod (which must name the same versions; see e2e/README.md).
K8S_VERSION="1.37.2"
ETCD_VERSION="3.7.0"
# Bump when the build recipe (patches, binaries, flags) changes so old caches are not reused; the go.mod/go.sum
# digest is added in build.sh.
K8S_BUILD_RECIPE_BASE="k8s-$K8S_VERSION etcd-$ETCD_VERSION kubelet=KernelTunableWarn tags=providerless cgo=0 pause=static v1"
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd)
# KWOK (fake Nodes and Pods against the real apiserver: the GPU fleets of bench-scale and the capacity tests), built
# from the Go module pinned in e2e/kwok/go.mod (must name the same version; see e2e/README.md).
KWOK_VERSION="0.8.0"
KWOK_BUILD_RECIPE_BASE="kwok-$KWOK_VERSION cgo=0 stages=node-fast+heartbeat-with-lease+pod-fast v1"
# Fake nodes are the Nodes carrying this annotation (and, for GPU nodes, the taint GPU node pools carry).
KWOK_NODE_ANNOTATION="kwok.x-k8s.io/node=fake"

CACHE_DIR="${INFERENCE_PLACEMENT_CACHE:-$HOME/.cache/inference-placement}"
RUN_DIR="${INFERENCE_PLACEMENT_RUN:-$CACHE_DIR/run}"
K8S_DIR="$CACHE_DIR/k8s-$K8S_VERSION"
# Go module and build caches (a second build of the same or a nearby version is fast)
GO_CACHE_DIR="$CACHE_DIR/go"
BIN_DIR="$K8S_DIR/bin"
KWOK_DIR="$CACHE_DIR/kwok-$KWOK_VERSION"
KWOK_BIN_DIR="$KWOK_DIR/bin"
IMAGES_DIR="$CACHE_DIR/images"

APISERVER_PORT="${INFERENCE_PLACEMENT_APISERVER_PORT:-16443}"
ETCD_CLIENT_PORT="${INFERENCE_PLACEMENT_ETCD_PORT:-12379}"
ETCD_PEER_PORT="$((ETCD_CLIENT_PORT + 1))"
CONTROLLER_MANAGER_PORT="${INFERENCE_PLACEMENT_CONTROLLER_MANAGER_PORT:-16257}"
SCHEDULER_PORT="${INFERENCE_PLACEMENT_SCHEDULER_PORT:-16259}"
KUBELET_PORT="${INFERENCE_PLACEMENT_KUBELET_PORT:-16250}"
KUBELET_HEALTHZ_PORT="$((KUBELET_PORT - 2))"
KWOK_PORT="${INFERENCE_PLACEMENT_KWOK_PORT:-16247}"
SERVICE_CIDR="${INFERENCE_PLACEMENT_SERVICE_CIDR:-10.96.0.0/16}"
BRIDGE="${INFERENCE_PLACEMENT_BRIDGE:-ipbr0}"
# A /24 of 10.244.0.0/16; the bridge takes .1, pods get .2 onwards.
POD_SUBNET_PREFIX="${INFERENCE_PLACEMENT_POD_SUBNET_PREFIX:-10.244.7}"
POD_CIDR="$POD_SUBNET_PREFIX.0/24"
BRIDGE_IP="$POD_SUBNET_PREFIX.1"
NODE_NAME="${INFERENCE_PLACEMENT_NODE_NAME:-inference-placement-node}"
API_URL="https://127.0.0.1:$APISERVER_PORT"

PAUSE_IMAGE="localhost/inference-placement/pause:3.10"
MODEL_SERVER_IMAGE="localhost/inference-placement/model-server:dev"
ROUTER_IMAGE="localhost/inference-placement/router:dev"

PKI_DIR="$RUN_DIR/pki"
PID_DIR="$RUN_DIR/pids"
LOG_DIR="$RUN_DIR/logs"
KUBECONFIG_FILE="$RUN_DIR/kubeconfig"
CONTAINERD_DIR="$RUN_DIR/containerd"
CONTAINERD_SOCK="$CONTAINERD_DIR/containerd.sock"
KUBELET_ROOT="$RUN_DIR/kubelet"
CNI_CONF_DIR="$RUN_DIR/cni/net.d"
CNI_IPAM_DIR="$RUN_DIR/cni/ipam"
CNI_BIN_DIR="/usr/lib/cni"
# Fixed host paths that the kubelet/containerd/CNI use whatever we configure; down removes the ones up created.
FIXED_HOST_PATHS=(/var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /run/netns /run/containerd /opt/containerd)
CREATED_PATHS_FILE="$RUN_DIR/created-host-paths"
# The lock that serialises up/down, and where down keeps the last logs: per run dir, so a second cluster
# (INFERENCE_PLACEMENT_RUN=...) neither waits on the default one nor overwrites its logs.
if [[ $RUN_DIR == "$CACHE_DIR/run" ]]; then
  LOCK_FILE="$CACHE_DIR/local-cluster.lock"
  LAST_LOGS_DIR="$CACHE_DIR/last-run-logs"
else
  LOCK_FILE="$RUN_DIR.lock"
  LAST_LOGS_DIR="$RUN_DIR.last-logs"
fi

SCRIPT_START=$(date +%s.%N)

# Nothing we start may reach a cloud metadata endpoint (the AWS SDK inside Kubernetes asks 169.254.169.254).
export AWS_EC2_METADATA_DISABLED=true

log() { printf '[local-cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# quiet CMD...: run CMD, show its output only when it fails.
quiet() {
  local out
  if ! out=$("$@" 2>&1); then
    printf '%s\n' "$out" >&2
    return 1
  fi
}

# phase NAME CMD...: run a command and print how long it took.
phase() {
  local name=$1; shift
  local start end
  start=$(date +%s.%N)
  log "phase '$name' ..."
  "$@"
  end=$(date +%s.%N)
  log "phase '$name' done in $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}')s"
}

elapsed_total() { awk -v a="$SCRIPT_START" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

# pid_alive NAME: true when the pid file of NAME names a live process whose command line still matches.
pid_alive() {
  local name=$1 pidfile="$PID_DIR/$1.pid" pid exe
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline && -f $PID_DIR/$name.exe ]] || return 1
  exe=$(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -d' ' -f1)
  [[ $(basename "$exe") == "$(<"$PID_DIR/$name.exe")" ]]
}

# start_daemon NAME EXE ARGS...: start EXE detached (own session, no inherited stdio), record its pid.
start_daemon() {
  local name=$1 exe=$2; shift 2
  mkdir -p "$PID_DIR" "$LOG_DIR"
  if pid_alive "$name"; then
    log "$name already running (pid $(<"$PID_DIR/$name.pid"))"
    return 0
  fi
  basename "$exe" >"$PID_DIR/$name.exe"
  local pid
  # setsid: the daemon gets its own session, so a Ctrl-C or SIGTERM to the caller's process group spares it
  # 9>&-: the daemon must not inherit (and so hold forever) the lock that local-cluster.sh keeps on fd 9
  setsid "$exe" "$@" </dev/null >>"$LOG_DIR/$name.log" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$PID_DIR/$name.pid"
  # Wait for the exec to land; setsid forks when started as a process group leader (job control on): then
  # record its child instead.
  local i child
  for ((i = 0; i < 100; i++)); do
    pid_alive "$name" && break
    child=$(awk '{print $1}' "/proc/$pid/task/$pid/children" 2>/dev/null || true)
    if [[ -n $child ]]; then
      echo "$child" >"$PID_DIR/$name.pid"
      pid_alive "$name" && break
      echo "$pid" >"$PID_DIR/$name.pid"
    fi
    [[ -d /proc/$pid ]] || break
    sleep 0.05
  done
  log "started $name (pid $(<"$PID_DIR/$name.pid"), log $LOG_DIR/$name.log)"
}

# gone PID: the process has exited (a zombie whose parent has not reaped it yet counts as exited).
gone() {
  [[ ! -d /proc/$1 ]] || [[ $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) == Z ]]
}

# stop_daemon NAME [TIMEOUT]: SIGTERM the recorded pid, SIGKILL after TIMEOUT seconds.
stop_daemon() {
  local name=$1 timeout=${2:-15} pid i
  if pid_alive "$name"; then
    pid=$(<"$PID_DIR/$name.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
      gone "$pid" && break
      sleep 0.1
    done
    if ! gone "$pid"; then
      log "$name (pid $pid) still running ${timeout}s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$PID_DIR/$name.pid" "$PID_DIR/$name.exe"
}

# wait_daemon NAME DESCRIPTION TIMEOUT_SECONDS CMD...: poll CMD until it succeeds; give up at once when daemon NAME
# exits, and after TIMEOUT_SECONDS; on failure show the end of its log and stop.
wait_daemon() {
  local name=$1 what=$2 timeout=$3
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$name"; then
      tail -n 30 "$LOG_DIR/$name.log" >&2
      die "$name exited while waiting for $what (log $LOG_DIR/$name.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$LOG_DIR/$name.log" >&2
      die "timed out after ${timeout}s waiting for $what (log $LOG_DIR/$name.log)"
    fi
    sleep 0.5
  done
}

# wait_for DESCRIPTION TIMEOUT_SECONDS CMD...: poll CMD every 0.5 s.
wait_for() {
  local what=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

# run_detached LOCK LOG CMD...: run CMD in its own session while it holds LOCK, stream LOG to stderr, wait for it.
# A caller killed by a timeout (its whole process group) leaves CMD running to completion, so minutes of work are
# not thrown away; a caller that finds LOCK held waits for that earlier run instead and returns 2.
run_detached() {
  local lock=$1 logfile=$2 pid tail_pid rc=0
  shift 2
  if ! flock -n "$lock" true; then
    log "an earlier run still holds $lock: waiting for it (log $logfile)"
    tail -n 0 -F "$logfile" >&2 2>/dev/null &
    tail_pid=$!
    flock "$lock" true
    kill "$tail_pid" 2>/dev/null || true
    wait "$tail_pid" 2>/dev/null || true
    return 2
  fi
  : >"$logfile"
  setsid flock "$lock" "$@" </dev/null >>"$logfile" 2>&1 9>&- &
  pid=$!
  tail -n +1 -F --pid="$pid" "$logfile" >&2 2>/dev/null &
  tail_pid=$!
  wait "$pid" || rc=$?
  wait "$tail_pid" || true
  return "$rc"
}

need_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, containerd, iptables, mounts)"
}

# record_fixed_paths: remember which fixed host paths did not exist before up, so down removes only those.
record_fixed_paths() {
  local p
  mkdir -p "$RUN_DIR"
  touch "$CREATED_PATHS_FILE"
  for p in "${FIXED_HOST_PATHS[@]}"; do
    if [[ ! -e $p ]] && ! grep -qxF "$p" "$CREATED_PATHS_FILE"; then
      echo "$p" >>"$CREATED_PATHS_FILE"
    fi
  done
}

admin_token() { awk -F, '$2=="admin"{print $1}' "$PKI_DIR/tokens.csv"; }

# curl against the apiserver as admin
api_curl() {
  curl -sS --max-time 5 --cacert "$PKI_DIR/ca.crt" -H "Authorization: Bearer $(admin_token)" "$@"
}

apiserver_ready() {
  [[ -f $PKI_DIR/ca.crt ]] || return 1
  [[ $(curl -sS --max-time 3 --cacert "$PKI_DIR/ca.crt" "$API_URL/readyz" 2>/dev/null) == ok ]]
}

kubectl_admin() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
