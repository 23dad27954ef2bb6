#!/usr/bin/env python3
"""Python echo servers side by side: nbio (echo/echo_server.py) against the
original select() proof of concept, asyncio (Protocol), uvloop and gevent,
all driven by tools/echo_load, which verifies every byte.

Run it through tools/bench/python_echo_bench.sh (which installs and builds
what it needs); this script takes the built binaries' paths.

For every connection count and server: the server is started fresh under
/usr/bin/python3 on 127.0.0.1 port 0 (pinned to one CPU, echo_load to
another, when there are two), echo_load runs 64-byte ping-pong, and the
server's CPU time (utime + stime from /proc/PID/stat) over the whole
echo_load run is divided by the messages echoed in that run (warm-up
included): server CPU microseconds per message. Then the memory phase:
each server's resident set before and after N idle connections (each
echoed one byte, so it is fully set up), divided by N.
"""
import argparse
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

PYTHON = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
SERVERS = {
    "nbio": [os.path.join(ROOT, "echo", "echo_server.py")],
    "select": [os.path.join(HERE, "select_echo.py")],
    "asyncio": [os.path.join(HERE, "asyncio_echo.py")],
    "uvloop": [os.path.join(HERE, "asyncio_echo.py"), "--loop=uvloop"],
    "gevent": [os.path.join(HERE, "gevent_echo.py")],
}
HZ = os.sysconf("SC_CLK_TCK")


def cpus():
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return []


def pin(cpu):
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def start_server(name, nbio_dir, cpu):
    env = dict(os.environ, PYTHONPATH=nbio_dir)
    proc = subprocess.Popen(pin(cpu) + [PYTHON] + SERVERS[name] + ["--listen=127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m:
            return proc, int(m.group(1))
    proc.kill()
    raise RuntimeError("%s did not start: %s" % (name, proc.stdout.read()))


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss(pid):
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_load(name, echo_load, nbio_dir, conns, args, server_cpu, load_cpu):
    proc, port = start_server(name, nbio_dir, server_cpu)
    try:
        before = cpu_ticks(proc.pid)
        load = subprocess.run(
            pin(load_cpu) + [echo_load, "--target=127.0.0.1:%d" % port,
                             "--connections=%d" % conns, "--size=64", "--depth=1",
                             "--duration=" + args.duration, "--warmup=" + args.warmup,
                             "--json"],
            capture_output=True, text=True, timeout=600)
        alive = proc.poll() is None
        after = cpu_ticks(proc.pid) if alive else None
    finally:
        out = stop_server(proc)
    result = {"server": name, "connections": conns, "rc": load.returncode}
    try:
        j = json.loads(load.stdout)
    except ValueError:
        j = {}
    result.update(j)
    if not alive:
        tail = (out or "").strip().splitlines()[-1:] or [""]
        result["failure"] = "server died: " + tail[0][:100]
    elif load.returncode != 0:
        why = []
        if j.get("connections_failed"):
            why.append("%s of %d connections not established" % (
                "{:,}".format(j["connections_failed"]), conns))
        for key in ("mismatches", "lost", "extra"):
            if j.get(key):
                why.append("%s %s" % ("{:,}".format(j[key]), key))
        result["failure"] = "echo_load exit %d%s" % (
            load.returncode, (": " + ", ".join(why)) if why else "")
    if after is not None and j.get("messages_total"):
        result["cpu_us_per_msg"] = (after - before) * 1e6 / HZ / j["messages_total"]
    return result


def idle_memory(name, nbio_dir, n, server_cpu):
    proc, port = start_server(name, nbio_dir, server_cpu)
    socks = []
    try:
        # One connection first, so what is allocated lazily exists.
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"x")
        s.recv(1)
        s.close()
        time.sleep(0.3)
        base = rss(proc.pid)
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"x")
            socks.append(s)
        for s in socks:
            if s.recv(1) != b"x":
                raise RuntimeError("%s: no echo" % name)
        time.sleep(0.5)
        grown = rss(proc.pid) - base
    finally:
        for s in socks:
            s.close()
        stop_server(proc)
    return grown / n


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--echo_load", required=True)
    parser.add_argument("--nbio_dir", required=True, help="folder holding nbio.so")
    parser.add_argument("--servers", default="nbio,select,asyncio,uvloop,gevent")
    parser.add_argument("--connections", default="100,1000,10000")
    parser.add_argument("--duration", default="3s")
    parser.add_argument("--warmup", default="1s")
    parser.add_argument("--memory_connections", type=int, default=5000)
    parser.add_argument("--json", help="write every run here")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    c = cpus()
    server_cpu, load_cpu = (c[0], c[1]) if len(c) >= 2 else (None, None)
    servers = args.servers.split(",")
    counts = [int(x) for x in args.connections.split(",")]
    runs = []
    for conns in counts:
        for name in servers:
            r = run_load(name, args.echo_load, args.nbio_dir, conns, args, server_cpu, load_cpu)
            runs.append(r)
            print("%-8s %6d conns: %s" % (
                name, conns, r.get("failure") or "%.0f msgs/s, %.2f us CPU/msg" % (
                    r.get("msgs_per_sec", 0), r.get("cpu_us_per_msg", 0))),
                file=sys.stderr, flush=True)
    memory = {}
    if args.memory_connections > 0:
        for name in servers:
            if name == "select" and args.memory_connections > 1000:
                memory[name] = None  # cannot hold them
                continue
            memory[name] = idle_memory(name, args.nbio_dir, args.memory_connections, server_cpu)
            print("%-8s idle: %.0f B/connection" % (name, memory[name]), file=sys.stderr,
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "memory": memory}, f, indent=1)

    print("Server: /usr/bin/python3 (%s), %s." % (
        sys.version.split()[0],
        "server on CPU %d, echo_load on CPU %d" % (server_cpu, load_cpu)
        if server_cpu is not None else "not pinned"))
    print("echo_load: 64 B ping-pong, depth 1, %s measured after %s warm-up.\n" % (
        args.duration, args.warmup))
    print("| connections | server | msgs/s | server CPU µs/msg | vs uvloop (CPU/msg) |")
    print("|---:|---|---:|---:|---:|")
    for conns in counts:
        uv = next((r for r in runs if r["server"] == "uvloop" and r["connections"] == conns), None)
        for r in (r for r in runs if r["connections"] == conns):
            if "failure" in r:
                print("| %d | %s | fails: %s | | |" % (conns, r["server"], r["failure"]))
                continue
            ratio = ""
            if uv and uv.get("cpu_us_per_msg") and r.get("cpu_us_per_msg"):
                ratio = "%.2f" % (r["cpu_us_per_msg"] / uv["cpu_us_per_msg"])
            print("| %d | %s | %s | %.2f | %s |" % (
                conns, r["server"], "{:,.0f}".format(r.get("msgs_per_sec", 0)),
                r.get("cpu_us_per_msg", float("nan")), ratio))
    if memory:
        print("\nServer memory per idle connection (%d connections, resident set "
              "growth / N):\n" % args.memory_connections)
        print("| server | bytes per idle connection |")
        print("|---|---:|")
        for name, b in memory.items():
            print("| %s | %s |" % (name, "cannot hold them (select: FD_SETSIZE)"
                                   if b is None else "{:,.0f}".format(b)))


if __name__ == "__main__":
    main()
