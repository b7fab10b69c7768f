# shellcheck shell=bash
# An S3 server for the test bed: s3s-fs, plain HTTP on 127.0.0.1, path-style addressing, one access
# key. Objects are plain files under $RUN/s3/data, so they outlive a restart of the server (tests take
# S3 away mid-checkpoint with tests/testbed/s3ctl). Sourced by up and s3ctl after lib.sh; defines
# functions and runs nothing.
#
#   s3_install   builds s3s-fs into $CACHE/s3s-fs-<version>/bin, once (2 to 4 min on 2 cores)
#   s3_start     starts it on a free port, waits until it answers, writes $RUN/s3/cmd (the exact
#                command, for s3ctl) and appends STROM_TESTBED_S3_{ENDPOINT,ACCESS_KEY,SECRET_KEY,
#                REGION,DATA} to $RUN/env
#   s3_launch    (re)starts the server from $RUN/s3/cmd and waits until it answers
#   s3_stop      stops it (SIGTERM to its process group, SIGKILL after 10 s); keeps its data

S3S_FS_DIR="$CACHE/s3s-fs-$S3S_FS_VERSION"
S3S_FS="$S3S_FS_DIR/bin/s3s-fs"

# `cargo install --locked` from the crate registry into $S3S_FS_DIR, with its own target dir there,
# removed afterwards (only the 10 MB binary stays). The lock keeps two runs from building at once;
# cargo's own output goes to stderr.
s3_install() {
  [ -x "$S3S_FS" ] && return 0
  mkdir -p "$S3S_FS_DIR"
  (
    flock 9
    [ -x "$S3S_FS" ] && exit 0
    log "building s3s-fs $S3S_FS_VERSION into $S3S_FS_DIR (a few minutes, once)"
    rm -rf "$S3S_FS_DIR/build"
    # From the cache dir, so no project's .cargo/config applies.
    cd "$S3S_FS_DIR" || exit
    CARGO_TARGET_DIR="$S3S_FS_DIR/build" cargo install --locked --quiet --root "$S3S_FS_DIR" \
      --features binary "s3s-fs@$S3S_FS_VERSION" >&2
    rm -rf "$S3S_FS_DIR/build"
  ) 9>"$S3S_FS_DIR/.lock"
}

# s3_pidfile: the server's pid file, if it has one.
s3_pidfile() {
  local f
  for f in "$RUN"/pids/*-s3.pid; do [ -e "$f" ] && printf '%s\n' "$f"; done
  return 0
}

# s3_running PIDFILE: the process is alive and not a zombie. A killed server is a zombie until its
# reaper (here init, which reaps every second or two) collects it; it has closed its port by then.
s3_running() {
  local pid
  pid_alive "$1" || return 1
  read -r pid _ <"$1"
  [ "$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

# s3_answers URL: the server sends an HTTP response, whatever its status (curl fails only when none
# comes).
s3_answers() { curl -sS -o /dev/null --max-time 2 "$1"; }

s3_start() {
  local port access secret
  s3_install
  read -r port < <(free_ports 1)
  [ -n "${port:-}" ] || { log "could not get a free port from the kernel"; return 1; }
  access="strom$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  secret="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
  mkdir -p "$RUN/s3/data"
  # The exact command, shell-quoted on one line; s3ctl start runs it again.
  printf '%q ' "$S3S_FS" --host 127.0.0.1 --port "$port" --access-key "$access" \
    --secret-key "$secret" "$RUN/s3/data" >"$RUN/s3/cmd"
  printf 'http://127.0.0.1:%s\n' "$port" >"$RUN/s3/endpoint"
  s3_launch
  cat >>"$RUN/env" <<EOF
export STROM_TESTBED_S3_ENDPOINT='http://127.0.0.1:$port'
export STROM_TESTBED_S3_ACCESS_KEY='$access'
export STROM_TESTBED_S3_SECRET_KEY='$secret'
export STROM_TESTBED_S3_REGION='us-east-1'
export STROM_TESTBED_S3_DATA='$RUN/s3/data'
EOF
  log "s3 (s3s-fs $S3S_FS_VERSION) up at http://127.0.0.1:$port, data in $RUN/s3/data"
}

# Starts the server from $RUN/s3/cmd: the same binary, port, keys and data dir every time. A restart
# keeps the pid file's name (its place in the stop order) and moves the previous log to s3.log.1.
s3_launch() {
  local old new cmd
  old="$(s3_pidfile)"
  if [ -n "$old" ] && s3_running "$old"; then log "s3 is already running"; return 0; fi
  eval "cmd=($(<"$RUN/s3/cmd"))"
  if [ -n "$old" ]; then
    rm -f "$old"
    [ -f "$RUN/logs/s3.log" ] && mv "$RUN/logs/s3.log" "$RUN/logs/s3.log.1"
  fi
  start s3 "${cmd[@]}"
  if [ -n "$old" ]; then
    new="$(s3_pidfile)"
    [ "$new" = "$old" ] || mv "$new" "$old"
  fi
  if ! wait_for s3 "HTTP response" s3_answers "$(<"$RUN/s3/endpoint")"; then
    tail_log s3
    return 1
  fi
}

# Stops the server and waits until it is gone; its pid file and data stay for s3_launch.
s3_stop() {
  local f pid
  f="$(s3_pidfile)"
  if [ -z "$f" ] || ! s3_running "$f"; then log "s3 is not running"; return 0; fi
  read -r pid _ <"$f"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do s3_running "$f" || break; sleep 0.1; done
  if s3_running "$f"; then
    log "s3 ($pid) did not stop in 10 s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do s3_running "$f" || break; sleep 0.1; done
  fi
  if s3_running "$f"; then log "s3 ($pid) is still running"; return 1; fi
  log "stopped s3 ($pid)"
}
