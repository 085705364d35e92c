#!/usr/bin/env bash
# Loopback-only Kubernetes control plane for tests: etcd (embedded, v3.6.8) + kube-apiserver v1.36.2,
# with certificates generated on the fly, an admin kubeconfig, and kubectl-lite (a small kubectl
# stand-in: server-side apply, --dry-run=server). Source this file; see tests/e2e/README.md.
#
#   source tests/e2e/lib/controlplane.sh
#   cp_build                    # builds/caches etcd, kube-apiserver, kubectl-lite (sets E2E_BIN)
#   cp_start /tmp/cp            # starts etcd + apiserver under /tmp/cp, waits for /readyz
#   "$CP_KUBECTL" apply --dry-run=server -f manifests.yaml    # uses $KUBECONFIG (= $CP_KUBECONFIG)
#   cp_stop                     # stops what cp_start started
#
# Every process listens on 127.0.0.1 only. Logs: $CP_DIR/logs/<name>.log.

CP_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=build.sh
source "$CP_LIB_DIR/build.sh"

CP_PIDS=()

cp_log() { echo "controlplane: $*" >&2; }

# cp_free_port prints a free TCP port on 127.0.0.1.
cp_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

cp_build() { e2e_build etcd kube-apiserver kubectl-lite; }

# cp_pki DIR: a throwaway CA, the apiserver serving cert, an admin client cert (system:masters) and
# the service-account signing key. ECDSA P-256 keys: fast to make.
cp_pki() {
  local d="$1/pki"
  mkdir -p "$d"
  [ -f "$d/admin.crt" ] && return 0
  (
    set -e
    cd "$d"
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=e2e-ca" -out ca.crt 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out apiserver.key 2>/dev/null
    openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' > apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -sha256 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out admin.key 2>/dev/null
    openssl req -new -key admin.key -subj "/CN=e2e-admin/O=system:masters" -out admin.csr 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > admin.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -sha256 -extfile admin.ext -out admin.crt 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null
  )
}

# cp_spawn NAME CMD...: start a process in the background, logging to $CP_DIR/logs/NAME.log.
cp_spawn() {
  local name="$1"; shift
  mkdir -p "$CP_DIR/logs"
  "$@" >"$CP_DIR/logs/$name.log" 2>&1 &
  local pid=$!
  CP_PIDS+=("$pid")
  disown "$pid" 2>/dev/null || true # no job-control noise when cp_stop has to SIGKILL it
  echo "$pid" >"$CP_DIR/logs/$name.pid"
  cp_log "started $name (pid $pid)"
}

# cp_wait_http NAME URL SECONDS [curl args...]: poll until URL answers 200.
cp_wait_http() {
  local name="$1" url="$2" secs="$3"; shift 3
  local i
  for ((i = 0; i < secs * 4; i++)); do
    if curl -fsS -o /dev/null --max-time 2 "$@" "$url" 2>/dev/null; then return 0; fi
    if [ -f "$CP_DIR/logs/$name.pid" ] && ! kill -0 "$(cat "$CP_DIR/logs/$name.pid")" 2>/dev/null; then
      cp_log "$name exited before $url answered; last log lines:"; tail -n 40 "$CP_DIR/logs/$name.log" >&2; return 1
    fi
    sleep 0.25
  done
  cp_log "$name: $url did not answer 200 within ${secs}s; last log lines:"; tail -n 40 "$CP_DIR/logs/$name.log" >&2
  return 1
}

cp_write_kubeconfig() {
  local out="$CP_DIR/admin.kubeconfig" b64="base64 -w0"
  cat >"$out" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://127.0.0.1:$CP_APISERVER_PORT
    certificate-authority-data: $($b64 <"$CP_DIR/pki/ca.crt")
users:
- name: e2e-admin
  user:
    client-certificate-data: $($b64 <"$CP_DIR/pki/admin.crt")
    client-key-data: $($b64 <"$CP_DIR/pki/admin.key")
contexts:
- name: e2e
  context: {cluster: e2e, user: e2e-admin}
current-context: e2e
KCFG
  CP_KUBECONFIG="$out"
  export CP_KUBECONFIG KUBECONFIG="$out"
}

# cp_start DIR: etcd + kube-apiserver. Sets CP_DIR, CP_KUBECONFIG (also KUBECONFIG), CP_APISERVER_URL,
# CP_KUBECTL. Needs E2E_BIN (cp_build).
cp_start() {
  CP_DIR="$1"
  mkdir -p "$CP_DIR/logs"
  : "${E2E_BIN:?run cp_build first}"
  cp_pki "$CP_DIR" || { cp_log "certificate generation failed"; return 1; }
  CP_ETCD_PORT="$(cp_free_port)"
  local peer; peer="$(cp_free_port)"
  CP_APISERVER_PORT="$(cp_free_port)"
  cp_spawn etcd "$E2E_BIN/etcd" --data-dir "$CP_DIR/etcd" \
    --listen-client-url "http://127.0.0.1:$CP_ETCD_PORT" --listen-peer-url "http://127.0.0.1:$peer"
  cp_wait_http etcd "http://127.0.0.1:$CP_ETCD_PORT/health" 60 || return 1
  cp_spawn kube-apiserver "$E2E_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$CP_ETCD_PORT" \
    --bind-address=127.0.0.1 --secure-port="$CP_APISERVER_PORT" --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none \
    --cert-dir="$CP_DIR/apiserver" \
    --tls-cert-file="$CP_DIR/pki/apiserver.crt" --tls-private-key-file="$CP_DIR/pki/apiserver.key" \
    --client-ca-file="$CP_DIR/pki/ca.crt" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer="https://127.0.0.1:$CP_APISERVER_PORT" \
    --service-account-key-file="$CP_DIR/pki/sa.key" --service-account-signing-key-file="$CP_DIR/pki/sa.key" \
    --disable-admission-plugins=ServiceAccount,TaintNodesByCondition \
    --authorization-mode=RBAC --allow-privileged=true \
    --enable-priority-and-fairness=false --v=1
  CP_APISERVER_URL="https://127.0.0.1:$CP_APISERVER_PORT"
  cp_wait_http kube-apiserver "$CP_APISERVER_URL/readyz" "${CP_START_TIMEOUT:-120}" --cacert "$CP_DIR/pki/ca.crt" || return 1
  cp_write_kubeconfig
  CP_KUBECTL="$E2E_BIN/kubectl-lite"
  export CP_DIR CP_APISERVER_URL CP_KUBECTL
  cp_log "kube-apiserver ready at $CP_APISERVER_URL (kubeconfig $CP_KUBECONFIG)"
}

# cp_stop: stop every process this shell started through cp_spawn (by pid, newest first).
cp_stop() {
  local i pid
  for ((i = ${#CP_PIDS[@]} - 1; i >= 0; i--)); do
    pid="${CP_PIDS[$i]}"
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${CP_PIDS[@]}"; do
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  done
  CP_PIDS=()
}
