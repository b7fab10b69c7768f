#!/usr/bin/env bash
# Runs one benchmark job on a local Flink 2.3 MiniCluster (in this JVM).
#
#   bench/flink/run.sh JOB --events N --parallelism P [--state heap|rocksdb] [job options]
#
# JOB: a class in dev.strom.bench (WindowedCount, NexmarkQ0, NexmarkQ1, NexmarkQ2, NexmarkQ5,
# NexmarkQ7), a fully qualified class name, or an alias: windowed-count, q0..q7 / nexmark-q0..q7.
# Stdout: one JSON result line. Stderr: Flink warnings/errors.
#
# Calls setup.sh first (a no-op taking well under a second once the cache is warm).
# Environment knobs:
#   STROM_FLINK_HEAP        max heap (default 4g)
#   STROM_FLINK_GC          GC flag (default -XX:+UseParallelGC: throughput collector, the best
#                           fit for a run-to-completion throughput benchmark; G1 is Flink's
#                           cluster default, use STROM_FLINK_GC=-XX:+UseG1GC to compare)
#   STROM_FLINK_JAVA_OPTS   extra JVM options (appended)
#   STROM_FLINK_LOG_LEVEL   log4j root level for stderr (default WARN)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ $# -lt 1 ]; then
  echo "usage: $0 JOB --events N [--parallelism P] [--state heap|rocksdb] [job options]" >&2
  exit 2
fi
JOB="$1"
shift

case "$JOB" in
  windowed-count|windowed_count|windowedcount) CLASS=WindowedCount ;;
  sql) CLASS=SqlRunner ;;
  q[0-9]|nexmark-q[0-9]|nexmark_q[0-9]) CLASS="NexmarkQ${JOB: -1}" ;;
  *) CLASS="$JOB" ;;
esac
case "$CLASS" in
  *.*) ;;
  *) CLASS="dev.strom.bench.$CLASS" ;;
esac

CP_FILE="$("$HERE/setup.sh")" || { echo "run.sh: setup.sh failed" >&2; exit 1; }
CP="$(cat "$CP_FILE")"

# The module opens Flink itself passes on Java 17 (from Flink's default env.java.opts.all).
JDK_OPENS=(
  --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED
  --add-opens=java.base/java.lang=ALL-UNNAMED
  --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED
  --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.text=ALL-UNNAMED
  --add-opens=java.base/java.time=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED
)

# Flink unpacks its RPC system's jar (about 23 MB) into java.io.tmpdir at every start and does not
# always remove it: each run gets a directory of its own, removed when it ends.
RUN_TMP="$(mktemp -d "${TMPDIR:-/tmp}/strom-flink.XXXXXX")"
trap 'rm -rf "$RUN_TMP"' EXIT

# shellcheck disable=SC2086
java \
  -Xmx"${STROM_FLINK_HEAP:-4g}" \
  -Djava.io.tmpdir="$RUN_TMP" \
  ${STROM_FLINK_GC:--XX:+UseParallelGC} \
  "${JDK_OPENS[@]}" \
  -Dstrom.log.level="${STROM_FLINK_LOG_LEVEL:-WARN}" \
  ${STROM_FLINK_JAVA_OPTS:-} \
  -cp "$CP" "$CLASS" "$@"
