#!/usr/bin/env bash
# Installs what the local manager stack needs, idempotently: Debian packages (skipped when dpkg
# says installed), the two pinned source trees unpacked into the cache (after checking their
# sha256 against the sources README) and one venv built from requirements.lock plus those trees
# (real-cloudify-manager.md, step 2). A second run checks stamps and returns in a few seconds.
# With CLOUDIFY_MANAGER_URL set (an existing manager) it only makes a small client venv.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PYTHON="${PYTHON:-python3}"
PIP_FLAGS=(--quiet --disable-pip-version-check --no-input)

if external_manager; then
  cv="$CACHE_DIR/client-venv"
  if ! "$cv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('cloudify-common') != '7.0.5')" 2>/dev/null; then
    log "creating $cv (cloudify-common 7.0.5) for the existing manager at $CLOUDIFY_MANAGER_URL"
    rm -rf "$cv"; mkdir -p "$CACHE_DIR"
    "$PYTHON" -m venv "$cv"
    "$cv/bin/pip" install "${PIP_FLAGS[@]}" cloudify-common==7.0.5 pyyaml
  fi
  exit 0
fi
require_sources

# --- Debian packages -------------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  # The package services must not start: the tier runs private instances (policy-rc.d on CI
  # machines already says so; this makes it true elsewhere too).
  export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v "$PG_BIN/initdb" >/dev/null || die "$PG_BIN/initdb not found after installing postgresql-15"

# --- sources, checked against the README's table ---------------------------------------------
expected_sha() { # file -> the sha256 the sources README lists for it
  grep -F "\`$1\`" "$SOURCES_DIR/README.md" | grep -oE '`[0-9a-f]{64}`' | tr -d '`' | head -n1
}
mkdir -p "$SRC"
for tarball in cloudify-manager-cdd961dd.tar.gz cloudify-agent-a3fbcaaf.tar.gz; do
  want="$(expected_sha "$tarball")"
  [ -n "$want" ] || die "$SOURCES_DIR/README.md lists no sha256 for $tarball"
  stamp="$SRC/.$tarball.sha256"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then continue; fi
  got="$(sha256sum "$SOURCES_DIR/$tarball" | cut -d' ' -f1)"
  [ "$got" = "$want" ] || die "sha256 of $SOURCES_DIR/$tarball is $got, the README says $want"
  top="${tarball%-*}"   # cloudify-manager / cloudify-agent
  rm -rf "${SRC:?}/$top"
  tar -xzf "$SOURCES_DIR/$tarball" -C "$SRC"
  [ -d "$SRC/$top" ] || die "$tarball did not unpack into $top/"
  echo "$want" >"$stamp"
  rm -f "$VENV/.tier-stamp"   # new sources: the editable installs must be redone
done

# --- the venv --------------------------------------------------------------------------------
# The stamp covers everything the venv is made from, so a changed lock or Python rebuilds it: the
# lock's content, not its path (two checkouts sharing MANAGER_CACHE_DIR each rebuilt the venv under
# the running manager).
want_stamp="$({ "$PYTHON" --version; sha256sum <"$SOURCES_DIR/requirements.lock"; cat "$SRC"/.*.sha256; } | sha256sum | cut -d' ' -f1)"
rebuild=0
if [ "$(cat "$VENV/.tier-stamp" 2>/dev/null)" != "$want_stamp" ]; then
  rebuild=1
  if [ -d "$VENV" ] && bash "$(dirname "${BASH_SOURCE[0]}")/status.sh" >/dev/null 2>&1; then
    # Never pull the venv from under a running stack (its workers import from it): keep it.
    log "the venv at $VENV was made from other sources or another lock, but the running manager uses it: kept (stop.sh, then install again, rebuilds it)"
    rebuild=0
  fi
fi
if [ "$rebuild" = 1 ]; then
  log "building $VENV (pip, about 2 minutes on a cold cache)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  pip=("$VENV/bin/pip" install "${PIP_FLAGS[@]}")
  "${pip[@]}" -r "$SOURCES_DIR/requirements.lock"
  # The distributions themselves, without their pins (rest-service's requirements cannot resolve
  # from PyPI); configure_manager needs the cloudify-rest-service distribution to exist.
  "${pip[@]}" --no-deps --no-build-isolation -e "$SRC/cloudify-manager/rest-service" -e "$SRC/cloudify-manager/mgmtworker"
  "${pip[@]}" --no-deps --no-build-isolation "$SRC/cloudify-agent"
  "${pip[@]}" appdirs click fabric==2.7.1
  # fabric pulls cffi 2.x; the REST service requires cffi<2.
  "${pip[@]}" cffi==1.16.0 pynacl==1.5.0
  "$VENV/bin/python" -c "import manager_rest.server, mgmtworker.worker, cloudify_agent, cloudify_rest_client" \
    || die "the venv at $VENV does not import the manager's modules"
  echo "$want_stamp" >"$VENV/.tier-stamp"
fi
log "installed (venv $VENV, sources $SRC)"
