"""Runs nbio_test.py against an AddressSanitizer build of the module.

    tools/bazel test --config=asan //reactor/python:nbio_asan_test

An extension module built with -fsanitize=address does not carry the ASan
runtime (clang links it into executables only), and /usr/bin/python3 is not
instrumented, so the runtime is preloaded into the interpreter
(LD_PRELOAD=$(clang -print-file-name=libclang_rt.asan-x86_64.so)).
LeakSanitizer is off: CPython keeps its objects alive at exit by design, and
would drown real reports; leaks of Python objects are nbio_test's business
(tracemalloc, gc).

In a build without ASan this says so on stdout and runs the suite
uninstrumented; where the ASan runtime cannot be found it fails, saying why.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from sanitizers import asan_runtime  # noqa: E402
MODULE = os.path.join(HERE, "nbio.so")
SUITE = os.path.join(HERE, "nbio_test.py")


def main():
    with open(MODULE, "rb") as f:
        instrumented = b"__asan_init" in f.read()
    env = dict(os.environ)
    if not instrumented:
        print("nbio_asan_test: NOT an ASan build of nbio.so: running the "
              "suite uninstrumented. For the ASan run: tools/bazel test "
              "--config=asan //reactor/python:nbio_asan_test", flush=True)
    else:
        runtime = asan_runtime()
        if runtime is None:
            print("nbio_asan_test: FAILED: nbio.so is built with ASan but the "
                  "ASan runtime (libclang_rt.asan-x86_64.so) was not found; "
                  "install libclang-rt-14-dev", flush=True)
            return 1
        env["LD_PRELOAD"] = runtime
        env["NBIO_ASAN_PRELOADED"] = "1"  # sanitizers.py: already done
        env["ASAN_OPTIONS"] = ("detect_leaks=0:abort_on_error=0:"
                               "halt_on_error=1:detect_stack_use_after_return=1")
        print("nbio_asan_test: ASan build; preloading %s" % runtime, flush=True)
    result = subprocess.run([sys.executable, SUITE, "-v"], env=env)
    if instrumented and result.returncode != 0:
        print("nbio_asan_test: the suite failed under ASan (see above)")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
