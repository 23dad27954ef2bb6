// WaitReadable / WaitWritable / WaitFd on pipes, on every poller backend:
// readiness, timeouts (ManualClock), cancellation and the waiting queue.
#include "reactor/async/wait_fd.h"

#include <unistd.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "reactor/async/cancellation.h"
#include "reactor/async/deadline.h"
#include "reactor/async/future.h"
#include "reactor/event_loop.h"
#include "reactor/poller/poller_registry.h"
#include "reactor/testing/loop_test_util.h"
#include "timers/clock.h"

namespace nbio {
namespace {

class WaitFdTest : public BackendLoopTest {};

TEST_P(WaitFdTest, ReadableOnceDataArrives) {
  TestPipe p;
  auto out = Capture(WaitReadable(loop_.get(), p.r));
  EXPECT_EQ(loop_->Load().fds_waiting, 1);
  RunNoWait(2);
  EXPECT_FALSE(out->has_value());
  ASSERT_EQ(write(p.w, "x", 1), 1);
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_TRUE(out->value().ok());
  EXPECT_EQ(loop_->Load().fds_waiting, 0);  // one-shot: unregistered
  // The fd is free for the next wait.
  auto again = Capture(WaitReadable(loop_.get(), p.r));
  RunNoWait();
  ASSERT_TRUE(again->has_value());
  EXPECT_TRUE(again->value().ok());
}

TEST_P(WaitFdTest, WritableAndEvents) {
  TestPipe p;
  auto writable = Capture(WaitWritable(loop_.get(), p.w));
  RunNoWait();
  ASSERT_TRUE(writable->has_value());
  EXPECT_TRUE(writable->value().ok());

  auto events = Capture(WaitFd(loop_.get(), p.r, kReadable));
  close(p.w);  // hang-up: reported as readable (read() then sees EOF)
  p.w = -1;
  RunNoWait();
  ASSERT_TRUE(events->has_value());
  ASSERT_TRUE(events->value().ok());
  EXPECT_TRUE(***events & kReadable);
}

TEST_P(WaitFdTest, TimeoutThroughDeadlineTokenUnregistersTheFd) {
  TestPipe p;
  auto out = Capture(WaitReadable(
      loop_.get(), p.r, DeadlineToken(loop_.get(), absl::Milliseconds(10))));
  clock_.Advance(absl::Milliseconds(9));
  RunNoWait();
  EXPECT_FALSE(out->has_value());
  clock_.Advance(absl::Milliseconds(1));
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_TRUE(absl::IsDeadlineExceeded(out->value()));
  EXPECT_EQ(loop_->Load().fds_waiting, 0);
  // Data arriving later reaches nobody, and the fd can be waited on again.
  ASSERT_EQ(write(p.w, "x", 1), 1);
  auto again = Capture(WaitReadable(loop_.get(), p.r));
  RunNoWait();
  ASSERT_TRUE(again->has_value());
  EXPECT_TRUE(again->value().ok());
}

TEST_P(WaitFdTest, TimeoutThroughWithTimeoutOnlyStopsWaiting) {
  TestPipe p;
  auto out = Capture(
      WithTimeout(WaitReadable(loop_.get(), p.r), absl::Milliseconds(10)));
  clock_.Advance(absl::Milliseconds(10));
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_TRUE(absl::IsDeadlineExceeded(out->value()));
  EXPECT_EQ(loop_->Load().fds_waiting, 1);  // the wait itself runs on
  ASSERT_EQ(write(p.w, "x", 1), 1);
  RunNoWait();
  EXPECT_EQ(loop_->Load().fds_waiting, 0);
  EXPECT_TRUE(absl::IsDeadlineExceeded(out->value()));
}

TEST_P(WaitFdTest, CancelBeforeStartWhileWaitingAndAfter) {
  TestPipe p;
  CancellationSource before;
  before.Cancel();
  auto a = Capture(WaitReadable(loop_.get(), p.r, before.token()));
  EXPECT_EQ(loop_->Load().fds_waiting, 0);

  CancellationSource during;
  auto b = Capture(WaitReadable(loop_.get(), p.r, during.token()));
  EXPECT_EQ(loop_->Load().fds_waiting, 1);
  RunNoWait();
  during.Cancel();
  EXPECT_EQ(loop_->Load().fds_waiting, 0);
  RunNoWait();
  ASSERT_TRUE(a->has_value());
  ASSERT_TRUE(b->has_value());
  EXPECT_TRUE(absl::IsCancelled(a->value()));
  EXPECT_TRUE(absl::IsCancelled(b->value()));

  CancellationSource after;
  auto c = Capture(WaitWritable(loop_.get(), p.w, after.token()));
  RunNoWait();
  after.Cancel();
  RunNoWait();
  EXPECT_TRUE(c->value().ok());
}

TEST_P(WaitFdTest, DroppedFutureUnregisters) {
  TestPipe p;
  { Future<void> dropped = WaitReadable(loop_.get(), p.r); }
  EXPECT_EQ(loop_->Load().fds_waiting, 0);
}

TEST_P(WaitFdTest, ManyWaitersOnDifferentFds) {
  constexpr int kPipes = 20;
  std::vector<std::unique_ptr<TestPipe>> pipes;
  std::vector<Future<void>> waits;
  for (int i = 0; i < kPipes; ++i) {
    pipes.push_back(std::make_unique<TestPipe>());
    waits.push_back(WaitReadable(loop_.get(), pipes.back()->r));
  }
  EXPECT_EQ(loop_->Load().fds_waiting, kPipes);
  auto all = Capture(WhenAll(loop_.get(), std::move(waits)));
  for (int i = 0; i < kPipes; i += 2) ASSERT_EQ(write(pipes[i]->w, "x", 1), 1);
  RunNoWait();
  EXPECT_EQ(loop_->Load().fds_waiting, kPipes / 2);
  EXPECT_FALSE(all->has_value());
  for (int i = 1; i < kPipes; i += 2) ASSERT_EQ(write(pipes[i]->w, "x", 1), 1);
  RunNoWait();
  ASSERT_TRUE(all->has_value());
  for (const absl::Status& s : ***all) EXPECT_TRUE(s.ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, WaitFdTest,
                         ::testing::ValuesIn(PollerNames()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace nbio
