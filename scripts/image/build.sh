#!/usr/bin/env bash
# Builds the provider's OCI image without a container engine (issue 21): buildah from Debian's
# packages, vfs storage, no RUN step (so no runtime or isolation is needed), written as an OCI
# image layout. The image is what the chart's default `image.repository:appVersion` names.
#
#   scripts/image/build.sh                 release build, layout in target/image/oci (tag = appVersion)
#   IMAGE_BIN=path/to/autoscaler-cloudify scripts/image/build.sh   package a binary built elsewhere
#   IMAGE_PROFILE=dev scripts/image/build.sh                      a quicker debug build (tests only)
#
# Contents: the binary built with --no-default-features (no embedded Cloudify simulator), the
# shared libraries it needs taken from Debian's libc6 and libgcc-s1 packages (this machine's
# release of Debian, the one the binary was linked on), their copyright files, Mozilla's CA bundle
# from Debian's ca-certificates (for an https Cloudify Manager with a public CA), and /etc/passwd
# and /etc/group naming the non-root user 65532 the chart runs as. OCI labels: source, version,
# revision, licenses, description, title. A release builds the same way on an amd64 and an arm64
# runner and pushes both under one manifest list (docs/operations.md, "The image").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CHART=$ROOT/deploy/helm/autoscaler-cloudify
OUT=${IMAGE_OUT:-$ROOT/target/image}
PROFILE=${IMAGE_PROFILE:-release}
# Where a release publishes the image: the chart's default image.repository.
REPOSITORY=$(sed -n 's/^  repository: *//p' "$CHART/values.yaml" | head -n1)
SOURCE=${IMAGE_SOURCE:-https://github.com/autoscaler-cloudify/autoscaler-cloudify}
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$CHART/Chart.yaml")
CRATE_VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n1)
LICENSE=$(sed -n 's/^license = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n1)
DESCRIPTION=$(sed -n 's/^description = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n1)
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)

say() { echo "image: $*"; }
die() { echo "image: $*" >&2; exit 1; }

[ "$VERSION" = "$CRATE_VERSION" ] || die "Chart.yaml appVersion $VERSION differs from Cargo.toml version $CRATE_VERSION"
for tool in buildah apt-get dpkg-deb ldd; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install buildah)"
done

# ---- the binary
BIN=${IMAGE_BIN:-}
if [ -z "$BIN" ]; then
  dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
  BIN=$ROOT/target/image-build/$dir/autoscaler-cloudify
  say "cargo build --profile $PROFILE --no-default-features (no simulator)"
  # A target dir of its own: the feature set differs from the test builds', which would otherwise
  # rebuild each other's copy of the crate on every switch.
  CARGO_TARGET_DIR=$ROOT/target/image-build cargo build --locked --profile "$PROFILE" \
    --no-default-features --bin autoscaler-cloudify --manifest-path "$ROOT/Cargo.toml"
fi
[ -x "$BIN" ] || die "$BIN is not an executable"
if "$BIN" simulator --help >/dev/null 2>&1; then
  die "$BIN has the simulator built in (build it with --no-default-features)"
fi

# ---- the root filesystem
WORK=$OUT/work
rm -rf "$WORK" && mkdir -p "$WORK/rootfs" "$WORK/debs"
ROOTFS=$WORK/rootfs
install -m 0755 "$BIN" "$ROOTFS/autoscaler-cloudify"
strip --strip-unneeded "$ROOTFS/autoscaler-cloudify" 2>/dev/null || true
# gcc-12-base: libgcc-s1's copyright file (its doc directory is a link to gcc-12-base's).
DEBS=(libc6 libgcc-s1 gcc-12-base ca-certificates)
# _apt cannot write into a directory under /root or a private workspace: download as root.
( cd "$WORK/debs" && apt-get -o APT::Sandbox::User=root download "${DEBS[@]}" >/dev/null 2>&1 ) \
  || die "apt-get download ${DEBS[*]} failed (run apt-get update)"
