# syntax=docker/dockerfile:1
#
# autoscaler-cloudify: a fully static binary on distroless/static, running as non-root.
#
#   docker build -t autoscaler-cloudify:0.1.0 .
#
# Stage 1 builds for x86_64-unknown-linux-musl. The TLS stack is rustls with the aws-lc-rs crypto
# provider (tonic tls-aws-lc, reqwest rustls): aws-lc-sys compiles C (and assembly) code, so the
# builder needs a C compiler for the musl target (musl-tools provides musl-gcc) plus cmake, which
# aws-lc-sys uses when its cc-based build does not cover the target. protoc comes from the
# protoc-bin-vendored crate, so no protobuf-compiler package is needed.
FROM rust:1.95-bookworm AS builder

ARG TARGET=x86_64-unknown-linux-musl

RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools cmake \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${TARGET}"

# cc-rs (used by aws-lc-sys and any other C build script) picks the musl cross compiler from here.
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=musl-gcc \
    CARGO_PROFILE_RELEASE_STRIP=symbols

WORKDIR /src
# .dockerignore keeps target/, .git, deploy and the non-Rust test tiers out of the context.
COPY . .

# Cache mounts keep the registry and target dir between builds (BuildKit). The last command fails
# the build if anything dynamic slipped in (the runtime image has no libc).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "${TARGET}" --bin autoscaler-cloudify \
 && cp "target/${TARGET}/release/autoscaler-cloudify" /autoscaler-cloudify \
 && ! (ldd /autoscaler-cloudify 2>&1 | grep -q '=>')

# Stage 2: distroless static (no shell, no libc; CA certificates in /etc/ssl/certs for rustls).
# Fallback if distroless is not allowed: `FROM debian:bookworm-slim` + `USER 65532:65532`
# (install ca-certificates there when Cloudify uses a public CA).
FROM gcr.io/distroless/static:nonroot

COPY --from=builder /autoscaler-cloudify /autoscaler-cloudify

# nonroot = uid/gid 65532, the ids the Helm chart's securityContext uses.
USER nonroot:nonroot

# 8086: gRPC (CA externalgrpc, mTLS). 8087: plaintext HTTP /healthz /readyz /metrics.
EXPOSE 8086 8087

ENTRYPOINT ["/autoscaler-cloudify", "serve"]
