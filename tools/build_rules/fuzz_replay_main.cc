// main() for a libFuzzer target built without libFuzzer (any compiler): the
// regression half of cc_fuzz_test (see fuzz.bzl).
//
// Runs LLVMFuzzerTestOneInput on every file named on the command line (a
// directory means every file in it), then on NBIO_FUZZ_RANDOM_RUNS inputs of
// up to NBIO_FUZZ_MAX_LEN random bytes from a fixed seed, so each run is the
// same. A failing input is reported by the target itself (crash or abort), and
// a crash on a random input also prints that input's index (the seed is
// NBIO_FUZZ_SEED, default 1) so it can be replayed.
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

// Which random input is running, for the crash report.
volatile sig_atomic_t g_random_run = -1;

void ReportCrash(int sig) {
  // Async-signal-safe formatting of the run index.
  char buf[96];
  int n = 0;
  const char prefix[] = "fuzz_replay: crashed on random input #";
  for (const char* p = prefix; *p != 0; ++p) buf[n++] = *p;
  char digits[24];
  int d = 0;
  long v = g_random_run;
  if (v < 0) {
    buf[n++] = '-';
  } else {
    do {
      digits[d++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v > 0);
    while (d > 0) buf[n++] = digits[--d];
  }
  buf[n++] = '\n';
  (void)!write(2, buf, n);
  signal(sig, SIG_DFL);
  raise(sig);
}

void RunFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fuzz_replay: cannot read %s\n", path.c_str());
    std::exit(2);
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()),
                         bytes.size());
}

int RunPath(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    std::fprintf(stderr, "fuzz_replay: no such file %s\n", path.c_str());
    std::exit(2);
  }
  if (!S_ISDIR(st.st_mode)) {
    RunFile(path);
    return 1;
  }
  int n = 0;
  if (DIR* dir = opendir(path.c_str())) {
    while (dirent* e = readdir(dir)) {
      if (e->d_name[0] == '.') continue;
      n += RunPath(path + "/" + e->d_name);
    }
    closedir(dir);
  }
  return n;
}

long EnvOr(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtol(v, nullptr, 10) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGABRT, ReportCrash);
  signal(SIGSEGV, ReportCrash);
  int files = 0;
  for (int i = 1; i < argc; ++i) files += RunPath(argv[i]);

  const long runs = EnvOr("NBIO_FUZZ_RANDOM_RUNS", 10000);
  const long max_len = EnvOr("NBIO_FUZZ_MAX_LEN", 4096);
  const uint32_t seed = static_cast<uint32_t>(EnvOr("NBIO_FUZZ_SEED", 1));
  std::mt19937 rng(seed);
  std::vector<uint8_t> input;
  for (long run = 0; run < runs; ++run) {
    // Mostly short inputs, some long ones: short ones hit edge cases more.
    const long len = (rng() % 4 == 0) ? static_cast<long>(rng() % (max_len + 1))
                                      : static_cast<long>(rng() % 65);
    input.resize(len);
    for (auto& b : input) b = static_cast<uint8_t>(rng());
    g_random_run = static_cast<sig_atomic_t>(run);
    LLVMFuzzerTestOneInput(input.data(), input.size());
  }
  std::printf(
      "fuzz_replay: %d corpus files and %ld random inputs (seed %u) passed\n",
      files, runs, seed);
  return 0;
}
