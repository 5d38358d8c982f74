# Saga Platform images.
#
# Every image of the workspace from one file, one compile: the `build` stage
# compiles the five binaries in a single `cargo build`, and each image is a
# final stage named after its binary, selected with --target:
#
#   docker build --target saga-operator        -t saga-platform/saga-operator:dev .
#   docker build --target order-service        -t saga-platform/order-service:dev .
#   docker build --target payment-service      -t saga-platform/payment-service:dev .
#   docker build --target inventory-service    -t saga-platform/inventory-service:dev .
#   docker build --target notification-service -t saga-platform/notification-service:dev .
#   docker build --target sagactl              -t saga-platform/sagactl:dev .   # optional
#
# scripts/images.sh builds the first five (and makes the base images first
# where they cannot be pulled). Needs BuildKit (DOCKER_BUILDKIT=1 with Docker
# 20.10; the default builder since 23.0) for the cache mounts; the built-in
# frontend is enough (no `# syntax=` line: that one would fetch a frontend
# image from a registry).
#
# Why one build stage for all five rather than --build-arg BIN=...: BuildKit
# caches the `build` stage by its inputs, so the first --target compiles the
# workspace once and the other four reuse that stage as is; one cargo
# invocation also compiles the shared dependencies (kube, sqlx, lapin, axum...)
# once, with full parallelism. sagactl has its own stage, built only when
# asked for.
#
# Build stage: the Rust toolchain; the cargo registry and target/ are BuildKit
# cache mounts, so a rebuild after a change recompiles only what changed.
# Binaries are stripped (strip --strip-all: debug line tables and the symbol
# table; the release profile keeps line tables for local builds): with only
# --strip-debug order-service's image was 42.4 MB, over our 40 MB goal; now
# 37.0 MB. Panic messages keep their file:line; backtraces lose names. Runtime stage: distroless
# "cc" (glibc + libgcc, CA certificates, no shell, no package manager), user
# nonroot (65532). No crate of the workspace links OpenSSL (rustls
# everywhere), so nothing else is needed at run time.

ARG RUST_VERSION=1.95
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin saga-operator --bin order-service \
        --bin payment-service --bin inventory-service --bin notification-service \
 && mkdir -p /out \
 && for b in saga-operator order-service payment-service inventory-service notification-service; do \
        strip --strip-all -o "/out/$b" "target/release/$b" || exit 1; \
    done

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build-sagactl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin sagactl \
 && mkdir -p /out && strip --strip-all -o /out/sagactl target/release/sagactl

FROM ${RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.source="saga-platform" \
      org.opencontainers.image.licenses="Apache-2.0"
# The numeric id, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532

FROM runtime AS saga-operator
LABEL org.opencontainers.image.title="saga-operator"
COPY --from=build /out/saga-operator /usr/local/bin/saga-operator
ENTRYPOINT ["/usr/local/bin/saga-operator"]

FROM runtime AS order-service
LABEL org.opencontainers.image.title="order-service"
COPY --from=build /out/order-service /usr/local/bin/order-service
ENTRYPOINT ["/usr/local/bin/order-service"]

FROM runtime AS payment-service
LABEL org.opencontainers.image.title="payment-service"
COPY --from=build /out/payment-service /usr/local/bin/payment-service
ENTRYPOINT ["/usr/local/bin/payment-service"]

FROM runtime AS inventory-service
LABEL org.opencontainers.image.title="inventory-service"
COPY --from=build /out/inventory-service /usr/local/bin/inventory-service
ENTRYPOINT ["/usr/local/bin/inventory-service"]

FROM runtime AS notification-service
LABEL org.opencontainers.image.title="notification-service"
COPY --from=build /out/notification-service /usr/local/bin/notification-service
ENTRYPOINT ["/usr/local/bin/notification-service"]

FROM runtime AS sagactl
LABEL org.opencontainers.image.title="sagactl"
COPY --from=build-sagactl /out/sagactl /usr/local/bin/sagactl
ENTRYPOINT ["/usr/local/bin/sagactl"]

# `docker build .` without --target lands here: say what to pass (this stage
# does not depend on the build, so nothing is compiled for nothing).
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS no-target
RUN echo "error: pass --target <binary>: saga-operator, order-service, payment-service," \
         "inventory-service, notification-service or sagactl (see the top of ./Dockerfile)" >&2 \
 && exit 1
