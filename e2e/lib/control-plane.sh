# shellcheck shell=bash
# etcd + kube-apiserver + kube-controller-manager on loopback: certificates, tokens, kubeconfigs, processes.

# cert NAME CN ORG SAN: a key and a certificate signed by the local CA (SAN empty for client certificates).
issue_cert() {
  local name=$1 cn=$2 org=$3 san=$4 ext="$PKI_DIR/$1.ext"
  quiet openssl genrsa -out "$PKI_DIR/$name.key" 2048
  quiet openssl req -new -key "$PKI_DIR/$name.key" -subj "/CN=$cn${org:+/O=$org}" -out "$PKI_DIR/$name.csr"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $san ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  quiet openssl x509 -req -in "$PKI_DIR/$name.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$PKI_DIR/$name.crt"
  rm -f "$PKI_DIR/$name.csr" "$ext"
}

# write_kubeconfig FILE USER TOKEN
write_kubeconfig() {
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: inference-placement
  cluster:
    server: $API_URL
    certificate-authority: $PKI_DIR/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: inference-placement
  context:
    cluster: inference-placement
    user: $2
current-context: inference-placement
KC
  chmod 0600 "$1"
}

# setup_pki: CA, serving and client certificates, service-account keys, static tokens, kubeconfigs (once per run dir).
setup_pki() {
  if [[ -f $PKI_DIR/done ]]; then
    return 0
  fi
  rm -rf "$PKI_DIR"
  mkdir -p "$PKI_DIR" "$RUN_DIR/kubeconfigs"
  chmod 0700 "$PKI_DIR"
  quiet openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI_DIR/ca.key" -out "$PKI_DIR/ca.crt" -days 3650 \
    -sha256 -subj "/CN=inference-placement-local-ca"
  local service_net=${SERVICE_CIDR%/*}
  issue_cert apiserver kube-apiserver "" \
    "IP:127.0.0.1,IP:${service_net%.*}.1,IP:$BRIDGE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
  issue_cert kubelet "$NODE_NAME" "" "IP:$BRIDGE_IP,IP:127.0.0.1,DNS:$NODE_NAME,DNS:localhost"
  quiet openssl genrsa -out "$PKI_DIR/sa.key" 2048
  quiet openssl rsa -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub"

  local admin kcm sched node unpriv
  admin=$(openssl rand -hex 24); kcm=$(openssl rand -hex 24); sched=$(openssl rand -hex 24)
  node=$(openssl rand -hex 24); unpriv=$(openssl rand -hex 24)
  # token,user,uid,"groups"
  cat >"$PKI_DIR/tokens.csv" <<TOK
$admin,admin,uid-admin,"system:masters"
$kcm,system:kube-controller-manager,uid-kube-controller-manager
$sched,system:kube-scheduler,uid-kube-scheduler
$node,system:node:$NODE_NAME,uid-node,"system:nodes"
$unpriv,inference-placement:unprivileged,uid-unprivileged
TOK
  chmod 0600 "$PKI_DIR/tokens.csv"
  write_kubeconfig "$KUBECONFIG_FILE" admin "$admin"
  write_kubeconfig "$RUN_DIR/kubeconfigs/controller-manager.yaml" system:kube-controller-manager "$kcm"
  write_kubeconfig "$RUN_DIR/kubeconfigs/scheduler.yaml" system:kube-scheduler "$sched"
  write_kubeconfig "$RUN_DIR/kubeconfigs/kubelet.yaml" "system:node:$NODE_NAME" "$node"
  touch "$PKI_DIR/done"
}

etcd_healthy() {
  curl -sS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" 2>/dev/null | grep -q '"health":"true"'
}

start_etcd() {
  mkdir -p "$RUN_DIR/etcd"
  chmod 0700 "$RUN_DIR/etcd"
  start_daemon etcd "$BIN_DIR/etcd" \
    --name inference-placement \
    --data-dir "$RUN_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "inference-placement=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new \
    --quota-backend-bytes 4294967296 \
    --log-level warn
  wait_daemon etcd "etcd health" 30 etcd_healthy
}

start_apiserver() {
  start_daemon kube-apiserver "$BIN_DIR/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address 127.0.0.1 \
    --advertise-address 127.0.0.1 \
    --secure-port "$APISERVER_PORT" \
    --endpoint-reconciler-type none \
    --tls-cert-file "$PKI_DIR/apiserver.crt" \
    --tls-private-key-file "$PKI_DIR/apiserver.key" \
    --client-ca-file "$PKI_DIR/ca.crt" \
    --token-auth-file "$PKI_DIR/tokens.csv" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --allow-privileged=true \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --service-account-key-file "$PKI_DIR/sa.pub" \
    --service-account-signing-key-file "$PKI_DIR/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --kubelet-client-certificate "$PKI_DIR/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI_DIR/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --cert-dir "$PKI_DIR/apiserver-certs" \
    --event-ttl 1h \
    --profiling=false \
    --v 1
  wait_daemon kube-apiserver "kube-apiserver /readyz" 90 apiserver_ready
}

controller_manager_healthy() {
  [[ $(curl -sSk --max-time 2 "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz" 2>/dev/null) == ok ]]
}

start_controller_manager() {
  local kc="$RUN_DIR/kubeconfigs/controller-manager.yaml"
  start_daemon kube-controller-manager "$BIN_DIR/kube-controller-manager" \
    --kubeconfig "$kc" \
    --authentication-kubeconfig "$kc" \
    --authorization-kubeconfig "$kc" \
    --bind-address 127.0.0.1 \
    --secure-port "$CONTROLLER_MANAGER_PORT" \
    --cert-dir "$PKI_DIR/controller-manager-certs" \
    --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file "$PKI_DIR/sa.key" \
    --root-ca-file "$PKI_DIR/ca.crt" \
    --cluster-signing-cert-file "$PKI_DIR/ca.crt" \
    --cluster-signing-key-file "$PKI_DIR/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --allocate-node-cidrs=false \
    --controllers '*,bootstrapsigner,tokencleaner' \
    --profiling=false \
    --v 1
  wait_daemon kube-controller-manager "kube-controller-manager /healthz" 60 controller_manager_healthy
}

# The default ServiceAccount appears once the controller-manager's SA controllers ran (since 1.24 no token Secret
# comes with it: Pods get projected, bound tokens signed with sa.key).
default_sa_exists() {
  api_curl "$API_URL/api/v1/namespaces/default/serviceaccounts/default" 2>/dev/null | grep -q '"kind": *"ServiceAccount"'
}

up_control_plane() {
  setup_pki
  phase "etcd" start_etcd
  phase "kube-apiserver" start_apiserver
  phase "kube-controller-manager" start_controller_manager
  wait_for "default ServiceAccount" 60 default_sa_exists ||
    die "the controller-manager did not create the default ServiceAccount (see $LOG_DIR/kube-controller-manager.log)"
}
