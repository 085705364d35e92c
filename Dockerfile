# syntax=docker/dockerfile:1
#
# autoscaler-cloudify: a static binary on distroless/static, running as non-root, for amd64 and
# arm64. The release image is published by a release job (docs/operations.md, "The image"):
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     -t ghcr.io/autoscaler-cloudify/autoscaler-cloudify:0.1.0 --push .
#
# CI builds the same image contents without a container engine (scripts/image/build.sh: buildah,
# Debian packages) and runs its binary from the image's root filesystem (tests/image/run.sh).
#
# Each platform's stage runs natively (a runner of that architecture, or buildx's emulation): the
# musl C toolchain of Debian's musl-tools is for the host architecture only. The TLS stack is
# rustls with aws-lc-rs, whose aws-lc-sys compiles C (and assembly), hence musl-gcc and cmake.
# protoc comes from the protoc-bin-vendored crate. --no-default-features leaves the embedded
# Cloudify simulator (`demo`, `simulator`) out of the production binary.
FROM rust:1.95-bookworm AS builder

ARG TARGETARCH
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac >/rust-target \
 && apt-get update \
 && apt-get install -y --no-install-recommends musl-tools cmake \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(cat /rust-target)"

ENV CARGO_PROFILE_RELEASE_STRIP=symbols

WORKDIR /src
# .dockerignore keeps target/, .git, deploy and the non-Rust test tiers out of the context.
COPY . .

# cc-rs (used by aws-lc-sys) and the linker pick the musl compiler from these variables. The last
# command fails the build if anything dynamic slipped in (the runtime image has no libc).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=target-${TARGETARCH} \
    T="$(cat /rust-target)" && TU="$(echo "$T" | tr 'a-z-' 'A-Z_')" \
 && export "CC_$(echo "$T" | tr '-' '_')=musl-gcc" "CARGO_TARGET_${TU}_LINKER=musl-gcc" \
 && cargo build --release --locked --no-default-features --target "$T" --bin autoscaler-cloudify \
 && cp "target/$T/release/autoscaler-cloudify" /autoscaler-cloudify \
 && ! (ldd /autoscaler-cloudify 2>&1 | grep -q '=>') \
 && ! /autoscaler-cloudify simulator --help >/dev/null 2>&1

# Stage 2: distroless static (no shell, no libc; CA certificates in /etc/ssl/certs for rustls).
FROM gcr.io/distroless/static:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="autoscaler-cloudify" \
      org.opencontainers.image.description="Kubernetes Cluster Autoscaler externalgrpc provider backed by Cloudify scaling groups" \
      org.opencontainers.image.source="https://github.com/autoscaler-cloudify/autoscaler-cloudify" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /autoscaler-cloudify /autoscaler-cloudify

# nonroot = uid/gid 65532, the ids the Helm chart's securityContext uses.
USER 65532:65532

# 8086: gRPC (CA externalgrpc, mTLS). 8087: plaintext HTTP /healthz /readyz /metrics.
EXPOSE 8086 8087

ENTRYPOINT ["/autoscaler-cloudify", "serve"]
