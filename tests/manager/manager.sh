#!/usr/bin/env bash
# The manager tier's control command (tests/manager/README.md):
#   manager.sh install   Debian packages, sources, venv (idempotent; seconds when done)
#   manager.sh start     the local stack under $MANAGER_STATE_DIR, then the health-wait
#   manager.sh stop      by recorded PIDs and their process groups (idempotent)
#   manager.sh status    which component runs, RSS, whether REST answers (exit 1 if not all)
#   manager.sh env       shell exports to reach the manager: eval "$(manager.sh env)"
#   manager.sh health    the health-wait alone
#   manager.sh smoke     the smoke driver against the running manager
# With CLOUDIFY_MANAGER_URL (+ credentials, tenant) every command uses that manager instead and
# install/start/stop do nothing to it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"
cmd="${1:-}"; shift || true
case "$cmd" in
  install) exec bash "$HERE/install.sh" "$@" ;;
  start) exec bash "$HERE/start.sh" "$@" ;;
  stop) exec bash "$HERE/stop.sh" "$@" ;;
  status) exec bash "$HERE/status.sh" "$@" ;;
  health) exec bash "$HERE/health.sh" "$@" ;;
  env)
    external_manager || require_sources
    manager_exports
    external_manager || echo "# stop it with: MANAGER_STATE_DIR=$STATE_DIR bash $HERE/manager.sh stop"
    ;;
  smoke)
    eval "$(manager_exports)"
    cd "$HERE" && exec "$(client_python)" smoke.py "$@" ;;
  *) die "usage: manager.sh install|start|stop|status|env|health|smoke (got '${cmd}')" ;;
esac
