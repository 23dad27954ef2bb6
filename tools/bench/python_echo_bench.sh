#!/usr/bin/env bash
# Python echo servers side by side: nbio's echo/echo_server.py against the
# original select() proof of concept, asyncio (Protocol), uvloop and gevent
# (tools/bench/python/), with //tools:echo_load at 100, 1,000 and 10,000
# connections: messages per second and server CPU microseconds per message;
# then server memory per idle connection.
#
#   tools/bench/python_echo_bench.sh                      # ~3 minutes
#   tools/bench/python_echo_bench.sh --connections=100 --servers=nbio,uvloop
#   tools/bench/python_echo_bench.sh --help
#
# Installs Debian's python3-uvloop and python3-gevent when missing (through
# sudo when not root), builds the module and echo_load (optimized), copies
# them out of bazel-bin (which another config may repoint), and runs
# tools/bench/python/python_echo_bench.py under /usr/bin/python3.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then
  /usr/bin/python3 tools/bench/python/python_echo_bench.py --help
  exit 0
fi

missing=()
/usr/bin/python3 -c 'import uvloop' 2>/dev/null || missing+=(python3-uvloop)
/usr/bin/python3 -c 'import gevent' 2>/dev/null || missing+=(python3-gevent)
if [[ ${#missing[@]} -gt 0 ]]; then
  sudo=()
  [[ "$(id -u)" == 0 ]] || sudo=(sudo)
  echo "python_echo_bench: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get install -y -q "${missing[@]}" >/dev/null ||
    { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" apt-get install -y -q "${missing[@]}" >/dev/null; }
fi

echo "python_echo_bench: building //reactor/python:nbio.so //tools:echo_load" >&2
tools/bazel build //reactor/python:nbio.so //tools:echo_load >&2
work="$(mktemp -d /tmp/python_echo_bench.XXXXXX)"
cp bazel-bin/reactor/python/nbio.so bazel-bin/tools/echo_load "$work/"

exec /usr/bin/python3 tools/bench/python/python_echo_bench.py \
  --echo_load="$work/echo_load" --nbio_dir="$work" --json="$work/runs.json" "$@"
