# Shared set-up for .ci/run, the README's commands and bench/run: caches outside the clone and the
# tools the project needs, installed when missing. Sourced, not run.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strom/target}"
export STROM_TESTBED_CACHE="${STROM_TESTBED_CACHE:-$HOME/.cache/strom-testbed}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export CARGO_INCREMENTAL=0
mkdir -p "$CARGO_TARGET_DIR" "$STROM_TESTBED_CACHE"

apt_install() {
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  fi
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      apt_install cargo rustc
    fi
  fi
  if ! cargo fmt --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy
  fi
  # RocksDB: the worker links Debian's librocksdb (see .cargo/config.toml); bindgen needs libclang.
  if [ ! -e /usr/lib/x86_64-linux-gnu/librocksdb.so ] || ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1; then
    apt_install librocksdb-dev libclang-dev clang
  fi
}

ensure_java() {
  if ! command -v javac >/dev/null 2>&1; then
    apt_install openjdk-17-jdk-headless
  fi
  if ! command -v python3 >/dev/null 2>&1; then
    apt_install python3 python3-pip
  fi
}

# What tests/testbed needs beyond Rust and Java: Go (builds the Kubernetes control plane, etcd and
# helm; build-control-plane.sh says so if the one found is too old), Maven (fetches Kafka's jars),
# openssl (certificates), curl (readiness checks), python3 (free ports).
ensure_testbed_tools() {
  local missing=()
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v setsid >/dev/null 2>&1 || missing+=(util-linux)
  if ! command -v go >/dev/null 2>&1; then
    if [ -x /usr/local/go/bin/go ]; then
      export PATH="/usr/local/go/bin:$PATH"
    else
      missing+=(golang-go)
    fi
  fi
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}