for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$WORK/pkgroot"; done
# pkgfile PATH: the file PATH names inside the extracted packages, following symlinks there (an
# absolute link target is resolved inside the packages, never on this machine).
pkgfile() {
  local p=$1 i t
  for i in 1 2 3 4 5 6 7 8; do
    for t in "$p" "/usr$p" "${p#/usr}"; do
      if [ -L "$WORK/pkgroot$t" ]; then
        local l; l=$(readlink "$WORK/pkgroot$t")
        case $l in /*) p=$l ;; *) p=$(dirname "$t")/$l ;; esac
        continue 2
      fi
      [ -f "$WORK/pkgroot$t" ] && { echo "$WORK/pkgroot$t"; return 0; }
    done
    return 1
  done
  return 1
}
# Every library the dynamic linker loads for the binary, at the path the binary asks for, plus the
# dynamic linker itself (PT_INTERP, e.g. /lib64/ld-linux-x86-64.so.2).
interp=$(readelf -l "$BIN" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
mapfile -t libs < <({ ldd "$BIN" | awk '/=> \// {print $3}'; [ -z "$interp" ] || echo "$interp"; } | sort -u)
for lib in "${libs[@]}"; do
  src=$(pkgfile "$lib") || die "$lib (needed by the binary) is in none of libc6, libgcc-s1"
  mkdir -p "$ROOTFS$(dirname "$lib")"
  cp "$src" "$ROOTFS$lib"
done
for pkg in libc6 gcc-12-base ca-certificates; do
  mkdir -p "$ROOTFS/usr/share/doc/$pkg"
  cp "$WORK/pkgroot/usr/share/doc/$pkg/copyright" "$ROOTFS/usr/share/doc/$pkg/"
done
# ca-certificates ships the certificates; its postinst would concatenate them into the bundle.
mkdir -p "$ROOTFS/etc/ssl/certs"
find "$WORK/pkgroot/usr/share/ca-certificates" -name '*.crt' | sort | xargs cat >"$ROOTFS/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$ROOTFS/etc/group"
mkdir -p "$ROOTFS/tmp" && chmod 1777 "$ROOTFS/tmp"

# ---- the image (buildah, no daemon: vfs storage under $OUT, nothing in /var/lib/containers)
B=(buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs)
export BUILDAH_ISOLATION=chroot
ctr=$("${B[@]}" from --name "autoscaler-cloudify-build-$$" scratch)
trap '"${B[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
"${B[@]}" copy "$ctr" "$ROOTFS/" / >/dev/null
"${B[@]}" config \
  --os linux --arch "$(dpkg --print-architecture)" \
  --user 65532:65532 --workingdir / \
  --entrypoint '["/autoscaler-cloudify","serve"]' --cmd '' \
  --port 8086/tcp --port 8087/tcp \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --label "org.opencontainers.image.title=autoscaler-cloudify" \
  --label "org.opencontainers.image.description=$DESCRIPTION" \
  --label "org.opencontainers.image.source=$SOURCE" \
  --label "org.opencontainers.image.version=$VERSION" \
  --label "org.opencontainers.image.revision=$REVISION" \
  --label "org.opencontainers.image.licenses=$LICENSE" \
  --label "org.opencontainers.image.ref.name=$REPOSITORY:$VERSION" \
  "$ctr"
rm -rf "$OUT/oci"
"${B[@]}" commit --quiet --format oci --rm "$ctr" "oci:$OUT/oci:$VERSION" >/dev/null
trap - EXIT
rm -rf "$WORK/storage" "$WORK/run" "$WORK/debs" "$WORK/pkgroot"
say "built $REPOSITORY:$VERSION ($(dpkg --print-architecture)) as an OCI layout: $OUT/oci (tag $VERSION)"
say "push: skopeo copy oci:$OUT/oci:$VERSION docker://$REPOSITORY:$VERSION"
