# shellcheck shell=bash
# Build Kubernetes 1.20.2 from Debian's source package, once, into $BIN_DIR (atomic: a temp dir renamed into place).

k8s_binaries_cached() {
  local b
  [[ -f $BIN_DIR/.recipe && "$(<"$BIN_DIR/.recipe")" == "$K8S_BUILD_RECIPE" ]] || return 1
  for b in "${K8S_BINARIES[@]}" pause; do [[ -x $BIN_DIR/$b ]] || return 1; done
}

# fetch_k8s_source: the orig tarball (with vendor/) via `apt-get source --download-only`, verified by sha256.
fetch_k8s_source() {
  local dl="$K8S_DIR/download" tmp
  mkdir -p "$dl"
  if [[ -f $dl/$K8S_ORIG_TARBALL ]] && echo "$K8S_ORIG_SHA256  $dl/$K8S_ORIG_TARBALL" | sha256sum -c --quiet - 2>/dev/null; then
    log "reusing downloaded $K8S_ORIG_TARBALL"
    return 0
  fi
  ensure_deb_src
  tmp=$(mktemp -d "$dl/apt.XXXXXX")
  # apt drops privileges to _apt for downloads: let it write there
  chmod 0777 "$tmp"
  if ! (cd "$tmp" && apt-get source --download-only "kubernetes=$K8S_VERSION_DEB" >&2); then
    log "kubernetes=$K8S_VERSION_DEB not offered by the mirror; trying the current source package (same orig tarball expected)"
    (cd "$tmp" && apt-get source --download-only kubernetes >&2)
  fi
  echo "$K8S_ORIG_SHA256  $tmp/$K8S_ORIG_TARBALL" | sha256sum -c --quiet - ||
    die "$K8S_ORIG_TARBALL missing or sha256 mismatch"
  mv -f "$tmp/$K8S_ORIG_TARBALL" "$dl/$K8S_ORIG_TARBALL"
  rm -rf "$tmp"
}

# build_k8s: make sure $BIN_DIR holds the binaries of the current recipe. The build runs detached (run_detached):
# a caller killed by its test timeout does not throw away minutes of compiling, and the next caller waits for it.
build_k8s() {
  local attempt rc
  for attempt in 1 2; do
    if k8s_binaries_cached; then
      log "reusing cached Kubernetes binaries in $BIN_DIR (${K8S_BINARIES[*]} pause)"
      return 0
    fi
    ensure_packages "${PKGS_BUILD[@]}"
    mkdir -p "$K8S_DIR"
    log "building Kubernetes (attempt $attempt; log $K8S_DIR/last-build.log)"
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
  rm -rf "$K8S_DIR"/build.* "$BIN_DIR.old" # leftovers of interrupted builds (we hold the build lock)
  [[ -e $BIN_DIR ]] && log "$BIN_DIR was built by another recipe: rebuilding (kept until the new build is complete)"
  phase "fetch kubernetes source" fetch_k8s_source

  local work src
  work=$(mktemp -d "$K8S_DIR/build.XXXXXX")
  log "building in $work"
  phase "unpack source" tar -xzf "$K8S_DIR/download/$K8S_ORIG_TARBALL" -C "$work"
  src=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n1)
  [[ -f $src/Makefile ]] || die "unexpected tarball layout in $work"

  # The vendored reflect2 1.0.1 crashes under Go 1.19 on the first custom-resource create: use Debian's.
  local r2=$src/vendor/github.com/modern-go/reflect2
  rm -rf "$r2"
  cp -a /usr/share/gocode/src/github.com/modern-go/reflect2 "$r2"
  rm -rf "$r2/go.mod" "$r2/go.sum" "$r2/tests" "$r2/test"
  find "$r2" -name '*_test.go' -delete

  # The kubelet would rewrite host sysctls (kernel.panic, vm.overcommit_memory): warn instead.
  local cm=$src/pkg/kubelet/cm/container_manager_linux.go
  grep -q '^[[:space:]]*b := KernelTunableModify$' "$cm" || die "kubelet patch target not found in $cm"
  sed -i 's/^\([[:space:]]*b := \)KernelTunableModify$/\1KernelTunableWarn/' "$cm"

  # The kubelet's ECR credential provider asks the EC2 metadata endpoint (off this machine) for credentials when it
  # starts; providerless drops the GCP and Azure ones but not this one in 1.20: unlink it.
  local plugins=$src/cmd/kubelet/app/plugins.go
  grep -q '^[[:space:]]*_ "k8s.io/kubernetes/pkg/credentialprovider/aws"$' "$plugins" ||
    die "kubelet credential provider import not found in $plugins"
  sed -i '\#^[[:space:]]*_ "k8s.io/kubernetes/pkg/credentialprovider/aws"$#d' "$plugins"

  local what="" b
  for b in "${K8S_BINARIES[@]}"; do what+="cmd/$b "; done
  # providerless: no in-tree cloud providers (nor the GCP/Azure credential providers, which probe metadata
  # endpoints); GOFLAGS is otherwise replaced so the machine's settings do not leak in.
  phase "go build (${K8S_BINARIES[*]})" \
    env -C "$src" GOFLAGS=-tags=providerless GOPROXY=off CGO_ENABLED=0 make WHAT="${what% }" >&2

  # The pod sandbox ("pause") image's binary, statically linked.
  local tag
  tag=$(sed -n 's/^TAG[[:space:]]*?\{0,1\}=[[:space:]]*//p' "$src/build/pause/Makefile" | head -n1)
  phase "gcc pause" gcc -Os -Wall -Werror -static -DVERSION="v${tag:-3.4}-inference-placement" \
    -o "$work/pause" "$src/build/pause/linux/pause.c"

  mkdir "$work/bin"
  for b in "${K8S_BINARIES[@]}"; do
    cp "$src/_output/local/bin/linux/amd64/$b" "$work/bin/$b" || die "build did not produce $b"
  done
  cp "$work/pause" "$work/bin/pause"
  echo "$K8S_BUILD_RECIPE" >"$work/bin/.recipe"
  # a running cluster may still use the old binaries: swap directories, never leave $BIN_DIR missing or partial
  [[ -e $BIN_DIR ]] && mv -T "$BIN_DIR" "$BIN_DIR.old"
  mv -T "$work/bin" "$BIN_DIR"
  rm -rf "$BIN_DIR.old"
  # ~2 GB of sources and Go build cache: removing it takes a minute on a busy disk, and nothing waits for it
  # (a later build removes any leftover build.* first)
  rm -rf "$work" </dev/null >/dev/null 2>&1 &
  log "binaries ready in $BIN_DIR"
}
