#include "reactor/testing/loop_test_util.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "reactor/poller/poller_registry.h"

namespace nbio {

TestPipe::TestPipe() {
  int fds[2];
  EXPECT_EQ(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
  r = fds[0];
  w = fds[1];
}

TestPipe::~TestPipe() {
  if (r >= 0) close(r);
  if (w >= 0) close(w);
}

TestSocketPair::TestSocketPair() {
  int fds[2];
  EXPECT_EQ(
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds),
      0);
  a = fds[0];
  b = fds[1];
}

TestSocketPair::~TestSocketPair() {
  if (a >= 0) close(a);
  if (b >= 0) close(b);
}

std::string BackendUnavailableReason(const std::string& name) {
  if (name.rfind("io_uring", 0) != 0) return "";  // io_uring, io_uring_poll
  absl::StatusOr<std::unique_ptr<Poller>> poller = CreatePoller(name);
  return poller.ok() ? "" : std::string(poller.status().message());
}

std::vector<std::string> StreamEngineBackends() { return {"io_uring"}; }

std::vector<std::string> ReadinessBackends() {
  std::vector<std::string> names;
  for (const std::string& name : PollerNames()) {
    if (name != "io_uring") names.push_back(name);
  }
  return names;
}

std::unique_ptr<EventLoop> CreateTestLoop(const EventLoop::Options& options) {
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create(options);
  EXPECT_TRUE(loop.ok()) << loop.status();
  return loop.ok() ? std::move(*loop) : nullptr;
}

void RunNoWait(EventLoop* loop, int iterations) {
  for (int i = 0; i < iterations; ++i) {
    ASSERT_TRUE(loop->RunOnce(EventLoop::RunMode::kNoWait).ok());
  }
}

}  // namespace nbio
