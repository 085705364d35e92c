#!/usr/bin/env bash
# Starts the local Cloudify Manager stack under $MANAGER_STATE_DIR (real-cloudify-manager.md,
# steps 3-10): a private PostgreSQL cluster, a private RabbitMQ node (TLS only), the database
# migrations and configure_manager (first start only), gunicorn with the REST service, an nginx
# TLS front, mgmtworker and amqp-postgres. Each process runs in its own session (setsid) with its
# output in $STATE/log/<name>.log and its PID in $STATE/run/<name>.pid, so stop.sh can end it
# and its process group by id. Already running components are left alone (start is idempotent).
# Ends with health.sh: REST answers with auth and a tiny install workflow really runs.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if external_manager; then log "using the existing manager at $CLOUDIFY_MANAGER_URL (nothing to start)"; exit 0; fi
require_sources
[ -x "$VENV/bin/python" ] && [ -f "$VENV/.tier-stamp" ] || die "no venv at $VENV: run tests/manager/manager.sh install first"

T0=$(date +%s)
LOGS="$STATE_DIR/log"; RUN="$STATE_DIR/run"; ETC="$STATE_DIR/etc"; SSL="$STATE_DIR/ssl"
OPT="$STATE_DIR/opt-manager"            # what /opt/manager points to
FS_ROOT="$OPT/resources"                # the file server root
MANAGER_NAME=tier-manager
mkdir -p "$LOGS" "$RUN" "$ETC" "$SSL" "$FS_ROOT" "$OPT/maintenance" "$STATE_DIR/mgmtworker"

# A state dir made from other sources (or by an older layout) is thrown away: it is disposable.
state_stamp="$(cat "$SRC"/.*.sha256 | sha256sum | cut -d' ' -f1)"
if [ -f "$STATE_DIR/.initialized" ] && [ "$(cat "$STATE_DIR/.initialized")" != "$state_stamp" ]; then
  die "$STATE_DIR was made from other sources: run tests/manager/manager.sh stop && rm -rf $STATE_DIR"
fi

