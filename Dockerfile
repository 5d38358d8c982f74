# syntax=docker/dockerfile:1
#
# One image per binary of the workspace, from one file:
#
#   docker build --build-arg BIN=order-service     -t saga-platform/order-service:dev .
#   docker build --build-arg BIN=payment-service   -t saga-platform/payment-service:dev .
#   docker build --build-arg BIN=inventory-service -t saga-platform/inventory-service:dev .
#   docker build --build-arg BIN=notification-service -t saga-platform/notification-service:dev .
#   docker build --build-arg BIN=saga-operator     -t saga-platform/saga-operator:dev .
#   docker build --build-arg BIN=sagactl           -t saga-platform/sagactl:dev .
#
# scripts/kind-up.sh builds the first five. Needs BuildKit (the default builder
# of current Docker releases) for the cache mounts.
#
# Build stage: the full Rust toolchain; the cargo registry and target/ are
# BuildKit cache mounts, so rebuilding a second binary reuses the compiled
# dependencies. Runtime stage: distroless "cc" (glibc + libgcc, CA
# certificates, no shell, no package manager), user nonroot (65532).
# No crate of the workspace links OpenSSL (lapin without default features,
# reqwest without TLS, kube with rustls), so nothing else is needed at run time.

ARG RUST_VERSION=1.95
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG BIN
RUN test -n "$BIN" || { echo "error: pass --build-arg BIN=<binary name>" >&2; exit 1; }
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin "$BIN" \
 && install -D -m 0755 "target/release/$BIN" "/out/app"

FROM ${RUNTIME_IMAGE}
ARG BIN
LABEL org.opencontainers.image.title="${BIN}" \
      org.opencontainers.image.source="saga-platform" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/app /usr/local/bin/app
# The numeric id, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/app"]
