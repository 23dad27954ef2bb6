#!/usr/bin/env bash
# The side-by-side echo benchmark: nbio's echo_server (each poller backend)
# against single-threaded echo servers on raw epoll, libuv, libev and
# Boost.Asio, all driven by //tools:echo_load, which verifies every byte.
#
#   tools/bench/echo_bench.sh                      # everything, ~4-5 minutes
#   tools/bench/echo_bench.sh --scenarios=c100,c1k --servers=raw_epoll,libuv,nbio-epoll
#   tools/bench/echo_bench.sh --help
#
# Each run: the server pinned to one CPU and echo_load to another (taskset),
# the server started fresh on an ephemeral port. The machine is noisy, so for
# every scenario the servers are interleaved (the order rotates from pass to
# pass) and the scenario is repeated --passes times; the table reports the
# median of each figure and the ratio of medians. Prints a markdown table;
# the per-run JSON and logs stay in --out.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=tools/bench/bench_lib.sh
source tools/bench/bench_lib.sh

usage() {
  cat <<'EOF'
Usage: tools/bench/echo_bench.sh [flags]
  --passes=N        repeat each scenario N times, report medians (default 3)
  --scenarios=LIST  comma-separated subset of: c100 c1k bulk16k c10k (default all)
                      c100     100 connections, 64 B ping-pong
                      c1k      1,000 connections, 64 B ping-pong
                      bulk16k  10 connections, 16 KiB messages, 4 in flight each
                      c10k     10,000 connections, 64 B ping-pong
  --servers=LIST    comma-separated subset of: raw_epoll raw_uring libuv
                    libev asio nbio-epoll nbio-poll nbio-select nbio-io_uring (default all;
                    the nbio ones are skipped while //echo:echo_server does
                    not exist; raw_uring shows "did not start" where
                    io_uring is unavailable, with the reason in its log)
  --duration=D      measured time per run (default 1s)
  --warmup=D        traffic before measuring, per run (default 0.5s)
  --out=DIR         keep per-run JSON and logs here (default: a new temp dir)
  --no-build        use the binaries already in bazel-bin
EOF
}

passes=3
scenarios="c100,c1k,bulk16k,c10k"
servers="raw_epoll,raw_uring,libuv,libev,asio,nbio-epoll,nbio-poll,nbio-select"
duration="1s"
warmup="0.5s"
out=""
build=1
for arg in "$@"; do
  case "$arg" in
    --passes=*) passes="${arg#*=}" ;;
    --scenarios=*) scenarios="${arg#*=}" ;;
    --servers=*) servers="${arg#*=}" ;;
    --duration=*) duration="${arg#*=}" ;;
    --warmup=*) warmup="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    --no-build) build=0 ;;
    --help | -h) usage; exit 0 ;;
    *) echo "echo_bench.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$passes" =~ ^[1-9][0-9]*$ ]] || { echo "echo_bench.sh: --passes must be a positive integer" >&2; exit 2; }

# name -> "connections size depth"
declare -A SCENARIO=(
  [c100]="100 64 1"
  [c1k]="1000 64 1"
  [bulk16k]="10 16384 4"
  [c10k]="10000 64 1"
)
declare -A SCENARIO_TITLE=(
  [c100]="100 connections, 64 B ping-pong"
  [c1k]="1,000 connections, 64 B ping-pong"
  [bulk16k]="10 connections, 16 KiB, depth 4"
  [c10k]="10,000 connections, 64 B ping-pong"
)
IFS=, read -r -a scenario_list <<<"$scenarios"
IFS=, read -r -a server_list <<<"$servers"
for s in "${scenario_list[@]}"; do
  [[ -n "${SCENARIO[$s]:-}" ]] || { echo "echo_bench.sh: unknown scenario '$s' (see --help)" >&2; exit 2; }
done
for s in "${server_list[@]}"; do
  case "$s" in
    raw_epoll | raw_uring | libuv | libev | asio | nbio-epoll | nbio-poll | nbio-select | nbio-io_uring) ;;
    *) echo "echo_bench.sh: unknown server '$s' (see --help)" >&2; exit 2 ;;
  esac
done

