# shellcheck shell=bash
# KWOK: a controller that keeps fake Nodes Ready (lease heartbeats) and the Pods bound to them Running, against the
# real apiserver; plus kube-scheduler, so those Pods are placed by the real scheduler. No kubelet, no containers.
# The fake Nodes themselves (GPU pools: nvidia.com/gpu, nvidia.com/mig-<profile>, time-sliced shares, GFD labels)
# are created by whoever needs them (inference_placement.devtools.kwok); kwok manages only Nodes annotated
# $KWOK_NODE_ANNOTATION. Logs at WARN: at INFO it logs every heartbeat patch (MBs per minute with hundreds of nodes).

kwok_healthy() { [[ $(curl -sS --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz" 2>/dev/null) == ok ]]; }

start_kwok() {
  start_daemon kwok "$KWOK_BIN_DIR/kwok" \
    --kubeconfig "$KUBECONFIG_FILE" \
    --config "$KWOK_BIN_DIR/stages.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector "$KWOK_NODE_ANNOTATION" \
    --node-lease-duration-seconds 40 \
    --server-address "127.0.0.1:$KWOK_PORT" \
    --cidr 10.250.0.0/16 \
    --v WARN
  wait_daemon kwok "kwok /healthz" 60 kwok_healthy
}

up_kwok() {
  phase "kwok binary" build_kwok
  touch "$RUN_DIR/kwok-enabled"
  pid_alive kube-scheduler || phase "kube-scheduler" start_scheduler
  phase "kwok" start_kwok
}

# down_kwok: kwok, and the scheduler when no node owns it (down_node stops it otherwise).
down_kwok() {
  [[ -f $RUN_DIR/kwok-enabled ]] || return 0
  stop_daemon kwok
  [[ -f $RUN_DIR/node-enabled ]] || stop_daemon kube-scheduler
}
