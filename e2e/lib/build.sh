# shellcheck shell=bash
# Build Kubernetes $K8S_VERSION and etcd $ETCD_VERSION from Go modules (e2e/k8s/go.mod), once, into $BIN_DIR
# (atomic: a temp dir renamed into place). Module downloads and compiled packages are cached in $GO_CACHE_DIR.

K8S_GO_MODULE_DIR="$E2E_DIR/k8s"
GO_MIN_MINOR=26 # k8s.io/kubernetes 1.36+ declares `go 1.26.0`

# k8s_recipe: the recipe string plus a digest of the pinned module graph (a go.mod/go.sum change rebuilds).
k8s_recipe() {
  printf '%s gomod=%s' "$K8S_BUILD_RECIPE_BASE" \
    "$(cat "$K8S_GO_MODULE_DIR/go.mod" "$K8S_GO_MODULE_DIR/go.sum" | sha256sum | cut -c1-16)"
}

k8s_binaries_cached() {
  local b
  [[ -f $BIN_DIR/.recipe && "$(<"$BIN_DIR/.recipe")" == "$(k8s_recipe)" ]] || return 1
  for b in "${K8S_BINARIES[@]}" pause; do [[ -x $BIN_DIR/$b ]] || return 1; done
}

# find_go: a Go toolchain >= 1.$GO_MIN_MINOR (PATH first, then /usr/local/go), printed as a path.
find_go() {
  local g v
  for g in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go; do
    [[ -n $g && -x $g ]] || continue
    v=$(GOTOOLCHAIN=local "$g" env GOVERSION 2>/dev/null) || continue # e.g. go1.26.8
    if [[ $v =~ ^go1\.([0-9]+) ]] && ((BASH_REMATCH[1] >= GO_MIN_MINOR)); then
      echo "$g"
      return 0
    fi
    log "ignoring $g ($v): Kubernetes $K8S_VERSION needs Go >= 1.$GO_MIN_MINOR"
  done
  return 1
}

# k8s_go ARGS...: the go command with the project's caches and no leaking machine settings.
k8s_go() {
  env GOTOOLCHAIN=local GOFLAGS=-mod=readonly GOMODCACHE="$GO_CACHE_DIR/mod" GOCACHE="$GO_CACHE_DIR/build" \
    GOPATH="$GO_CACHE_DIR/path" GOWORK=off CGO_ENABLED=0 GOOS=linux GOARCH=amd64 "$GO" "$@"
}

# k8s_go_in DIR ARGS...: k8s_go run in DIR.
k8s_go_in() { (cd "$1" && shift && k8s_go "$@"); }

# build_k8s: make sure $BIN_DIR holds the binaries of the current recipe. The build runs detached (run_detached):
# a caller killed by its test timeout does not throw away minutes of compiling, and the next caller waits for it.
build_k8s() {
  local attempt rc
  for attempt in 1 2; do
    if k8s_binaries_cached; then
      log "reusing cached Kubernetes $K8S_VERSION binaries in $BIN_DIR (${K8S_BINARIES[*]} pause)"
      return 0
    fi
    ensure_packages "${PKGS_BUILD[@]}"
    find_go >/dev/null || die "no Go >= 1.$GO_MIN_MINOR found (PATH, /usr/local/go/bin): needed to build Kubernetes $K8S_VERSION"
    mkdir -p "$K8S_DIR"
    log "building Kubernetes $K8S_VERSION + etcd $ETCD_VERSION (attempt $attempt; log $K8S_DIR/last-build.log)"
    rc=0
    run_detached "$K8S_DIR/.build.lock" "$K8S_DIR/last-build.log" "$BASH" "$E2E_DIR/local-cluster.sh" _build-k8s || rc=$?
    ((rc == 2)) || break # 2: we only waited for an earlier caller's build: check its result, build if it failed
  done
  k8s_binaries_cached || die "building Kubernetes failed (log: $K8S_DIR/last-build.log)"
}

