// DeadlineToken and WithTimeout on a ManualClock.
#include "reactor/async/deadline.h"

#include <memory>
#include <optional>
#include <utility>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "reactor/async/cancellation.h"
#include "reactor/async/future.h"
#include "reactor/async/sleep.h"
#include "reactor/event_loop.h"
#include "reactor/testing/loop_test_util.h"
#include "timers/clock.h"

namespace nbio {
namespace {

class DeadlineTest : public LoopTest {};

TEST_F(DeadlineTest, TokenIsCancelledWithDeadlineExceededAtTheDeadline) {
  CancellationToken token = DeadlineToken(loop_.get(), absl::Milliseconds(5));
  absl::Status seen;
  CancellationRegistration r =
      token.Register([&](const absl::Status& why) { seen = why; });
  EXPECT_TRUE(token.can_be_cancelled());
  // The deadline does not count as a sleeping user timer.
  EXPECT_EQ(loop_->Load().timers_sleeping, 0u);
  clock_.Advance(absl::Microseconds(4999));
  RunNoWait();
  EXPECT_FALSE(token.is_cancelled());
  clock_.Advance(absl::Microseconds(1));
  RunNoWait();
  EXPECT_TRUE(token.is_cancelled());
  EXPECT_TRUE(absl::IsDeadlineExceeded(token.reason()));
  EXPECT_TRUE(absl::IsDeadlineExceeded(seen));
}

TEST_F(DeadlineTest, SleepPastItsDeadline) {
  auto out = Capture(Sleep(loop_.get(), absl::Seconds(10),
                           DeadlineToken(loop_.get(), absl::Milliseconds(2))));
  clock_.Advance(absl::Milliseconds(2));
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_TRUE(absl::IsDeadlineExceeded(out->value()));
  EXPECT_EQ(loop_->Load().timers_sleeping, 0u);  // the sleep's timer stopped
}

TEST_F(DeadlineTest, ParentCancelWinsAndStopsTheTimer) {
  CancellationSource user;
  // Something else keeps the loop alive, so its poll timeout shows the
  // wheel: the deadline's timer (> 0), or no timer at all (-1).
  EventLoop::KeepAlive busy = loop_->KeepAliveToken();
  CancellationToken token =
      DeadlineToken(loop_.get(), absl::Seconds(5), user.token());
  EXPECT_GT(loop_->NextPollTimeoutNanos(), 0);
  user.Cancel(absl::CancelledError("user"));
  EXPECT_EQ(token.reason(), absl::CancelledError("user"));
  EXPECT_EQ(loop_->NextPollTimeoutNanos(), -1);
  clock_.Advance(absl::Seconds(5));
  RunNoWait();
  EXPECT_EQ(token.reason(), absl::CancelledError("user"));
}

TEST_F(DeadlineTest, AlreadyCancelledParentOrPastDeadline) {
  CancellationSource user;
  user.Cancel();
  EXPECT_TRUE(absl::IsCancelled(
      DeadlineToken(loop_.get(), absl::Seconds(1), user.token()).reason()));
  EXPECT_TRUE(absl::IsDeadlineExceeded(
      DeadlineToken(loop_.get(), absl::ZeroDuration()).reason()));
  EXPECT_TRUE(absl::IsDeadlineExceeded(
      DeadlineTokenAt(loop_.get(), loop_->NowNanos() - 1).reason()));
  // An expired deadline fails an operation without starting it.
  auto out = Capture(Sleep(loop_.get(), absl::Seconds(1),
                           DeadlineToken(loop_.get(), absl::ZeroDuration())));
  EXPECT_EQ(loop_->Load().timers_sleeping, 0u);
  RunNoWait();
  EXPECT_TRUE(absl::IsDeadlineExceeded(out->value()));
}

TEST_F(DeadlineTest, TimerGoesWithTheLastReference) {
  {
    // As above: the poll timeout shows whether the wheel has a timer.
    EventLoop::KeepAlive busy = loop_->KeepAliveToken();
    {
      CancellationToken token = DeadlineToken(loop_.get(), absl::Seconds(5));
      EXPECT_GT(loop_->NextPollTimeoutNanos(), 0);
    }
    EXPECT_EQ(loop_->NextPollTimeoutNanos(), -1);
  }

  // Held only by a registration that its own callback destroys: the state
  // (and its timer node) dies inside the timer's callback.
  std::unique_ptr<CancellationRegistration> reg;
  reg = std::make_unique<CancellationRegistration>(
      DeadlineToken(loop_.get(), absl::Milliseconds(1))
          .Register([&](const absl::Status& why) {
            EXPECT_TRUE(absl::IsDeadlineExceeded(why));
            reg.reset();
          }));
  clock_.Advance(absl::Milliseconds(1));
  RunNoWait();
  EXPECT_EQ(reg, nullptr);
}

TEST_F(DeadlineTest, WithTimeoutResultFirst) {
  Promise<int> promise(loop_.get());
  auto out = Capture(WithTimeout(promise.GetFuture(), absl::Milliseconds(5)));
  EXPECT_EQ(loop_->Load().timers_sleeping, 1u);
  promise.Set(4);
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_EQ(***out, 4);
  EXPECT_EQ(loop_->Load().timers_sleeping, 0u);  // the timeout stopped
  clock_.Advance(absl::Milliseconds(5));
  RunNoWait();
  EXPECT_EQ(***out, 4);
}

TEST_F(DeadlineTest, WithTimeoutTimesOut) {
  Promise<int> promise(loop_.get());
  auto out = Capture(WithTimeout(promise.GetFuture(), absl::Milliseconds(5)));
  clock_.Advance(absl::Microseconds(4999));
  RunNoWait();
  EXPECT_FALSE(out->has_value());
  clock_.Advance(absl::Microseconds(1));
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_TRUE(absl::IsDeadlineExceeded(out->value().status()));
  promise.Set(1);  // too late: dropped
  RunNoWait();
  EXPECT_TRUE(absl::IsDeadlineExceeded(out->value().status()));
}

TEST_F(DeadlineTest, WithTimeoutPassesErrorsAndVoid) {
  Promise<void> promise(loop_.get());
  auto out =
      Capture(WithDeadline(promise.GetFuture(), loop_->NowNanos() + 1'000'000));
  promise.Set(absl::UnavailableError("refused"));
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_EQ(out->value(), absl::UnavailableError("refused"));
}

}  // namespace
}  // namespace nbio
