#include "tests/server_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace nbio {
namespace testing {

ServerProcess::ServerProcess(std::vector<std::string> argv,
                             std::optional<int> rlimit_nofile,
                             std::function<void()> in_child) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  static int counter = 0;
  stderr_path_ = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/server-",
                              getpid(), "-", counter++, ".stderr");
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return;
  pid_ = fork();
  if (pid_ == 0) {
    dup2(out[1], 1);
    const int err =
        open(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (err >= 0) dup2(err, 2);
    if (err > 2)
      close(err);  // else it could sit at fd 3, where LISTEN_FDS start
    if (rlimit_nofile.has_value()) {
      rlimit lim;
      lim.rlim_cur = lim.rlim_max = static_cast<rlim_t>(*rlimit_nofile);
      setrlimit(RLIMIT_NOFILE, &lim);
    }
    if (in_child) in_child();
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    std::fprintf(stderr, "exec %s failed: %d\n", args[0], errno);
    _exit(127);
  }
  close(out[1]);
  stdout_fd_ = out[0];
}

ServerProcess::~ServerProcess() {
  if (running()) {
    kill(pid_, SIGKILL);
    WaitExit(absl::Seconds(10));
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
  unlink(stderr_path_.c_str());
}

bool ServerProcess::WaitListening(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    const size_t nl = stdout_buffer_.find('\n');
    if (nl != std::string::npos) {
      const std::string line = stdout_buffer_.substr(0, nl);
      stdout_buffer_.erase(0, nl + 1);
      if (absl::StartsWith(line, "listening on ")) {
        absl::StatusOr<SocketAddress> a =
            SocketAddress::Parse(line.substr(strlen("listening on ")));
        if (!a.ok()) return false;
        address_ = *a;
        return true;
      }
      continue;
    }
    pollfd p{stdout_fd_, POLLIN, 0};
    const int ms =
        static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()) + 1);
    if (poll(&p, 1, ms) <= 0) continue;
    char buf[512];
    const ssize_t n = read(stdout_fd_, buf, sizeof(buf));
    if (n <= 0) return false;  // the child exited
    stdout_buffer_.append(buf, n);
  }
  return false;
}

std::string ServerProcess::ReadStdout(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string out = std::move(stdout_buffer_);
  stdout_buffer_.clear();
  while (absl::Now() < deadline) {
    pollfd p{stdout_fd_, POLLIN, 0};
    const int ms =
        static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()) + 1);
    if (poll(&p, 1, ms) <= 0) continue;
    char buf[4096];
    const ssize_t n = read(stdout_fd_, buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, n);
  }
  return out;
}

int ServerProcess::Connect() const { return ConnectBlocking(address_); }

void ServerProcess::Signal(int signo) const {
  if (pid_ > 0) kill(pid_, signo);
}

bool ServerProcess::running() {
  if (exit_status_.has_value() || pid_ <= 0) return false;
  return !WaitExit(absl::ZeroDuration()).has_value();
}

std::optional<int> ServerProcess::WaitExit(absl::Duration timeout) {
  if (exit_status_.has_value()) return exit_status_;
  const absl::Time deadline = absl::Now() + timeout;
  do {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_status_ =
          WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_status_;
    }
    if (r < 0) return std::nullopt;
    if (timeout > absl::ZeroDuration()) absl::SleepFor(absl::Milliseconds(5));
  } while (absl::Now() < deadline);
  return std::nullopt;
}

