#!/usr/bin/env bash
# Python fidelity tier: Cloudify's official REST client (cloudify-common 7.0.5) against our
# simulator. Creates tests/python/.venv once (quick no-op afterwards), builds the binary unless
# AUTOSCALER_CLOUDIFY_BIN points at one, starts `simulator --listen 127.0.0.1:0` with
# tests/python/scenario.yaml, runs fidelity.py. Prints `N passed, N failed`; exits non-zero on
# failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
PYTHON="${PYTHON:-python3}"
PIN="cloudify-common==7.0.5"

if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('cloudify-common') != '7.0.5')" 2>/dev/null; then
  echo "creating $VENV with $PIN"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$PIN"
fi

BIN="${AUTOSCALER_CLOUDIFY_BIN:-}"
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --quiet --bin autoscaler-cloudify)
  BIN="$ROOT/target/debug/autoscaler-cloudify"
fi

LOG="$(mktemp)"
"$BIN" simulator --listen 127.0.0.1:0 --scenario "$HERE/scenario.yaml" >"$LOG" 2>&1 &
SIM_PID=$!
cleanup() {
  kill "$SIM_PID" 2>/dev/null || true
  wait "$SIM_PID" 2>/dev/null || true
  rm -f "$LOG"
}
trap cleanup EXIT

URL=""
for _ in $(seq 1 200); do
  URL="$(grep -o 'listening on http://[0-9.:]*' "$LOG" | head -n1 | sed 's/listening on //' || true)"
  [ -n "$URL" ] && break
  if ! kill -0 "$SIM_PID" 2>/dev/null; then
    echo "simulator exited early:"; cat "$LOG"
    echo "0 passed, 1 failed"
    exit 1
  fi
  sleep 0.1
done
if [ -z "$URL" ]; then
  echo "simulator did not report its URL:"; cat "$LOG"
  echo "0 passed, 1 failed"
  exit 1
fi

"$VENV/bin/python" "$HERE/fidelity.py" --url "$URL"
