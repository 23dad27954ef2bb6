#!/usr/bin/env python3
"""soak_abuser: the rude half of tools/soak.sh's traffic, against an echo server.

    tools/soak_abuser.py --target=127.0.0.1:7007 --duration=60 [--idle_timeout=2]

Until --duration seconds have passed, picks one behaviour at a time (seeded,
so a run can be repeated) and checks what the server does:

  reset         connect, send up to 256 KiB, read part of the echo, then
                close with SO_LINGER 0 (an RST, echo still queued)
  abrupt        connect, send, close without reading anything
  connect_close connect and close at once
  half_close    send up to 512 KiB, shutdown(SHUT_WR), read to EOF: the echo
                must be every byte, in order  (verified)
  stall         send up to 1 MiB without reading until the socket is full
                (the server pauses at its high watermark), wait, then read
                it all back  (verified)
  drip          up to 64 bytes, one send() each, each read back  (verified)
  silent        open a connection and say nothing: the server must close
                it (EOF) once --idle_timeout has passed, within a grace
                period  (verified)

Loopback targets only. Prints one JSON object (counts per behaviour, bytes
verified, failures) on stdout, and exits 1 if any verification failed, 2
for bad arguments, 0 otherwise.
"""

import argparse
import ipaddress
import json
import random
import selectors
import socket
import struct
import sys
import time

# How long past the idle timeout a silent connection may stay open. The
# server enforces the timeout with 1/8 of slack on its timer wheel; the rest
# is for a loaded machine.
IDLE_GRACE = 5.0
IO_TIMEOUT = 20.0


class Failure(Exception):
    pass


