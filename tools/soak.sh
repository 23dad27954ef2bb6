#!/usr/bin/env bash
# A bounded soak of echo_server: mixed traffic for a while, verified, with
# the server's memory and descriptors watched for growth.
#
#   tools/soak.sh                      # 10 minutes
#   tools/soak.sh --duration=2m --backend=poll
#   tools/soak.sh --help
#
# Builds //echo:echo_server and //tools:echo_load (optimized), starts the
# server on 127.0.0.1 (port 0) with a 2 s idle timeout, then, until the
# duration is up:
#   - echo_load in rounds, cycling through four shapes: 100 connections
#     ping-pong 64 B; 500 connections 512 B x 4 in flight, opened at 2,000/s;
#     20 connections 64 KiB x 4 (bulk); 1,000 connections 16 B, opened at
#     5,000/s. Every byte is verified (echo_load exits 1 on a lost or wrong
#     byte, 3 on a failed connection);
#   - tools/soak_abuser.py throughout: RSTs with echo queued, abrupt closes,
#     connect-and-close, half-closes read to EOF (verified), stalled readers
#     that fill the server's queue to its high watermark, then read it all
#     (verified), one byte at a time (verified), silent connections that the
#     idle timeout must close;
#   - every second, the server's RSS (/proc/PID/statm) and open descriptors
#     (/proc/PID/fd) into samples.tsv.
# Then the traffic stops, the descriptors must come back to what the server
# had at rest before the soak, and SIGTERM must end it with status 0.
#
# Fails (exit 1) if any byte was lost or wrong, any verification failed, the
# server died, its descriptors did not return to rest, or either grew
# without bound, which here means: over the last third of the samples,
#   RSS: the largest exceeds the largest of the first third by more than
#        10% + 8 MiB (RSS keeps its high-water mark: connection slabs and
#        free blocks are kept for reuse, so a bounded server plateaus);
#   fds: the smallest exceeds the smallest of the first third by more than
#        16 (between rounds the count falls back to the server's own
#        descriptors plus the abuser's few; a leak raises that floor).
# Exit 2 for a bad flag, 3 when the build fails. Prints a summary; the
# samples and logs stay in --out (a fresh /tmp/nbio_soak.* by default).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
# shellcheck source=tools/bench/bench_lib.sh
source tools/bench/bench_lib.sh

usage() {
  sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

duration_arg="10m"
backend="epoll"
out=""
for arg in "$@"; do
  case "$arg" in
    --duration=*) duration_arg="${arg#*=}" ;;
    --backend=*) backend="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    -h | --help) usage; exit 0 ;;
    *) echo "soak: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

# 90, 90s, 15m, 1h -> seconds.
to_seconds() {
  local v="$1"
  case "$v" in
    *h) echo $((${v%h} * 3600)) ;;
    *m) echo $((${v%m} * 60)) ;;
    *s) echo "${v%s}" ;;
    *) echo "$v" ;;
  esac
}
duration="$(to_seconds "$duration_arg" 2>/dev/null)"
if [[ ! "$duration" =~ ^[0-9]+$ || "$duration" -lt 30 ]]; then
  echo "soak: --duration must be at least 30s, e.g. 90s, 10m, 1h (got $duration_arg)" >&2
  exit 2
fi
case "$backend" in epoll | poll | select) ;; *)
  echo "soak: --backend must be epoll, poll or select" >&2; exit 2 ;;
esac
[[ -n "$out" ]] || out="$(mktemp -d "${TMPDIR:-/tmp}/nbio_soak.XXXXXX")"
mkdir -p "$out" || exit 2

echo "soak: building //echo:echo_server //tools:echo_load (optimized)"
if ! tools/bazel build //echo:echo_server //tools:echo_load >"$out/build.log" 2>&1; then
  tail -n 30 "$out/build.log" >&2
  exit 3
fi
bin="$(tools/bazel info bazel-bin 2>/dev/null)"

