#!/usr/bin/env bash
# Installs Apache Flink 2.3.0 (jars only) into a cache outside the repo and
# compiles the benchmark jobs under bench/flink/src/ against it.
#
#   bench/flink/setup.sh            -> prints the path of the classpath file
#
# Cache layout (override the root with STROM_TESTBED_CACHE):
#   ~/.cache/strom-testbed/flink-2.3.0/lib/*.jar        Flink jars (from the
#       apache-flink-libraries wheel on PyPI, which ships flink-dist with the
#       MiniCluster, DataStream API, flink-connector-datagen and the RocksDB
#       state backend incl. its native library)
#   ~/.cache/strom-testbed/flink-jobs/<hash>/classes/    compiled jobs + resources/
#   ~/.cache/strom-testbed/flink-jobs/<hash>/classpath   one line, ':'-joined
# <hash> covers every *.java under src/ and every file under resources/ (paths and
# contents), this script, the Flink version and the javac version, so any change recompiles and an
# unchanged tree is reused (a warm run takes well under a second).
#
# Idempotent and safe on a fresh machine: everything is built in a temporary
# directory and moved into place atomically; concurrent runs serialise on a lock.
# Progress goes to stderr; stdout carries only the classpath file path.
set -euo pipefail

FLINK_VERSION=2.3.0
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC_DIR="$HERE/src"
# Copied as they are into the classes dir (e.g. META-INF/services registering table factories).
RES_DIR="$HERE/resources"
CACHE_ROOT="${STROM_TESTBED_CACHE:-$HOME/.cache/strom-testbed}"
FLINK_HOME_DIR="$CACHE_ROOT/flink-$FLINK_VERSION"
FLINK_LIB="$FLINK_HOME_DIR/lib"
JOBS_ROOT="$CACHE_ROOT/flink-jobs"

# Jars put on the job classpath (all of pyflink/lib is cached): the DataStream jobs need
# flink-dist alone; SqlRunner needs the table planner (which loads CEP classes), the file connector and the
# formats.
CP_JARS=(
  "flink-dist-$FLINK_VERSION.jar"
  "flink-table-api-java-uber-$FLINK_VERSION.jar"
  "flink-table-runtime-$FLINK_VERSION.jar"
  "flink-table-planner-loader-$FLINK_VERSION.jar"
  "flink-connector-files-$FLINK_VERSION.jar"
  "flink-csv-$FLINK_VERSION.jar"
  "flink-json-$FLINK_VERSION.jar"
  "flink-cep-$FLINK_VERSION.jar"
  "log4j-api-2.25.3.jar"
  "log4j-core-2.25.3.jar"
  "log4j-slf4j-impl-2.25.3.jar"
  "log4j-1.2-api-2.25.3.jar"
)

