"""Sanitizer builds of the nbio module, for the Python tests.

An extension module built with -fsanitize=address (tools/bazel test
--config=asan, as CI does for //...) does not carry the ASan runtime: clang
links it into executables only, and /usr/bin/python3 is not instrumented. So
a test that imports such a module first calls preload_if_needed(), which
re-executes the test's interpreter with the runtime preloaded
(LD_PRELOAD=$(clang -print-file-name=libclang_rt.asan-x86_64.so)). In an
ordinary build it does nothing.

LeakSanitizer is turned off for the interpreter: CPython keeps objects alive
at exit by design, which would drown real reports. Leaks of Python objects
are the tests' business (gc, tracemalloc).

Subprocesses the test starts inherit LD_PRELOAD; clean_env() gives an
environment without it, for instrumented executables (echo_load), which
carry their own runtime.
"""
import glob
import os
import subprocess
import sys

_MARK = "NBIO_ASAN_PRELOADED"


def asan_runtime():
    """The path of libclang_rt.asan-x86_64.so, or None."""
    try:
        path = subprocess.run(
            ["clang", "-print-file-name=libclang_rt.asan-x86_64.so"],
            capture_output=True, text=True, check=True).stdout.strip()
        if os.path.isabs(path) and os.path.exists(path):
            return path
    except (OSError, subprocess.CalledProcessError):
        pass
    found = sorted(glob.glob(
        "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.asan-x86_64.so"))
    return found[-1] if found else None


def is_asan_build(module_path):
    with open(module_path, "rb") as f:
        return b"__asan_init" in f.read()


def preload_if_needed(module_path):
    """Re-executes this process with the ASan runtime preloaded when
    `module_path` (nbio.so) is an ASan build and it is not loaded yet.
    Exits 1, saying why, when the runtime cannot be found."""
    if os.environ.get(_MARK) or not is_asan_build(module_path):
        return
    runtime = asan_runtime()
    if runtime is None:
        print("%s: FAILED: nbio.so is an ASan build but the ASan runtime "
              "(libclang_rt.asan-x86_64.so) was not found; install "
              "libclang-rt-14-dev" % sys.argv[0], flush=True)
        sys.exit(1)
    env = dict(os.environ)
    env[_MARK] = "1"
    env["LD_PRELOAD"] = runtime
    env["ASAN_OPTIONS"] = ("detect_leaks=0:halt_on_error=1:"
                           "detect_stack_use_after_return=1")
    print("%s: ASan build of nbio.so: running under python with %s preloaded"
          % (os.path.basename(sys.argv[0]), runtime), flush=True)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def clean_env():
    """os.environ without the preloaded runtime (for instrumented binaries)."""
    env = dict(os.environ)
    if env.get(_MARK):
        env.pop("LD_PRELOAD", None)
        env.pop(_MARK, None)
    return env
