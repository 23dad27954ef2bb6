#!/usr/bin/env bash
# Runs every libFuzzer target of nbio for a bounded time each.
#
#   tools/run_fuzzers.sh            # 30 s per fuzzer
#   tools/run_fuzzers.sh 300        # 5 minutes per fuzzer
#
# Builds the fuzzers with --config=fuzz (clang, libFuzzer, ASan + LSan +
# UBSan), then runs each one in turn, starting from its seed corpus in the
# repository. The repository corpus is passed read-only: libFuzzer writes new
# inputs only to the first corpus folder given, which is a scratch folder
# here, so a run never adds files to the tree. Prints one line per fuzzer:
#
#   message_queue_fuzzer   OK        1234567 runs in 30s, 81 new inputs
#   echo_read_path_fuzzer  CRASH     2345 runs; artifact /tmp/...; log /tmp/...
#
# and exits 1 if any fuzzer found a crash, a leak, a timeout (an input that
# ran longer than 10 s) or ran out of memory, keeping that fuzzer's scratch
# folder (log, crashing input, new inputs) and printing the last lines of its
# log. Exit 2 for a bad argument, 3 when the build fails.
#
# Each fuzzer's own one-line command (what this script runs) is
#   BIN=$(tools/bazel info --config=fuzz bazel-bin)
#   $BIN/queue/message_queue_fuzzer -max_total_time=30 -timeout=10 \
#       "$(mktemp -d)" queue/testdata/message_queue_fuzz
# after `tools/bazel build --config=fuzz //queue:message_queue_fuzzer`; a
# crashing input is replayed by passing its file instead of the folders.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
root="$PWD"

# label:corpus-folder
readonly FUZZERS=(
  "//queue:message_queue_fuzzer:queue/testdata/message_queue_fuzz"
  "//timers:timer_wheel_fuzzer:timers/testdata/timer_wheel_fuzz"
  "//tests:echo_read_path_fuzzer:tests/testdata/echo_read_path_fuzz"
)
# A single input running longer than this is a hang.
readonly UNIT_TIMEOUT=10

seconds="${1:-30}"
if [[ $# -gt 1 || ! "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: tools/run_fuzzers.sh [seconds per fuzzer, default 30]" >&2
  exit 2
fi

labels=()
for entry in "${FUZZERS[@]}"; do labels+=("${entry%:*}"); done

start=$SECONDS
build_log="$(mktemp)"
if ! tools/bazel build --config=fuzz "${labels[@]}" >"$build_log" 2>&1; then
  tail -n 30 "$build_log" >&2
  echo "run_fuzzers: build failed (log: $build_log)" >&2
  exit 3
fi
bin="$(tools/bazel info --config=fuzz bazel-bin 2>/dev/null)"
rm -f "$build_log"
echo "run_fuzzers: built ${#labels[@]} fuzzers in $((SECONDS - start))s; ${seconds}s each"

failed=0
for entry in "${FUZZERS[@]}"; do
  label="${entry%:*}"
  corpus="${entry##*:}"
  package="${label#//}"
  package="${package%%:*}"
  name="${label##*:}"
  scratch="$(mktemp -d "${TMPDIR:-/tmp}/${name}.XXXXXX")"
  mkdir "$scratch/corpus"
  log="$scratch/fuzz.log"
  # libFuzzer stops at -max_total_time between inputs; the outer timeout
  # only catches a fuzzer that cannot stop at all.
  (
    cd "$scratch" &&
      ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}" \
      UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
      timeout --signal=KILL $((seconds + 5 * UNIT_TIMEOUT + 60)) \
      "$bin/$package/$name" -max_total_time="$seconds" -timeout="$UNIT_TIMEOUT" \
      -print_final_stats=1 -artifact_prefix="$scratch/" \
      "$scratch/corpus" "$root/$corpus"
  ) >"$log" 2>&1
  rc=$?
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  added="$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -n 1)"
  artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
  if [[ $rc -eq 0 ]]; then
    printf '%-24s OK       %s runs in %ss, %s new inputs\n' "$name" "${runs:-?}" \
      "$seconds" "${added:-0}"
    rm -rf "$scratch"
    continue
  fi
  failed=$((failed + 1))
  if grep -q 'ERROR: LeakSanitizer' "$log"; then
    what=LEAK
  elif grep -q 'ERROR: libFuzzer: timeout' "$log"; then
    what=TIMEOUT
  elif grep -q 'out-of-memory' "$log"; then
    what=OOM
  elif [[ $rc -eq 137 ]]; then
    what=KILLED
  else
    what=CRASH
  fi
  printf '%-24s %-8s %s runs; exit %s; artifact %s; log %s\n' "$name" "$what" \
    "${runs:-?}" "$rc" "${artifact:-none}" "$log"
  tail -n 40 "$log" | sed "s/^/  $name: /"
done

echo "run_fuzzers: ${#FUZZERS[@]} fuzzers, $failed failed, $((SECONDS - start))s in all"
[[ $failed -eq 0 ]] || exit 1
