# shellcheck shell=bash source-path=SCRIPTDIR
# Shared by tests/testbed/up, down and smoke. Sourced, not run.
#
# A run dir holds everything one running test bed owns:
#   .strom-testbed   marker: down removes a directory only if it carries it
#   pids/NN-<name>.pid  one per component ("PID STARTTIME"), NN = start order; stopped last first
#   logs/<name>.log  each component's stdout and stderr
#   pki/             CA, serving and client certificates, service-account key pair
#   kubeconfig       admin (system:masters) kubeconfig for tests, kubectl and helm
#   env              `source`-able: KUBECONFIG, STROM_TESTBED_BIN, PATH

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

RUN="${STROM_TESTBED_RUN:-/tmp/strom-testbed}"
CACHE="${STROM_TESTBED_CACHE:-$HOME/.cache/strom-testbed}"
BIN="${STROM_TESTBED_BIN:-$CACHE/k8s-$K8S_VERSION/bin}"

log() { printf 'testbed: %s\n' "$*" >&2; }

# A process's start time in clock ticks since boot (/proc/PID/stat field 22): with the pid it names
# one process for good, even after the pid is reused.
start_time() { awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null; }

# pid_alive PIDFILE: the process the pid file names ("PID STARTTIME") is still that process and
# has not exited (a zombie, waiting for its parent or init to reap it, has).
pid_alive() {
  local pid st stat fields
  read -r pid st <"$1" 2>/dev/null || return 1
  [ -n "$pid" ] || return 1
  stat="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null)" || return 1
  read -r -a fields <<<"$stat"
  [ "${fields[0]:-}" != Z ] && [ "${fields[19]:-}" = "$st" ]
}

# Components are numbered in start order; down stops them newest first.
next_component_number() {
  local n=0 f
  for f in "$RUN"/pids/*.pid; do [ -e "$f" ] && n=$((n + 1)); done
  printf '%02d' $((n + 1))
}

# start NAME COMMAND ARGS...: runs COMMAND in the background in its own process group, logging to
# logs/NAME.log, and records it in pids/NN-NAME.pid. Sets `current` for failure reports.
start() {
  local name="$1" pid; shift
  current="$name"
  setsid "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null &
  pid=$!
  # setsid(1) execs the command in the same process (it forks only when already a group leader).
  printf '%s %s\n' "$pid" "$(start_time "$pid")" >"$RUN/pids/$(next_component_number)-$name.pid"
  log "started $name (pid $pid)"
}

# component_pid NAME: the pid of a started component.
component_pid() { local f; for f in "$RUN"/pids/*-"$1".pid; do awk '{print $1}' "$f"; done; }

# wait_for NAME DESCRIPTION COMMAND...: retries COMMAND until it succeeds, NAME dies, or
# STROM_TESTBED_TIMEOUT seconds (default 90) pass.
wait_for() {
  local name="$1" what="$2" pidfile deadline=$((SECONDS + ${STROM_TESTBED_TIMEOUT:-90}))
  shift 2
  pidfile="$(printf '%s\n' "$RUN"/pids/*-"$name".pid)"
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$pidfile"; then log "$name exited while waiting for $what"; return 1; fi
    if ((SECONDS >= deadline)); then
      log "$name: no $what after ${STROM_TESTBED_TIMEOUT:-90} s"; return 1
    fi
    sleep 0.25
  done
}

# free_ports N: N distinct free TCP ports on 127.0.0.1, space-separated (held open together while
# the kernel hands them out, then released).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# tail_log NAME: the last 40 lines of a component's log, to stderr.
tail_log() {
  if [ -f "$RUN/logs/$1.log" ]; then
    log "last lines of $RUN/logs/$1.log:"
    tail -n 40 "$RUN/logs/$1.log" >&2
  fi
}

# Stops every component listed in $RUN/pids, newest first: SIGTERM to its process group, then
# SIGKILL after 10 s. Leaves the run dir in place.
stop_all() {
  local files f name pid i
  [ -d "$RUN/pids" ] || return 0
  files=("$RUN"/pids/*.pid)
  for ((i = ${#files[@]} - 1; i >= 0; i--)); do
    f="${files[i]}"
    [ -e "$f" ] || continue
    name="${f##*/}"; name="${name#*-}"; name="${name%.pid}"
    pid="$(awk '{print $1}' "$f")"
    if pid_alive "$f"; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 100); do pid_alive "$f" || break; sleep 0.1; done
      if pid_alive "$f"; then
        log "$name ($pid) did not stop in 10 s; killing it"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    rm -f "$f"
  done
}

# Pod addresses: a test bed's Nodes serve 127.<octet>.<node>.0/24. Two test beds on one machine (a
# developer's and CI's) must not hand out the same addresses, so each claims an octet of its own
# under $OCTETS (a directory per octet naming the run dir that holds it; a claim whose run dir is
# gone is stale and taken over).
OCTETS="${TMPDIR:-/tmp}/strom-testbed-octets"

claim_octet() {
  local b owner
  mkdir -p "$OCTETS"
  for b in $(seq 1 250); do
    if mkdir "$OCTETS/$b" 2>/dev/null; then
      printf '%s\n' "$RUN" >"$OCTETS/$b/run"; printf '%s\n' "$b"; return 0
    fi
    owner="$(cat "$OCTETS/$b/run" 2>/dev/null || true)"
    if [ "$owner" = "$RUN" ] || [ ! -d "$owner/pids" ]; then
      printf '%s\n' "$RUN" >"$OCTETS/$b/run"; printf '%s\n' "$b"; return 0
    fi
  done
  log "no free octet for pod addresses under $OCTETS"; return 1
}

release_octet() {
  local d
  for d in "$OCTETS"/*/; do
    [ "$(cat "$d/run" 2>/dev/null)" = "$RUN" ] && rm -rf "$d"
  done
  return 0
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
