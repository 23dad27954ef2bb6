#!/usr/bin/env bash
# CPU-bound work next to I/O (issue 6): one event loop serving an echo load
# while a CPU-bound job (hashing, in slices) runs on it. Reports echo
# latency with and without the job, and the job's throughput with and
# without the load, against the targets:
#   - echo p99 with the job running <= cpu_budget + 2 ms;
#   - the job keeps >= 30% of its unloaded throughput.
#
#   tools/bench/cpu_job_bench.sh                  # defaults: ~2 minutes
#   tools/bench/cpu_job_bench.sh --budgets=1ms --passes=5
#   tools/bench/cpu_job_bench.sh --help
#
# Every pass runs, for each --budgets value B, with the server
# (//tools/bench:cpu_echo_server) pinned to one CPU and echo_load to another:
#   echo   the echo load alone (the server with --job_bytes=0; once a pass,
#          the budget does not apply without a job);
#   job    the job alone, no client, for warmup + duration (--run_for);
#   both   the echo load and the job together (--cpu_budget=B).
# The runs of a pass are interleaved, their order rotating from pass to pass;
# the table reports medians over the passes. Per-run JSON and logs stay in
# --out.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=tools/bench/bench_lib.sh
source tools/bench/bench_lib.sh

usage() {
  cat <<'EOF'
Usage: tools/bench/cpu_job_bench.sh [flags]
  --passes=N          repeat everything N times, report medians (default 3)
  --budgets=LIST      EventLoop cpu_budget values to try, comma-separated, each
                      a number with us, ms or s (default 1ms,250us,4ms; the
                      first is the headline)
  --connections=N     echo connections, 64 B ping-pong (default 100)
  --size=BYTES        echo message size (default 64)
  --job_bytes=SIZE    bytes the job hashes per pass, repeated (default 1GiB)
  --slice_bytes=SIZE  bytes hashed per CPU slice (default 64KiB)
  --duration=D        echo_load's measured time per run (default 2s)
  --warmup=D          echo_load's traffic before measuring (default 0.5s)
  --out=DIR           keep per-run JSON and logs here (default: a new temp dir)
  --server=PATH       run this cpu_echo_server binary (e.g. one built at another
                      commit, to compare) instead of //tools/bench:cpu_echo_server
  --no-build          use the binaries already in bazel-bin
EOF
}

passes=3
budgets="1ms,250us,4ms"
connections=100
size=64
job_bytes="1GiB"
slice_bytes="64KiB"
duration="2s"
warmup="0.5s"
out=""
server=""
build=1
for arg in "$@"; do
  case "$arg" in
    --passes=*) passes="${arg#*=}" ;;
    --budgets=*) budgets="${arg#*=}" ;;
    --connections=*) connections="${arg#*=}" ;;
    --size=*) size="${arg#*=}" ;;
    --job_bytes=*) job_bytes="${arg#*=}" ;;
    --slice_bytes=*) slice_bytes="${arg#*=}" ;;
    --duration=*) duration="${arg#*=}" ;;
    --warmup=*) warmup="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    --server=*) server="${arg#*=}" ;;
    --no-build) build=0 ;;
    --help | -h) usage; exit 0 ;;
    *) echo "cpu_job_bench.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
die_usage() { echo "cpu_job_bench.sh: $1 (see --help)" >&2; exit 2; }
[[ "$passes" =~ ^[1-9][0-9]*$ ]] || die_usage "--passes must be a positive integer"
[[ "$connections" =~ ^[1-9][0-9]*$ ]] || die_usage "--connections must be a positive integer"
[[ "$size" =~ ^[1-9][0-9]*$ ]] || die_usage "--size must be a positive integer"
duration_re='^[0-9]+(\.[0-9]+)?(us|ms|s)$'
for d in "$duration" "$warmup"; do
  [[ "$d" =~ $duration_re ]] || die_usage "'$d' is not a duration such as 2s, 500ms, 250us"
done

