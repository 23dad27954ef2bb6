// Operation<T> and Launch(): the public way to write an operation. Each test
// attacks one sentence of operation.h's contract with an operation written
// only against the public header, as a user extending nbio would.
#include "reactor/async/operation.h"

#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "reactor/async/cancellation.h"
#include "reactor/async/future.h"
#include "reactor/event_loop.h"
#include "reactor/testing/loop_test_util.h"

namespace nbio {
namespace {

// Completes with the token's reason. Counts its Start() calls and its
// destruction.
struct Probe {
  int starts = 0;
  bool destroyed = false;
};

class CounterOp final : public Operation<int> {
 public:
  CounterOp(EventLoop* loop, Probe* probe, CancellationToken token)
      : Operation<int>(loop), probe_(probe), token_(std::move(token)) {}
  ~CounterOp() override { probe_->destroyed = true; }

  void Start() {
    ++probe_->starts;
    if (token_.is_cancelled()) {
      Complete(token_.reason());
      return;
    }
    on_cancel_ =
        token_.Register([this](const absl::Status& why) { Complete(why); });
  }

 private:
  Probe* const probe_;
  const CancellationToken token_;
  CancellationRegistration on_cancel_;
};

class OperationTest : public LoopTest {};

// Launch() hands out the future before Start() runs, and the result reaches
// the consumer from the loop, never inline.
TEST_F(OperationTest, LaunchStartsOnceAndCompletesThroughTheLoop) {
  Probe probe;
  CancellationSource source;
  Future<int> future = Launch<CounterOp>(loop_.get(), &probe, source.token());
  EXPECT_EQ(probe.starts, 1);
  EXPECT_FALSE(future.is_ready());
  // Cancel completes synchronously; the consumer still waits for the loop.
  source.Cancel();
  EXPECT_TRUE(future.is_ready());
  auto result = Capture(std::move(future));
  EXPECT_FALSE(result->has_value());
  RunNoWait();
  ASSERT_TRUE(result->has_value());
  EXPECT_TRUE(absl::IsCancelled(result->value().status()));
  EXPECT_TRUE(probe.destroyed);  // the continuation had the last reference
}

// A token cancelled before the launch: Start() completes at once, and the
// consumer still sees it only from the loop.
TEST_F(OperationTest, CompleteInsideStart) {
  Probe probe;
  CancellationSource source;
  source.Cancel();
  auto result = Capture(Launch<CounterOp>(loop_.get(), &probe, source.token()));
  EXPECT_FALSE(result->has_value());
  RunNoWait();
  ASSERT_TRUE(result->has_value());
  EXPECT_TRUE(absl::IsCancelled(result->value().status()));
}

// An operation that keeps a pointer to itself for its own event, the way a
// Timer or FdWatcher member's callback does, and races the event with a
// cancel inside the same iteration.
class RacingOp final : public Operation<int> {
 public:
  RacingOp(EventLoop* loop, CancellationToken token, std::vector<bool>* log)
      : Operation<int>(loop),
        token_(std::move(token)),
        log_(log),
        timer_(loop, [this] { log_->push_back(Complete(7)); }) {}

  void Start() {
    timer_.Start(absl::ZeroDuration());
    on_cancel_ = token_.Register(
        [this](const absl::Status& why) { log_->push_back(Complete(why)); });
  }

