#!/usr/bin/env python3
"""An echo server on gevent's StreamServer (Debian's python3-gevent, under
/usr/bin/python3): a greenlet per connection, blocking-style code.

    /usr/bin/python3 tools/bench/python/gevent_echo.py --listen=127.0.0.1:0
"""
import argparse
import signal
import socket

import gevent
from gevent.server import StreamServer


def echo(sock, address):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = sock.recv(65536)
        if not data:
            break
        sock.sendall(data)
    sock.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1:7007")
    host, port = parser.parse_args().listen.rsplit(":", 1)
    server = StreamServer((host, int(port)), echo, backlog=4096)
    server.start()
    print("listening on %s:%d" % server.address[:2], flush=True)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
