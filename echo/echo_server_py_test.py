"""echo/echo_server.py as a process: a verified echo over 200 connections
(tools/echo_load checks every byte), and SIGTERM drains (every byte sent
before the signal comes back, then EOF, then the process exits 0)."""
import os
import re
import signal
import socket
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "echo_server.py")
ECHO_LOAD = os.path.join(HERE, "..", "tools", "echo_load")
MODULE_DIR = os.path.join(HERE, "..", "reactor", "python")
sys.path.insert(0, MODULE_DIR)
import sanitizers  # noqa: E402

sanitizers.preload_if_needed(os.path.join(MODULE_DIR, "nbio.so"))


class EchoServerProcess:
    """echo_server.py on port 0, under this interpreter; address parsed from
    its first line."""

    def __init__(self, *extra):
        self.proc = subprocess.Popen(
            [sys.executable, SERVER, "--listen=127.0.0.1:0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (\S+):(\d+)", line)
        if not m:
            self.proc.kill()
            raise AssertionError("no address from the server: %r" % line)
        self.host, self.port = m.group(1), int(m.group(2))

    def stop(self, signo=signal.SIGTERM, timeout=20):
        self.proc.send_signal(signo)
        # Not communicate(timeout=...), which reads the pipe's fd directly:
        # readline() in __init__ may have buffered later lines.
        self.proc.wait(timeout=timeout)
        out = self.proc.stdout.read()
        self.proc.stdout.close()
        return self.proc.returncode, out


class EchoServerPyTest(unittest.TestCase):

    def test_200_connections_every_byte_verified(self):
        for backend in ("epoll", "poll"):
            server = EchoServerProcess("--backend=" + backend)
            try:
                result = subprocess.run(
                    [ECHO_LOAD, "--target=127.0.0.1:%d" % server.port,
                     "--connections=200", "--size=512", "--depth=2",
                     "--duration=2s", "--warmup=500ms"],
                    capture_output=True, text=True, timeout=60,
                    env=sanitizers.clean_env())
            finally:
                code, out = server.stop()
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn("200 ok, 0 failed", result.stdout)
            self.assertIn("0 mismatched, 0 lost, 0 extra bytes", result.stdout)
            self.assertEqual(code, 0, out)

    def test_sigterm_drains_then_exits(self):
        server = EchoServerProcess()
        clients = []
        payload = os.urandom(300000)
        for _ in range(10):
            s = socket.create_connection((server.host, server.port))
            self.addCleanup(s.close)
            clients.append(s)
        for s in clients:
            s.sendall(payload[:1000])
        # Every client has been echoed once: the server knows all ten.
        for s in clients:
            got = b""
            while len(got) < 1000:
                got += s.recv(65536)
        sent = {}
        for s in clients:
            s.setblocking(False)
            try:
                n = s.send(payload)
            except BlockingIOError:
                n = 0
            sent[s] = payload[:1000] + payload[:n]
        server.proc.send_signal(signal.SIGTERM)
        # Each connection is half-closed by the server after its echo: read
        # to EOF; what comes back is what went in after the first 1,000
        # bytes (already read back above), up to what the server had read
        # when it drained.
        for s in clients:
            s.setblocking(True)
            s.settimeout(20)
            got = bytearray()
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            self.assertEqual(bytes(got), sent[s][1000:1000 + len(got)])
            s.close()
        server.proc.wait(timeout=20)
        out = server.proc.stdout.read()
        server.proc.stdout.close()
        self.assertEqual(server.proc.returncode, 0, out)
        self.assertIn("SIGTERM, draining", out)
        self.assertIn("done", out)


if __name__ == "__main__":
    unittest.main()