pid_alive() { local p; p="$(cat "$RUN/$1.pid" 2>/dev/null)" && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

# Runs "$@" detached in its own session, output to the component's log, PID recorded. Without
# setsid and the redirections nginx and others keep the caller's stdout open (step 10).
launch() {
  local name=$1; shift
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

# Waits until "$@" succeeds; on timeout prints the tail of the component's log and fails.
wait_for() {
  local name=$1 timeout=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$name" || [ "$(date +%s)" -ge "$deadline" ]; then
      log "$name did not come up (alive: $(pid_alive "$name" && echo yes || echo no)); last lines of $LOGS/$name.log:"
      tail -n 30 "$LOGS/$name.log" >&2 || true
      exit 1
    fi
    sleep 0.3
  done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
need_port() { # name port: a port held by something else is a clear error, not a hang later
  pid_alive "$1" && return 0
  port_free "$2" || die "port $2 (for $1) is in use by another process; set the MANAGER_*_PORT variables (README) or stop it"
}

# --- /opt/manager: cloudify-common reads /opt/manager/rest-security.conf, a hard-coded path ---
if [ -L /opt/manager ]; then
  [ "$(readlink /opt/manager)" = "$OPT" ] || {
    other="$(readlink /opt/manager)"
    if [ -f "${other%/opt-manager}/run/rest.pid" ] && kill -0 "$(cat "${other%/opt-manager}/run/rest.pid")" 2>/dev/null; then
      die "/opt/manager points to $other, whose stack is running: stop it first (MANAGER_STATE_DIR=${other%/opt-manager} tests/manager/manager.sh stop)"
    fi
    ln -sfn "$OPT" /opt/manager
  }
elif [ -e /opt/manager ]; then
  die "/opt/manager exists and is not the tier's symlink (a real manager on this host?); refusing to touch it"
else
  mkdir -p /opt; ln -s "$OPT" /opt/manager
fi

# --- certificates: one CA, one server certificate for 127.0.0.1/localhost -----------------------
if [ ! -f "$SSL/server.pem" ]; then
  log "making certificates in $SSL"
  openssl req -x509 -newkey rsa:2048 -nodes -batch -sha256 -days 3650 -subj "/CN=autoscaler-cloudify tier CA" \
    -keyout "$SSL/ca.key" -out "$SSL/ca.pem" -addext basicConstraints=critical,CA:true 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -batch -sha256 -subj "/CN=localhost" \
    -keyout "$SSL/server.key" -out "$SSL/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$SSL/san.ext"
  openssl x509 -req -in "$SSL/server.csr" -CA "$SSL/ca.pem" -CAkey "$SSL/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$SSL/san.ext" -out "$SSL/server.pem" 2>/dev/null
  chmod 644 "$SSL"/*.pem
fi

# --- config files --------------------------------------------------------------------------------
if [ ! -f "$ETC/rest-security.conf" ]; then
  "$VENV/bin/python" - "$ETC/rest-security.conf" <<'PY'
import base64, json, os, secrets, sys
with open(sys.argv[1], "w") as f:
    json.dump({"secret_key": secrets.token_urlsafe(32), "hash_salt": secrets.token_urlsafe(16),
               # Fernet256: 64 url-safe base64-encoded bytes (cloudify.cryptography_utils).
               "encryption_key": base64.urlsafe_b64encode(os.urandom(64)).decode()}, f)
PY
fi
cp "$ETC/rest-security.conf" "$OPT/rest-security.conf"
cat >"$ETC/cloudify-rest.conf" <<EOF
postgresql_db_name: cloudify
postgresql_host: 127.0.0.1:$PG_PORT
postgresql_username: cloudify
postgresql_password: cloudify
file_server_type: local
file_server_root: $FS_ROOT
EOF
cp "$ETC/cloudify-rest.conf" "$OPT/cloudify-rest.conf"
export MANAGER_REST_CONFIG_PATH="$ETC/cloudify-rest.conf" MANAGER_REST_SECURITY_CONFIG_PATH="$ETC/rest-security.conf"

# --- PostgreSQL ------------------------------------------------------------------------------------
PG="$STATE_DIR/pg"    # owned by postgres: initdb refuses a root-owned directory
if [ ! -f "$PG/data/PG_VERSION" ]; then
  log "initdb $PG/data"
  mkdir -p "$PG/data" "$PG/sock"; chown -R postgres:postgres "$PG"; chmod 700 "$PG/data"
  setpriv --reuid postgres --regid postgres --init-groups "$PG_BIN/initdb" -D "$PG/data" -U postgres \
    --auth=trust -E UTF8 --locale=C.UTF-8 >"$LOGS/initdb.log" 2>&1 || { tail -n 20 "$LOGS/initdb.log" >&2; exit 1; }
fi
need_port postgres "$PG_PORT"
if ! pid_alive postgres; then
  launch postgres setpriv --reuid postgres --regid postgres --init-groups "$PG_BIN/postgres" -D "$PG/data" \
    -p "$PG_PORT" -k "$PG/sock" -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200
fi
wait_for postgres 30 "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
psql_pg() { PGPASSWORD= psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
if ! psql_pg -tAc "select 1 from pg_roles where rolname='cloudify'" | grep -q 1; then
  psql_pg -c "CREATE ROLE cloudify SUPERUSER LOGIN PASSWORD 'cloudify'" -c "CREATE DATABASE cloudify OWNER cloudify"
fi

# --- RabbitMQ: TLS only, every listener on loopback ----------------------------------------------
RMQ="$STATE_DIR/rabbitmq"
mkdir -p "$RMQ/mnesia" "$RMQ/ssl"
cp "$SSL/ca.pem" "$SSL/server.pem" "$SSL/server.key" "$RMQ/ssl/"
cat >"$RMQ/rabbitmq.conf" <<EOF
listeners.tcp = none
listeners.ssl.default = 127.0.0.1:$AMQP_PORT
ssl_options.cacertfile = $RMQ/ssl/ca.pem
ssl_options.certfile = $RMQ/ssl/server.pem
ssl_options.keyfile = $RMQ/ssl/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
management.ssl.ip = 127.0.0.1
management.ssl.port = $RABBIT_MGMT_PORT
management.ssl.cacertfile = $RMQ/ssl/ca.pem
management.ssl.certfile = $RMQ/ssl/server.pem
management.ssl.keyfile = $RMQ/ssl/server.key
default_user = cloudify
default_pass = c10udify
default_user_tags.administrator = true
loopback_users = none
EOF
echo '[rabbitmq_management].' >"$RMQ/enabled_plugins"
chown -R rabbitmq:rabbitmq "$RMQ"
need_port rabbitmq "$AMQP_PORT"; need_port rabbitmq "$RABBIT_MGMT_PORT"
need_port epmd "$EPMD_PORT"; need_port rabbitmq "$RABBIT_DIST_PORT"
rmq_env=(env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$RMQ" LANG=C.UTF-8
  RABBITMQ_NODENAME=tier@localhost RABBITMQ_CONF_ENV_FILE=/dev/null
  RABBITMQ_CONFIG_FILE="$RMQ/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ/enabled_plugins"
  RABBITMQ_MNESIA_BASE="$RMQ/mnesia" RABBITMQ_LOG_BASE="$RMQ" RABBITMQ_LOGS=-
  RABBITMQ_DIST_PORT="$RABBIT_DIST_PORT" ERL_EPMD_PORT="$EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")
as_rabbitmq=(setpriv --reuid rabbitmq --regid rabbitmq --init-groups)
# Our own epmd in the foreground, so that it has a PID we recorded (erl would daemonize one).
pid_alive epmd || launch epmd "${as_rabbitmq[@]}" "${rmq_env[@]}" epmd -port "$EPMD_PORT" -address 127.0.0.1
pid_alive rabbitmq || launch rabbitmq "${as_rabbitmq[@]}" "${rmq_env[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server
wait_for rabbitmq 60 curl -sf --cacert "$SSL/ca.pem" -u cloudify:c10udify "https://127.0.0.1:$RABBIT_MGMT_PORT/api/overview"

# --- schema and configure_manager: first start only -----------------------------------------------
if [ ! -f "$STATE_DIR/.initialized" ]; then
  log "database migrations and configure_manager"
  (cd "$SRC/cloudify-manager/rest-service/migrations" && "$VENV/bin/alembic" upgrade head) >"$LOGS/migrations.log" 2>&1 \
    || { tail -n 30 "$LOGS/migrations.log" >&2; exit 1; }
  # The manager's own types (imported as cloudify/types/types.yaml) come from the file server.
  cp -r "$SRC/cloudify-manager/resources/rest-service/cloudify" "$FS_ROOT/"
  "$VENV/bin/python" - "$ETC/config.yaml" <<PY
import sys, yaml
ca = open("$SSL/ca.pem").read()
cfg = {
    "manager": {"hostname": "$MANAGER_NAME", "private_ip": "127.0.0.1", "ca_cert": ca,
                "internal_rest_port": $NGINX_PORT, "file_server_root": "$FS_ROOT",
                "file_server_url": "https://127.0.0.1:$NGINX_PORT/resources",
                "security": {"admin_username": "$ADMIN_USER", "admin_password": "$ADMIN_PASSWORD"}},
    "rabbitmq": {"username": "cloudify", "password": "c10udify", "ca_path": "$SSL/ca.pem",
                 "cluster_members": {"rabbitmq": {"networks": {"default": "127.0.0.1"}}}},
}
yaml.safe_dump(cfg, open(sys.argv[1], "w"))
PY
  "$VENV/bin/python" -m manager_rest.configure_manager -c "$ETC/config.yaml" >"$LOGS/configure.log" 2>&1 \
    || { tail -n 30 "$LOGS/configure.log" >&2; exit 1; }
  # configure_manager writes two hard-coded paths into the config table; point them into the state dir.
  psql_pg -d cloudify \
    -c "UPDATE config SET value = to_json('$LOGS/rest/cloudify-rest-service.log'::text) WHERE name = 'rest_service_log_path'" \
    -c "UPDATE config SET value = to_json('$OPT/maintenance'::text) WHERE name = 'maintenance_folder'"
  echo "$state_stamp" >"$STATE_DIR/.initialized"
fi
mkdir -p "$LOGS/rest"

# --- REST service (plain HTTP on loopback: what the provider and the tests talk to) ---------------
# Sync workers, so count them: a blueprint upload holds one until its upload workflow ends, and
# that workflow needs free workers to report back (through nginx). With 2 workers, two drivers
# uploading or creating at once deadlocked until the REST service's 120-try wait gave up.
need_port rest "$REST_PORT"
if ! pid_alive rest; then
  launch rest env MANAGER_REST_CONFIG_PATH="$ETC/cloudify-rest.conf" MANAGER_REST_SECURITY_CONFIG_PATH="$ETC/rest-security.conf" \
    "$VENV/bin/gunicorn" --workers "$REST_WORKERS" --timeout 300 --chdir / --bind "127.0.0.1:$REST_PORT" manager_rest.wsgi:app
fi
# Not /api/v3.1/ok: without Prometheus it answers 500 "FAIL" (it reports service health).
rest_up() { curl -sf -u "$ADMIN_USER:$ADMIN_PASSWORD" "$1/api/v3.1/version"; }
wait_for rest 60 rest_up "http://127.0.0.1:$REST_PORT"

# --- nginx: the TLS front mgmtworker talks to, with the three locations it needs (step 7) ---------
NGX="$STATE_DIR/nginx"
mkdir -p "$NGX/tmp"
cat >"$NGX/nginx.conf" <<EOF
daemon off;
user root;
worker_processes 1;
pid $RUN/nginx-master.pid;
error_log $LOGS/nginx.log warn;
events { worker_connections 256; }
http {
  access_log $LOGS/nginx-access.log;
  client_body_temp_path $NGX/tmp/body; proxy_temp_path $NGX/tmp/proxy;
  fastcgi_temp_path $NGX/tmp/fastcgi; uwsgi_temp_path $NGX/tmp/uwsgi; scgi_temp_path $NGX/tmp/scgi;
  default_type application/octet-stream;
  client_max_body_size 0;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $SSL/server.pem;
    ssl_certificate_key $SSL/server.key;
    proxy_read_timeout 600s;
    location /api/ { proxy_pass http://127.0.0.1:$REST_PORT; proxy_set_header Host \$host; }
    # Workdir sync of the script plugin (GET /resources/deployments/<tenant>/<dep>/?archive=True).
    location /resources/ { proxy_pass http://127.0.0.1:$REST_PORT/api/v3.1/file-server-proxy/; proxy_set_header Host \$host; }
    # File downloads answer with X-Accel-Redirect: /resources-local/...; without it uploads hang.
    location /resources-local/ { internal; alias $FS_ROOT/; }
  }
}
EOF
need_port nginx "$NGINX_PORT"
pid_alive nginx || launch nginx nginx -p "$NGX" -c "$NGX/nginx.conf" -e "$LOGS/nginx.log"
CURL_CA_BUNDLE="$SSL/ca.pem" wait_for nginx 20 rest_up "https://127.0.0.1:$NGINX_PORT"

# --- mgmtworker (runs the workflows) and amqp-postgres (stores their events) ----------------------
if ! pid_alive mgmtworker; then
  "$VENV/bin/python" -m manager_rest.configure_manager --create-admin-token "$ETC/admin_token" >>"$LOGS/configure.log" 2>&1 \
    || { tail -n 20 "$LOGS/configure.log" >&2; exit 1; }
  launch mgmtworker env MANAGER_REST_CONFIG_PATH="$ETC/cloudify-rest.conf" MANAGER_REST_SECURITY_CONFIG_PATH="$ETC/rest-security.conf" \
    REST_HOST=127.0.0.1 REST_PORT="$NGINX_PORT" REST_PROTOCOL=https LOCAL_REST_CERT_FILE="$SSL/ca.pem" \
    ADMIN_API_TOKEN="$(cat "$ETC/admin_token")" MANAGER_NAME="$MANAGER_NAME" AGENT_WORK_DIR="$STATE_DIR/mgmtworker" \
    MGMTWORKER_HOME="$STATE_DIR/mgmtworker" MANAGER_FILE_SERVER_ROOT="$FS_ROOT" CFY_RESOURCES_ROOT="$FS_ROOT" \
    CFY_EXEC_TEMP="$STATE_DIR/mgmtworker/tmp" MAX_WORKERS=10 MAX_OPERATION_WORKERS=10 \
    "$VENV/bin/python" -m mgmtworker.worker --queue cloudify.management
fi
mkdir -p "$STATE_DIR/mgmtworker/tmp"
if ! pid_alive amqp-postgres; then
  launch amqp-postgres env PYTHONPATH="$SRC/cloudify-manager/amqp-postgres" \
    MANAGER_REST_CONFIG_PATH="$ETC/cloudify-rest.conf" MANAGER_REST_SECURITY_CONFIG_PATH="$ETC/rest-security.conf" \
    "$VENV/bin/python" -m amqp_postgres.main --config "$ETC/cloudify-rest.conf" --logfile "$LOGS/amqp-postgres.log"
fi
sleep 1
for c in mgmtworker amqp-postgres; do
  pid_alive "$c" || { log "$c exited at once; last lines of $LOGS/$c.log:"; tail -n 30 "$LOGS/$c.log" >&2; exit 1; }
done
log "stack up in $(( $(date +%s) - T0 )) s; waiting for a workflow to run"
bash "$MANAGER_HERE/health.sh"
log "manager ready in $(( $(date +%s) - T0 )) s (state $STATE_DIR)"
