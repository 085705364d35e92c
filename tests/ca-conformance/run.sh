#!/usr/bin/env bash
# Go conformance tier: Cluster Autoscaler's own externalgrpc client (CA 1.36.1 and CA 1.34.1, imported
# as Go modules) against the real autoscaler-cloudify binary and its simulator. See README.md. The
# scenario is written once (tests/ca-conformance-suite) and run by one Go module per CA release.
#
#   tests/ca-conformance/run.sh            # builds target/release/autoscaler-cloudify (no-op if fresh), runs both modules
#   AUTOSCALER_CLOUDIFY_BIN=/path/bin tests/ca-conformance/run.sh   # use that binary, no cargo build
#   CA_CONFORMANCE_LOGS=1 ...              # always print the server/simulator logs
#   CA_CONFORMANCE_RPCLOG=1 ...            # log every RPC the client makes
#
#   GO_MODULE_MIRROR=DIR|URL ...           # Go module mirror holding CA's modules (default: ../shared/goproxy
#                                          # next to the checkout, when it exists; see ../ca-harness/gomirror.sh)
#
# Exits non-zero if the build or any test fails. CA's modules come from the mirror or the Go module
# proxy (go.sum is committed and checked against the mirror's README; -mod=readonly); the first run
# downloads them, warm runs reuse ~/go/pkg/mod.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if ! command -v go >/dev/null 2>&1; then
  echo "ca-conformance: go not found on PATH (need Go >= 1.26)" >&2
  exit 1
fi
gover="$(go env GOVERSION)"
case "$gover" in
  go1.2[6-9]*|go1.[3-9]*) ;;
  *) echo "ca-conformance: need Go >= 1.26, have $gover" >&2; exit 1 ;;
esac

# shellcheck source=../ca-harness/gomirror.sh
source "$repo/tests/ca-harness/gomirror.sh"
go_mirror_setup "$repo" || exit 1
echo "== CA modules from: $(go_mirror_describe)"
for module in ca-conformance ca-conformance-134 ca-conformance-suite; do
  go_mirror_check_sums "$repo/tests/$module/go.sum" || exit 1
  go_mirror_require "ca-conformance" "$repo/tests/$module" || exit 1
done

if [[ -z "${AUTOSCALER_CLOUDIFY_BIN:-}" ]]; then
  echo "== cargo build --release (autoscaler-cloudify)"
  (cd "$repo" && cargo build --release --bin autoscaler-cloudify)
  export AUTOSCALER_CLOUDIFY_BIN="$repo/target/release/autoscaler-cloudify"
fi
if [[ ! -x "$AUTOSCALER_CLOUDIFY_BIN" ]]; then
  echo "ca-conformance: binary $AUTOSCALER_CLOUDIFY_BIN missing" >&2
  exit 1
fi
echo "== binary: $AUTOSCALER_CLOUDIFY_BIN"

rc=0
# CGO_ENABLED=0 -trimpath: the flags tests/e2e builds CA and Kubernetes with, so the packages both
# tiers share (CA's, k8s.io v0.36.2) are compiled once per machine, not once per tier.
for module in ca-conformance ca-conformance-134; do
  echo "== go test $module"
  start=$(date +%s)
  if (cd "$repo/tests/$module" && CGO_ENABLED=0 go test -trimpath -mod=readonly -count=1 -v -timeout 20m ./...); then
    echo "== $module: PASS in $(( $(date +%s) - start ))s"
  else
    echo "== $module: FAIL in $(( $(date +%s) - start ))s"
    rc=1
  fi
done
exit $rc