readonly IDLE_TIMEOUT=2
"$bin/echo/echo_server" --listen=127.0.0.1:0 --backend="$backend" \
  --idle_timeout="${IDLE_TIMEOUT}s" --stats_interval=10s \
  >"$out/server.stdout" 2>"$out/server.log" &
server_pid=$!
sampler_pid=""
abuser_pid=""
cleanup() {
  [[ -n "$abuser_pid" ]] && kill "$abuser_pid" 2>/dev/null
  [[ -n "$sampler_pid" ]] && kill "$sampler_pid" 2>/dev/null
  kill -KILL "$server_pid" 2>/dev/null
}
trap cleanup EXIT

port="$(bench_wait_listening "$out/server.stdout" "$server_pid")"
target="127.0.0.1:$port"
if [[ -z "$port" ]]; then
  echo "soak: echo_server did not start:" >&2
  cat "$out/server.log" >&2
  exit 1
fi
page_size="$(getconf PAGESIZE)"
fds_now() { find "/proc/$server_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
rss_now() { echo $(($(cut -d' ' -f2 "/proc/$server_pid/statm") * page_size)); }
fds_at_rest="$(fds_now)"
echo "soak: echo_server (pid $server_pid, $backend) on $target; ${duration}s;" \
  "${fds_at_rest} fds at rest; output in $out"

# One sample a second: seconds since start, RSS bytes, open fds.
start_time=$SECONDS
(
  while kill -0 "$server_pid" 2>/dev/null; do
    printf '%s\t%s\t%s\n' "$((SECONDS - start_time))" "$(rss_now)" "$(fds_now)"
    sleep 1
  done
) >"$out/samples.tsv" 2>/dev/null &
sampler_pid=$!

python3 tools/soak_abuser.py --target="$target" --duration="$duration" \
  --idle_timeout="$IDLE_TIMEOUT" >"$out/abuser.json" 2>"$out/abuser.log" &
abuser_pid=$!

# echo_load shapes, cycled. Each round: 1 s warmup + 6 s measured.
readonly SHAPES=(
  "--connections=100 --size=64 --depth=1"
  "--connections=500 --size=512 --depth=4 --connect_rate=2000"
  "--connections=20 --size=65536 --depth=4"
  "--connections=1000 --size=16 --depth=1 --connect_rate=5000"
)
rounds=0
failed_rounds=0
bytes_verified=0
messages=0
data_errors=0
: >"$out/rounds.tsv"
while ((SECONDS - start_time < duration - 10)); do
  shape="${SHAPES[$((rounds % ${#SHAPES[@]}))]}"
  # shellcheck disable=SC2086  # the shape is a list of flags
  "$bin/tools/echo_load" --target="$target" $shape --warmup=1s --duration=6s \
    --json >"$out/round.json" 2>"$out/round.log"
  rc=$?
  rounds=$((rounds + 1))
  sent="$(sed -n 's/.*"bytes_sent": *\([0-9]*\).*/\1/p' "$out/round.json")"
  received="$(sed -n 's/.*"bytes_received": *\([0-9]*\).*/\1/p' "$out/round.json")"
  msgs="$(sed -n 's/.*"messages_total": *\([0-9]*\).*/\1/p' "$out/round.json")"
  bad="$(sed -n 's/.*"\(lost\|mismatches\|extra\)": *\([0-9]*\).*/\2/p' "$out/round.json" |
    awk '{n += $1} END {print n + 0}')"
  data_errors=$((data_errors + bad))
  printf '%s\t%s\t%s\t%s\t%s\n' "$rounds" "$rc" "${sent:-?}" "${received:-?}" \
    "$shape" >>"$out/rounds.tsv"
  if [[ $rc -ne 0 ]]; then
    failed_rounds=$((failed_rounds + 1))
    echo "soak: round $rounds ($shape) failed with status $rc:" >&2
    sed 's/^/  /' "$out/round.log" "$out/round.json" >&2
    cp "$out/round.json" "$out/round-$rounds-failed.json"
  fi
  bytes_verified=$((bytes_verified + ${received:-0}))
  messages=$((messages + ${msgs:-0}))
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "soak: echo_server died" >&2
    break
  fi
