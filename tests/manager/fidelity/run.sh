#!/usr/bin/env bash
# The fidelity check (issue 19 item 6): one scenario (observe.py) played against the real
# manager of CLOUDIFY_MANAGER_URL and against our simulator (`autoscaler-cloudify simulator`
# with fidelity/scenario.yaml), then compare.py. Ends with `fidelity: N passed, N failed`.
# Needs the manager's exports in the environment (tests/manager/run.sh sets them) and the
# binary: AUTOSCALER_CLOUDIFY_BIN, else target/debug/autoscaler-cloudify, built if missing.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/../lib.sh"
OUT="${MANAGER_FIDELITY_OUT:-$CACHE_DIR/fidelity}"
mkdir -p "$OUT"
PY="$(client_python)"
fail() { echo "fidelity: $*"; echo "fidelity: 0 passed, 1 failed"; exit 1; }
[ -n "${CLOUDIFY_MANAGER_URL:-}" ] || fail "CLOUDIFY_MANAGER_URL is not set (run through tests/manager/run.sh, or eval \"\$(tests/manager/manager.sh env)\")"

BIN="${AUTOSCALER_CLOUDIFY_BIN:-$MANAGER_ROOT/target/debug/autoscaler-cloudify}"
if [ ! -x "$BIN" ]; then
  echo "fidelity: building $BIN"
  (cd "$MANAGER_ROOT" && cargo build --quiet --bin autoscaler-cloudify) || fail "cargo build failed"
fi

SIM_LOG="$OUT/simulator.log"
"$BIN" simulator --listen 127.0.0.1:0 --scenario "$HERE/scenario.yaml" >"$SIM_LOG" 2>&1 &
SIM_PID=$!
trap 'kill "$SIM_PID" 2>/dev/null; wait "$SIM_PID" 2>/dev/null' EXIT
SIM_URL=""
for _ in $(seq 1 100); do
  SIM_URL="$(grep -o 'listening on http://[0-9.:]*' "$SIM_LOG" | head -n1 | sed 's/listening on //')"
  [ -n "$SIM_URL" ] && break
  kill -0 "$SIM_PID" 2>/dev/null || fail "the simulator exited: $(tail -n 5 "$SIM_LOG")"
  sleep 0.1
done
[ -n "$SIM_URL" ] || fail "the simulator did not print its URL"

cd "$HERE"
# The simulator first: seconds, and a broken build shows at once.
( unset CLOUDIFY_MANAGER_TOKEN; "$PY" observe.py --target sim --url "$SIM_URL" --out "$OUT/sim.json" ) || fail "observing the simulator broke"
"$PY" observe.py --target real --out "$OUT/real.json" || fail "observing the real manager broke"
"$PY" compare.py "$OUT/real.json" "$OUT/sim.json"