def connect(target):
    s = socket.create_connection(target, timeout=IO_TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def exchange(sock, data, want):
    """Sends all of `data`, reading the echo meanwhile (so that nothing
    deadlocks however much backs up), until at least `want` bytes are back.

    Returns the bytes that came back (`want` or more).
    """
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    sent, got = 0, bytearray()
    deadline = time.monotonic() + IO_TIMEOUT
    try:
        while sent < len(data) or len(got) < want:
            if time.monotonic() > deadline:
                raise Failure("echo stalled: sent %d of %d, got %d of %d" %
                              (sent, len(data), len(got), want))
            events = selectors.EVENT_READ
            if sent < len(data):
                events |= selectors.EVENT_WRITE
            sel.modify(sock, events)
            for _, mask in sel.select(timeout=1.0):
                if mask & selectors.EVENT_WRITE and sent < len(data):
                    try:
                        sent += sock.send(data[sent:sent + 65536])
                    except BlockingIOError:
                        pass
                if mask & selectors.EVENT_READ:
                    try:
                        chunk = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        raise Failure("EOF after %d of %d sent bytes were "
                                      "echoed" % (len(got), sent))
                    got += chunk
        return bytes(got)
    finally:
        sel.close()
        sock.setblocking(True)
        sock.settimeout(IO_TIMEOUT)


def read_to_eof(sock):
    out = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(out)
        out += chunk


class Abuser:
    def __init__(self, target, rng, idle_timeout):
        self.target = target
        self.rng = rng
        self.idle_timeout = idle_timeout
        self.counts = {}
        self.bytes_verified = 0
        self.failures = []
        self.silent = []  # (socket, opened at)

    def verify(self, name, data, echo):
        if echo != data:
            raise Failure("%s: %d bytes sent, %d echoed%s" %
                          (name, len(data), len(echo),
                           " (different)" if len(echo) == len(data) else ""))
        self.bytes_verified += len(data)

    def payload(self, limit):
        n = self.rng.randint(1, limit)
        return self.rng.randbytes(n)

    def reset(self):
        s = connect(self.target)
        data = self.payload(256 * 1024)
        echo = exchange(s, data, want=self.rng.randint(0, len(data)))
        if echo != data[:len(echo)]:
            raise Failure("reset: echo differs from what was sent")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()

    def abrupt(self):
        s = connect(self.target)
        s.sendall(self.payload(64 * 1024))
        s.close()

    def connect_close(self):
        connect(self.target).close()

    def half_close(self):
        s = connect(self.target)
        data = self.payload(512 * 1024)
        echo = exchange(s, data, want=0)
        s.shutdown(socket.SHUT_WR)
        echo += read_to_eof(s)
        s.close()
        self.verify("half_close", data, echo)

    def stall(self):
        s = connect(self.target)
        data = self.payload(1 << 20)
        # Send without reading until the socket takes no more: the server
        # holds the echo at its high watermark and stops reading.
        s.setblocking(False)
        sent = 0
        try:
            while sent < len(data):
                sent += s.send(data[sent:sent + 65536])
        except BlockingIOError:
            pass
        s.setblocking(True)
        s.settimeout(IO_TIMEOUT)
        time.sleep(0.2)
        # Then read: the server resumes, and every byte comes back.
        echo = exchange(s, data[sent:], want=len(data))
        s.close()
        self.verify("stall", data, echo)

    def drip(self):
        s = connect(self.target)
        data = self.payload(64)
        for i in range(len(data)):
            s.sendall(data[i:i + 1])
            b = s.recv(1)
            if b != data[i:i + 1]:
                raise Failure("drip: byte %d came back as %r" % (i, b))
        s.close()
        self.bytes_verified += len(data)

    def open_silent(self):
        # Stamped before connecting: the server accepts after that, so the
        # age measured here never exceeds its idea of the idle time.
        opened = time.monotonic()
        self.silent.append((connect(self.target), opened))

    def check_silent(self, final=False):
        """Silent connections past the timeout must have been closed."""
        now = time.monotonic()
        keep = []
        for s, opened in self.silent:
            age = now - opened
            s.setblocking(False)
            try:
                data = s.recv(1)
                closed = data == b""
                if data:
                    self.failures.append("silent: the server sent data")
            except BlockingIOError:
                closed = False
            except ConnectionResetError:
                closed = True
            if closed:
                if age < self.idle_timeout:
                    self.failures.append("silent: closed after %.2fs, before "
                                         "the %.1fs idle timeout" %
                                         (age, self.idle_timeout))
                s.close()
                continue
            if age > self.idle_timeout + IDLE_GRACE:
                self.failures.append("silent: still open after %.1fs" % age)
                s.close()
                continue
            if final:
                s.close()
                continue
            keep.append((s, opened))
        self.silent = keep

    def run(self, duration):
        behaviours = [
            ("reset", self.reset, 3),
            ("abrupt", self.abrupt, 2),
            ("connect_close", self.connect_close, 2),
            ("half_close", self.half_close, 3),
            ("drip", self.drip, 2),
            ("stall", self.stall, 1),
            ("silent", self.open_silent, 1),
        ]
        names = [b[0] for b in behaviours]
        weights = [b[2] for b in behaviours]
        table = {b[0]: b[1] for b in behaviours}
        end = time.monotonic() + duration
        while time.monotonic() < end:
            name = self.rng.choices(names, weights)[0]
            if name == "silent" and len(self.silent) >= 50:
                name = "connect_close"
            try:
                table[name]()
                self.counts[name] = self.counts.get(name, 0) + 1
            except (Failure, OSError) as e:
                self.failures.append("%s: %s" % (name, e))
            self.check_silent()
            if len(self.failures) > 20:
                break
        # Let the last silent ones reach their timeout, then check them all.
        wait_until = time.monotonic() + self.idle_timeout + IDLE_GRACE
        while self.silent and time.monotonic() < wait_until:
            time.sleep(0.2)
            self.check_silent()
        self.check_silent(final=True)


def parse_target(text):
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError("not a loopback address: " + host)
    return host, int(port)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="host:port (loopback)")
    parser.add_argument("--duration", type=float, default=60, help="seconds")
    parser.add_argument("--idle_timeout", type=float, default=2,
                        help="the server's --idle_timeout, in seconds")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    try:
        target = parse_target(args.target)
    except ValueError as e:
        print("soak_abuser: --target: %s" % e, file=sys.stderr)
        return 2
    abuser = Abuser(target, random.Random(args.seed), args.idle_timeout)
    abuser.run(args.duration)
    print(json.dumps({
        "counts": abuser.counts,
        "bytes_verified": abuser.bytes_verified,
        "failures": abuser.failures,
    }))
    return 1 if abuser.failures else 0


if __name__ == "__main__":
    sys.exit(main())