# --- Build (optimized: the default config) --------------------------------
have_nbio=0
notes=()
wants_nbio=0
for s in "${server_list[@]}"; do [[ "$s" == nbio-* ]] && wants_nbio=1; done
if [[ $wants_nbio == 1 ]]; then
  if tools/bazel query //echo:echo_server >/dev/null 2>&1; then
    have_nbio=1
  else
    notes+=("nbio rows skipped: echo_server not built yet (//echo:echo_server does not exist).")
  fi
fi
targets=(//tools:echo_load //tools/bench:raw_epoll_echo //tools/bench:raw_uring_echo //tools/bench:libuv_echo
  //tools/bench:libev_echo //tools/bench:asio_echo)
[[ $have_nbio == 1 ]] && targets+=(//echo:echo_server)
if [[ $build == 1 ]]; then
  echo "echo_bench: building ${targets[*]}" >&2
  tools/bazel build "${targets[@]}" >&2
fi
bin="$(pwd)/bazel-bin"
echo_load="$bin/tools/echo_load"
[[ -x "$echo_load" ]] || { echo "echo_bench.sh: $echo_load not built" >&2; exit 1; }

# Drop the nbio servers when echo_server is missing; keep the order given.
runnable=()
for s in "${server_list[@]}"; do
  [[ "$s" == nbio-* && $have_nbio == 0 ]] && continue
  runnable+=("$s")
done
[[ ${#runnable[@]} -gt 0 ]] || { echo "echo_bench.sh: no server to run" >&2; exit 1; }

server_command() {  # server -> command line, "--listen" added by the caller
  case "$1" in
    raw_epoll) echo "$bin/tools/bench/raw_epoll_echo" ;;
    raw_uring) echo "$bin/tools/bench/raw_uring_echo" ;;
    libuv) echo "$bin/tools/bench/libuv_echo" ;;
    libev) echo "$bin/tools/bench/libev_echo" ;;
    asio) echo "$bin/tools/bench/asio_echo" ;;
    nbio-*) echo "$bin/echo/echo_server --backend=${1#nbio-}" ;;
  esac
}

