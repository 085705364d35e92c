#!/usr/bin/env bash
# Builds the e2e binaries from the Go module proxy (pinned by tests/e2e/go.mod + go.sum, -mod=readonly) into a cache
# directory keyed by the hash of go.mod, go.sum, our own Go sources and the Go version, so warm runs
# skip building. Source this file and call e2e_build [names...], or run it directly.
#   names: etcd kube-apiserver kube-scheduler kube-controller-manager kubectl kwok kubectl-lite
#          harness hachart (default: the e2e tier's set: etcd kwok kube-scheduler kube-apiserver kubectl-lite harness)
# Result: E2E_BIN=<dir> holding the binaries. Per-binary build seconds are printed.


E2E_DIR="${E2E_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
# shellcheck source=../../ca-harness/gomirror.sh
source "$E2E_DIR/../ca-harness/gomirror.sh"
# CA's modules come from the module mirror when there is one (GO_MODULE_MIRROR, or ../shared/goproxy
# next to the checkout), else from GOPROXY.
go_mirror_setup "$(cd "$E2E_DIR/../.." && pwd)" || E2E_MIRROR_ERROR=1

e2e_pkg() {
  case "$1" in
    etcd) echo ./cmd/etcd ;;
    kube-apiserver) echo k8s.io/kubernetes/cmd/kube-apiserver ;;
    kube-scheduler) echo k8s.io/kubernetes/cmd/kube-scheduler ;;
    kube-controller-manager) echo k8s.io/kubernetes/cmd/kube-controller-manager ;;
    kubectl) echo k8s.io/kubernetes/cmd/kubectl ;;
    kwok) echo sigs.k8s.io/kwok/cmd/kwok ;;
    kubectl-lite) echo ./cmd/kubectl-lite ;;
    hachart) echo ./cmd/hachart ;;
    harness) echo ./harness ;;
    *) echo "unknown binary $1" >&2; return 1 ;;
  esac
}

e2e_bin_key() {
  # Third-party binaries depend only on the pinned module graph and the toolchain.
  ( cd "$E2E_DIR" && { cat go.mod go.sum; go version; } | sha256sum | cut -c1-16 )
}

e2e_build() {
  local names=("$@")
  [ ${#names[@]} -gt 0 ] || names=(etcd kwok kube-scheduler kube-apiserver kubectl-lite harness)
  if ! command -v go >/dev/null; then echo "e2e: go toolchain not found (need Go >= 1.26)" >&2; return 1; fi
  local key; key="$(e2e_bin_key)"
  E2E_BIN="$E2E_DIR/.cache/bin/$key"
  export E2E_BIN
  mkdir -p "$E2E_BIN"
  local ver="-X k8s.io/component-base/version.gitVersion=v1.36.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36"
  local n t0 t1
  for n in "${names[@]}"; do
    # Our own small programs are also keyed by their sources, so edits rebuild them.
    local src="" pkg; pkg="$(e2e_pkg "$n")"
    case "$pkg" in ./*) src="$(cd "$E2E_DIR" && cat "$pkg"/*.go | sha256sum | cut -c1-16)" ;; esac
    if [ -x "$E2E_BIN/$n" ] && [ "$(cat "$E2E_BIN/.$n.src" 2>/dev/null)" = "$src" ]; then
      echo "e2e: build $n: cached ($E2E_BIN)"; continue
    fi
    t0=$(date +%s)
    ( cd "$E2E_DIR" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w $ver" -o "$E2E_BIN/$n.tmp" "$(e2e_pkg "$n")" ) || {
      echo "e2e: build $n FAILED" >&2; return 1; }
    mv "$E2E_BIN/$n.tmp" "$E2E_BIN/$n"
    printf '%s' "$src" >"$E2E_BIN/.$n.src"
    t1=$(date +%s)
    echo "e2e: build $n: $((t1 - t0))s"
  done
}

# e2e_build_ca: cluster-autoscaler 1.36.1 with -tags externalgrpc from the module in tests/e2e/ca
# (go.mod + go.sum committed, -mod=readonly). Uses $CA_BIN instead when set (a prebuilt binary). On
# success sets CA_BIN; on failure stores ONE line saying what is missing in $E2E_CA_ERROR, prints
# it, and returns 1.
e2e_build_ca() {
  E2E_CA_ERROR=""
  if [ -n "${CA_BIN:-}" ]; then
    [ -x "$CA_BIN" ] && { echo "e2e: cluster-autoscaler: using CA_BIN=$CA_BIN"; return 0; }
    E2E_CA_ERROR="CA_BIN=$CA_BIN is not an executable"; echo "e2e: $E2E_CA_ERROR" >&2; return 1
  fi
  if [ "${E2E_MIRROR_ERROR:-0}" = 1 ]; then
    E2E_CA_ERROR="GO_MODULE_MIRROR=${GO_MODULE_MIRROR:-} is not a directory or URL"; echo "e2e: $E2E_CA_ERROR" >&2; return 1
  fi
  local key dir t0 out
  key="$( { cat "$E2E_DIR/ca/go.mod" "$E2E_DIR/ca/go.sum"; go version; } | sha256sum | cut -c1-16)"
  dir="$E2E_DIR/.cache/bin/ca-$key"
  mkdir -p "$dir"
  if [ -x "$dir/cluster-autoscaler" ]; then
    CA_BIN="$dir/cluster-autoscaler"; export CA_BIN
    echo "e2e: build cluster-autoscaler: cached ($dir)"; return 0
  fi
  go_mirror_check_sums "$E2E_DIR/ca/go.sum" || { E2E_CA_ERROR="ca/go.sum disagrees with the module mirror's README"; return 1; }
  if ! out="$(go_mirror_require e2e "$E2E_DIR/ca" 2>&1)"; then
    E2E_CA_ERROR="$out"; export E2E_CA_ERROR; echo "$E2E_CA_ERROR" >&2; return 1
  fi
  echo "e2e: building cluster-autoscaler 1.36.1 (CA modules from $(go_mirror_describe); 4-7 min cold on 2 cores)"
  t0=$(date +%s)
  if out="$(cd "$E2E_DIR/ca" && CGO_ENABLED=0 go build -mod=readonly -tags externalgrpc -trimpath -ldflags "-s -w" \
      -o "$dir/cluster-autoscaler.tmp" k8s.io/autoscaler/cluster-autoscaler 2>&1)"; then
    mv "$dir/cluster-autoscaler.tmp" "$dir/cluster-autoscaler"
    CA_BIN="$dir/cluster-autoscaler"; export CA_BIN
    echo "e2e: build cluster-autoscaler: $(($(date +%s) - t0))s"
    return 0
  fi
  E2E_CA_ERROR="building cluster-autoscaler failed after $(($(date +%s) - t0))s: $(printf '%s\n' "$out" | grep -v '^go: downloading' | head -n 1 | cut -c1-200)"
  export E2E_CA_ERROR
  echo "e2e: $E2E_CA_ERROR" >&2
  printf '%s\n' "$out" | grep -v '^go: downloading' | head -n 20 >&2
  return 1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  if [ "${1:-}" = cluster-autoscaler ]; then e2e_build_ca; echo "CA_BIN=$CA_BIN"; exit 0; fi
  e2e_build "$@"
  echo "E2E_BIN=$E2E_BIN"
fi