# build_k8s_now: the build itself (run by `local-cluster.sh _build-k8s` under $K8S_DIR/.build.lock).
build_k8s_now() {
  if k8s_binaries_cached; then
    return 0
  fi
  GO=$(find_go) || die "no Go >= 1.$GO_MIN_MINOR found"
  log "using $GO ($(GOTOOLCHAIN=local "$GO" env GOVERSION))"
  rm -rf "$K8S_DIR"/build.* "$BIN_DIR.old" # leftovers of interrupted builds (we hold the build lock)
  [[ -e $BIN_DIR ]] && log "$BIN_DIR was built by another recipe: rebuilding (kept until the new build is complete)"
  mkdir -p "$GO_CACHE_DIR"

  local work
  work=$(mktemp -d "$K8S_DIR/build.XXXXXX")
  log "building in $work"
  cp "$K8S_GO_MODULE_DIR/go.mod" "$K8S_GO_MODULE_DIR/go.sum" "$work/"
  grep -q "^[[:space:]]*k8s.io/kubernetes v$K8S_VERSION\( // indirect\)\{0,1\}\$" "$work/go.mod" ||
    die "e2e/k8s/go.mod does not pin k8s.io/kubernetes v$K8S_VERSION (K8S_VERSION in e2e/lib/common.sh)"
  grep -q "^[[:space:]]*go.etcd.io/etcd/server/v3 v$ETCD_VERSION\( // indirect\)\{0,1\}\$" "$work/go.mod" ||
    die "e2e/k8s/go.mod does not pin go.etcd.io/etcd/server/v3 v$ETCD_VERSION (ETCD_VERSION in e2e/lib/common.sh)"
  # every module of the graph, verified against e2e/k8s/go.sum (a no-op when the cache has them)
  phase "go mod download" k8s_go_in "$work" mod download >&2

  # The kubelet would rewrite host sysctls (kernel.panic, vm.overcommit_memory): warn instead. The module cache is
  # read-only and shared, so the patch goes into a copy that the build's go.mod points at.
  local moddir src=$work/kubernetes
  moddir=$(k8s_go_in "$work" list -m -f '{{.Dir}}' k8s.io/kubernetes)
  [[ -f $moddir/go.mod ]] || die "k8s.io/kubernetes v$K8S_VERSION not in the module cache ($moddir)"
  phase "copy k8s.io/kubernetes v$K8S_VERSION for patching" cp -a "$moddir" "$src"
  chmod -R u+w "$src"
  local cm=$src/pkg/kubelet/cm/container_manager_linux.go
  grep -q '^[[:space:]]*b := KernelTunableModify$' "$cm" || die "kubelet patch target not found in $cm"
  sed -i 's/^\([[:space:]]*b := \)KernelTunableModify$/\1KernelTunableWarn/' "$cm"
  k8s_go_in "$work" mod edit -replace k8s.io/kubernetes=./kubernetes

  # /version reports what hack/lib/version.sh would stamp; without it, v0.0.0.
  local minor=${K8S_VERSION#*.}
  minor=${minor%%.*}
  local ldflags="-s -w" key val
  for kv in "gitVersion=v$K8S_VERSION" "gitMajor=1" "gitMinor=$minor" "gitTreeState=clean" \
    "gitCommit=$K8S_VERSION-module" "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
    key=${kv%%=*} val=${kv#*=}
    ldflags+=" -X k8s.io/component-base/version.$key=$val -X k8s.io/client-go/pkg/version.$key=$val"
  done
  mkdir "$work/bin"
  local pkgs=() b
  for b in "${K8S_BINARIES[@]}"; do [[ $b == etcd ]] || pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  # providerless: no in-tree cloud provider code paths; CGO_ENABLED=0: static binaries, as upstream ships them.
  phase "go build (${pkgs[*]##*/})" \
    k8s_go_in "$work" build -trimpath -tags providerless -ldflags "$ldflags" -o ./bin/ "${pkgs[@]}" >&2
  phase "go build (etcd $ETCD_VERSION)" k8s_go_in "$work" build -trimpath \
    -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v$ETCD_VERSION-module" -o ./bin/etcd go.etcd.io/etcd/server/v3 >&2

  # The pod sandbox ("pause") image's binary, statically linked.
  local tag
  tag=$(sed -n 's/^TAG[[:space:]]*?\{0,1\}=[[:space:]]*//p' "$src/build/pause/Makefile" | head -n1)
  phase "gcc pause" gcc -Os -Wall -Werror -static -DVERSION="v${tag:-3.10}-inference-placement" \
    -o "$work/bin/pause" "$src/build/pause/linux/pause.c"

  for b in "${K8S_BINARIES[@]}" pause; do [[ -x $work/bin/$b ]] || die "build did not produce $b"; done
  "$work/bin/kubectl" version --client >&2
  k8s_recipe >"$work/bin/.recipe"
  # a running cluster may still use the old binaries: swap directories, never leave $BIN_DIR missing or partial
  [[ -e $BIN_DIR ]] && mv -T "$BIN_DIR" "$BIN_DIR.old"
  mv -T "$work/bin" "$BIN_DIR"
  rm -rf "$BIN_DIR.old"
  # the patched source copy (~120 MB): nothing waits for its removal (a later build removes any leftover build.*)
  rm -rf "$work" </dev/null >/dev/null 2>&1 &
  log "binaries ready in $BIN_DIR"
}

# --- KWOK ------------------------------------------------------------------------------------------------
# kwok $KWOK_VERSION from the Go module pinned in e2e/kwok/go.mod, into $KWOK_BIN_DIR with its stage config (the
# node-initialize, lease-heartbeat and pod ready/complete/delete stages kwokctl installs by default, taken from the
# same module). Same Go caches as Kubernetes: a fresh machine compiles it in ~1.5 min, a second run is instant.

KWOK_GO_MODULE_DIR="$E2E_DIR/kwok"
KWOK_STAGE_FILES=(node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml)

kwok_recipe() {
  printf '%s gomod=%s' "$KWOK_BUILD_RECIPE_BASE" \
    "$(cat "$KWOK_GO_MODULE_DIR/go.mod" "$KWOK_GO_MODULE_DIR/go.sum" | sha256sum | cut -c1-16)"
}

kwok_cached() {
  [[ -f $KWOK_BIN_DIR/.recipe && "$(<"$KWOK_BIN_DIR/.recipe")" == "$(kwok_recipe)" ]] || return 1
  [[ -x $KWOK_BIN_DIR/kwok && -s $KWOK_BIN_DIR/stages.yaml ]]
}

# build_kwok: make sure $KWOK_BIN_DIR holds kwok of the current recipe (detached like build_k8s).
build_kwok() {
  local attempt rc
  for attempt in 1 2; do
    if kwok_cached; then
      log "reusing cached kwok $KWOK_VERSION in $KWOK_BIN_DIR"
      return 0
    fi
    find_go >/dev/null || die "no Go >= 1.$GO_MIN_MINOR found (PATH, /usr/local/go/bin): needed to build kwok $KWOK_VERSION"
    mkdir -p "$KWOK_DIR"
    log "building kwok $KWOK_VERSION (attempt $attempt; log $KWOK_DIR/last-build.log)"
    rc=0
    run_detached "$KWOK_DIR/.build.lock" "$KWOK_DIR/last-build.log" "$BASH" "$E2E_DIR/local-cluster.sh" _build-kwok || rc=$?
    ((rc == 2)) || break
  done
  kwok_cached || die "building kwok failed (log: $KWOK_DIR/last-build.log)"
}

build_kwok_now() {
  kwok_cached && return 0
  GO=$(find_go) || die "no Go >= 1.$GO_MIN_MINOR found"
  rm -rf "$KWOK_DIR"/build.* "$KWOK_BIN_DIR.old"
  mkdir -p "$GO_CACHE_DIR"
  local work
  work=$(mktemp -d "$KWOK_DIR/build.XXXXXX")
  cp "$KWOK_GO_MODULE_DIR/go.mod" "$KWOK_GO_MODULE_DIR/go.sum" "$KWOK_GO_MODULE_DIR/tools.go" "$work/"
  grep -Eq "^(require)?[[:space:]]*sigs.k8s.io/kwok v$KWOK_VERSION( // indirect)?\$" "$work/go.mod" ||
    die "e2e/kwok/go.mod does not pin sigs.k8s.io/kwok v$KWOK_VERSION (KWOK_VERSION in e2e/lib/common.sh)"
  phase "go mod download (kwok)" k8s_go_in "$work" mod download sigs.k8s.io/kwok >&2
  mkdir "$work/bin"
  phase "go build (kwok $KWOK_VERSION)" k8s_go_in "$work" build -trimpath \
    -ldflags "-s -w" -o ./bin/kwok sigs.k8s.io/kwok/cmd/kwok >&2
  local moddir f first=1
  moddir=$(k8s_go_in "$work" list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  for f in "${KWOK_STAGE_FILES[@]}"; do
    [[ -f $moddir/kustomize/stage/$f ]] || die "kwok stage $f not in the module ($moddir)"
    ((first)) || echo "---"
    first=0
    cat "$moddir/kustomize/stage/$f"
  done >"$work/bin/stages.yaml"
  "$work/bin/kwok" --version >&2
  kwok_recipe >"$work/bin/.recipe"
  [[ -e $KWOK_BIN_DIR ]] && mv -T "$KWOK_BIN_DIR" "$KWOK_BIN_DIR.old"
  mv -T "$work/bin" "$KWOK_BIN_DIR"
  rm -rf "$KWOK_BIN_DIR.old" "$work"
  log "kwok ready in $KWOK_BIN_DIR"
}
