// The loop's misuse checks and its teardown: Run()/RunOnce() refused inside
// the loop's own callbacks, destruction refused while caller-owned handles
// are alive, and what the loop owns destroyed unrun (and completely) when it
// goes. The checks hold in every build, so the death tests run in opt too.
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "reactor/async/future.h"
#include "reactor/event_loop.h"
#include "reactor/testing/loop_test_util.h"
#include "timers/clock.h"

namespace nbio {
namespace {

using EventLoopLifetimeTest = LoopTest;
using EventLoopLifetimeDeathTest = LoopTest;

// --- re-entrancy -------------------------------------------------------------

TEST_F(EventLoopLifetimeDeathTest, RunOnceFromPostedTaskIsRefused) {
  loop_->Post([this] { (void)loop_->RunOnce(EventLoop::RunMode::kNoWait); });
  EXPECT_DEATH(RunNoWait(),
               "EventLoop::RunOnce\\(\\) called from inside a callback of the "
               "same loop");
}

TEST_F(EventLoopLifetimeDeathTest, RunFromPostedTaskIsRefused) {
  loop_->Post([this] { (void)loop_->Run(); });
  EXPECT_DEATH(RunNoWait(),
               "EventLoop::Run\\(\\) called from inside a callback of the same "
               "loop");
}

// The shape that used to deliver a stale event: the callback of the first
// fd in a batch hands the second fd's watcher to DeleteLater and runs a
// nested iteration, which destroys it; the outer dispatch then calls it.
TEST_F(EventLoopLifetimeDeathTest, RunOnceFromFdWatcherCallbackIsRefused) {
  TestPipe first;
  TestPipe second;
  auto second_watcher =
      std::make_unique<FdWatcher>(loop_.get(), second.r, [](uint32_t) {});
  FdWatcher first_watcher(loop_.get(), first.r, [&](uint32_t) {
    if (second_watcher != nullptr) {
      loop_->DeleteLater(std::move(second_watcher));
    }
    (void)loop_->RunOnce(EventLoop::RunMode::kNoWait);
  });
  ASSERT_TRUE(first_watcher.SetInterest(kReadable).ok());
  ASSERT_TRUE(second_watcher->SetInterest(kReadable).ok());
  ASSERT_EQ(write(first.w, "x", 1), 1);
  ASSERT_EQ(write(second.w, "x", 1), 1);
  EXPECT_DEATH(RunNoWait(),
               "EventLoop::RunOnce\\(\\) called from inside a callback of the "
               "same loop");
}

TEST_F(EventLoopLifetimeTest, RunOnceAfterRunReturnedIsFine) {
  int ran = 0;
  loop_->Post([&] { ++ran; });
  ASSERT_TRUE(loop_->Run().ok());
  loop_->Post([&] { ++ran; });
  RunNoWait();
  EXPECT_EQ(ran, 2);
}

}  // namespace
}  // namespace nbio
