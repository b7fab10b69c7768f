# syntax=docker/dockerfile:1
# The Strom worker image: the `strom` binary (JobManager, TaskManager and the embedded local mode)
# that FlinkJobs name in `spec.image`. Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t ghcr.io/strom-dev/strom:0.1.0 .
# The operator runs it as `strom jobmanager` / `strom taskmanager`; by hand: `docker run IMAGE jobs`.

ARG RUST_IMAGE=rust:1-bookworm

FROM ${RUST_IMAGE} AS builder
# RocksDB: link Debian's librocksdb 7.8 (the version the rocksdb 0.20 crate binds) instead of
# compiling the bundled C++ (see .cargo/config.toml); bindgen needs libclang for its headers.
# The cluster protocol is compiled with protox (pure Rust), so no protoc is needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends librocksdb-dev libclang-dev clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace: cargo resolves every member's manifest even when building one package.
COPY . .
# .cargo/config.toml points ROCKSDB_LIB_DIR at x86_64's lib dir; the variable set here wins (cargo's
# [env] does not override the environment), so arm64 builds find their own.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    ROCKSDB_LIB_DIR="/usr/lib/$(gcc -print-multiarch)" \
    cargo build --release --locked -p strom-worker --bin strom \
 && install -D -m 0755 target/release/strom /out/strom

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends librocksdb7.8 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 strom \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin strom
COPY --from=builder /out/strom /usr/local/bin/strom
USER 65532:65532
WORKDIR /tmp
# Ports are whatever the configuration sets (restAddress, rpcAddress: docs/cluster.md).
ENTRYPOINT ["/usr/local/bin/strom"]
