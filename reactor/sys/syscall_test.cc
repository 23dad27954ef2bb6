#include "reactor/sys/syscall.h"

#include <signal.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>

#include "gtest/gtest.h"

namespace nbio {
namespace {

TEST(ErrnoStatusTest, NamesCallErrorAndErrno) {
  absl::Status s = ErrnoStatus("bind(127.0.0.1:7007)", EADDRINUSE);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);  // absl's mapping
  EXPECT_EQ(s.message(),
            "bind(127.0.0.1:7007): Address already in use [EADDRINUSE]");
  EXPECT_EQ(ErrnoStatus("accept4", EMFILE).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoStatus("x", 4095).message(),
            "x: Unknown error 4095 [errno 4095]");
}

TEST(RetryOnEintrTest, RetriesOnlyEintr) {
  int calls = 0;
  int result = RetryOnEintr([&] {
    ++calls;
    if (calls < 3) {
      errno = EINTR;
      return -1;
    }
    return 7;
  });
  EXPECT_EQ(result, 7);
  EXPECT_EQ(calls, 3);

  calls = 0;
  result = RetryOnEintr([&] {
    ++calls;
    errno = EAGAIN;
    return -1;
  });
  EXPECT_EQ(result, -1);
  EXPECT_EQ(errno, EAGAIN);
  EXPECT_EQ(calls, 1);
}

// A real interrupted syscall: a read() on an empty pipe interrupted by a
// timer signal installed without SA_RESTART is retried, then sees the data.
void OnAlarm(int) {}

TEST(RetryOnEintrTest, RealSignalInterruptsBlockingRead) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  struct sigaction sa {};
  sa.sa_handler = OnAlarm;  // no SA_RESTART: read() fails with EINTR
  struct sigaction old {};
  ASSERT_EQ(sigaction(SIGALRM, &sa, &old), 0);
  int interrupts = 0;
  // First interruption: a 20 ms one-shot timer; then write the byte from the
  // retry loop so the second read succeeds.
  itimerval it{};
  it.it_value.tv_usec = 20000;
  ASSERT_EQ(setitimer(ITIMER_REAL, &it, nullptr), 0);
  char c = 0;
  ssize_t n = RetryOnEintr([&]() -> ssize_t {
    ssize_t r = read(fds[0], &c, 1);
    if (r == -1 && errno == EINTR) {
      ++interrupts;
      (void)!write(fds[1], "x", 1);
    }
    return r;
  });
  EXPECT_EQ(n, 1);
  EXPECT_EQ(c, 'x');
  EXPECT_EQ(interrupts, 1);
  sigaction(SIGALRM, &old, nullptr);
  close(fds[0]);
  close(fds[1]);
}

}  // namespace
}  // namespace nbio
