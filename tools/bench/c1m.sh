#!/usr/bin/env bash
# C1M: one echo server holds N loopback connections (default 1,000,000), every
# one verified by a round trip, and this says what it cost.
#
#   tools/bench/c1m.sh --server=uring_direct            # 1,000,000, direct descriptors
#   tools/bench/c1m.sh --connections=15000 --server=raw_epoll --hold=10s
#   tools/bench/c1m.sh --help
#
# It starts the server, ramps the connections up with `echo_load --hold` at a
# bounded rate (worker processes and source addresses in 127.0.0.0/8 as the
# count needs: 20,000 descriptors a process, ~28,000 ports a source address),
# checks one round trip on every connection byte for byte, holds them all
# open, samples the server and the kernel while they are held, closes them
# cleanly, and prints one markdown table. Everything stays on 127.0.0.0/8,
# every process it starts is stopped when it exits (also on ^C or error), and
# it refuses to start when the machine has not the memory for the count.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=tools/bench/bench_lib.sh
source tools/bench/bench_lib.sh

usage() {
  cat <<'EOF'
Usage: tools/bench/c1m.sh [flags]
  --connections=N     connections to hold (default 1000000)
  --server=CMD        the echo server, a command line to which
                      --listen=127.0.0.1:0 is added, or one of the names
                        nbio-io_uring  bazel-bin/echo/echo_server --backend=io_uring --reactors=1
                                       --max_connections=0 (default)
                        nbio-epoll     bazel-bin/echo/echo_server --backend=epoll --reactors=1
                        raw_epoll      bazel-bin/tools/bench/raw_epoll_echo
                        raw_uring      bazel-bin/tools/bench/raw_uring_echo
                        uring_direct   bazel-bin/tools/bench/uring_direct_echo
                                       --capacity=N: io_uring direct descriptors
                                       in N / RLIMIT_NOFILE rings, one thread
                                       (the engine nbio's backend is to use)
                      It must print "listening on 127.0.0.1:PORT". An epoll
                      server holds at most ~19,990 (its open-file limit).
  --rate=R            connects per second, all processes together (default
                      4000: what 53 client processes sustained to 1,000,000
                      on 2 CPUs; the ramp-up is capped at connections / rate
                      plus --close_timeout plus 5 s)
  --max_connecting=M  connects in flight per client process (default 256)
  --hold=D            how long to hold every connection (default 30s; the
                      samples are taken ~1 s into it, so give it a few seconds)
  --close_timeout=D   how long the round trips of the ramp-up, and the close,
                      may take (echo_load --drain_timeout; default 60s)
  --processes=P       client processes (default: connections / 19000, rounded up)
  --sources=S         client source addresses (default: the larger of P and
                      connections / 5000, rounded up)
  --out=DIR           logs and echo_load's JSON (default: a new temp dir)
  --no-build          use the binaries already in bazel-bin
Memory: refuses to start unless MemAvailable covers about 11 KB of kernel
memory per connection pair, 2 KB of server memory per connection, and 512 MiB.
EOF
}

connections=1000000
server="nbio-io_uring"
rate=4000
max_connecting=256
hold="30s"
close_timeout="60s"
processes=""
sources=""
out=""
build=1
for arg in "$@"; do
  case "$arg" in
    --connections=*) connections="${arg#*=}" ;;
    --server=*) server="${arg#*=}" ;;
    --rate=*) rate="${arg#*=}" ;;
    --max_connecting=*) max_connecting="${arg#*=}" ;;
    --hold=*) hold="${arg#*=}" ;;
    --close_timeout=*) close_timeout="${arg#*=}" ;;
    --processes=*) processes="${arg#*=}" ;;
    --sources=*) sources="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    --no-build) build=0 ;;
    --help | -h) usage; exit 0 ;;
    *) echo "c1m.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
