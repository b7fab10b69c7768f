# shellcheck shell=bash source-path=SCRIPTDIR
# Shared by tests/testbed/up, down and smoke. Sourced, not run.
#
# A run dir holds everything one running test bed owns:
#   .strom-testbed   marker: down removes a directory only if it carries it
#   pids/NN-<name>.pid  one per component, NN = 01 (etcd), 02 (kube-apiserver), ...; stopped last first
#   logs/<name>.log  each component's stdout and stderr
#   pki/             CA, serving and client certificates, service-account key pair
#   kubeconfig       admin (system:masters) kubeconfig for tests, kubectl and helm
#   bin-dir          the directory the components' binaries were started from
#   env              `source`-able: KUBECONFIG, STROM_TESTBED_BIN, PATH

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

RUN="${STROM_TESTBED_RUN:-/tmp/strom-testbed}"
CACHE="${STROM_TESTBED_CACHE:-$HOME/.cache/strom-testbed}"
BIN="${STROM_TESTBED_BIN:-$CACHE/k8s-$K8S_VERSION/bin}"

log() { printf 'testbed: %s\n' "$*" >&2; }

# pid_is NAME PID: the process PID is alive and is our binary NAME (guards against pid reuse).
# Compares with the bin dir the running test bed was started from (run dir's bin-dir file).
pid_is() {
  local exe bin
  bin="$(cat "$RUN/bin-dir" 2>/dev/null || printf '%s' "$BIN")"
  kill -0 "$2" 2>/dev/null || return 1
  exe="$(readlink "/proc/$2/exe" 2>/dev/null)" || return 1
  [ "${exe% (deleted)}" = "$bin/$1" ]
}

# Stops every component listed in $RUN/pids, newest first: SIGTERM, then SIGKILL after a grace
# period. Leaves the run dir in place.
stop_all() {
  local files f name pid i
  [ -d "$RUN/pids" ] || return 0
  files=("$RUN"/pids/*.pid)
  for ((i = ${#files[@]} - 1; i >= 0; i--)); do
    f="${files[i]}"
    [ -e "$f" ] || continue
    name="${f##*/}"; name="${name#*-}"; name="${name%.pid}"
    pid="$(cat "$f")"
    if pid_is "$name" "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 100); do pid_is "$name" "$pid" || break; sleep 0.1; done
      if pid_is "$name" "$pid"; then
        log "$name ($pid) did not stop in 10 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    rm -f "$f"
  done
}

# Removes the run dir, but only one that a test bed created.
remove_run_dir() {
  if [ -d "$RUN" ]; then
    if [ -f "$RUN/.strom-testbed" ]; then
      rm -rf "$RUN"
    else
      log "not removing $RUN: it has no .strom-testbed marker"
      return 1
    fi
  fi
}
