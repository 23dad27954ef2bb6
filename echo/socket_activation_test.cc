// TakeListenFds: sd_listen_fds semantics, on descriptors of this process
// (from a first_fd above the ones the test runner holds; the real fd 3 is
// exercised end to end by //tests:echo_drain_test).
#include "echo/socket_activation.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace nbio {
namespace {

constexpr int kFirst = 200;

class SocketActivationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two inheritable descriptors at kFirst and kFirst + 1.
    for (int i = 0; i < 2; ++i) {
      const int fd = open("/dev/null", O_RDONLY);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(dup2(fd, kFirst + i), kFirst + i);
      close(fd);
    }
  }
  void TearDown() override {
    close(kFirst);
    close(kFirst + 1);
  }
  static void Set(const char* pid, const char* fds, const char* names) {
    for (auto [name, value] :
         {std::pair<const char*, const char*>{"LISTEN_PID", pid},
          {"LISTEN_FDS", fds},
          {"LISTEN_FDNAMES", names}}) {
      if (value == nullptr) {
        unsetenv(name);
      } else {
        setenv(name, value, 1);
      }
    }
  }
  static bool EnvironmentClear() {
    return std::getenv("LISTEN_PID") == nullptr &&
           std::getenv("LISTEN_FDS") == nullptr &&
           std::getenv("LISTEN_FDNAMES") == nullptr;
  }
  static bool CloseOnExec(int fd) { return fcntl(fd, F_GETFD) & FD_CLOEXEC; }
  const std::string self_ = absl::StrCat(getpid());
};

TEST_F(SocketActivationTest, TakesTheDescriptorsMeantForThisProcess) {
  Set(self_.c_str(), "2", "echo:echo6");
  absl::StatusOr<std::vector<ListenFd>> fds = TakeListenFds(kFirst);
  ASSERT_TRUE(fds.ok()) << fds.status();
  ASSERT_EQ(fds->size(), 2u);
  EXPECT_EQ((*fds)[0].fd, kFirst);
  EXPECT_EQ((*fds)[0].name, "echo");
  EXPECT_EQ((*fds)[1].fd, kFirst + 1);
  EXPECT_EQ((*fds)[1].name, "echo6");
  EXPECT_TRUE(CloseOnExec(kFirst));
  EXPECT_TRUE(CloseOnExec(kFirst + 1));
  EXPECT_TRUE(EnvironmentClear());
}

TEST_F(SocketActivationTest, NamesAreUnknownWithoutFdNames) {
  Set(self_.c_str(), "1", nullptr);
  absl::StatusOr<std::vector<ListenFd>> fds = TakeListenFds(kFirst);
  ASSERT_TRUE(fds.ok()) << fds.status();
  ASSERT_EQ(fds->size(), 1u);
  EXPECT_EQ((*fds)[0].name, "unknown");
  EXPECT_FALSE(CloseOnExec(kFirst + 1)) << "only LISTEN_FDS descriptors";
}

TEST_F(SocketActivationTest, IgnoresDescriptorsMeantForAnotherProcess) {
  const std::string other = absl::StrCat(getpid() + 1);
  Set(other.c_str(), "2", "echo:echo6");
  absl::StatusOr<std::vector<ListenFd>> fds = TakeListenFds(kFirst);
  ASSERT_TRUE(fds.ok()) << fds.status();
  EXPECT_TRUE(fds->empty());
  EXPECT_FALSE(CloseOnExec(kFirst));
  // Unset anyway, as sd_listen_fds(1) does: our children must not see them.
  EXPECT_TRUE(EnvironmentClear());
}

TEST_F(SocketActivationTest, NothingWithoutListenPidOrWithZeroFds) {
  Set(nullptr, "2", nullptr);
  absl::StatusOr<std::vector<ListenFd>> fds = TakeListenFds(kFirst);
  ASSERT_TRUE(fds.ok());
  EXPECT_TRUE(fds->empty());
  Set(self_.c_str(), "0", nullptr);
  fds = TakeListenFds(kFirst);
  ASSERT_TRUE(fds.ok());
  EXPECT_TRUE(fds->empty());
  EXPECT_TRUE(EnvironmentClear());
}

TEST_F(SocketActivationTest, MalformedVariablesAreErrors) {
  struct Case {
    const char* pid;
    const char* fds;
    const char* names;
    const char* message;
  };
  const std::string self = self_;
  const Case cases[] = {
      {"12x", "1", nullptr, "LISTEN_PID=12x: not a process id"},
      {self.c_str(), "one", nullptr, "LISTEN_FDS=one: not a descriptor count"},
      {self.c_str(), "-1", nullptr, "LISTEN_FDS=-1: not a descriptor count"},
      {self.c_str(), "2", "echo",
       "LISTEN_FDNAMES=echo: 1 names for LISTEN_FDS=2"},
  };
  for (const Case& c : cases) {
    Set(c.pid, c.fds, c.names);
    absl::StatusOr<std::vector<ListenFd>> fds = TakeListenFds(kFirst);
    ASSERT_FALSE(fds.ok()) << c.message;
    EXPECT_EQ(fds.status().message(), c.message);
    EXPECT_TRUE(EnvironmentClear()) << c.message;
  }
}

TEST_F(SocketActivationTest, ADescriptorThatIsNotOpenIsAnError) {
  Set(self_.c_str(), "3", nullptr);  // kFirst + 2 is not open
  absl::StatusOr<std::vector<ListenFd>> fds = TakeListenFds(kFirst);
  ASSERT_FALSE(fds.ok());
  EXPECT_EQ(fds.status().message(),
            absl::StrCat("LISTEN_FDS=3: fcntl(", kFirst + 2,
                         ", FD_CLOEXEC): Bad file descriptor [EBADF]"));
}

}  // namespace
}  // namespace nbio
