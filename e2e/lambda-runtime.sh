#!/usr/bin/env bash
# The real AWS Lambda runtime pieces of the local Lambda data path (docs/lambda.md), built once and cached under
# ~/.cache/inference-placement keyed by version; a second run only prints the paths:
#   - aws-lambda-rie: the AWS Lambda Runtime Interface Emulator, from the Go module pinned in e2e/lambda/go.mod
#     (the module proxy carries no release tags for it, so the pin is a commit pseudo-version). Same Go caches as
#     the Kubernetes build (e2e/lib/build.sh); a fresh machine downloads and compiles it in ~40 s.
#   - lambda-adapter: the AWS Lambda Web Adapter, `cargo install --locked lambda_web_adapter@$LWA_VERSION` (the
#     crate's Cargo.lock); a fresh machine compiles it in ~1.5 min on 2 cores, needs cargo (rustup's stable) and a C
#     compiler (installed from Debian's gcc when there is none).
#
#   bash e2e/lambda-runtime.sh           build if needed, print "aws-lambda-rie=PATH" and "lambda-adapter=PATH"
#   bash e2e/lambda-runtime.sh --check   exit 0 when both are cached (builds nothing)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Pinned: bump deliberately (and the pin in e2e/lambda/go.mod with it; the Python side reads both from here).
RIE_VERSION=v0.0.0-20261030222936-bef5c4ba774d
LWA_VERSION=0.9.1
CACHE_DIR="${INFERENCE_PLACEMENT_CACHE:-$HOME/.cache/inference-placement}"
RIE_DIR="$CACHE_DIR/aws-lambda-rie-$RIE_VERSION"
LWA_DIR="$CACHE_DIR/lwa-$LWA_VERSION"
GO_CACHE_DIR="$CACHE_DIR/go"
RIE_MODULE_DIR="$ROOT/e2e/lambda"
GO_MIN_MINOR=26 # the emulator's go.mod declares go 1.26.6

log() { echo "lambda-runtime.sh: $*" >&2; }
die() { log "$*"; exit 1; }

rie_recipe() {
  printf 'rie-%s cgo=0 gomod=%s v1' "$RIE_VERSION" "$(cat "$RIE_MODULE_DIR/go.mod" "$RIE_MODULE_DIR/go.sum" | sha256sum | cut -c1-16)"
}
rie_cached() { [[ -x $RIE_DIR/bin/aws-lambda-rie && -f $RIE_DIR/bin/.recipe && "$(<"$RIE_DIR/bin/.recipe")" == "$(rie_recipe)" ]]; }
lwa_cached() { [[ -x $LWA_DIR/bin/lambda-adapter ]]; }

find_go() {
  local g v
  for g in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go; do
    [[ -n $g && -x $g ]] || continue
    v=$(GOTOOLCHAIN=local "$g" env GOVERSION 2>/dev/null) || continue
    if [[ $v =~ ^go1\.([0-9]+) ]] && ((BASH_REMATCH[1] >= GO_MIN_MINOR)); then echo "$g"; return 0; fi
  done
  return 1
}

find_cargo() {
  local c
  for c in "$(command -v cargo 2>/dev/null || true)" "$HOME/.cargo/bin/cargo"; do
    [[ -n $c && -x $c ]] && { echo "$c"; return 0; }
  done
  return 1
}

# Builds run under a lock (a parallel caller waits and then reuses the result) into a temp dir renamed into place.
build_rie() {
  rie_cached && return 0
  local go work started=$SECONDS
  go=$(find_go) || die "no Go >= 1.$GO_MIN_MINOR (PATH, /usr/local/go/bin): needed to build aws-lambda-rie $RIE_VERSION"
  grep -q "github.com/aws/aws-lambda-runtime-interface-emulator $RIE_VERSION\$" "$RIE_MODULE_DIR/go.mod" ||
    die "e2e/lambda/go.mod does not pin the emulator at $RIE_VERSION"
  mkdir -p "$RIE_DIR" "$GO_CACHE_DIR"
  work=$(mktemp -d "$RIE_DIR/build.XXXXXX")
  cp "$RIE_MODULE_DIR/go.mod" "$RIE_MODULE_DIR/go.sum" "$RIE_MODULE_DIR/tools.go" "$work/"
  log "building aws-lambda-rie $RIE_VERSION"
  # the upstream Makefile's flags: CGO_ENABLED=0, -s -w
  (cd "$work" && env GOTOOLCHAIN=local GOFLAGS=-mod=readonly GOMODCACHE="$GO_CACHE_DIR/mod" GOCACHE="$GO_CACHE_DIR/build" \
    GOPATH="$GO_CACHE_DIR/path" GOWORK=off CGO_ENABLED=0 GOOS=linux GOARCH=amd64 \
    "$go" build -trimpath -buildvcs=false -ldflags "-s -w" -o ./bin/aws-lambda-rie \
    github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie) >&2
  rie_recipe >"$work/bin/.recipe"
  rm -rf "$RIE_DIR/bin.old"
  [[ -e $RIE_DIR/bin ]] && mv -T "$RIE_DIR/bin" "$RIE_DIR/bin.old"
  mv -T "$work/bin" "$RIE_DIR/bin"
  rm -rf "$RIE_DIR/bin.old" "$work"
  log "aws-lambda-rie ready in $RIE_DIR/bin ($((SECONDS - started))s)"
}

build_lwa() {
  lwa_cached && return 0
  local cargo work started=$SECONDS
  cargo=$(find_cargo) || die "no cargo (PATH, ~/.cargo/bin): needed to build the Lambda Web Adapter $LWA_VERSION (rustup.rs)"
  if ! command -v cc >/dev/null 2>&1; then
    # cargo links through the system C toolchain: the packages the Kubernetes build installs (e2e/lib/install.sh),
    # in a subshell so the cluster scripts' log/die stay theirs. `make demo` builds this before any cluster step.
    (
      # shellcheck source=e2e/lib/common.sh
      source "$ROOT/e2e/lib/common.sh"
      # shellcheck source=e2e/lib/install.sh
      source "$ROOT/e2e/lib/install.sh"
      ensure_packages "${PKGS_BUILD[@]}"
    ) || die "no C compiler (cc), and installing one (gcc libc6-dev) failed"
  fi
  mkdir -p "$CACHE_DIR"
  work=$(mktemp -d "$CACHE_DIR/lwa-build.XXXXXX")
  log "building lambda_web_adapter $LWA_VERSION (cargo install --locked; ~1.5 min on a cold machine)"
  # its own target dir, removed afterwards: the installed binary is what is cached
  CARGO_TARGET_DIR="$work/target" "$cargo" install --locked --quiet lambda_web_adapter --version "=$LWA_VERSION" \
    --root "$work/root" >&2
  [[ -x $work/root/bin/lambda-adapter ]] || die "cargo install did not produce bin/lambda-adapter"
  rm -rf "$LWA_DIR"
  mv -T "$work/root" "$LWA_DIR"
  rm -rf "$work"
  log "lambda-adapter ready in $LWA_DIR/bin ($((SECONDS - started))s)"
}

case "${1:-}" in
  --check) rie_cached && lwa_cached; exit ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
if ! rie_cached || ! lwa_cached; then
  mkdir -p "$CACHE_DIR"
  exec 9>"$CACHE_DIR/lambda-runtime.lock"
  flock 9
  build_rie
  build_lwa
fi
echo "aws-lambda-rie=$RIE_DIR/bin/aws-lambda-rie"
echo "lambda-adapter=$LWA_DIR/bin/lambda-adapter"
