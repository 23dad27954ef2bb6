// What nbio does where io_uring is refused, as a container's seccomp
// profile or sysctl kernel.io_uring_disabled refuse it: this binary denies
// io_uring_setup(2) to itself (and to the processes it starts) with EPERM
// before any test runs, then checks that
//  - the io_uring backend fails to start with an error that says why;
//  - the default backend is unaffected;
//  - the backend-parameterised suites skip io_uring, visibly, with the
//    reason (and only io_uring: other backends never skip);
//  - `echo_server --backend=io_uring` exits 1 with one line saying why.
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "reactor/event_loop.h"
#include "reactor/poller/poller_registry.h"
#include "reactor/testing/loop_test_util.h"
#include "tests/server_process.h"

namespace nbio {
namespace {

// Whether the filter is in place; the tests assert it rather than pass
// vacuously.
bool g_denied = false;

// io_uring_setup returns EPERM in this process and its children.
bool DenyIoUringSetup() {
#if defined(__x86_64__)
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{
      static_cast<unsigned short>(sizeof(filter) / sizeof(filter[0])), filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
#else
  return false;
#endif
}

TEST(NoIoUringTest, FilterIsInPlace) {
  ASSERT_TRUE(g_denied) << "could not install the seccomp filter";
  EXPECT_EQ(syscall(__NR_io_uring_setup, 1, nullptr), -1);
  EXPECT_EQ(errno, EPERM);
}

TEST(NoIoUringTest, BackendFailsWithTheReason) {
  ASSERT_TRUE(g_denied);
  absl::StatusOr<std::unique_ptr<Poller>> poller = CreatePoller("io_uring");
  ASSERT_FALSE(poller.ok());
  EXPECT_EQ(poller.status().code(), absl::StatusCode::kPermissionDenied)
      << poller.status();
  EXPECT_NE(poller.status().message().find("seccomp"), std::string::npos)
      << poller.status();
  EventLoop::Options options;
  options.backend = "io_uring";
  EXPECT_FALSE(EventLoop::Create(options).ok());
}

TEST(NoIoUringTest, DefaultBackendIsUnaffected) {
  ASSERT_TRUE(g_denied);
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok()) << loop.status();
  EXPECT_EQ(std::string((*loop)->backend_name()), DefaultPollerName());
  EXPECT_NE(DefaultPollerName(), "io_uring");
}

TEST(NoIoUringTest, SuitesSkipIoUringOnlyAndSayWhy) {
  ASSERT_TRUE(g_denied);
  EXPECT_NE(BackendUnavailableReason("io_uring"), "");
  EXPECT_NE(BackendUnavailableReason("io_uring_poll"), "");
  for (const std::string& name : PollerNames()) {
    if (name == "io_uring" || name == "io_uring_poll") continue;
    EXPECT_EQ(BackendUnavailableReason(name), "") << name;
  }
}

TEST(NoIoUringTest, EchoServerExitsOneWithOneLine) {
  ASSERT_TRUE(g_denied);
  testing::ServerProcess server(
      {"echo/echo_server", "--backend=io_uring", "--listen=127.0.0.1:0"});
  EXPECT_EQ(server.WaitExit(absl::Seconds(20)), 1);
  const std::string err = server.Stderr();
  std::vector<std::string> lines = absl::StrSplit(err, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 1u) << err;
  EXPECT_NE(lines[0].find("io_uring"), std::string::npos) << err;
  EXPECT_NE(lines[0].find("seccomp"), std::string::npos) << err;
}

}  // namespace
}  // namespace nbio

int main(int argc, char** argv) {
  nbio::g_denied = nbio::DenyIoUringSetup();
  if (!nbio::g_denied) {
    std::fprintf(stderr,
                 "no_io_uring_test: cannot install a seccomp filter: %s\n",
                 std::strerror(errno));
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