for n in connections rate max_connecting; do
  [[ "${!n}" =~ ^[0-9]+$ && "${!n}" -gt 0 ]] || { echo "c1m.sh: --$n must be a positive integer" >&2; exit 2; }
done
[[ -z "$processes" ]] && processes=$(((connections + 18999) / 19000))
if [[ -z "$sources" ]]; then
  # ~5,000 connections a source address: connect() searches a source's
  # ephemeral ports for a free one, and that search slows down as they fill
  # (with 53 sources, ~19,000 each, the ramp fell from 4,000/s to ~150/s
  # near 750,000 connections; with 200 it held 4,000/s to 1,000,000).
  sources=$(((connections + 4999) / 5000))
  ((sources < processes)) && sources=$processes
fi

bin="$(pwd)/bazel-bin"
case "$server" in
  nbio-io_uring | nbio-epoll)
    server_name="$server"
    server_cmd="$bin/echo/echo_server --backend=${server#nbio-} --reactors=1 --max_connections=0"
    targets=(//echo:echo_server) ;;
  raw_epoll | raw_uring)
    server_name="$server"
    server_cmd="$bin/tools/bench/${server}_echo"
    targets=("//tools/bench:${server}_echo") ;;
  uring_direct)
    server_name="$server"
    server_cmd="$bin/tools/bench/uring_direct_echo --capacity=$connections"
    targets=(//tools/bench:uring_direct_echo) ;;
  *)
    server_name="$server"
    server_cmd="$server"
    targets=() ;;
