# shellcheck shell=bash
# Shell helpers shared by the benchmark scripts in this folder (sourced, not
# run): CPU pinning, waiting for a server's "listening on ADDR" line,
# stopping the server, and killing it if the script dies first. Bash only; callers run with `set -euo pipefail`.

# bench_pin_cpus: sets server_pin and load_pin (taskset prefixes: the server
# on the first CPU this shell may use, the load on the second) and pinning (a
# phrase for the report). Both empty when fewer than 2 CPUs or no taskset.
# shellcheck disable=SC2034  # the variables are for the caller
bench_pin_cpus() {
  local cpus=() list r c
  if command -v taskset >/dev/null 2>&1; then
    # "pid N's current affinity list: 0,1" or "0-3": expand to a list.
    list="$(taskset -pc $$ | sed 's/.*: //')"
    IFS=, read -r -a ranges <<<"$list"
    for r in "${ranges[@]}"; do
      if [[ "$r" == *-* ]]; then
        for ((c = ${r%-*}; c <= ${r#*-}; c++)); do cpus+=("$c"); done
      else
        cpus+=("$r")
      fi
    done
  fi
  if [[ ${#cpus[@]} -ge 2 ]]; then
    server_pin=(taskset -c "${cpus[0]}")
    load_pin=(taskset -c "${cpus[1]}")
    pinning="server on CPU ${cpus[0]}, load on CPU ${cpus[1]}"
  else
    server_pin=()
    load_pin=()
    pinning="not pinned (fewer than 2 CPUs available, or no taskset)"
  fi
}

# bench_wait_listening LOG PID: prints the port once LOG has a line
# "listening on 127.0.0.1:PORT"; prints nothing if PID exits or 10 s pass.
bench_wait_listening() {
  local log="$1" pid="$2" port=""
  for _ in $(seq 100); do
    port="$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p;T;q' "$log")"
    [[ -n "$port" ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "$port"
}

# The server process being benchmarked ("" when none): set it after starting
# the server in the background.
server_pid=""

# bench_kill_server_on_exit: if the script exits with a server still
# running (an error, ^C), SIGKILL it.
bench_kill_server_on_exit() {
  trap 'if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
          kill -KILL "$server_pid" 2>/dev/null || true
        fi' EXIT
}

# bench_stop_server NAME: SIGTERM to $server_pid, up to 5 s to exit, then
# SIGKILL; reaps it and clears server_pid.
bench_stop_server() {
  local name="$1"
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$server_pid" 2>/dev/null; then
    echo "bench: $name did not exit 5 s after SIGTERM; killing it" >&2
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
