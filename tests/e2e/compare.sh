#!/usr/bin/env bash
# Prints two e2e runs' timeline summaries side by side as a Markdown table (issue 19: the same
# phases against the simulator and against the real Cloudify Manager).
#
#   tests/e2e/compare.sh SIMULATOR.tsv MANAGER.tsv
#
# Each file is the harness's --summary output (run.sh writes $E2E_WORK/summary.tsv): phase,
# seconds, pending -> Running, gRPC calls, server-side gRPC seconds, provider share in %.
set -euo pipefail
[ $# -eq 2 ] && [ -f "$1" ] && [ -f "$2" ] || { echo "usage: compare.sh SIMULATOR.tsv MANAGER.tsv" >&2; exit 2; }
echo "| phase | duration sim / manager | pending -> Running sim / manager | gRPC calls sim / manager | server-side gRPC time sim / manager | provider share sim / manager |"
echo "|---|---:|---|---:|---:|---:|"
awk -F'\t' '
  NR == FNR { sim[$1] = $0; order[++n] = $1; next }
  { mgr[$1] = $0; if (!($1 in sim)) order[++n] = $1 }
  END {
    for (i = 1; i <= n; i++) {
      p = order[i]
      split(p in sim ? sim[p] : p "\t-\t-\t-\t-\t-", a, "\t")
      split(p in mgr ? mgr[p] : p "\t-\t-\t-\t-\t-", b, "\t")
      printf "| %s | %s s / %s s | %s / %s | %s / %s | %s s / %s s | %s %% / %s %% |\n", p, a[2], b[2], a[3], b[3], a[4], b[4], a[5], b[5], a[6], b[6]
    }
  }' "$1" "$2"