# --- CPUs: server on one, load on another ----------------------------------
bench_pin_cpus
pinning="${pinning/load/echo_load}"
[[ ${#server_pin[@]} -gt 0 ]] || notes+=("Not pinned: fewer than 2 CPUs or no taskset; server and load share CPUs.")

if [[ -z "$out" ]]; then
  out="$(mktemp -d /tmp/echo_bench.XXXXXX)"
fi
mkdir -p "$out"
: >"$out/runs.tsv"
last_status=""

# Process creation is slow on a loaded VM (~30 ms a fork here), so each run
# costs one awk to summarise and the table one more, nothing per figure.
FIELDS="msgs_per_sec mb_per_sec p50_us p99_us connections_failed rejected unanswered mismatches lost extra messages_total load_cpu_s run_s"
hz="$(getconf CLK_TCK)"

bench_kill_server_on_exit

# run_one SCENARIO SERVER PASS: one server, one echo_load run; leaves
# $out/SCENARIO.SERVER.PASS.{json,err,server.log} and prints a status word.
run_one() {
  local scenario="$1" server="$2" pass="$3"
  local base="$out/$scenario.$server.$pass"
  local conns size depth
  read -r conns size depth <<<"${SCENARIO[$scenario]}"
  # Created here, not by the background job's redirection, which may come
  # after the first look for the "listening on" line.
  : >"$base.server.log"
  # shellcheck disable=SC2046  # the command line is words on purpose
  "${server_pin[@]}" $(server_command "$server") --listen=127.0.0.1:0 \
    >"$base.server.log" 2>&1 &
  server_pid=$!
  local port
  port="$(bench_wait_listening "$base.server.log" "$server_pid")"
  if [[ -z "$port" ]]; then
    echo "echo_bench: $server did not print 'listening on 127.0.0.1:PORT'; see $base.server.log" >&2
    bench_stop_server "$server"
    record "$scenario" "$server" "$pass" nostart
    return
  fi
  local rc=0
  "${load_pin[@]}" "$echo_load" --target="127.0.0.1:$port" --connections="$conns" \
    --size="$size" --depth="$depth" --duration="$duration" --warmup="$warmup" \
    --json >"$base.json" 2>"$base.err" || rc=$?
  # The server's CPU time (utime + stime, fields 14 and 15 of its stat),
  # read without a fork. Per echoed message it is the figure the noisy
  # neighbours disturb least: they steal wall time, not the server's CPU.
  local ticks="" stat
  if read -r stat <"/proc/$server_pid/stat" 2>/dev/null; then
    read -r -a stat_fields <<<"${stat##*) }"
    ticks=$((stat_fields[11] + stat_fields[12]))
  fi
  bench_stop_server "$server"
  record "$scenario" "$server" "$pass" "$rc" "$base.json" "$ticks"
}

# record SCENARIO SERVER PASS STATUS [JSON [SERVER_TICKS]]: one line of
# $out/runs.tsv: the four arguments, the server's CPU microseconds per echoed
# message, then the echo_load fields named in $FIELDS.
record() {
  awk -v head="$1\t$2\t$3\t$4" -v ticks="${6:-}" -v hz="$hz" -v fields="$FIELDS" '
    { line = $0; sub(/^ *"/, "", line); key = line; sub(/".*/, "", key)
      value = line; sub(/^[^:]*: */, "", value); sub(/,$/, "", value); v[key] = value }
    END { n = split(fields, f, " ")
          cpu = (ticks != "" && v["messages_total"] > 0) ? sprintf("%.2f", ticks * 1e6 / hz / v["messages_total"]) : ""
          out = head "\t" cpu
          for (i = 1; i <= n; i++) out = out "\t" ((f[i] in v) ? v[f[i]] : "")
          print out }' "${5:-/dev/null}" >>"$out/runs.tsv"
  last_status="$4"
}

runs=$((${#scenario_list[@]} * ${#runnable[@]} * passes))
echo "echo_bench: $runs runs (${#scenario_list[@]} scenarios x ${#runnable[@]} servers x $passes passes), $warmup warmup + $duration measured each; $pinning; logs in $out" >&2
start=$SECONDS
done_runs=0
for scenario in "${scenario_list[@]}"; do
  for ((pass = 1; pass <= passes; pass++)); do
    # Rotate the order each pass, so no server always runs first or last.
    n=${#runnable[@]}
    for ((i = 0; i < n; i++)); do
      server="${runnable[$(((i + pass - 1) % n))]}"
      run_one "$scenario" "$server" "$pass"
      done_runs=$((done_runs + 1))
      printf '\r\033[Kecho_bench: %d/%d runs, %ds (%s %s pass %d: exit %s)' \
        "$done_runs" "$runs" $((SECONDS - start)) "$scenario" "$server" "$pass" \
        "$last_status" >&2
    done
  done
done
echo >&2

# --- Table -----------------------------------------------------------------
titles=""
for scenario in "${scenario_list[@]}"; do
  read -r conns _ _ <<<"${SCENARIO[$scenario]}"
  titles+="$scenario=$conns=${SCENARIO_TITLE[$scenario]};"
done
notes_text=""
for note in "${notes[@]}"; do notes_text+=$'\n'"$note"$'\n'; done
{
  echo "## Echo benchmark"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs, Linux $(uname -r); $pinning."
  echo "Each figure is the median of $passes passes ($warmup warmup + $duration measured per run, servers interleaved);"
  echo "ratios are ratios of median msgs/s. MB/s is echoed payload. Every byte verified by echo_load."
  echo
  awk -F'\t' -v passes="$passes" -v titles="$titles" -v servers="${runnable[*]}" -v out="$out" '
    function median(list,   a, n, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function us(v) {
      if (v < 1000) return sprintf("%.0f us", v)
      if (v < 1000000) return sprintf("%.1f ms", v / 1000)
      return sprintf("%.2f s", v / 1000000)
    }
    function grouped(v,   s, r) {
      s = sprintf("%.0f", v); r = ""
      while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
      return s r
    }
    function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "-" }
    {
      k = $1 SUBSEP $2
      # Fields: 1 scenario 2 server 3 pass 4 status 5 server CPU us/msg
      # 6 msgs/s 7 MB/s 8 p50 9 p99 10 failed 11 rejected 12 unanswered
      # 13 mismatches 14 lost 15 extra 16 messages_total 17 load_cpu_s 18 run_s
      if ($18 > 0) {
        share = $17 / $18; runs++
        if (share > max_share) max_share = share
        if (share > 0.9) busy++
      }
      if ($4 == "0") {
        rate[k] = rate[k] " " $6; mb[k] = mb[k] " " $7; p50[k] = p50[k] " " $8; p99[k] = p99[k] " " $9
        if ($5 != "") cpu[k] = cpu[k] " " $5
      } else if (!(k in note)) {
        if ($4 == "1") note[k] = sprintf("WRONG ECHO: %s mismatched, %s lost, %s extra bytes (pass %s)", $13, $14, $15, $3)
        else if ($4 == "3") { refused_n[k] = $11 + $12; failed_n[k] = $10; failed_pass[k] = $3 }
        else if ($4 == "nostart") note[k] = "did not start (see " out "/" $1 "." $2 "." $3 ".server.log)"
        else note[k] = "echo_load exit " $4 " (see " out "/" $1 "." $2 "." $3 ".err)"
      }
    }
    END {
      print "| scenario | server | msgs/s | MB/s | p50 | p99 | server CPU/msg | vs best library | vs raw epoll |"
      print "|---|---|---:|---:|---:|---:|---:|---:|---:|"
      ns = split(titles, sc, ";")
      nv = split(servers, sv, " ")
      for (i = 1; i <= ns; i++) {
        if (sc[i] == "") continue
        split(sc[i], parts, "=")
        s = parts[1]; conns = parts[2]; title = parts[3]
        best = ""; best_rate = 0; raw = 0
        for (j = 1; j <= nv; j++) {
          k = s SUBSEP sv[j]
          if ((k in failed_n) && !(k in note)) {
            if (sv[j] == "nbio-select" && conns >= 1024 && refused_n[k] > 0)
              note[k] = "refused: FD_SETSIZE (" refused_n[k] " of " conns " connections refused)"
            else
              note[k] = "FAILED: " failed_n[k] " of " conns " connections failed (pass " failed_pass[k] "; see " out "/" s "." sv[j] "." failed_pass[k] ".err)"
          }
          if (k in note || !(k in rate)) continue
          m[k] = median(rate[k])
          if (sv[j] == "raw_epoll") raw = m[k]
          if ((sv[j] == "libuv" || sv[j] == "libev" || sv[j] == "asio") && m[k] > best_rate) { best = sv[j]; best_rate = m[k] }
        }
        for (j = 1; j <= nv; j++) {
          k = s SUBSEP sv[j]
          if (k in note) { printf "| %s | %s | %s | | | | | | |\n", title, sv[j], note[k]; continue }
          if (!(k in rate)) continue
          printf "| %s | %s | %s | %.2f | %s | %s | %s | %s | %s |\n", title, sv[j], grouped(m[k]),
            median(mb[k]), us(median(p50[k])), us(median(p99[k])),
            (k in cpu) ? sprintf("%.1f us", median(cpu[k])) : "-",
            best == "" ? "-" : ratio(m[k], best_rate) " (" best ")", ratio(m[k], raw)
        }
      }
      printf "\nserver CPU/msg: the server process'"'"'s CPU time (user + system) over the whole run divided by\n"
      printf "the messages it echoed (accepts included); lower is better. Other load on the machine moves it far\n"
      printf "less than msgs/s (it steals wall-clock time, not the server'"'"'s CPU time), but not to nothing.\n"
      if (runs > 0) {
        printf "echo_load'"'"'s own CPU use peaked at %.0f%% of one CPU", 100 * max_share
        if (busy > 0) printf "; in %d of %d runs it was above 90%%, so there the load generator, not the server, may have set the pace: compare those servers by CPU/msg", busy, runs
        printf ".\n"
      }
    }' "$out/runs.tsv"
  printf '%s' "$notes_text"
  echo
  echo "Runs took $((SECONDS - start)) s. Per-run JSON and logs: $out"
} | tee "$out/table.md"
