#!/usr/bin/env python3
"""idle_memory: user-space memory per idle connection, nbio next to the baselines.

    tools/bench/idle_memory.py                        # 10,000 connections, every server
    tools/bench/idle_memory.py --connections=1000 --servers=raw_epoll,nbio-epoll
    tools/bench/idle_memory.py --no-build             # binaries already in bazel-bin

For each server (the echo servers of tools/bench/echo_bench.sh, started
fresh on 127.0.0.1 port 0): one connection echoes a byte and closes (so what
is allocated lazily on the first connection exists), the server's resident
set is read from /proc/PID/statm; then --connections connections are opened,
each echoes one byte (so each is fully set up: accepted, registered, reading)
and stays open and silent; after a settle time the resident set is read
again. The figure is the growth divided by the connections: what an idle
connection costs in the server's own memory (its heap, its tables), not the
kernel's socket buffers, which are not in a process's resident set.

Prints a markdown table, one row per server, with the ratio to the smallest
baseline (raw_epoll, libuv, libev, asio) measured in the same run. Exits 1 if
a server fails to start or to echo, 2 for bad arguments.

The figure is page-granular (4 KiB pages over N connections): with 10,000
connections it resolves to about 0.4 B. Loopback only; the client and each
server need a descriptor per connection (the soft RLIMIT_NOFILE is raised to
the hard limit for the client; the servers raise their own).
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import time

BASELINES = ["raw_epoll", "libuv", "libev", "asio"]
ALL_SERVERS = BASELINES + ["nbio-epoll", "nbio-poll"]
TARGETS = {
    "raw_epoll": "//tools/bench:raw_epoll_echo",
    "libuv": "//tools/bench:libuv_echo",
    "libev": "//tools/bench:libev_echo",
    "asio": "//tools/bench:asio_echo",
    "nbio-epoll": "//echo:echo_server",
    "nbio-poll": "//echo:echo_server",
    "nbio-select": "//echo:echo_server",
}


def server_command(name, bin_dir):
    if name.startswith("nbio-"):
        return [os.path.join(bin_dir, "echo/echo_server"), "--backend=" + name[5:]]
    package, target = TARGETS[name][2:].split(":")
    return [os.path.join(bin_dir, package, target)]


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def echo_one(sock, deadline):
    """Waits for the byte sent on `sock` to come back; False on EOF or timeout."""
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    try:
        return sock.recv(1) == b"x"
    except socket.timeout:
        return False


def measure(name, bin_dir, connections, settle):
    proc = subprocess.Popen(
        server_command(name, bin_dir) + ["--listen=127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    socks = []
    try:
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on 127.0.0.1:"):
            raise RuntimeError(f"{name}: no 'listening on' line (got {line!r})")
        port = int(line.rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        warm = socket.create_connection(("127.0.0.1", port))
        warm.sendall(b"x")
        if not echo_one(warm, deadline):
            raise RuntimeError(f"{name}: the warm-up connection got no echo")
        warm.close()
        time.sleep(settle)
        base, base_fds = rss_bytes(proc.pid), open_fds(proc.pid)
        for _ in range(connections):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(("127.0.0.1", port))
            socks.append(s)
        deadline = time.monotonic() + 60
        for s in socks:
            s.sendall(b"x")
        for s in socks:
            if not echo_one(s, deadline):
                hint = (" (select watches at most FD_SETSIZE descriptors)"
                        if name == "nbio-select" else "")
                raise RuntimeError(f"{name}: an idle connection got no echo{hint}")
        time.sleep(settle)
        loaded, loaded_fds = rss_bytes(proc.pid), open_fds(proc.pid)
        if loaded_fds - base_fds < connections:
            raise RuntimeError(f"{name}: holds {loaded_fds - base_fds} more fds, "
                               f"expected {connections}")
        return base, loaded
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--servers", default=",".join(ALL_SERVERS),
                        help="comma-separated subset of: " + " ".join(TARGETS))
    parser.add_argument("--settle", type=float, default=0.5,
                        help="seconds to wait before each reading (default 0.5)")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    bad = [s for s in servers if s not in TARGETS]
    if bad or not servers or args.connections < 1:
        print(f"idle_memory: bad --servers ({','.join(bad)}) or --connections "
              "(see --help)", file=sys.stderr)
        return 2

    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    os.chdir(root)
    if not args.no_build:
        targets = sorted({TARGETS[s] for s in servers})
        print("idle_memory: building " + " ".join(targets), file=sys.stderr)
        subprocess.run(["tools/bazel", "build"] + targets, check=True,
                       stdout=sys.stderr)
    bin_dir = os.path.join(root, "bazel-bin")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.connections + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    rows = []
    for name in servers:
        try:
            base, loaded = measure(name, bin_dir, args.connections, args.settle)
        except (RuntimeError, OSError) as e:
            print(f"idle_memory: {e}", file=sys.stderr)
            return 1
        rows.append((name, base, loaded, (loaded - base) / args.connections))
        print(f"idle_memory: {name}: {rows[-1][3]:.1f} B per connection",
              file=sys.stderr)

    baseline = [r[3] for r in rows if r[0] in BASELINES]
    best = min(baseline) if baseline else None
    print(f"\n{args.connections} idle connections (each echoed one byte), "
          "growth of the server's resident set:\n")
    print("| server | RSS before | RSS with the connections | bytes per connection "
          "| vs smallest baseline |")
    print("|---|---:|---:|---:|---:|")
    for name, base, loaded, per in rows:
        ratio = f"{per / best:.2f}x" if best else "-"
        print(f"| {name} | {base / 1024:.0f} KiB | {loaded / 1024:.0f} KiB "
              f"| {per:.1f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
