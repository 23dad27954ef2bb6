// Runs each echo baseline binary and checks it is a correct echo server,
// in particular under partial writes: a client that sends megabytes while
// reading slowly makes the server's writes come up short, and every byte
// must still come back, in order. Also checks the "listening on" line and
// that port 0 works, which echo_bench.sh relies on. raw_uring_echo and
// uring_direct_echo exit 1 where io_uring is unavailable; their tests are
// then skipped, with the reason, rather than passed.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "reactor/sys/socket_address.h"

namespace nbio {
namespace {

class Server {
 public:
  // Starts bazel-bin/tools/bench/<name> --listen=127.0.0.1:0 and reads the
  // port from its "listening on" line. A server that exits 1 instead, with
  // a line saying io_uring is unavailable on this machine, leaves port() 0
  // and the line in unavailable().
  explicit Server(const std::string& name) {
    const char* srcdir = std::getenv("TEST_SRCDIR");
    const char* workspace = std::getenv("TEST_WORKSPACE");
    const std::string path =
        absl::StrCat(srcdir ? srcdir : ".", "/", workspace ? workspace : "nbio",
                     "/tools/bench/", name);
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err[1], STDERR_FILENO);
      execl(path.c_str(), path.c_str(), "--listen=127.0.0.1:0",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out[1]);
    close(err[1]);
    std::string line;
    char c;
    while (read(out[0], &c, 1) == 1 && c != '\n') line.push_back(c);
    close(out[0]);
    const std::string prefix = "listening on 127.0.0.1:";
    if (line.empty()) {
      // No "listening on": it exited. Read why.
      std::string why;
      while (read(err[0], &c, 1) == 1 && c != '\n') why.push_back(c);
      int status = 0;
      waitpid(pid_, &status, 0);
      pid_ = -1;
      if (WIFEXITED(status) && WEXITSTATUS(status) == 1 &&
          why.find("io_uring unavailable") != std::string::npos) {
        unavailable_ = why;
        close(err[0]);
        return;
      }
      ADD_FAILURE() << name << " exited before listening: " << why;
    }
    close(err[0]);
    EXPECT_EQ(line.rfind(prefix, 0), 0u) << "first line: " << line;
    uint32_t port = 0;
    if (line.rfind(prefix, 0) == 0 &&
        absl::SimpleAtoi(line.substr(prefix.size()), &port)) {
      port_ = static_cast<uint16_t>(port);
    }
  }

  ~Server() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }

  uint16_t port() const { return port_; }
  const std::string& unavailable() const { return unavailable_; }

 private:
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  std::string unavailable_;
};

// Skips the test, visibly and with the server's reason, when the baseline
// needs a kernel feature this machine lacks (io_uring).
#define SKIP_IF_UNAVAILABLE(server)         \
  if (!(server).unavailable().empty()) {    \
    GTEST_SKIP() << (server).unavailable(); \
  }