esac
targets+=(//tools:echo_load)

# --- Memory: refuse rather than push the machine into the OOM killer -------
mem_kb() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
available_kb="$(mem_kb MemAvailable)"
needed_kb=$((connections * 13 + 512 * 1024))
if ((available_kb < needed_kb)); then
  echo "c1m.sh: refusing to start: $connections connections need about $((needed_kb / 1024)) MiB" \
    "(11 KB of kernel memory per connection pair, 2 KB of server memory per connection, 512 MiB margin)," \
    "but MemAvailable is $((available_kb / 1024)) MiB; ask for fewer with --connections" >&2
  exit 1
fi

if [[ $build == 1 ]]; then
  echo "c1m: building ${targets[*]}" >&2
  tools/bazel build "${targets[@]}" >&2
fi
echo_load="$bin/tools/echo_load"
[[ -x "$echo_load" ]] || { echo "c1m.sh: $echo_load not built" >&2; exit 1; }

[[ -n "$out" ]] || out="$(mktemp -d /tmp/c1m.XXXXXX)"
mkdir -p "$out"

# Every process this script starts, stopped on the way out whatever happens.
# (echo_load's worker processes die with it: PR_SET_PDEATHSIG.)
load_pid=""
cleanup() {
  if [[ -n "$load_pid" ]] && kill -0 "$load_pid" 2>/dev/null; then
    kill -TERM "$load_pid" 2>/dev/null || true
  fi
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The server may hold as many descriptors as the hard limit allows.
ulimit -n "$(ulimit -Hn)"

# --- Samples ----------------------------------------------------------------
# proc_kb PID FIELD: a "kB" field of /proc/PID/status (VmRSS, ...).
proc_field() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
# sockstat_tcp FIELD: inuse, tw, alloc, or mem (pages) from /proc/net/sockstat.
sockstat_tcp() { awk -v k="$1" '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == k) print $(i + 1) }' /proc/net/sockstat; }

: >"$out/server.log"
# shellcheck disable=SC2086  # the command line is words on purpose
$server_cmd --listen=127.0.0.1:0 >"$out/server.log" 2>&1 &
server_pid=$!
port="$(bench_wait_listening "$out/server.log" "$server_pid")"
if [[ -z "$port" ]]; then
  echo "c1m.sh: the server ($server_cmd) did not print 'listening on 127.0.0.1:PORT':" >&2
  sed 's/^/  /' "$out/server.log" >&2
  exit 1
fi
sleep 0.5
rss_before="$(proc_field "$server_pid" VmRSS)"
slab_before="$(mem_kb Slab)"
avail_before="$(mem_kb MemAvailable)"
tcp_mem_before="$(sockstat_tcp mem)"
tcp_inuse_before="$(sockstat_tcp inuse)"

echo "c1m: $server_name on 127.0.0.1:$port; $connections connections from $processes processes over $sources source addresses, $rate/s, at most $max_connecting connecting per process; hold $hold; logs in $out" >&2

"$echo_load" --target="127.0.0.1:$port" --hold --connections="$connections" \
  --processes="$processes" --sources="$sources" --connect_rate="$rate" \
  --max_connecting="$max_connecting" --hold_time="$hold" \
  --drain_timeout="$close_timeout" --json >"$out/echo_load.json" 2>"$out/echo_load.log" &
load_pid=$!

# Follow echo_load's progress lines; sample once the hold has begun (all
# connections made and verified, none closing yet).
sampled=0
shown=0
while kill -0 "$load_pid" 2>/dev/null; do
  sleep 0.5
  lines="$(wc -l <"$out/echo_load.log")"
  if ((lines > shown)); then
    sed -n "$((shown + 1)),${lines}p" "$out/echo_load.log" | sed 's/^/  /' >&2
    shown=$lines
  fi
  if [[ $sampled == 0 ]] && grep -q '\] hold ' "$out/echo_load.log"; then
    sleep 0.3  # let the last round trips' buffers settle
    threads="$(proc_field "$server_pid" Threads)"
    rss_held="$(proc_field "$server_pid" VmRSS)"
    slab_held="$(mem_kb Slab)"
    avail_held="$(mem_kb MemAvailable)"
    tcp_mem_held="$(sockstat_tcp mem)"
    tcp_inuse_held="$(sockstat_tcp inuse)"
    sampled=1
  fi
done
load_rc=0
wait "$load_pid" || load_rc=$?
load_pid=""
sed -n "$((shown + 1)),\$p" "$out/echo_load.log" | sed 's/^/  /' >&2
server_alive="yes"
kill -0 "$server_pid" 2>/dev/null || server_alive="no (see $out/server.log)"
bench_stop_server "$server_name"

if [[ $sampled == 0 ]]; then
  echo "c1m.sh: the hold never began (echo_load exit $load_rc); see $out/echo_load.log" >&2
  threads="" rss_held="" slab_held="" avail_held="" tcp_mem_held="" tcp_inuse_held=""
fi

# --- Table ------------------------------------------------------------------
# json FIELD: a field of echo_load's JSON report, 0 when absent.
json() {
  local v
  v="$(sed -n "s/^ *\"$1\": \\(.*\\)/\\1/p" "$out/echo_load.json" 2>/dev/null | tr -d '",')"
  echo "${v:-0}"
}
page_kb=$(($(getconf PAGESIZE) / 1024))
awk -v conns="$connections" -v est="$(json established)" -v failed="$(json connections_failed)" \
  -v verified="$(json verified)" -v closed="$(json connections_ok)" \
  -v unclosed="$(json unclosed)" -v data_errors="$(( $(json mismatches) + $(json lost) + $(json extra) ))" \
  -v threads="$threads" -v rss0="$rss_before" -v rss1="$rss_held" \
  -v slab0="$slab_before" -v slab1="$slab_held" -v avail0="$avail_before" -v avail1="$avail_held" \
  -v mem0="$tcp_mem_before" -v mem1="$tcp_mem_held" -v inuse0="$tcp_inuse_before" -v inuse1="$tcp_inuse_held" \
  -v page_kb="$page_kb" -v ramp_rate="$(json ramp_rate_per_s)" -v ramp_s="$(json last_established_s)" \
  -v rt_s="$(json round_trip_all_s)" -v close_s="$(json close_s)" -v hold_s="$(json hold_s)" \
  -v load_cpu="$(json load_cpu_s)" -v rc="$load_rc" -v server="$server_name" -v cmd="$server_cmd" \
  -v procs="$processes" -v sources="$sources" -v rate="$rate" -v maxc="$max_connecting" \
  -v alive="$server_alive" -v when="$(date -u '+%Y-%m-%d %H:%M UTC')" \
  -v commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')" -v kernel="$(uname -r)" -v cpus="$(nproc)" '
  function grouped(v,   s, r, sign) {
    sign = v < 0 ? "-" : ""
    s = sprintf("%.0f", v < 0 ? -v : v); r = ""
    while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
    return sign s r
  }
  function per(kb, n) { return n > 0 ? sprintf("%.2f KB", kb / n) : "-" }
  function mib(kb) { return sprintf("%.1f MiB", kb / 1024) }
  BEGIN {
    n = est > 0 ? est : 0
    printf "## C1M run: %s, %s connections\n\n", server, grouped(conns)
    printf "%s, commit %s, %s CPUs, Linux %s. Server: `%s`.\n", when, commit, cpus, kernel, cmd
    printf "Client: echo_load --hold, %d process%s, %d source address%s, %s connects/s asked, at most %s connecting per process.\n\n", procs, procs == 1 ? "" : "es", sources, sources == 1 ? "" : "es", grouped(rate), maxc
    print "| figure | value |"
    print "|---|---:|"
    printf "| connections asked | %s |\n", grouped(conns)
    printf "| established | %s |\n", grouped(est)
    printf "| failed | %s |\n", grouped(failed)
    printf "| verified round trips (byte for byte) | %s |\n", grouped(verified)
    printf "| closed cleanly (FIN both ways) | %s |\n", grouped(closed)
    printf "| mismatched + lost + extra bytes | %s |\n", grouped(data_errors)
    printf "| server threads (held) | %s |\n", threads == "" ? "-" : threads
    if (rss1 != "") printf "| server RSS, idle -> held | %s -> %s |\n", mib(rss0), mib(rss1)
    if (rss1 != "") printf "| server RSS per connection (growth while held) | %s |\n", per(rss1 - rss0, n)
    if (rss1 != "") printf "| server RSS per connection (all included: held RSS / connections) | %s |\n", per(rss1, n)
    if (slab1 != "") printf "| kernel Slab per connection pair | %s (%s -> %s) |\n", per(slab1 - slab0, n), mib(slab0), mib(slab1)
    if (mem1 != "") printf "| TCP buffer memory per pair (sockstat mem) | %s (%s pages) |\n", per((mem1 - mem0) * page_kb, n), grouped(mem1 - mem0)
    if (inuse1 != "") printf "| TCP sockets in use (sockstat inuse) | %s -> %s |\n", grouped(inuse0), grouped(inuse1)
    printf "| ramp | %s/s (last connect at %.1f s) |\n", grouped(ramp_rate), ramp_s
    printf "| time to round-trip all | %.2f s |\n", rt_s
    printf "| hold | %.0f s |\n", hold_s
    printf "| time to close all | %.2f s |\n", close_s
    printf "| echo_load exit status / CPU | %s / %.1f s |\n", rc, load_cpu
    printf "| server alive at the end | %s |\n", alive
    printf "\nBoth ends of every connection are on this machine: kernel figures are per connection *pair*.\n"
    # Slab and sockstat are machine-wide: sockets of other processes move them.
    if (inuse1 != "" && n > 0) {
      d = inuse1 - inuse0
      if (d < 2 * n * 0.99 || d > 2 * n * 1.01)
        printf "Sockets of other processes came or went meanwhile (TCP sockets in use grew by %s for %s connection ends): the kernel figures are not this run alone.\n", grouped(d), grouped(2 * n)
    }
  }' | tee "$out/table.md"
exit "$load_rc"
