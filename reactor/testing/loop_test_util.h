// Test helpers for code that runs on an EventLoop: a fixture whose loop runs
// on a ManualClock (optionally on each poller backend), a result catcher for
// futures, a pipe, a socket pair and a destruction flag. For tests only
// (testonly target).
//
//   class SleepTest : public LoopTest {};
//   TEST_F(SleepTest, Wakes) {
//     auto out = Capture(Sleep(loop_.get(), absl::Milliseconds(1)));
//     clock_.Advance(absl::Milliseconds(1));
//     RunNoWait();
//     EXPECT_TRUE(out->value().ok());
//   }
#ifndef NBIO_REACTOR_TESTING_LOOP_TEST_UTIL_H_
#define NBIO_REACTOR_TESTING_LOOP_TEST_UTIL_H_

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "reactor/async/future.h"
#include "reactor/event_loop.h"
#include "timers/clock.h"

namespace nbio {

// A non-blocking pipe, closed on destruction (an end set to -1 is skipped).
struct TestPipe {
  TestPipe();
  ~TestPipe();
  TestPipe(const TestPipe&) = delete;
  TestPipe& operator=(const TestPipe&) = delete;
  int r = -1;
  int w = -1;
};

// A non-blocking AF_UNIX stream socket pair, closed on destruction (an end
// set to -1 is skipped).
struct TestSocketPair {
  TestSocketPair();
  ~TestSocketPair();
  TestSocketPair(const TestSocketPair&) = delete;
  TestSocketPair& operator=(const TestSocketPair&) = delete;
  int a = -1;
  int b = -1;
};

// Sets *flag when destroyed (not when moved from): capture one in a callback
// to see when the callback's captures go.
struct DestroyFlag {
  explicit DestroyFlag(bool* f) : flag(f) {}
  DestroyFlag(DestroyFlag&& o) noexcept
      : flag(std::exchange(o.flag, nullptr)) {}
  ~DestroyFlag() {
    if (flag != nullptr) *flag = true;
  }
  bool* flag;
};

// Why the poller backend `name` cannot run on this machine, or "" when it
// can. Only io_uring may be missing (an old kernel, sysctl
// kernel.io_uring_disabled, a seccomp profile); any other backend that
// fails to start is a test failure, never a skip.
std::string BackendUnavailableReason(const std::string& name);

// The backends that do stream I/O themselves (Poller::streams() is not
// null: "io_uring"), and the others, for tests of what only one kind does
// (a descriptor limit that binds one and not the other). poller_test
// checks the split against the pollers themselves.
std::vector<std::string> StreamEngineBackends();
std::vector<std::string> ReadinessBackends();

// In a SetUp() or test body: skips the test, visibly and with the reason,
// when `name` cannot run here (see above).
#define NBIO_SKIP_IF_BACKEND_UNAVAILABLE(name)                              \
  do {                                                                      \
    const std::string nbio_why = ::nbio::BackendUnavailableReason(name);    \
    if (!nbio_why.empty()) {                                                \
      GTEST_SKIP() << "backend " << (name) << " unavailable: " << nbio_why; \
    }                                                                       \
  } while (0)

// EventLoop::Create, with a gtest failure (and nullptr) when it fails.
std::unique_ptr<EventLoop> CreateTestLoop(const EventLoop::Options& options);

// One RunOnce(kNoWait) per iteration, each expected to succeed.
void RunNoWait(EventLoop* loop, int iterations = 1);

// Consumes `future`; the returned optional gets its result when the
// continuation runs.
template <typename T>
std::shared_ptr<std::optional<FutureResult<T>>> Capture(Future<T> future) {
  auto out = std::make_shared<std::optional<FutureResult<T>>>();
  std::move(future).OnComplete(
      [out](FutureResult<T> result) { *out = std::move(result); });
  return out;
}

// A fixture with loop_ running on clock_, a ManualClock. Base is
// ::testing::Test or ::testing::TestWithParam<...>.
template <typename Base>
class LoopTestBase : public Base {
 protected:
  // Adjusts the options of loop_ (its clock is already clock_).
  virtual void Configure(EventLoop::Options& options) {}

  void SetUp() override {
    EventLoop::Options options;
    options.clock = &clock_;
    Configure(options);
    loop_ = CreateTestLoop(options);
    ASSERT_NE(loop_, nullptr);
  }

  void RunNoWait(int iterations = 1) {
    nbio::RunNoWait(loop_.get(), iterations);
  }

  ManualClock clock_{1'000'000'000};
  std::unique_ptr<EventLoop> loop_;
};

using LoopTest = LoopTestBase<::testing::Test>;

// Parameterised by poller backend name: instantiate with
// ::testing::ValuesIn(PollerNames()).
class BackendLoopTest
    : public LoopTestBase<::testing::TestWithParam<std::string>> {
 protected:
  void SetUp() override {
    NBIO_SKIP_IF_BACKEND_UNAVAILABLE(GetParam());
    LoopTestBase::SetUp();
  }
  void Configure(EventLoop::Options& options) override {
    options.backend = GetParam();
  }
};

}  // namespace nbio

#endif  // NBIO_REACTOR_TESTING_LOOP_TEST_UTIL_H_
