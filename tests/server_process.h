// ServerProcess: runs a server binary as a child process for end-to-end
// tests, and the small socket helpers those tests share.
//
//   ServerProcess server({"echo/echo_server", "--listen=127.0.0.1:0"});
//   ASSERT_TRUE(server.WaitListening());       // parses "listening on ..."
//   int fd = server.Connect();
//   ...
//   server.Signal(SIGTERM);
//   EXPECT_EQ(server.WaitExit(absl::Seconds(10)), 0);
//
// The child's stdout is read for the "listening on <address>" line; its
// stderr goes to a file that Stderr() returns. The destructor kills a child
// that is still running. Test-only; not thread-safe.
#ifndef NBIO_TESTS_SERVER_PROCESS_H_
#define NBIO_TESTS_SERVER_PROCESS_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "reactor/sys/socket_address.h"

namespace nbio {
namespace testing {

class ServerProcess {
 public:
  // Starts argv[0] with the given arguments. `rlimit_nofile`, when set,
  // becomes the child's open-file limit (soft and hard). `in_child`, when
  // set, runs in the child after its stdout and stderr are in place and
  // before exec (e.g. to pass a socket as fd 3 and set LISTEN_PID to the
  // child's pid); it must only make async-signal-safe calls and setenv.
  explicit ServerProcess(std::vector<std::string> argv,
                         std::optional<int> rlimit_nofile = std::nullopt,
                         std::function<void()> in_child = nullptr);
  ~ServerProcess();

  // Waits (up to `timeout`) for the "listening on ADDRESS" line.
  bool WaitListening(absl::Duration timeout = absl::Seconds(20));
  const SocketAddress& address() const { return address_; }
  pid_t pid() const { return pid_; }

  // A blocking TCP connection to the server with 10 s send/receive
  // timeouts, or -1 with errno set by the failed call.
  int Connect() const;

  void Signal(int signo) const;
  // The exit status (128 + signal for a signal death), or nullopt on timeout.
  std::optional<int> WaitExit(absl::Duration timeout);
  bool running();

  // The rest of the child's stdout, up to EOF (or `timeout`).
  std::string ReadStdout(absl::Duration timeout = absl::Seconds(20));
  // Everything the child wrote to stderr so far.
  std::string Stderr() const;
  // The child's resident set size in bytes (from /proc), or 0.
  uint64_t ResidentBytes() const;
  // The child's user + system CPU time so far.
  absl::Duration CpuTime() const;
  // How many descriptors the child has open (entries of /proc/PID/fd), or -1.
  int OpenFds() const;
  // The counters of the last "stats: key=value ..." line the child wrote to
  // stderr (echo_server --stats_interval), numbers only: `connections`,
  // `accepted`, `refused`, `resets`, `idle_closed`, `read_pauses`, ...
  // Empty when there is no such line yet.
  std::map<std::string, uint64_t> LastStats() const;

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string stderr_path_;
  std::string stdout_buffer_;
  SocketAddress address_;
  std::optional<int> exit_status_;
};

// A blocking TCP connection to `to` with 10 s send and receive timeouts, or
// -1 with errno set. An EINTR from connect() is waited out, not returned.
int ConnectBlocking(const SocketAddress& to);
// Writes all of `data` (blocking fd); false on error.
bool WriteAll(int fd, const std::string& data);
// Reads exactly `n` bytes, or until EOF / error / the fd's timeout.
std::string ReadN(int fd, size_t n);
// Reads until EOF (or error / timeout); `eof` says whether EOF was seen.
std::string ReadToEof(int fd, bool* eof = nullptr);
std::string RandomBytes(size_t n, uint32_t seed);
// Polls `done` every 10 ms until it returns true (then true) or `timeout`
// passes (then false). For waiting on another process, which no fake clock
// can drive.
bool WaitFor(absl::Duration timeout, const std::function<bool()>& done);
// Where Bazel put the data dependency `path` (e.g. "echo/echo_server").
std::string RunfilePath(const std::string& path);
// The echo_server binary (a data dependency of the test).
inline std::string EchoServerBinary() {
  return RunfilePath("echo/echo_server");
}

// The parameter of the end-to-end suites that run the real echo_server:
// every backend, with one reactor and with two.
struct BackendReactors {
  std::string backend;
  int reactors;
};
std::vector<BackendReactors> EveryBackendWithOneAndTwoReactors();
// "epoll_1reactor", "io_uring_2reactors": a test-name suffix.
std::string TestNameSuffix(const BackendReactors& param);

// Moves the calling process into a network namespace of its own with its
// loopback up (a fresh 127.0.0.0/8 where every port is free, and sysctls
// such as tcp_migrate_req of its own). "" when done; else "SKIP reason"
// where it is not allowed (no CAP_SYS_ADMIN), or "FAIL reason" where it is
// allowed but did not work.
std::string EnterOwnNetworkNamespace();

}  // namespace testing
}  // namespace nbio

#endif  // NBIO_TESTS_SERVER_PROCESS_H_
