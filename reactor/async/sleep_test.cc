// Sleep: on time (never early) on a ManualClock, counted in the sleeping
// queue, and cancellable in every state.
#include "reactor/async/sleep.h"

#include <memory>
#include <optional>
#include <utility>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "reactor/async/cancellation.h"
#include "reactor/async/future.h"
#include "reactor/event_loop.h"
#include "reactor/testing/loop_test_util.h"
#include "timers/clock.h"

namespace nbio {
namespace {

class SleepTest : public LoopTest {};

TEST_F(SleepTest, CompletesAtTheDeadlineNotBefore) {
  auto out = Capture(Sleep(loop_.get(), absl::Milliseconds(10)));
  EXPECT_EQ(loop_->Load().timers_sleeping, 1u);
  clock_.Advance(absl::Microseconds(9999));
  RunNoWait();
  EXPECT_FALSE(out->has_value());
  clock_.Advance(absl::Microseconds(1));
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_TRUE(out->value().ok());
  EXPECT_EQ(loop_->Load().timers_sleeping, 0u);
}

TEST_F(SleepTest, SleepsCompleteInDeadlineOrder) {
  std::string log;
  std::move(Sleep(loop_.get(), absl::Milliseconds(3)))
      .OnComplete([&](absl::Status) { log += "3"; });
  std::move(Sleep(loop_.get(), absl::Milliseconds(1)))
      .OnComplete([&](absl::Status) { log += "1"; });
  std::move(SleepUntil(loop_.get(), loop_->NowNanos() + 2'000'000))
      .OnComplete([&](absl::Status) { log += "2"; });
  EXPECT_EQ(loop_->Load().timers_sleeping, 3u);
  for (int i = 0; i < 3; ++i) {
    clock_.Advance(absl::Milliseconds(1));
    RunNoWait();
  }
  EXPECT_EQ(log, "123");
}

TEST_F(SleepTest, ZeroDelayCompletesInTheNextIteration) {
  auto out = Capture(Sleep(loop_.get(), absl::ZeroDuration()));
  EXPECT_FALSE(out->has_value());
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_TRUE(out->value().ok());
}

TEST_F(SleepTest, CancelBeforeStart) {
  CancellationSource source;
  source.Cancel();
  auto out = Capture(Sleep(loop_.get(), absl::Seconds(1), source.token()));
  EXPECT_EQ(loop_->Load().timers_sleeping, 0u);  // never started
  EXPECT_FALSE(out->has_value());                // and still not inline
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_TRUE(absl::IsCancelled(out->value()));
}

TEST_F(SleepTest, CancelWhileSleeping) {
  CancellationSource source;
  auto out = Capture(Sleep(loop_.get(), absl::Seconds(1), source.token()));
  RunNoWait();
  EXPECT_EQ(loop_->Load().timers_sleeping, 1u);
  EXPECT_TRUE(source.Cancel(absl::CancelledError("stop")));
  EXPECT_EQ(loop_->Load().timers_sleeping, 0u);  // the timer stopped at once
  EXPECT_FALSE(out->has_value());
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_EQ(out->value(), absl::CancelledError("stop"));
  // Later time changes nothing, and a second cancel is a no-op.
  clock_.Advance(absl::Seconds(2));
  EXPECT_FALSE(source.Cancel());
  RunNoWait();
  EXPECT_EQ(out->value(), absl::CancelledError("stop"));
}

TEST_F(SleepTest, CancelAfterCompletionChangesNothing) {
  CancellationSource source;
  auto out = Capture(Sleep(loop_.get(), absl::Milliseconds(1), source.token()));
  clock_.Advance(absl::Milliseconds(1));
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_TRUE(source.Cancel());  // nobody is registered any more
  RunNoWait();
  EXPECT_TRUE(out->value().ok());
}

TEST_F(SleepTest, CancelFromInsideItsOwnContinuation) {
  CancellationSource source;
  bool ran = false;
  std::move(Sleep(loop_.get(), absl::Milliseconds(1), source.token()))
      .OnComplete([&](absl::Status s) {
        EXPECT_TRUE(s.ok());
        EXPECT_TRUE(source.Cancel());  // completed already: no effect
        ran = true;
      });
  clock_.Advance(absl::Milliseconds(1));
  RunNoWait();
  EXPECT_TRUE(ran);
}

TEST_F(SleepTest, CancelFromInsideAnotherCancelCallback) {
  CancellationSource outer;
  CancellationSource inner;
  auto out = Capture(Sleep(loop_.get(), absl::Seconds(1), inner.token()));
  CancellationRegistration r = outer.token().Register(
      [&](const absl::Status&) { inner.Cancel(absl::AbortedError("nested")); });
  outer.Cancel();
  EXPECT_EQ(loop_->Load().timers_sleeping, 0u);
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_EQ(out->value(), absl::AbortedError("nested"));
}

TEST_F(SleepTest, OneTokenCancelsManySleeps) {
  CancellationSource source;
  auto a = Capture(Sleep(loop_.get(), absl::Seconds(1), source.token()));
  auto b = Capture(Sleep(loop_.get(), absl::Seconds(2), source.token()));
  auto c = Capture(Sleep(loop_.get(), absl::Milliseconds(1)));
  clock_.Advance(absl::Milliseconds(1));
  RunNoWait();
  source.Cancel();
  RunNoWait();
  EXPECT_TRUE(absl::IsCancelled(a->value()));
  EXPECT_TRUE(absl::IsCancelled(b->value()));
  EXPECT_TRUE(c->value().ok());
}

TEST_F(SleepTest, DroppedUnconsumedFutureStopsTheTimer) {
  { Future<void> dropped = Sleep(loop_.get(), absl::Seconds(1)); }
  EXPECT_EQ(loop_->Load().timers_sleeping, 0u);
}

TEST_F(SleepTest, ChainedSleepsOnTheRealClock) {
  // The real clock and Run(): a pending sleep keeps Run() going, which
  // returns once the last one has completed.
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  EventLoop* l = loop->get();
  int steps = 0;
  // The reading Sleep counts from: the deadlines are at least 1 ms, then
  // 1 ms more, after it.
  const int64_t start = l->NowNanos();
  std::move(Sleep(l, absl::Milliseconds(1)))
      .AndThen([&] {
        ++steps;
        return Sleep(l, absl::Milliseconds(1));
      })
      .OnComplete([&](absl::Status s) {
        EXPECT_TRUE(s.ok());
        ++steps;
      });
  ASSERT_TRUE(l->Run().ok());
  EXPECT_EQ(steps, 2);
  EXPECT_GE(l->clock()->NowNanos() - start, 2'000'000);  // never early
}

}  // namespace
}  // namespace nbio
