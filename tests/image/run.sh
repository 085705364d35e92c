#!/usr/bin/env bash
# Image tier (issue 21): build the provider's OCI image with scripts/image/build.sh (buildah, no
# daemon) and check what a cluster would pull: the tag is the chart's appVersion, the OCI labels
# are there, it runs as 65532, and the binary runs from the image's own root filesystem (unpacked
# from the OCI layout with umoci, entered with chroot) without the simulator.
#
#   bash tests/image/run.sh          (IMAGE_PROFILE=dev for a quicker debug build; default release)
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${IMAGE_OUT:-$ROOT/target/image}
CHART=$ROOT/deploy/helm/autoscaler-cloudify
passed=0; failed=0
ok() { passed=$((passed + 1)); echo "PASS  $*"; }
ko() { failed=$((failed + 1)); echo "FAIL  $*"; }
check() { local name=$1 log; shift; log=$(mktemp); if "$@" >"$log" 2>&1; then ok "$name"; else ko "$name"; tail -n 20 "$log" | sed 's/^/      /'; fi; rm -f "$log"; }

missing=()
for tool in buildah umoci skopeo; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "image tier: installing ${missing[*]} (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends buildah umoci skopeo >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends buildah umoci skopeo >/dev/null 2>&1; } \
    || { ko "apt-get install buildah umoci skopeo"; echo "$passed passed, $failed failed"; exit 1; }
fi

VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$CHART/Chart.yaml")
REPOSITORY=$(sed -n 's/^  repository: *//p' "$CHART/values.yaml" | head -n1)
t0=$(date +%s)
check "scripts/image/build.sh (buildah, vfs, no daemon)" env IMAGE_OUT="$OUT" bash "$ROOT/scripts/image/build.sh"
echo "image tier: build took $(($(date +%s) - t0)) s"
[ -f "$OUT/oci/index.json" ] || { echo "$passed passed, $failed failed"; exit 1; }

config=$(skopeo inspect --config "oci:$OUT/oci:$VERSION" 2>&1)
labels_ok() {
  python3 - "$VERSION" "$REPOSITORY" <<PY
import json, sys
c = json.loads('''$config''')
version, repo = sys.argv[1], sys.argv[2]
cfg = c["config"]
labels = cfg.get("Labels") or {}
want = {
  "org.opencontainers.image.version": version,
  "org.opencontainers.image.licenses": "Apache-2.0",
  "org.opencontainers.image.ref.name": f"{repo}:{version}",
}
bad = [f"{k}={labels.get(k)!r}, want {v!r}" for k, v in want.items() if labels.get(k) != v]
for k in ("source", "revision", "description", "title"):
    if not labels.get("org.opencontainers.image." + k):
        bad.append(f"org.opencontainers.image.{k} missing")
if cfg.get("User") != "65532:65532": bad.append(f"User {cfg.get('User')!r}")
if cfg.get("Entrypoint") != ["/autoscaler-cloudify", "serve"]: bad.append(f"Entrypoint {cfg.get('Entrypoint')!r}")
if set(cfg.get("ExposedPorts", {})) != {"8086/tcp", "8087/tcp"}: bad.append(f"ExposedPorts {cfg.get('ExposedPorts')!r}")
print("\n".join(bad) or "labels: " + json.dumps(labels, indent=1))
sys.exit(1 if bad else 0)
PY
}
check "OCI config: labels (source, version, revision, licenses, description), user 65532, entrypoint, ports" labels_ok
check "tag is the chart's appVersion ($VERSION)" skopeo inspect "oci:$OUT/oci:$VERSION"

B=$OUT/bundle
rm -rf "$B"
check "umoci unpack the OCI layout" umoci unpack --rootless --image "$OUT/oci:$VERSION" "$B"
R=$B/rootfs
in_image() { chroot --userspec=65532:65532 "$R" /autoscaler-cloudify "$@"; }
check "autoscaler-cloudify --version from the image's rootfs (chroot, uid 65532) says $VERSION" \
  bash -c "out=\$(chroot --userspec=65532:65532 '$R' /autoscaler-cloudify --version) && echo \"\$out\" && [ \"\$out\" = 'autoscaler-cloudify $VERSION' ]"
check "autoscaler-cloudify check --help from the image's rootfs" in_image check --help
check "serve --help from the image's rootfs (the ENTRYPOINT's subcommand)" in_image serve --help
check "no simulator in the image (simulator and demo are not subcommands)" \
  bash -c "! chroot --userspec=65532:65532 '$R' /autoscaler-cloudify simulator --help && ! chroot --userspec=65532:65532 '$R' /autoscaler-cloudify demo --help"
check "no shell or package manager in the image" bash -c "[ ! -e '$R/bin/sh' ] && [ ! -e '$R/usr/bin/apt' ]"
check "CA bundle for an https Cloudify Manager" bash -c "grep -c 'BEGIN CERTIFICATE' '$R/etc/ssl/certs/ca-certificates.crt' | awk '\$1 > 50 {ok=1} END {exit !ok}'"
du -sh "$R" | sed 's/^/image tier: rootfs size /'
rm -rf "$B"

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
