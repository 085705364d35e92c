#!/usr/bin/env bash
# Drives the real binary with an independent HTTP/2 load generator (h2load, Debian's
# nghttp2-client): NodeGroupForNode vs the no-op GPULabel on the same server, alternating rounds.
#
#   scripts/bench/h2load.sh                 # 5000 and 100000 nodes in 100 groups
#   NODES="5000" REQUESTS=100000 scripts/bench/h2load.sh
#
# Installs h2load if missing, builds the gRPC frame files (5-byte gRPC prefix + protobuf
# message), starts `autoscaler-cloudify simulator` and `autoscaler-cloudify serve` on loopback
# (refresh only at start, so no refresh runs during the measurement) and prints req/s per RPC.
# Note: h2load sends the same request body every time, so NodeGroupForNode looks up one node
# (hot cache); the load test (benches/loadtest/run.rs) walks every node instead.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="${BIN:-$ROOT/target/release/autoscaler-cloudify}"
NODES="${NODES:-5000 100000}"
GROUPS_N="${GROUPS_N:-100}"
REQUESTS="${REQUESTS:-200000}"
CLIENTS="${CLIENTS:-4}"
STREAMS="${STREAMS:-16}"
ROUNDS="${ROUNDS:-3}"
SIM_PORT="${SIM_PORT:-18100}"
GRPC_PORT="${GRPC_PORT:-18086}"
HTTP_PORT="${HTTP_PORT:-18087}"
OUT="${OUT:-$ROOT/target/h2load}"
mkdir -p "$OUT"

if ! command -v h2load >/dev/null 2>&1; then
  echo "installing nghttp2-client (h2load)" >&2
  apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null
fi
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --bin autoscaler-cloudify)

# frame FILE HEX: a gRPC length-prefixed message (flag 0, 4-byte big-endian length).
frame() {
  python3 - "$1" "$2" <<'PY'
import struct, sys
msg = bytes.fromhex(sys.argv[2])
open(sys.argv[1], "wb").write(b"\x00" + struct.pack(">I", len(msg)) + msg)
PY
}
# NodeGroupForNodeRequest{node: ExternalGrpcNode{providerID: $1, name: $2}} as hex.
for_node_hex() {
  python3 - "$1" "$2" <<'PY'
import sys
def ld(field, payload):  # length-delimited field
    n, out = len(payload), bytearray()
    out.append(field << 3 | 2)
    while True:
        b = n & 0x7F; n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n: break
    return bytes(out) + payload
node = ld(1, sys.argv[1].encode()) + ld(2, sys.argv[2].encode())
print(ld(1, node).hex())
PY
}

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

SVC=clusterautoscaler.cloudprovider.v1.externalgrpc.CloudProvider
run_h2load() { # rpc frame-file -> req/s
  h2load -n "$REQUESTS" -c "$CLIENTS" -m "$STREAMS" -t 1 -d "$2" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$GRPC_PORT/$SVC/$1" >"$OUT/last.txt" 2>&1
  if ! grep -q "0 failed, 0 errored" "$OUT/last.txt" || ! grep -q "$REQUESTS succeeded" "$OUT/last.txt"; then
    cat "$OUT/last.txt" >&2; echo "h2load run failed" >&2; exit 1
  fi
  grep -oE 'finished in [0-9.]+[a-z]+, [0-9.]+ req/s' "$OUT/last.txt" | grep -oE '[0-9.]+ req/s' | cut -d' ' -f1
}

frame "$OUT/gpu_label.bin" ""
for N in $NODES; do
  PER=$(( N / GROUPS_N ))
  {
    echo "timing: {execution_start_ms: 0, step_ms: 0}"
    echo "seed: 8"
    echo "deployments:"
    for g in $(seq 0 $((GROUPS_N - 1))); do
      printf '  - {id: pool-%03d, labels: {k8s-cluster: load}, scaling_groups: [{name: workers, min: 0, max: -1, current: %d}]}\n' "$g" "$PER"
    done
    echo "  - {id: k8s-control-plane, labels: {k8s-cluster: load}, standalone_vms: 3}"
  } >"$OUT/scenario.yaml"
  cat >"$OUT/config.yaml" <<YAML
grpc: {listen: "127.0.0.1:$GRPC_PORT"}
http: {listen: "127.0.0.1:$HTTP_PORT"}
log: {format: text, level: warn}
refresh: {interval: 1h, max_age: 1h}
cloudify:
  - {name: main, url: "http://127.0.0.1:$SIM_PORT", tenant: default_tenant, username: admin, password_env: H2LOAD_CLOUDIFY_PASSWORD, request_timeout: 60s}
node_groups: {auto_discovery: ["cloudify:label=k8s-cluster=load"], unbounded_max: 3000}
YAML
  "$BIN" simulator --listen "127.0.0.1:$SIM_PORT" --scenario "$OUT/scenario.yaml" >"$OUT/sim.log" 2>&1 &
  SIM_PID=$!; PIDS+=("$SIM_PID")
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$SIM_PORT/_sim/requests" >/dev/null && break; sleep 0.2; done
  H2LOAD_CLOUDIFY_PASSWORD=admin "$BIN" serve --config "$OUT/config.yaml" >"$OUT/serve.log" 2>&1 &
  SRV_PID=$!; PIDS+=("$SRV_PID")
  for _ in $(seq 1 900); do curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null && break; sleep 0.2; done
  curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null || { echo "provider not ready" >&2; cat "$OUT/serve.log" >&2; exit 1; }

  "$BIN" inspect --address "127.0.0.1:$GRPC_PORT" nodes pool-042/workers >"$OUT/nodes.txt"
  ID=$(awk 'NR==2 {print $1}' "$OUT/nodes.txt")   # line 1 is the header
  VM="${ID##*/}"; NAME="pool-042-${VM//_/-}"
  frame "$OUT/for_node.bin" "$(for_node_hex "$ID" "$NAME")"
  ANSWER=$("$BIN" inspect --address "127.0.0.1:$GRPC_PORT" group-for --provider-id "$ID" --name "$NAME")
  echo "== $N nodes: NodeGroupForNode($ID) -> $ANSWER; h2load -n $REQUESTS -c $CLIENTS -m $STREAMS"

  run_h2load GPULabel "$OUT/gpu_label.bin" >/dev/null   # warm-up
  run_h2load NodeGroupForNode "$OUT/for_node.bin" >/dev/null
  F=0; G=0
  for r in $(seq 1 "$ROUNDS"); do
    f=$(run_h2load NodeGroupForNode "$OUT/for_node.bin"); g=$(run_h2load GPULabel "$OUT/gpu_label.bin")
    echo "  round $r: NodeGroupForNode $f req/s   GPULabel $g req/s"
    F=$(python3 -c "print($F + $f)"); G=$(python3 -c "print($G + $g)")
  done
  python3 -c "f=$F/$ROUNDS; g=$G/$ROUNDS; print(f'  mean: NodeGroupForNode {f:.0f} req/s  GPULabel {g:.0f} req/s  ratio {f/g:.3f}')"
  grep -E '^(VmRSS|VmHWM)' "/proc/$SRV_PID/status" | tr '\n' ' '; echo
  kill "$SRV_PID" "$SIM_PID"; wait "$SRV_PID" "$SIM_PID" 2>/dev/null || true
  PIDS=()
done