std::string ServerProcess::Stderr() const {
  std::ifstream in(stderr_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint64_t ServerProcess::ResidentBytes() const {
  std::ifstream in(absl::StrCat("/proc/", pid_, "/statm"));
  uint64_t size = 0, resident = 0;
  in >> size >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

absl::Duration ServerProcess::CpuTime() const {
  std::ifstream in(absl::StrCat("/proc/", pid_, "/stat"));
  std::string all((std::istreambuf_iterator<char>(in)),
                  std::istreambuf_iterator<char>());
  // Fields after the ")" that ends the command name: utime is the 12th
  // and stime the 13th of them (fields 14 and 15 of the whole line).
  const size_t paren = all.rfind(')');
  if (paren == std::string::npos) return absl::ZeroDuration();
  std::vector<std::string> f = absl::StrSplit(all.substr(paren + 2), ' ');
  if (f.size() < 13) return absl::ZeroDuration();
  const double ticks =
      std::strtod(f[11].c_str(), nullptr) + std::strtod(f[12].c_str(), nullptr);
  return absl::Seconds(ticks / static_cast<double>(sysconf(_SC_CLK_TCK)));
}

int ServerProcess::OpenFds() const {
  DIR* dir = opendir(absl::StrCat("/proc/", pid_, "/fd").c_str());
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n;
}

std::map<std::string, uint64_t> ServerProcess::LastStats() const {
  const std::string err = Stderr();
  std::map<std::string, uint64_t> stats;
  const size_t at = err.rfind("stats: ");
  if (at == std::string::npos) return stats;
  const size_t end = err.find('\n', at);
  if (end == std::string::npos) return stats;  // a line still being written
  for (absl::string_view field : absl::StrSplit(
           absl::string_view(err).substr(at + 7, end - at - 7), ' ')) {
    const size_t eq = field.find('=');
    uint64_t value = 0;
    if (eq != absl::string_view::npos &&
        absl::SimpleAtoi(field.substr(eq + 1), &value)) {
      stats[std::string(field.substr(0, eq))] = value;
    }
  }
  return stats;
}

bool WaitFor(absl::Duration timeout, const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

int ConnectBlocking(const SocketAddress& to) {
  const int fd = socket(to.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int err = 0;
  if (connect(fd, to.sockaddr_ptr(), to.sockaddr_len()) != 0) {
    err = errno;
    if (err == EINTR) {
      // Interrupted, not failed: the handshake goes on in the kernel. With
      // a send timeout set the kernel does not restart the call, and this
      // happens without any signal: tearing down an io_uring (a backend
      // probe, a test's loop) queues work to this thread that interrupts
      // its next timed wait. Wait for the outcome instead.
      pollfd p{fd, POLLOUT, 0};
      int ready;
      do {
        ready = poll(&p, 1, 10000);
      } while (ready < 0 && errno == EINTR);
      socklen_t len = sizeof(err);
      if (ready != 1 ||
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = ready == 0 ? ETIMEDOUT : errno;
      }
    }
  }
  if (err != 0) {
    close(fd);
    errno = err;  // for the caller's message
    return -1;
  }
  return fd;
}

bool WriteAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n =
        send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += n;
  }
  return true;
}

std::string ReadN(int fd, size_t n) {
  std::string out;
  char buf[65536];
  while (out.size() < n) {
    const ssize_t r = recv(fd, buf, std::min(sizeof(buf), n - out.size()), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    out.append(buf, r);
  }
  return out;
}

std::string ReadToEof(int fd, bool* eof) {
  std::string out;
  char buf[65536];
  if (eof != nullptr) *eof = false;
  for (;;) {
    const ssize_t r = recv(fd, buf, sizeof(buf), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0 && eof != nullptr) *eof = true;
    if (r <= 0) break;
    out.append(buf, r);
  }
  return out;
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

std::string RunfilePath(const std::string& path) {
  const char* dir = std::getenv("TEST_SRCDIR");
  const char* ws = std::getenv("TEST_WORKSPACE");
  if (dir == nullptr) return path;
  return absl::StrCat(dir, "/", ws != nullptr ? ws : "nbio", "/", path);
}

std::vector<BackendReactors> EveryBackendWithOneAndTwoReactors() {
  std::vector<BackendReactors> params;
  for (int reactors : {1, 2}) {
    for (const char* backend : {"epoll", "poll", "select", "io_uring"}) {
      params.push_back({backend, reactors});
    }
  }
  return params;
}

std::string TestNameSuffix(const BackendReactors& param) {
  return absl::StrCat(param.backend, "_", param.reactors,
                      param.reactors == 1 ? "reactor" : "reactors");
}

std::string EnterOwnNetworkNamespace() {
  if (unshare(CLONE_NEWNET) != 0) {
    return absl::StrCat("SKIP unshare(CLONE_NEWNET): ", std::strerror(errno),
                        " (needs CAP_SYS_ADMIN)");
  }
  // A new namespace has lo, down.
  const int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return absl::StrCat("FAIL socket: ", std::strerror(errno));
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
    close(s);
    return absl::StrCat("FAIL SIOCGIFFLAGS(lo): ", std::strerror(errno));
  }
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) {
    const int err = errno;
    close(s);
    return absl::StrCat(err == EPERM ? "SKIP" : "FAIL",
                        " SIOCSIFFLAGS(lo, up): ", std::strerror(err));
  }
  close(s);
  return "";
}

}  // namespace testing
}  // namespace nbio
