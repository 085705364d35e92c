#!/usr/bin/env bash
# The one command that runs the whole test suite (README, .ci/run). Every tier runs even when an
# earlier one failed, so one run shows everything that is broken; the exit code is non-zero if any
# tier failed. Each tier installs what it needs (Go modules, Python packages, helm) idempotently.
#
#   ./scripts/test-all.sh            all tiers
#   TIERS="rust python" ./scripts/test-all.sh   a subset (rust python manager conformance helm image e2e)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TIERS=${TIERS:-"rust python manager conformance helm image e2e"}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# The Go and Python tiers drive the real binary; the debug build is the one `cargo test` already made.
export AUTOSCALER_CLOUDIFY_BIN=${AUTOSCALER_CLOUDIFY_BIN:-$ROOT/target/debug/autoscaler-cloudify}

passed=0; failed=0; failed_names=()
start_all=$(date +%s)

tier() {
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo
  echo "=== tier: $name ==="
  if "$@"; then
    passed=$((passed + 1))
    echo "=== tier $name: ok ($(( $(date +%s) - t0 )) s) ==="
  else
    failed=$((failed + 1)); failed_names+=("$name")
    echo "=== tier $name: FAILED ($(( $(date +%s) - t0 )) s) ==="
  fi
}

rust_tier() {
  cargo fmt --all -- --check || return 1
  cargo clippy --workspace --all-targets --locked -- -D warnings || return 1
  cargo test --locked --workspace --all-targets || return 1
  # Doc tests are not part of --all-targets.
  cargo test --locked --workspace --doc || return 1
}

for t in $TIERS; do
  case $t in
    rust) tier rust rust_tier ;;
    python) tier python bash tests/python/run.sh ;;
    manager) tier manager bash tests/manager/run.sh ;; # the real Cloudify Manager (issue #19)
    conformance) tier conformance bash tests/ca-conformance/run.sh ;;
    helm) tier helm bash tests/helm/run.sh ;;
    # The image without a container engine (buildah); a debug build keeps CI short, a release
    # builds with the default IMAGE_PROFILE=release.
    image) tier image env IMAGE_PROFILE="${IMAGE_PROFILE:-dev}" bash tests/image/run.sh ;;
    e2e) tier e2e bash tests/e2e/run.sh
      tier e2e-ha bash tests/e2e/ha.sh # HA hook (issue #13): two replicas on a Lease
      tier ha-chart bash tests/e2e/ha-chart.sh ;; # the chart with kube-controller-manager (issue 21)
    *) echo "unknown tier $t"; failed=$((failed + 1)); failed_names+=("$t") ;;
  esac
done

echo
echo "whole suite took $(( $(date +%s) - start_all )) s; failed tiers: ${failed_names[*]:-none}"
echo "tiers: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