log() { echo "[flink-setup] $*" >&2; }
die() { echo "[flink-setup] ERROR: $*" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH. $2"; }
need java "Install a JDK 17 (e.g. apt-get install -y openjdk-17-jdk-headless)."
need javac "Install a JDK 17 (e.g. apt-get install -y openjdk-17-jdk-headless)."
need python3 "Python 3 with pip is needed to fetch the Flink jars from PyPI."
need sha256sum "coreutils is needed."

JAVA_MAJOR="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
[ -n "$JAVA_MAJOR" ] && [ "$JAVA_MAJOR" -ge 17 ] || die "Java >= 17 required (found: $(java -version 2>&1 | head -n1))."

mkdir -p "$CACHE_ROOT" "$JOBS_ROOT"

# Serialise concurrent setups (flock is in util-linux; skip locking without it).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE_ROOT/.flink-setup.lock"
  flock 9
fi

# ---------------------------------------------------------------- Flink jars
flink_ok() {
  [ -f "$FLINK_HOME_DIR/.complete" ] || return 1
  local j
  for j in "${CP_JARS[@]}"; do [ -s "$FLINK_LIB/$j" ] || return 1; done
}

if ! flink_ok; then
  log "Flink $FLINK_VERSION not cached; downloading apache-flink-libraries==$FLINK_VERSION from PyPI (~330 MB)..."
  python3 -m pip --version >/dev/null 2>&1 || die "pip is not available for python3 (try: apt-get install -y python3-pip)."
  TMP="$(mktemp -d "$CACHE_ROOT/.flink-dl.XXXXXX")"
  trap 'rm -rf "$TMP"' EXIT
  python3 -m pip download --quiet --no-deps --no-cache-dir --disable-pip-version-check \
      "apache-flink-libraries==$FLINK_VERSION" -d "$TMP/wheel" >&2 \
    || die "pip download of apache-flink-libraries==$FLINK_VERSION failed (is PyPI reachable?)."
  WHEEL="$(ls "$TMP"/wheel/apache_flink_libraries-"$FLINK_VERSION"-*.whl 2>/dev/null | head -n1)"
  [ -n "$WHEEL" ] || die "the downloaded wheel was not found in $TMP/wheel."
  log "extracting pyflink/lib/*.jar ..."
  python3 - "$WHEEL" "$TMP/home/lib" <<'PY' || die "extracting the jars from the wheel failed."
import os, shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
n = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        if name.startswith("pyflink/lib/") and name.endswith(".jar"):
            with z.open(info) as src, open(os.path.join(out, os.path.basename(name)), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            n += 1
if n == 0:
    sys.exit("no jars under pyflink/lib/ in " + wheel)
PY
  for j in "${CP_JARS[@]}"; do
    [ -s "$TMP/home/lib/$j" ] || die "expected jar $j is missing from the wheel."
  done
  # Sanity check: the classes the jobs rely on are really in flink-dist.
  python3 - "$TMP/home/lib/flink-dist-$FLINK_VERSION.jar" <<'PY' || die "flink-dist lacks a required class (see above)."
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
for c in ["org/apache/flink/connector/datagen/source/DataGeneratorSource.class",
          "org/apache/flink/runtime/minicluster/MiniCluster.class",
          "org/apache/flink/state/rocksdb/EmbeddedRocksDBStateBackend.class",
          "librocksdbjni-linux64.so"]:
    if c not in names:
        sys.exit("missing in flink-dist: " + c)
PY
  echo "apache-flink-libraries==$FLINK_VERSION (PyPI wheel: $(basename "$WHEEL"))" > "$TMP/home/SOURCE"
  touch "$TMP/home/.complete"
  rm -rf "$FLINK_HOME_DIR"
  mv "$TMP/home" "$FLINK_HOME_DIR"
  rm -rf "$TMP"
  trap - EXIT
  log "Flink jars cached in $FLINK_LIB"
fi

FLINK_CP=""
for j in "${CP_JARS[@]}"; do FLINK_CP="${FLINK_CP:+$FLINK_CP:}$FLINK_LIB/$j"; done

# ---------------------------------------------------------------- compile jobs
[ -d "$SRC_DIR" ] || die "no sources directory $SRC_DIR."
mapfile -t SOURCES < <(cd "$SRC_DIR" && find . -name '*.java' -type f | LC_ALL=C sort)
[ "${#SOURCES[@]}" -gt 0 ] || die "no *.java files under $SRC_DIR."
RESOURCES=()
if [ -d "$RES_DIR" ]; then
  mapfile -t RESOURCES < <(cd "$RES_DIR" && find . -type f | LC_ALL=C sort)
fi

HASH="$(
  {
    echo "flink=$FLINK_VERSION"
    javac -version 2>&1
    sha256sum "$HERE/setup.sh" | cut -d' ' -f1
    (cd "$SRC_DIR" && sha256sum "${SOURCES[@]}")
    if [ "${#RESOURCES[@]}" -gt 0 ]; then (cd "$RES_DIR" && sha256sum "${RESOURCES[@]}"); fi
  } | sha256sum | cut -c1-16
)"
OUT="$JOBS_ROOT/$HASH"

if [ ! -f "$OUT/.complete" ]; then
  log "compiling ${#SOURCES[@]} Java source file(s) -> $OUT"
  TMPC="$(mktemp -d "$JOBS_ROOT/.build.XXXXXX")"
  trap 'rm -rf "$TMPC"' EXIT
  mkdir -p "$TMPC/classes"
  (cd "$SRC_DIR" && javac --release 17 -nowarn -encoding UTF-8 -Xlint:-options \
      -cp "$FLINK_CP" -d "$TMPC/classes" "${SOURCES[@]}") >&2 \
    || die "javac failed (see errors above)."
  if [ "${#RESOURCES[@]}" -gt 0 ]; then
    (cd "$RES_DIR" && cp --parents "${RESOURCES[@]}" "$TMPC/classes/") \
      || die "copying resources from $RES_DIR failed."
  fi
  # Logging: WARN and above to stderr (stdout is reserved for the JSON result).
  # Override with -Dstrom.log.level=INFO (run.sh: STROM_FLINK_LOG_LEVEL=INFO).
  cat > "$TMPC/classes/log4j2.properties" <<'EOF'
rootLogger.level = ${sys:strom.log.level:-WARN}
rootLogger.appenderRef.console.ref = ConsoleAppender
appender.console.name = ConsoleAppender
appender.console.type = CONSOLE
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss,SSS} %-5p %-40c{1.} - %m%n
# Benign start-up warnings of a local MiniCluster (no Kerberos tokens, no log file for the UI).
logger.tokens.name = org.apache.flink.runtime.security.token
logger.tokens.level = ERROR
logger.webutils.name = org.apache.flink.runtime.webmonitor.WebMonitorUtils
logger.webutils.level = ERROR
EOF
  echo "$OUT/classes:$FLINK_CP" > "$TMPC/classpath"
  touch "$TMPC/.complete"
  rm -rf "$OUT"
  mv "$TMPC" "$OUT"
  trap - EXIT
fi

echo "$OUT/classpath"
