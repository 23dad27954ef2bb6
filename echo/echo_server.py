#!/usr/bin/env python3
"""The echo server of the original select() proof of concept, on nbio.

    tools/bazel run //echo:echo_server_py -- --listen=127.0.0.1:7008
    PYTHONPATH=bazel-bin/reactor/python /usr/bin/python3 echo/echo_server.py

Every byte a client sends comes back. SIGTERM or SIGINT drains: stop
accepting, answer what has arrived, half-close, exit once all are gone.
"""
import argparse
import os
import signal
import sys

# The module next to us in Bazel's runfiles, or built in this checkout; else
# wherever PYTHONPATH says. (In runfiles, a bare `import nbio` would find the
# workspace's own directory, named nbio, first.)
_here = os.path.dirname(os.path.abspath(__file__))
for _d in (os.path.join(_here, "..", "bazel-bin", "reactor", "python"),
           os.path.join(_here, "..", "reactor", "python")):
    if os.path.exists(os.path.join(_d, "nbio.so")):
        sys.path.insert(0, _d)
import nbio  # noqa: E402


class Echo:
    """Writes back whatever arrives; nbio does the queueing and the rest."""

    def on_accept(self, conn):
        conn.start_reading()

    def on_data(self, conn, data):
        conn.write(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:7007",
                        help="host:port to listen on (port 0: any)")
    parser.add_argument("--backend", default="",
                        help="a name from nbio.backends(): epoll, poll, select, "
                             "io_uring (default: the best)")
    args = parser.parse_args()

    loop = nbio.Loop(backend=args.backend)
    # Python handlers make each iteration longer than in C++: accept more per
    # wake-up, so a connect burst is not starved by the established traffic.
    server = loop.listen_tcp(args.listen, Echo(), backlog=4096,
                             max_accepts_per_wakeup=1024)
    print("echo_server.py: listening on %s (%s)" % (server.address,
                                                    loop.backend), flush=True)

    def shutdown(signum):
        print("echo_server.py: %s, draining %d connections" % (
            signal.Signals(signum).name, server.connections), flush=True)
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(s)
        server.drain(loop.stop)

    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, shutdown, s)
    loop.run()
    loop.close()
    print("echo_server.py: done", flush=True)


if __name__ == "__main__":
    main()
