#!/usr/bin/env bash
# Prints each component of the local stack: running or not, PID, resident memory; then whether
# REST answers. Exit 0 when every component runs and REST answers, else 1.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if external_manager; then
  # Not /api/v3.1/ok: it answers 500 whenever one manager service (Prometheus) is inactive.
  if [ -n "${CLOUDIFY_MANAGER_TOKEN:-}" ]; then auth=(-H "Authentication-Token: $CLOUDIFY_MANAGER_TOKEN")
  else auth=(-u "$CLOUDIFY_MANAGER_USER:$CLOUDIFY_MANAGER_PASSWORD"); fi
  code="$(curl -s -o /dev/null -w '%{http_code}' ${CLOUDIFY_MANAGER_CA_CERT:+--cacert "$CLOUDIFY_MANAGER_CA_CERT"} "${auth[@]}" "$CLOUDIFY_MANAGER_URL/api/v3.1/version")"
  echo "existing manager $CLOUDIFY_MANAGER_URL: GET /api/v3.1/version with auth -> $code"; [ "$code" = 200 ]; exit
fi
RUN="$STATE_DIR/run"
ok=0; total_kb=0
group_rss_kb() { ps -o rss= -g "$1" 2>/dev/null | awk '{s+=$1} END {print s+0}'; }
for c in postgres epmd rabbitmq rest nginx mgmtworker amqp-postgres; do
  pid="$(cat "$RUN/$c.pid" 2>/dev/null)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kb="$(group_rss_kb "$pid")"; total_kb=$((total_kb + kb))
    printf '%-14s running  pid %-8s rss %5d MiB\n' "$c" "$pid" $((kb / 1024))
  else
    printf '%-14s stopped\n' "$c"; ok=1
  fi
done
printf '%-14s %d MiB\n' "total rss" $((total_kb / 1024))
code="$(curl -s -o /dev/null -w '%{http_code}' -u "$ADMIN_USER:$ADMIN_PASSWORD" -H "Tenant: $DEFAULT_TENANT" \
  "http://127.0.0.1:$REST_PORT/api/v3.1/deployments?_size=1")"
echo "REST http://127.0.0.1:$REST_PORT (GET /deployments with auth): $code"
[ "$code" = 200 ] || ok=1
echo "state: $STATE_DIR"
exit $ok