done

wait "$abuser_pid"
abuser_rc=$?
abuser_pid=""

# Traffic over: the descriptors come back to rest (the idle timeout closes
# anything a client left behind).
fds_end="$(fds_now)"
for _ in $(seq $((IDLE_TIMEOUT * 10 + 100))); do
  fds_end="$(fds_now)"
  [[ "$fds_end" -le "$fds_at_rest" ]] && break
  sleep 0.1
done
kill "$sampler_pid" 2>/dev/null
sampler_pid=""

kill -TERM "$server_pid" 2>/dev/null
wait "$server_pid"
server_rc=$?

# --- verdict -------------------------------------------------------------------
verdict="$(python3 - "$out/samples.tsv" "$out/abuser.json" <<'EOF'
import json, sys
samples = [tuple(int(x) for x in line.split("\t"))
           for line in open(sys.argv[1]) if line.count("\t") == 2]
third = max(1, len(samples) // 3)
first, last = samples[:third], samples[-third:]
mib = 1 << 20
rss_first = max(s[1] for s in first)
rss_last = max(s[1] for s in last)
fd_first = min(s[2] for s in first)
fd_last = min(s[2] for s in last)
rss_ok = rss_last <= rss_first * 1.10 + 8 * mib
fd_ok = fd_last <= fd_first + 16
try:
    ab = json.load(open(sys.argv[2]))
except Exception:
    ab = {"counts": {}, "bytes_verified": 0, "failures": ["no abuser report"]}
print("samples=%d" % len(samples))
print("rss_line=RSS max %.1f MiB (first third) -> %.1f MiB (last third), "
      "peak %.1f MiB: %s" % (rss_first / mib, rss_last / mib,
                             max(s[1] for s in samples) / mib,
                             "bounded" if rss_ok else "GROWING"))
print("fd_line=fds min %d (first third) -> %d (last third), peak %d: %s" %
      (fd_first, fd_last, max(s[2] for s in samples),
       "bounded" if fd_ok else "GROWING"))
print("growth_ok=%d" % (rss_ok and fd_ok))
print("abuser_line=%s; %d bytes verified; %d failures%s" % (
    ", ".join("%s %d" % kv for kv in sorted(ab["counts"].items())),
    ab["bytes_verified"], len(ab["failures"]),
    (": " + "; ".join(ab["failures"][:5])) if ab["failures"] else ""))
EOF
)"
value() { sed -n "s/^$1=//p" <<<"$verdict"; }

status=0
problems=()
[[ $failed_rounds -eq 0 ]] || problems+=("$failed_rounds echo_load rounds failed")
[[ $data_errors -eq 0 ]] || problems+=("$data_errors bytes lost, wrong or extra")
[[ $abuser_rc -eq 0 ]] || problems+=("the abuser's checks failed (status $abuser_rc)")
[[ "$(value growth_ok)" == 1 ]] || problems+=("RSS or fds grew")
[[ "$fds_end" -le "$fds_at_rest" ]] || problems+=("fds at the end $fds_end, at rest $fds_at_rest")
[[ $server_rc -eq 0 ]] || problems+=("echo_server exited with status $server_rc")
[[ ${#problems[@]} -eq 0 ]] || status=1

echo "soak: $((SECONDS - start_time))s against echo_server --backend=$backend, $(value samples) samples"
echo "  echo_load     $rounds rounds, $failed_rounds failed; $messages messages," \
  "$((bytes_verified / 1048576)) MiB echoed and verified; $data_errors bytes lost," \
  "wrong or extra"
echo "  abuser        $(value abuser_line)"
echo "  memory        $(value rss_line)"
echo "  descriptors   $(value fd_line); $fds_at_rest at rest before, $fds_end after"
echo "  exit          echo_server status $server_rc after SIGTERM"
if [[ $status -eq 0 ]]; then
  echo "soak: PASS"
else
  printf 'soak: FAIL: %s\n' "${problems[@]}"
fi
exit $status
