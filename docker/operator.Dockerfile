# syntax=docker/dockerfile:1
# The Strom operator image: the `strom-operator` binary on distroless (glibc, no shell), as user
# 65532. Build from the repository root (the build context is the whole workspace):
#   docker build -f docker/operator.Dockerfile -t ghcr.io/strom-dev/strom-operator:0.1.0 .
# Settings come from STROM_OPERATOR_* variables (the Helm chart sets them); /metrics and /healthz
# are served on STROM_OPERATOR_METRICS_ADDRESS.

ARG RUST_IMAGE=rust:1-bookworm

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# The whole workspace: cargo resolves every member's manifest even when building one package.
COPY . .
# The operator links nothing native beyond glibc: kube uses rustls with aws-lc-rs, whose C sources
# aws-lc-sys compiles with the Rust image's gcc; no OpenSSL, so distroless/cc runs it. (Were OpenSSL
# ever linked, add libssl-dev here and pick a runtime image with libssl3.)
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p strom-operator --bin strom-operator \
 && install -D -m 0755 target/release/strom-operator /out/strom-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/strom-operator /usr/local/bin/strom-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/strom-operator"]
