"""README.md's "nbio from Python" example, run as written (but on port 0):
it echoes, hashes its own file in slices, and drains on SIGTERM."""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sanitizers  # noqa: E402

sanitizers.preload_if_needed(os.path.join(HERE, "nbio.so"))
README = os.path.join(HERE, "..", "..", "README.md")


def example():
    with open(README) as f:
        text = f.read()
    section = text.split("## nbio from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


class ReadmePythonTest(unittest.TestCase):

    def test_example_runs(self):
        code = example()
        self.assertIn('"127.0.0.1:7007"', code)
        code = code.replace('"127.0.0.1:7007"', '"127.0.0.1:0"')
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(code)
        proc = subprocess.Popen(
            [sys.executable, "-u", f.name], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONPATH=HERE))
        try:
            line = proc.stdout.readline()
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            self.assertTrue(m, line)
            s = socket.create_connection(("127.0.0.1", int(m.group(1))))
            s.sendall(b"hello, nbio")
            got = b""
            while len(got) < 11:
                got += s.recv(100)
            self.assertEqual(got, b"hello, nbio")
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(s.recv(100), b"")  # the server half-closed too
            s.close()
            proc.send_signal(signal.SIGTERM)
            # Not communicate(timeout=...): it reads the pipe's fd, and the
            # readline() above may have buffered the lines after the first.
            proc.wait(timeout=20)
            out = proc.stdout.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            proc.stdout.close()
            os.unlink(f.name)
        self.assertEqual(proc.returncode, 0, out)
        self.assertRegex(out, r"sha256 [0-9a-f]{64} None")


if __name__ == "__main__":
    unittest.main()