int Connect(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const SocketAddress a = SocketAddress::Loopback4(port);
  if (fd < 0 || connect(fd, a.sockaddr_ptr(), a.sockaddr_len()) != 0) {
    ADD_FAILURE() << "connect: " << errno;
    return -1;
  }
  fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

uint8_t ByteAt(size_t i) {
  return static_cast<uint8_t>((i * 131 + i / 251) & 0xFF);
}

class EchoBaselineTest : public ::testing::TestWithParam<const char*> {};

TEST_P(EchoBaselineTest, PingPong) {
  Server server(GetParam());
  SKIP_IF_UNAVAILABLE(server);
  ASSERT_NE(server.port(), 0);
  const int fd = Connect(server.port());
  ASSERT_GE(fd, 0);
  fcntl(fd, F_SETFL, 0);  // blocking for this one
  for (int round = 0; round < 100; ++round) {
    const std::string msg = absl::StrCat("message ", round);
    ASSERT_EQ(write(fd, msg.data(), msg.size()),
              static_cast<ssize_t>(msg.size()));
    std::string got(msg.size(), '\0');
    size_t have = 0;
    while (have < got.size()) {
      const ssize_t n = read(fd, &got[have], got.size() - have);
      ASSERT_GT(n, 0);
      have += static_cast<size_t>(n);
    }
    EXPECT_EQ(got, msg);
  }
  close(fd);
}

TEST_P(EchoBaselineTest, EchoesEverythingToASlowReader) {
  Server server(GetParam());
  SKIP_IF_UNAVAILABLE(server);
  ASSERT_NE(server.port(), 0);
  const int fd = Connect(server.port());
  ASSERT_GE(fd, 0);
  // Far more than the socket buffers on both sides hold, so the server's
  // writes fall short and it must hold the rest.
  constexpr size_t kTotal = 8 << 20;
  size_t sent = 0;
  size_t received = 0;
  size_t wrong = 0;
  std::vector<uint8_t> out(64 * 1024);
  std::vector<uint8_t> in(16 * 1024);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (received < kTotal && std::chrono::steady_clock::now() < deadline) {
    if (sent < kTotal) {
      const size_t n = std::min(out.size(), kTotal - sent);
      for (size_t i = 0; i < n; ++i) out[i] = ByteAt(sent + i);
      const ssize_t w = send(fd, out.data(), n, MSG_NOSIGNAL);
      if (w > 0) sent += static_cast<size_t>(w);
      ASSERT_TRUE(w > 0 || errno == EAGAIN) << errno;
    }
    // Slow: one small read per round, and a pause while the writer is
    // still ahead, so the server's output backs up.
    const ssize_t r = read(fd, in.data(), in.size());
    if (r > 0) {
      for (ssize_t i = 0; i < r; ++i) wrong += in[i] != ByteAt(received + i);
      received += static_cast<size_t>(r);
    } else {
      ASSERT_TRUE(r < 0 && errno == EAGAIN) << "read: " << r << " " << errno;
      pollfd p{fd, POLLIN, 0};
      poll(&p, 1, 1);
    }
    if (sent < kTotal)
      std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  EXPECT_EQ(sent, kTotal);
  EXPECT_EQ(received, kTotal);
  EXPECT_EQ(wrong, 0u);
  close(fd);
}

TEST_P(EchoBaselineTest, ServesManyConnectionsAtOnce) {
  Server server(GetParam());
  SKIP_IF_UNAVAILABLE(server);
  ASSERT_NE(server.port(), 0);
  std::vector<int> fds;
  for (int i = 0; i < 200; ++i) {
    fds.push_back(Connect(server.port()));
    ASSERT_GE(fds.back(), 0);
  }
  for (size_t i = 0; i < fds.size(); ++i) {
    const std::string msg = absl::StrCat("conn ", i);
    ASSERT_EQ(write(fds[i], msg.data(), msg.size()),
              static_cast<ssize_t>(msg.size()));
  }
  for (size_t i = 0; i < fds.size(); ++i) {
    const std::string msg = absl::StrCat("conn ", i);
    std::string got;
    while (got.size() < msg.size()) {
      pollfd p{fds[i], POLLIN, 0};
      ASSERT_EQ(poll(&p, 1, 10000), 1) << "no echo on connection " << i;
      char buf[64];
      const ssize_t n = read(fds[i], buf, sizeof(buf));
      ASSERT_GT(n, 0);
      got.append(buf, static_cast<size_t>(n));
    }
    EXPECT_EQ(got, msg);
    close(fds[i]);
  }
}

INSTANTIATE_TEST_SUITE_P(Baselines, EchoBaselineTest,
                         ::testing::Values("raw_epoll_echo", "raw_uring_echo",
                                           "uring_direct_echo", "libuv_echo",
                                           "libev_echo", "asio_echo"),
                         [](const auto& info) {
                           return std::string(info.param);
                         });

}  // namespace
}  // namespace nbio