 private:
  const CancellationToken token_;
  std::vector<bool>* const log_;
  Timer timer_;
  CancellationRegistration on_cancel_;
};

// "Completes its future exactly once; later completions are ignored, so the
// operation's own event and a cancellation may race freely": both orders.
TEST_F(OperationTest, EventThenCancelInTheSameIterationCompletesOnce) {
  std::vector<bool> log;
  CancellationSource source;
  // Not consumed yet: the future's reference keeps the operation (and its
  // cancel registration) alive through the race.
  Future<int> future = Launch<RacingOp>(loop_.get(), source.token(), &log);
  // The timer fires in the next iteration; the cancel comes from a task
  // posted behind it, inside the same iteration (timers run before tasks).
  loop_->Post([&] { source.Cancel(); });
  RunNoWait();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_TRUE(log[0]);   // the timer's Complete(7) won
  EXPECT_FALSE(log[1]);  // the cancel's came second and was dropped
  auto result = Capture(std::move(future));
  RunNoWait();
  ASSERT_TRUE(result->has_value());
  ASSERT_TRUE(result->value().ok());
  EXPECT_EQ(*result->value(), 7);
}

TEST_F(OperationTest, CancelThenEventCompletesOnce) {
  std::vector<bool> log;
  CancellationSource source;
  Future<int> future = Launch<RacingOp>(loop_.get(), source.token(), &log);
  source.Cancel();  // before the timer's iteration
  RunNoWait();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_TRUE(log[0]);   // the cancel won
  EXPECT_FALSE(log[1]);  // the timer's Complete(7) was dropped
  auto result = Capture(std::move(future));
  RunNoWait();
  ASSERT_TRUE(result->has_value());
  EXPECT_TRUE(absl::IsCancelled(result->value().status()));
}

// "A future dropped unconsumed destroys the operation, and with it its
// Timer": the timer never fires into freed memory (ASan would see it).
TEST_F(OperationTest, DroppedFutureDestroysTheOperationAndItsTimer) {
  std::vector<bool> log;
  CancellationSource source;
  { Future<int> dropped = Launch<RacingOp>(loop_.get(), source.token(), &log); }
  RunNoWait(3);
  source.Cancel();  // its registration went with the operation
  EXPECT_TRUE(log.empty());
  EXPECT_EQ(loop_->Load().timers_sleeping, 0u);
}

// An operation completed by a posted task, holding an OperationRef.
class PostedOp final : public Operation<int> {
 public:
  PostedOp(EventLoop* loop, Probe* probe)
      : Operation<int>(loop), probe_(probe) {}
  ~PostedOp() override { probe_->destroyed = true; }
  void Start() {
    ++probe_->starts;
    loop()->Post([self = OperationRef<PostedOp>(this)]() mutable {
      self->Complete(41 + 1);
      self.Done();
    });
  }

 private:
  Probe* const probe_;
};

TEST_F(OperationTest, OperationRefKeepsTheOperationForItsTask) {
  Probe probe;
  { Future<int> dropped = Launch<PostedOp>(loop_.get(), &probe); }
  // The future is gone; the queued task's reference keeps the op alive.
  EXPECT_FALSE(probe.destroyed);
  RunNoWait();
  EXPECT_TRUE(probe.destroyed);
}

TEST_F(OperationTest, OperationRefDeliversTheResult) {
  Probe probe;
  auto result = Capture(Launch<PostedOp>(loop_.get(), &probe));
  RunNoWait(2);
  ASSERT_TRUE(result->has_value());
  EXPECT_EQ(*result->value(), 42);
}

// "If it is destroyed without having completed the operation (the loop
// destroyed with the task queued), the continuation is dropped unrun
// instead of leaking" (LSan fails this test if the state leaks).
TEST(OperationLoopTeardownTest, QueuedOperationRefIsAbandonedWithTheLoop) {
  Probe probe;
  bool continuation_ran = false;
  bool continuation_destroyed = false;
  {
    std::unique_ptr<EventLoop> loop = CreateTestLoop(EventLoop::Options());
    ASSERT_NE(loop, nullptr);
    Launch<PostedOp>(loop.get(), &probe)
        .OnComplete(
            [&continuation_ran, flag = DestroyFlag(&continuation_destroyed)](
                absl::StatusOr<int>) { continuation_ran = true; });
  }
  EXPECT_FALSE(continuation_ran);
  EXPECT_TRUE(continuation_destroyed);
  EXPECT_TRUE(probe.destroyed);
}

}  // namespace
}  // namespace nbio
