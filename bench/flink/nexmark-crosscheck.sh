#!/usr/bin/env bash
# Cross-checks the two Nexmark generators (docs/nexmark.md): the Java twin
# (bench/flink/src/dev/strom/bench/nexmark/, run via its Dump main) and the Rust one
# (worker/src/connectors/nexmark/, dumped by its ignored test write_crosscheck_dump).
#
#   bench/flink/nexmark-crosscheck.sh                      the standard cases (below)
#   bench/flink/nexmark-crosscheck.sh SEED N [EXTRA [EPS]] one case (Dump's arguments)
#   bench/flink/nexmark-crosscheck.sh --update-testdata    rewrite the committed Java dumps
#
# Every case dumps the first N persons, auctions and bids from both sides and diffs them; the
# committed worker/src/connectors/nexmark/testdata/java_seed42*.csv (read by the Rust unit test
# rust_matches_the_java_twin) are also compared against a fresh Java dump. Exit status 0 iff
# everything agrees.
#
# Environment: NEXMARK_CARGO_ARGS overrides how the Rust test is reached (default
# "--manifest-path <repo>/Cargo.toml -p strom-worker --lib"); NEXMARK_RUST_TEST overrides its
# path (default connectors::nexmark::tests::write_crosscheck_dump).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SRC="$HERE/src/dev/strom/bench/nexmark"
TESTDATA="$ROOT/worker/src/connectors/nexmark/testdata"
CARGO_ARGS="${NEXMARK_CARGO_ARGS:---manifest-path $ROOT/Cargo.toml -p strom-worker --lib}"
RUST_TEST="${NEXMARK_RUST_TEST:-connectors::nexmark::tests::write_crosscheck_dump}"

# The committed dumps: "file|Dump arguments".
COMMITTED=(
  "java_seed42.csv|42 300"
  "java_seed42_extra32_eps1000.csv|42 50 32 1000"
)
# Extra cases checked Java-vs-Rust only (odd rates, large seed, extra padding, deeper ids).
EXTRA_CASES=(
  "7 3000 0 1000"
  "18446744073709551615 400 100 7"
  "123456789 2000 5 10000000"
)

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "nexmark-crosscheck: compiling the Java twin" >&2
mkdir -p "$TMP/classes"
javac -d "$TMP/classes" "$SRC"/*.java

java_dump() { java -cp "$TMP/classes" dev.strom.bench.nexmark.Dump "$@"; }

if [ "${1:-}" = "--update-testdata" ]; then
  for entry in "${COMMITTED[@]}"; do
    file="${entry%%|*}"
    # shellcheck disable=SC2086
    java_dump ${entry#*|} > "$TESTDATA/$file"
    echo "nexmark-crosscheck: wrote $TESTDATA/$file" >&2
  done
  exit 0
fi

rust_dump() {
  # shellcheck disable=SC2086
  NEXMARK_DUMP_ARGS="$*" NEXMARK_DUMP_OUT="$TMP/rust.csv" \
    cargo test -q $CARGO_ARGS "$RUST_TEST" -- --ignored --exact >"$TMP/cargo.log" 2>&1 \
    || { cat "$TMP/cargo.log" >&2; echo "nexmark-crosscheck: the Rust dump failed" >&2; exit 1; }
  cat "$TMP/rust.csv"
}

status=0
check_case() {
  echo "nexmark-crosscheck: case [$*]" >&2
  java_dump "$@" > "$TMP/java.csv"
  rust_dump "$@" > "$TMP/rust-case.csv"
  if diff -u --label java --label rust "$TMP/java.csv" "$TMP/rust-case.csv" | head -40; then
    echo "  java == rust ($(wc -l < "$TMP/java.csv") lines)" >&2
  else
    echo "  MISMATCH between java and rust" >&2
    status=1
  fi
}

if [ $# -gt 0 ]; then
  check_case "$@"
else
  for entry in "${COMMITTED[@]}"; do
    file="${entry%%|*}"
    # shellcheck disable=SC2086
    java_dump ${entry#*|} > "$TMP/committed.csv"
    if cmp -s "$TMP/committed.csv" "$TESTDATA/$file"; then
      echo "nexmark-crosscheck: committed $file == fresh java" >&2
    else
      echo "nexmark-crosscheck: committed $file differs from fresh java (--update-testdata?)" >&2
      status=1
    fi
    # shellcheck disable=SC2086
    check_case ${entry#*|}
  done
  for args in "${EXTRA_CASES[@]}"; do
    # shellcheck disable=SC2086
    check_case $args
  done
fi

if [ "$status" -eq 0 ]; then
  echo "nexmark-crosscheck: OK" >&2
else
  echo "nexmark-crosscheck: FAILED" >&2
fi
exit "$status"
