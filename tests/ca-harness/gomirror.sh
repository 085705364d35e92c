#!/usr/bin/env bash
# Go module mirror wiring for the Go test tiers (tests/ca-conformance, tests/e2e). Source it and
# call go_mirror_setup REPO_ROOT.
#
# Cluster Autoscaler's modules (k8s.io/autoscaler/cluster-autoscaler and .../apis) are not served by
# every Go module proxy, so a mirror in the GOPROXY file layout is put in front of GOPROXY when
#   - GO_MODULE_MIRROR is set (a directory, or a file://, http:// or https:// URL), or else
#   - ../shared/goproxy exists next to the checkout (resolved from the repo root, not the cwd;
#     that is where CI has it).
# Only then GONOSUMDB gets k8s.io/autoscaler/cluster-autoscaler: the checksum database does not
# know these versions, and the committed go.sum still pins them (builds use -mod=readonly).
#
# Sets: GO_MIRROR (the URL put in front, empty when none) and exports GOPROXY/GONOSUMDB when used.

GO_MIRROR_CA_MODULE="k8s.io/autoscaler/cluster-autoscaler"

# go_mirror_setup REPO_ROOT: returns 1 (with one line on stderr) only when GO_MODULE_MIRROR names a
# directory that does not exist.
go_mirror_setup() {
  local repo="$1" m="${GO_MODULE_MIRROR:-}"
  GO_MIRROR=""
  GO_MIRROR_DIR=""
  if [ -n "$m" ]; then
    case "$m" in
      file://*) GO_MIRROR="$m"; GO_MIRROR_DIR="${m#file://}" ;;
      http://* | https://*) GO_MIRROR="$m" ;;
      *)
        if [ ! -d "$m" ]; then
          echo "GO_MODULE_MIRROR=$m is not a directory (nor a file://, http:// or https:// URL)" >&2
          return 1
        fi
        GO_MIRROR_DIR="$(cd "$m" && pwd)"; GO_MIRROR="file://$GO_MIRROR_DIR" ;;
    esac
  elif [ -d "$repo/../shared/goproxy" ]; then
    GO_MIRROR_DIR="$(cd "$repo/../shared/goproxy" && pwd)"
    GO_MIRROR="file://$GO_MIRROR_DIR"
  fi
  export GO_MIRROR GO_MIRROR_DIR
  [ -n "$GO_MIRROR" ] || return 0
  local base; base="$(go env GOPROXY)"
  case ",$base," in
    *",$GO_MIRROR,"*) ;; # already in front (a nested tier sourced this too)
    *) export GOPROXY="$GO_MIRROR,$base" ;;
  esac
  local nosum; nosum="$(go env GONOSUMDB)"
  case ",$nosum," in
    *",$GO_MIRROR_CA_MODULE,"*) ;;
    *) export GONOSUMDB="${nosum:+$nosum,}$GO_MIRROR_CA_MODULE" ;;
  esac
}

# go_mirror_describe: one phrase saying where CA's modules come from.
go_mirror_describe() {
  if [ -n "${GO_MIRROR:-}" ]; then echo "module mirror $GO_MIRROR in front of $(go env GOPROXY | cut -d, -f2-)"
  else echo "GOPROXY=$(go env GOPROXY) (no module mirror: GO_MODULE_MIRROR unset and no ../shared/goproxy)"; fi
}

# go_mirror_check_sums GO_SUM: when the mirror is a directory with a README listing h1 hashes, every
# CA module line of GO_SUM must carry the README's hash (the mirror and go.sum agree on the bytes).
go_mirror_check_sums() {
  local sum="$1" readme="${GO_MIRROR_DIR:-}/README.md" line mod ver h want bad=0
  [ -n "${GO_MIRROR_DIR:-}" ] && [ -f "$readme" ] || return 0
  while read -r mod ver h; do
    case "$ver" in */go.mod) continue ;; esac
    want="$(awk -F'|' -v m="$mod" -v v="$ver" '{gsub(/ /,"",$2); gsub(/ /,"",$3); gsub(/ /,"",$5)} $2==m && $3==v {print $5}' "$readme")"
    [ -n "$want" ] || continue
    if [ "$want" != "$h" ]; then
      echo "$sum: $mod $ver has $h, the mirror README says $want" >&2; bad=1
    fi
  done < <(grep -E "^$GO_MIRROR_CA_MODULE(/apis)? " "$sum")
  return $bad
}

# go_mirror_require TIER DIR: downloads CA's module(s) required by the Go module in DIR (a no-op when
# the module cache has them). On failure prints ONE line saying what is missing and returns 1.
go_mirror_require() {
  local tier="$1" dir="$2" mods out
  mods="$(cd "$dir" && awk -v m="$GO_MIRROR_CA_MODULE" '($1==m || $1==m"/apis") && $2 ~ /^v/ {print $1"@"$2}' go.mod)"
  [ -n "$mods" ] || return 0
  # shellcheck disable=SC2086
  if ! out="$(cd "$dir" && go mod download $mods 2>&1)"; then
    echo "$tier: cannot get $(echo $mods | tr '\n' ' ')from $(go_mirror_describe): $(printf '%s' "$out" | grep -v '^go: downloading' | head -n 1 | cut -c1-200)" >&2
    return 1
  fi
}
