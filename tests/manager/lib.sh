# Settings and helpers shared by tests/manager/*.sh (sourced, not run). Every path and port has an
# environment override so that a CI machine, a developer and a second stack can coexist.
# shellcheck shell=bash

MANAGER_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MANAGER_ROOT="$(cd "$MANAGER_HERE/../.." && pwd)"

# Where the pinned sources (two tarballs, requirements.lock, README with their sha256) live.
# CI lays shared/ next to the checkout, hence the default.
SOURCES_DIR="${CLOUDIFY_MANAGER_SOURCES:-$MANAGER_ROOT/../shared/cloudify-manager}"
# The venv and the unpacked sources: expensive to make, cheap to reuse; may be machine-wide.
CACHE_DIR="${MANAGER_CACHE_DIR:-$MANAGER_HERE/.cache}"
VENV="$CACHE_DIR/venv"
SRC="$CACHE_DIR/src"
# Everything a running stack writes (databases, logs, PIDs, certificates, config).
STATE_DIR="${MANAGER_STATE_DIR:-$CACHE_DIR/state}"

# Ports. 5671 (AMQPS) and 15671 (RabbitMQ management, https) are fixed: the manager's code
# hard-codes them (cloudify.constants.BROKER_PORT_SSL, manager_rest.amqp_manager.
# RABBITMQ_MANAGEMENT_PORT, amqp_postgres.main.BROKER_PORT_SSL). The others move.
PG_PORT="${MANAGER_PG_PORT:-55432}"
REST_PORT="${MANAGER_REST_PORT:-58100}"
NGINX_PORT="${MANAGER_NGINX_PORT:-53333}"
RABBIT_DIST_PORT="${MANAGER_RABBIT_DIST_PORT:-55672}"
EPMD_PORT="${MANAGER_EPMD_PORT:-54369}"
REST_WORKERS="${MANAGER_REST_WORKERS:-4}"   # gunicorn sync workers (start.sh says why 4)
AMQP_PORT=5671
RABBIT_MGMT_PORT=15671

ADMIN_USER="${MANAGER_ADMIN_USER:-admin}"
ADMIN_PASSWORD="${MANAGER_ADMIN_PASSWORD:-admin}"
DEFAULT_TENANT=default_tenant
# The tier's second tenant (created through REST by the smoke setup).
SECOND_TENANT="${MANAGER_SECOND_TENANT:-tier_tenant_b}"

PG_BIN=/usr/lib/postgresql/15/bin
APT_PACKAGES=(postgresql-15 rabbitmq-server nginx-light openssl)

log() { echo "manager: $*" >&2; }
die() { echo "manager: $*" >&2; exit 1; }

# An existing manager given by the environment (e.g. the official image): install/start/stop
# are skipped. Returns 0 when one is configured; dies with one line when it is half-configured.
external_manager() {
  # The local stack's own exports carry MANAGER_TIER_LOCAL=1: they do not make it "existing".
  [ -n "${CLOUDIFY_MANAGER_URL:-}" ] && [ "${MANAGER_TIER_LOCAL:-}" != 1 ] || return 1
  if [ -z "${CLOUDIFY_MANAGER_TOKEN:-}" ] && { [ -z "${CLOUDIFY_MANAGER_USER:-}" ] || [ -z "${CLOUDIFY_MANAGER_PASSWORD:-}" ]; }; then
    die "CLOUDIFY_MANAGER_URL is set but credentials are missing: set CLOUDIFY_MANAGER_USER and CLOUDIFY_MANAGER_PASSWORD (or CLOUDIFY_MANAGER_TOKEN), and CLOUDIFY_MANAGER_TENANT (default default_tenant)"
  fi
  return 0
}

# The one-line refusal when there is neither a sources directory nor an existing manager.
require_sources() {
  local f missing=()
  for f in README.md requirements.lock cloudify-manager-cdd961dd.tar.gz cloudify-agent-a3fbcaaf.tar.gz; do
    [ -f "$SOURCES_DIR/$f" ] || missing+=("$f")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  die "no Cloudify Manager: $SOURCES_DIR lacks ${missing[*]}; set CLOUDIFY_MANAGER_SOURCES to the pinned sources directory (shared/cloudify-manager), or CLOUDIFY_MANAGER_URL with CLOUDIFY_MANAGER_USER/CLOUDIFY_MANAGER_PASSWORD (or CLOUDIFY_MANAGER_TOKEN) and CLOUDIFY_MANAGER_TENANT for an existing manager"
}

# The Python that runs the tier's drivers: the manager's venv, or for an external manager a small
# venv with only the official client.
client_python() {
  if external_manager; then echo "$CACHE_DIR/client-venv/bin/python"; else echo "$VENV/bin/python"; fi
}

# Shell exports that reach the manager (printed by `manager.sh env`, read by the drivers).
manager_exports() {
  if external_manager; then
    printf 'export CLOUDIFY_MANAGER_URL=%q\n' "$CLOUDIFY_MANAGER_URL"
    [ -n "${CLOUDIFY_MANAGER_USER:-}" ] && printf 'export CLOUDIFY_MANAGER_USER=%q\n' "$CLOUDIFY_MANAGER_USER"
    [ -n "${CLOUDIFY_MANAGER_PASSWORD:-}" ] && printf 'export CLOUDIFY_MANAGER_PASSWORD=%q\n' "$CLOUDIFY_MANAGER_PASSWORD"
    [ -n "${CLOUDIFY_MANAGER_TOKEN:-}" ] && printf 'export CLOUDIFY_MANAGER_TOKEN=%q\n' "$CLOUDIFY_MANAGER_TOKEN"
    printf 'export CLOUDIFY_MANAGER_TENANT=%q\n' "${CLOUDIFY_MANAGER_TENANT:-default_tenant}"
    [ -n "${CLOUDIFY_MANAGER_CA_CERT:-}" ] && printf 'export CLOUDIFY_MANAGER_CA_CERT=%q\n' "$CLOUDIFY_MANAGER_CA_CERT"
    return 0
  fi
  cat <<EOS
export CLOUDIFY_MANAGER_URL=http://127.0.0.1:$REST_PORT
export CLOUDIFY_MANAGER_HTTPS_URL=https://127.0.0.1:$NGINX_PORT
export CLOUDIFY_MANAGER_CA_CERT=$STATE_DIR/ssl/ca.pem
export CLOUDIFY_MANAGER_USER=$ADMIN_USER
export CLOUDIFY_MANAGER_PASSWORD=$ADMIN_PASSWORD
export CLOUDIFY_MANAGER_TENANT=$DEFAULT_TENANT
export MANAGER_STATE_DIR=$STATE_DIR
export MANAGER_FAULT_DIR=$STATE_DIR/faults
export MANAGER_TIER_LOCAL=1
EOS
}