# "250us" / "1ms" / "0.5s" -> microseconds.
to_us() {
  awk -v d="$1" 'BEGIN { n = d + 0
    if (d ~ /us$/) print n; else if (d ~ /ms$/) print n * 1000; else print n * 1000000 }'
}
IFS=, read -r -a budget_list <<<"$budgets"
[[ ${#budget_list[@]} -gt 0 ]] || die_usage "--budgets is empty"
budget_us_list=()
for b in "${budget_list[@]}"; do
  [[ "$b" =~ $duration_re ]] || die_usage "--budgets: '$b' is not a duration such as 250us, 1ms, 4ms"
  budget_us_list+=("$(to_us "$b")")
done
# The job-alone runs last as long as echo_load's warmup and measurement,
# which is about how long the job runs under load (see the window in the
# table).
run_for="$(awk -v a="$(to_us "$warmup")" -v b="$(to_us "$duration")" \
  'BEGIN { printf "%.3fs", (a + b) / 1e6 }')"

# --- Build (optimized: the default config) --------------------------------
targets=(//tools:echo_load)
[[ -n "$server" ]] || targets+=(//tools/bench:cpu_echo_server)
if [[ $build == 1 ]]; then
  echo "cpu_job_bench: building ${targets[*]}" >&2
  tools/bazel build "${targets[@]}" >&2
fi
bin="$(pwd)/bazel-bin"
echo_load="$bin/tools/echo_load"
[[ -n "$server" ]] || server="$bin/tools/bench/cpu_echo_server"
for b in "$echo_load" "$server"; do
  [[ -x "$b" ]] || { echo "cpu_job_bench.sh: $b not built" >&2; exit 1; }
done
bench_pin_cpus
notes=()
[[ ${#server_pin[@]} -gt 0 ]] || notes+=("Not pinned: fewer than 2 CPUs or no taskset; server and load share CPUs.")

if [[ -z "$out" ]]; then
  out="$(mktemp -d /tmp/cpu_job_bench.XXXXXX)"
fi
mkdir -p "$out"
# Flag errors (a bad --job_bytes) before any run: the server checks them.
"$server" --job_bytes="$job_bytes" --slice_bytes="$slice_bytes" --run_for=1ms \
  >/dev/null 2>"$out/flag_check.err" || {
  cat "$out/flag_check.err" >&2
  die_usage "the server rejects --job_bytes=$job_bytes --slice_bytes=$slice_bytes"
}

# runs.tsv: one line per run; the columns are named in its first line.
LOAD_FIELDS="msgs_per_sec p50_us p99_us p999_us max_us load_cpu_s run_s"
SERVER_FIELDS="job_mib_per_s job_elapsed_s window_mib_per_s window_s job_slices loop_iterations loop_events loop_cpu_slices job_max_slice_us period_count period_wall_p50_us period_wall_p99_us period_cpu_p50_us period_cpu_p99_us period_cpu_max_us cpu_user_s cpu_sys_s wall_s"
printf 'pass\tkind\tbudget\tstatus' >"$out/runs.tsv"
for f in $LOAD_FIELDS $SERVER_FIELDS; do printf '\t%s' "$f" >>"$out/runs.tsv"; done
printf '\n' >>"$out/runs.tsv"

bench_kill_server_on_exit

# record PASS KIND BUDGET STATUS LOAD_JSON SERVER_JSON: a line of runs.tsv.
record() {
  awk -f tools/bench/bench_lib.awk -f /dev/stdin \
    -v head="$1\t$2\t$3\t$4" -v load="$5" -v srv="$6" \
    -v fields="$LOAD_FIELDS $SERVER_FIELDS" <<'AWK'
BEGIN {
  read_flat_json(load, v); read_flat_json(srv, v)
  n = split(fields, f, " "); line = head
  for (i = 1; i <= n; i++) line = line "\t" ((f[i] in v) ? v[f[i]] : "")
  print line >> (ENVIRON["RUNS_TSV"])
}
AWK
  last_status="$4"
}
export RUNS_TSV="$out/runs.tsv"

# run_one PASS KIND BUDGET: one server and, for echo and both, one echo_load
# run; leaves $out/KIND.BUDGET.PASS.{server.out,server.err,load.json,load.err}.
run_one() {
  local pass="$1" kind="$2" budget="$3"
  local base="$out/$kind.$budget.$pass"
  local args=(--listen=127.0.0.1:0)
  case "$kind" in
    echo) args+=(--job_bytes=0) ;;
    job) args+=(--job_bytes="$job_bytes" --slice_bytes="$slice_bytes" --cpu_budget="$budget"
                --run_for="$run_for" --window_connections=0) ;;
    both) args+=(--job_bytes="$job_bytes" --slice_bytes="$slice_bytes" --cpu_budget="$budget"
                 --window_connections="$connections") ;;
  esac
  # Created here, not by the background job's redirection, which may come
  # after the first look for the "listening on" line.
  : >"$base.server.out"
  "${server_pin[@]}" "$server" "${args[@]}" >"$base.server.out" 2>"$base.server.err" &
  server_pid=$!
  local port
  port="$(bench_wait_listening "$base.server.out" "$server_pid")"
  if [[ -z "$port" ]]; then
    echo "cpu_job_bench: the server did not print 'listening on 127.0.0.1:PORT'; see $base.server.err" >&2
    bench_stop_server cpu_echo_server
    record "$pass" "$kind" "$budget" nostart /dev/null /dev/null
    return
  fi
  local rc=0 load_json=/dev/null
  if [[ "$kind" == job ]]; then
    # It exits by itself after --run_for; allow 10 s more.
    local limit=$((${run_for%%.*} * 10 + 100)) tick
    for ((tick = 0; tick < limit; tick++)); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
  else
    load_json="$base.load.json"
    "${load_pin[@]}" "$echo_load" --target="127.0.0.1:$port" --connections="$connections" \
      --size="$size" --depth=1 --duration="$duration" --warmup="$warmup" \
      --json >"$load_json" 2>"$base.load.err" || rc=$?
  fi
  bench_stop_server cpu_echo_server
  grep '^{' "$base.server.out" >"$base.server.json" || true
  if [[ ! -s "$base.server.json" ]]; then
    echo "cpu_job_bench: the server printed no JSON; see $base.server.err" >&2
    rc=nojson
  fi
  record "$pass" "$kind" "$budget" "$rc" "$load_json" "$base.server.json"
}

# The runs of one pass: echo alone once, then job and both per budget.
pass_runs=("echo none")
for b in "${budget_list[@]}"; do pass_runs+=("job $b" "both $b"); done
total=$((${#pass_runs[@]} * passes))
echo "cpu_job_bench: $total runs ($passes passes x ${#pass_runs[@]}), $connections connections x $size B ping-pong, $warmup warmup + $duration measured; job: $job_bytes per pass in $slice_bytes slices, alone for $run_for; budgets $budgets; $pinning; logs in $out" >&2
start=$SECONDS
done_runs=0
last_status=""
for ((pass = 1; pass <= passes; pass++)); do
  n=${#pass_runs[@]}
  for ((i = 0; i < n; i++)); do
    read -r kind budget <<<"${pass_runs[$(((i + pass - 1) % n))]}"
    run_one "$pass" "$kind" "$budget"
    done_runs=$((done_runs + 1))
    printf '\r\033[Kcpu_job_bench: %d/%d runs, %ds (pass %d %s %s: exit %s)' \
      "$done_runs" "$total" $((SECONDS - start)) "$pass" "$kind" "$budget" "$last_status" >&2
  done
done
echo >&2

# --- Table -----------------------------------------------------------------
notes_text=""
for note in "${notes[@]}"; do notes_text+=$'\n'"$note"$'\n'; done
{
  echo "## CPU-bound work next to I/O"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs, Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg); $pinning."
  echo "One event loop (epoll) serving $connections echo connections ($size B ping-pong, echo_load: $warmup warmup + $duration measured)"
  echo "while a CpuJob hashes $job_bytes per pass, over and over, in $slice_bytes slices. Median of $passes passes, runs interleaved."
  echo
  awk -F'\t' -f tools/bench/bench_lib.awk -f /dev/stdin \
    -v budgets="${budget_list[*]}" -v budgets_us="${budget_us_list[*]}" \
    -v passes="$passes" -v out="$out" "$out/runs.tsv" <<'AWK'
NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
{
  pass = $col["pass"]; kind = $col["kind"]; b = $col["budget"]; k = kind SUBSEP b
  if ($col["status"] != "0") {
    failed[k] = failed[k] sprintf(" pass %s exit %s;", pass, $col["status"])
    next
  }
  for (name in col) vals[k, name] = vals[k, name] " " $col[name]
  cpu[k] = cpu[k] " " ($col["wall_s"] > 0 ? ($col["cpu_user_s"] + $col["cpu_sys_s"]) / $col["wall_s"] : "")
  if ($col["loop_iterations"] > 0) {
    per_iter_slices[k] = per_iter_slices[k] " " $col["loop_cpu_slices"] / $col["loop_iterations"]
    per_iter_events[k] = per_iter_events[k] " " $col["loop_events"] / $col["loop_iterations"]
  }
  if (kind == "job") alone[b, pass] = $col["job_mib_per_s"]
  if (kind == "both") loaded[b, pass] = $col["window_mib_per_s"]
}
function m(k, name) { return median(vals[k, name]) }
function pct(v) { return v == "" ? "-" : sprintf("%.0f%%", 100 * v) }
function mib(v) { return v == "" ? "-" : sprintf("%.0f", v) }
END {
  nb = split(budgets, bl, " "); split(budgets_us, bu, " ")
  e = "echo" SUBSEP "none"
  print "| echo load | cpu_budget | msgs/s | p50 | p99 | p99.9 | max | server got the CPU | echo_load CPU |"
  print "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  rows[1] = e; label[1] = "alone"; blabel[1] = "-"
  for (i = 1; i <= nb; i++) { rows[i + 1] = "both" SUBSEP bl[i]; label[i + 1] = "with the job"; blabel[i + 1] = bl[i] }
  for (r = 1; r <= nb + 1; r++) {
    k = rows[r]
    if (k in failed && !((k, "pass") in vals)) { printf "| %s | %s | FAILED:%s | | | | | | |\n", label[r], blabel[r], failed[k]; continue }
    split(vals[k, "load_cpu_s"], lc, " "); split(vals[k, "run_s"], rs, " "); ls = ""
    for (j in lc) if (rs[j] > 0) ls = ls " " lc[j] / rs[j]
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", label[r], blabel[r],
      grouped(m(k, "msgs_per_sec")), us(m(k, "p50_us")), us(m(k, "p99_us")), us(m(k, "p999_us")),
      us(m(k, "max_us")), pct(median(cpu[k])), pct(median(ls))
  }
  print ""
  print "| cpu_budget | job alone MiB/s | job with the echo load MiB/s | share | loaded window | slices / iteration | events / iteration | longest slice |"
  print "|---:|---:|---:|---:|---:|---:|---:|---:|"
  for (i = 1; i <= nb; i++) {
    b = bl[i]; kj = "job" SUBSEP b; kb = "both" SUBSEP b
    list = ""
    for (p = 1; p <= passes; p++) if (((b, p) in alone) && ((b, p) in loaded) && alone[b, p] > 0) list = list " " loaded[b, p] / alone[b, p]
    share[b] = median(list)
    printf "| %s | %s | %s | %s | %s | %.1f | %.1f | %s |\n", b, mib(m(kj, "job_mib_per_s")),
      mib(m(kb, "window_mib_per_s")), pct(share[b]), m(kb, "window_s") == "" ? "-" : sprintf("%.2f s", m(kb, "window_s")),
      median(per_iter_slices[kb]), median(per_iter_events[kb]), us(m(kb, "job_max_slice_us"))
  }
  print ""
  print "| cpu_budget | loop period with the echo load: p50 | p99 | p50, CPU time | p99, CPU time | max, CPU time |"
  print "|---:|---:|---:|---:|---:|---:|"
  for (i = 1; i <= nb; i++) {
    kb = "both" SUBSEP bl[i]
    printf "| %s | %s | %s | %s | %s | %s |\n", bl[i], us(m(kb, "period_wall_p50_us")),
      us(m(kb, "period_wall_p99_us")), us(m(kb, "period_cpu_p50_us")), us(m(kb, "period_cpu_p99_us")), us(m(kb, "period_cpu_max_us"))
  }
  print ""
  print "| cpu_budget | echo p99 with the job | target: <= budget + 2 ms | | (echo p99 alone) | (loop period p99, CPU time) | job share | target: >= 30% | |"
  print "|---:|---:|---:|---|---:|---:|---:|---:|---|"
  p99_alone = m(e, "p99_us")
  for (i = 1; i <= nb; i++) {
    b = bl[i]; kb = "both" SUBSEP b
    p99 = m(kb, "p99_us"); limit = bu[i] + 2000
    v1 = p99 == "" ? "no data" : (p99 <= limit ? "met" : "**missed**")
    v2 = share[b] == "" ? "no data" : (share[b] >= 0.30 ? "met" : "**missed**")
    printf "| %s | %s | %s | %s | (%s) | (%s) | %s | 30%% | %s |\n", b, us(p99), us(limit), v1, us(p99_alone),
      us(m(kb, "period_cpu_p99_us")), pct(share[b]), v2
  }
  for (k in failed) {
    split(k, kk, SUBSEP)
    printf "\nFailed runs, %s %s:%s see %s.\n", kk[1], kk[2], failed[k], out
  }
}
AWK
  cat <<EOF

How each figure is computed:
- msgs/s, p50, p99, p99.9, max: echo_load's messages per second and round-trip percentiles
  (log-linear histogram, every byte verified) over its measured window; median over the passes.
- server got the CPU: the server's CPU time (user + system, getrusage) / its wall time, from start
  to exit. With the job the server never sleeps, so what is missing from 100% went to other
  processes on its CPU; alone it also sleeps in epoll_wait when it has nothing to do.
  echo_load CPU: echo_load's CPU time / its run time (near 100%: the load generator set the pace).
- job alone: cpu_echo_server --run_for=$run_for with no client: bytes hashed / the job's elapsed
  time (MiB = 2^20 bytes).
- job with the echo load: bytes hashed / time while all $connections connections were open (from the
  slice after the last accept to the slice after the first close; "loaded window"), in the run with
  the echo load.
- share: per pass, job with the load / job alone at the same budget; the median of the passes'
  ratios.
- slices / iteration, events / iteration: loop counters of the run with the load (whole process
  life, so the unloaded start and end are in them). longest slice: the longest single slice, wall
  time (a preempted slice counts the preemption).
- loop period: the time from the first CPU slice of one loop iteration to the first of the next,
  in the run with the load, while all connections were open (per run: p50, p99, max over its
  iterations; then the median over the passes). In wall time, and in the server thread's CPU time
  (CLOCK_THREAD_CPUTIME_ID), which leaves out the time other processes took the CPU: a message
  waits about one period for its echo, so the CPU-time period is the loop's own part of the echo
  latency, about what a quiet machine would show.
- verdicts: p99 met when the median echo p99 with the job <= cpu_budget + 2 ms (the echo p99
  without the job is beside it: a target the load alone misses says more about the machine than
  about the loop); share met when the median share >= 30%.
EOF
  printf '%s' "$notes_text"
  echo
  echo "Command: tools/bench/cpu_job_bench.sh --passes=$passes --budgets=$budgets --connections=$connections --size=$size --job_bytes=$job_bytes --slice_bytes=$slice_bytes --duration=$duration --warmup=$warmup"
  echo "Runs took $((SECONDS - start)) s. Per-run JSON and logs: $out"
} | tee "$out/table.md"
