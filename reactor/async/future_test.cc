// Future / Promise: results, errors, broken promises, chaining, the
// callback adapters, WhenAll / WhenAny, when continuations run (never
// inline), and what they cost in allocations.
#include "reactor/async/future.h"

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "queue/testing/alloc_counter.h"
#include "reactor/event_loop.h"
#include "reactor/testing/loop_test_util.h"

namespace nbio {
namespace {

class FutureTest : public LoopTest {};

TEST_F(FutureTest, ValueReachesContinuationLaterNeverInsideSet) {
  Promise<int> promise(loop_.get());
  Future<int> future = promise.GetFuture();
  EXPECT_TRUE(future.valid());
  EXPECT_FALSE(future.is_ready());
  std::optional<absl::StatusOr<int>> got;
  std::move(future).OnComplete([&](absl::StatusOr<int> r) { got = r; });
  promise.Set(7);
  EXPECT_TRUE(promise.is_set());
  EXPECT_FALSE(got.has_value());  // not inline inside Set
  EXPECT_EQ(loop_->Load().urgent_tasks_ready, 1u);
  RunNoWait();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(**got, 7);
}

TEST_F(FutureTest, ThenOnReadyFutureIsNotInlineEither) {
  Promise<int> promise(loop_.get());
  Future<int> future = promise.GetFuture();
  promise.Set(3);
  ASSERT_TRUE(future.is_ready());
  EXPECT_EQ(*future.result(), 3);  // peeking does not consume
  bool ran = false;
  Future<void> next = std::move(future).Then([&](absl::StatusOr<int> r) {
    ran = true;
    EXPECT_EQ(*r, 3);
  });
  EXPECT_FALSE(ran);
  RunNoWait();
  EXPECT_TRUE(ran);
  ASSERT_TRUE(next.is_ready());
  EXPECT_TRUE(next.result().ok());
}

TEST_F(FutureTest, ContinuationsAreUrgentTasks) {
  std::string log;
  Promise<void> promise(loop_.get());
  std::move(promise.GetFuture()).OnComplete([&](absl::Status) {
    log += "continuation ";
  });
  loop_->Post([&] { log += "task "; });
  promise.Set(absl::OkStatus());
  RunNoWait();
  // Posted before the Set, and still after it: urgent tasks go first.
  EXPECT_EQ(log, "continuation task ");
}

TEST_F(FutureTest, ErrorsReachThenAndSkipAndThen) {
  Promise<int> promise(loop_.get());
  bool and_then_ran = false;
  Future<int> chained =
      std::move(promise.GetFuture())
          .AndThen([&](int v) {
            and_then_ran = true;
            return v + 1;
          })
          .Then([](absl::StatusOr<int> r) -> absl::StatusOr<int> {
            EXPECT_EQ(r.status(), absl::NotFoundError("no"));
            return absl::StatusOr<int>(r.status());
          });
  auto out = Capture(std::move(chained));
  promise.Set(absl::NotFoundError("no"));
  RunNoWait();
  EXPECT_FALSE(and_then_ran);
  ASSERT_TRUE(out->has_value());
  EXPECT_EQ((**out).status(), absl::NotFoundError("no"));
}

TEST_F(FutureTest, ThenReturnKinds) {
  Promise<int> promise(loop_.get());
  Future<int> base = promise.GetFuture();
  // int -> std::string (a value) -> StatusOr<size_t> -> Status -> void ->
  // Future<double>.
  Future<std::string> s = std::move(base).Then(
      [](absl::StatusOr<int> v) { return std::to_string(*v); });
  Future<size_t> n = std::move(s).Then(
      [](absl::StatusOr<std::string> v) -> absl::StatusOr<size_t> {
        return v->size();
      });
  Future<void> st = std::move(n).Then([](absl::StatusOr<size_t> v) {
    return *v == 3 ? absl::OkStatus() : absl::InternalError("size");
  });
  Future<void> nothing =
      std::move(st).Then([](absl::Status s) { EXPECT_TRUE(s.ok()); });
  Promise<double> later(loop_.get());
  Future<double> inner = later.GetFuture();
  bool inner_returned = false;
  Future<double> d = std::move(nothing).Then([&](absl::Status) {
    inner_returned = true;
    return std::move(inner);
  });
  auto out = Capture(std::move(d));
  promise.Set(123);
  RunNoWait();
  EXPECT_TRUE(inner_returned);
  EXPECT_FALSE(out->has_value());  // waits for the returned future
  later.Set(2.5);
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_EQ(***out, 2.5);
}

TEST_F(FutureTest, AndThenReturningAFuture) {
  Promise<void> first(loop_.get());
  Promise<int> second(loop_.get());
  Future<int> f =
      std::move(first.GetFuture()).AndThen([&] { return second.GetFuture(); });
  auto out = Capture(std::move(f));
  first.Set(absl::OkStatus());
  RunNoWait();
  EXPECT_FALSE(out->has_value());
  second.Set(9);
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_EQ(***out, 9);

  // An error skips the future-returning function too.
  Promise<void> failing(loop_.get());
  bool ran = false;
  auto out2 = Capture(std::move(failing.GetFuture()).AndThen([&] {
    ran = true;
    return MakeReadyFuture<int>(loop_.get(), 1);
  }));
  failing.Set(absl::UnavailableError("down"));
  RunNoWait();
  EXPECT_FALSE(ran);
  ASSERT_TRUE(out2->has_value());
  EXPECT_EQ((**out2).status(), absl::UnavailableError("down"));
}

TEST_F(FutureTest, ChainCompletesAtOneCheckpoint) {
  Promise<int> promise(loop_.get());
  Future<int> f = std::move(promise.GetFuture())
                      .Then([](absl::StatusOr<int> v) { return *v + 1; })
                      .Then([](absl::StatusOr<int> v) { return *v * 10; })
                      .AndThen([](int v) { return v + 2; });
  auto out = Capture(std::move(f));
  promise.Set(1);
  const uint64_t before = loop_->counters().urgent_tasks_run;
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_EQ(***out, 22);
  EXPECT_EQ(loop_->counters().urgent_tasks_run - before, 4u);  // one per link
}

TEST_F(FutureTest, BrokenPromise) {
  std::optional<Promise<std::string>> promise(std::in_place, loop_.get());
  auto out = Capture(promise->GetFuture());
  promise.reset();
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  const absl::Status& status = (**out).status();
  EXPECT_TRUE(absl::IsCancelled(status));
  EXPECT_TRUE(IsBrokenPromise(status));
  EXPECT_FALSE(IsBrokenPromise(absl::CancelledError("broken promise")));

  // Move-assigning over an unset promise breaks it too.
  Promise<void> a(loop_.get());
  auto out_a = Capture(a.GetFuture());
  a = Promise<void>(loop_.get());
  RunNoWait();
  ASSERT_TRUE(out_a->has_value());
  EXPECT_TRUE(IsBrokenPromise(**out_a));
}

TEST_F(FutureTest, CancelledResultPropagates) {
  Promise<int> promise(loop_.get());
  auto out =
      Capture(std::move(promise.GetFuture()).Then([](absl::StatusOr<int> v) {
        return v;
      }));
  promise.Set(absl::CancelledError("user"));
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_EQ((**out).status(), absl::CancelledError("user"));
}

TEST_F(FutureTest, TrySetAndSetTwice) {
  Promise<int> promise(loop_.get());
  Future<int> f = promise.GetFuture();
  EXPECT_TRUE(promise.TrySet(1));
  EXPECT_FALSE(promise.TrySet(2));
  EXPECT_EQ(*f.result(), 1);
  EXPECT_DEATH(promise.Set(3), "promise set twice");
  EXPECT_DEATH((void)promise.GetFuture(), "GetFuture called twice");
}

TEST_F(FutureTest, DroppedFutureAndUnconsumedResults) {
  {
    Promise<std::string> promise(loop_.get());
    { Future<std::string> dropped = promise.GetFuture(); }
    promise.Set(std::string("nobody listens"));
  }
  {
    Promise<std::string> promise(loop_.get());
    Future<std::string> kept = promise.GetFuture();
    promise.Set(std::string("never consumed"));
  }
  RunNoWait();  // nothing to run, nothing leaks (checked under ASan)
  EXPECT_EQ(loop_->counters().urgent_tasks_run, 0u);
}

TEST_F(FutureTest, ContinuationCapturesGoRightAfterItRuns) {
  Promise<void> trigger(loop_.get());
  Promise<int> captured(loop_.get());
  auto out = Capture(captured.GetFuture());
  Future<void> f = std::move(trigger.GetFuture())
                       .Then([p = std::move(captured)](absl::Status) {});
  trigger.Set(absl::OkStatus());
  RunNoWait();
  // `f` is still held, but the continuation's captured promise is gone:
  // broken, and its future told in the same checkpoint.
  ASSERT_TRUE(out->has_value());
  EXPECT_TRUE(IsBrokenPromise((**out).status()));
  EXPECT_TRUE(f.is_ready());
}

TEST_F(FutureTest, MakeFutureAdaptsACallbackApi) {
  // A callback-style API: remembers the callback, calls it later.
  absl::AnyInvocable<void(absl::StatusOr<int>)> pending;
  auto legacy = [&](absl::AnyInvocable<void(absl::StatusOr<int>)> done) {
    pending = std::move(done);
  };
  Future<int> f = MakeFuture<int>(
      loop_.get(), [&](FutureCallback<int> done) { legacy(std::move(done)); });
  auto out = Capture(std::move(f));
  RunNoWait();
  EXPECT_FALSE(out->has_value());
  pending(41);
  EXPECT_FALSE(out->has_value());
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_EQ(***out, 41);

  // A callback dropped uncalled is a broken promise.
  auto out2 =
      Capture(MakeFuture<void>(loop_.get(), [](FutureCallback<void>) {}));
  RunNoWait();
  ASSERT_TRUE(out2->has_value());
  EXPECT_TRUE(IsBrokenPromise(**out2));
}

TEST_F(FutureTest, OnCompleteHandsTheResultToCallbackCode) {
  std::vector<std::string> delivered;
  auto callback_api = [&](absl::StatusOr<std::string> r) {
    delivered.push_back(r.ok() ? *r : std::string(r.status().message()));
  };
  std::move(MakeReadyFuture<std::string>(loop_.get(), std::string("a")))
      .OnComplete(callback_api);
  std::move(MakeReadyFuture<std::string>(loop_.get(), absl::InternalError("b")))
      .OnComplete(callback_api);
  EXPECT_TRUE(delivered.empty());
  RunNoWait();
  EXPECT_EQ(delivered, (std::vector<std::string>{"a", "b"}));
}

TEST_F(FutureTest, WhenAllKeepsEveryOutcomeInInputOrder) {
  std::vector<Promise<int>> promises;
  std::vector<Future<int>> futures;
  for (int i = 0; i < 4; ++i) {
    promises.emplace_back(loop_.get());
    futures.push_back(promises.back().GetFuture());
  }
  auto out = Capture(WhenAll(loop_.get(), std::move(futures)));
  promises[2].Set(20);
  promises[0].Set(absl::NotFoundError("zero"));
  RunNoWait();
  EXPECT_FALSE(out->has_value());
  promises[3].Set(absl::CancelledError("three"));
  promises[1] = Promise<int>(loop_.get());  // breaks the original
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  ASSERT_TRUE(out->value().ok());
  const std::vector<absl::StatusOr<int>>& all = ***out;
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].status(), absl::NotFoundError("zero"));
  EXPECT_TRUE(IsBrokenPromise(all[1].status()));
  EXPECT_EQ(*all[2], 20);
  EXPECT_EQ(all[3].status(), absl::CancelledError("three"));
}

TEST_F(FutureTest, WhenAllOfNothingAndOfVoid) {
  auto none = Capture(WhenAll(loop_.get(), std::vector<Future<int>>()));
  EXPECT_FALSE(none->has_value());  // complete, but still not inline
  RunNoWait();
  ASSERT_TRUE(none->has_value());
  EXPECT_TRUE((***none).empty());

  std::vector<Future<void>> voids;
  voids.push_back(MakeReadyFuture(loop_.get()));
  voids.push_back(MakeReadyFuture<void>(loop_.get(), absl::AbortedError("x")));
  auto out = Capture(WhenAll(loop_.get(), std::move(voids)));
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_TRUE((***out)[0].ok());
  EXPECT_EQ((***out)[1], absl::AbortedError("x"));
}

TEST_F(FutureTest, WhenAnyTakesTheFirstOutcomeEvenAnError) {
  std::vector<Promise<int>> promises;
  std::vector<Future<int>> futures;
  for (int i = 0; i < 3; ++i) {
    promises.emplace_back(loop_.get());
    futures.push_back(promises.back().GetFuture());
  }
  auto out = Capture(WhenAny(loop_.get(), std::move(futures)));
  RunNoWait();
  EXPECT_FALSE(out->has_value());
  promises[1].Set(absl::UnavailableError("first"));
  promises[2].Set(5);  // same checkpoint, but later
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_EQ((***out).index, 1u);
  EXPECT_EQ((***out).result.status(), absl::UnavailableError("first"));
  promises[0].Set(1);  // after the race: dropped
  RunNoWait();
  EXPECT_EQ((***out).index, 1u);

  auto empty = Capture(WhenAny(loop_.get(), std::vector<Future<int>>()));
  RunNoWait();
  ASSERT_TRUE(empty->has_value());
  EXPECT_TRUE(absl::IsInvalidArgument(empty->value().status()));
}

TEST_F(FutureTest, WhenAnySuccessFirst) {
  Promise<std::string> slow(loop_.get());
  std::vector<Future<std::string>> futures;
  futures.push_back(slow.GetFuture());
  futures.push_back(
      MakeReadyFuture<std::string>(loop_.get(), std::string("y")));
  auto out = Capture(WhenAny(loop_.get(), std::move(futures)));
  RunNoWait();
  ASSERT_TRUE(out->has_value());
  EXPECT_EQ((***out).index, 1u);
  EXPECT_EQ(*(***out).result, "y");
}

TEST_F(FutureTest, PromiseSetFromAnotherThreadThroughPost) {
  Promise<int> promise(loop_.get());
  auto out = Capture(promise.GetFuture());
  EventLoop* loop = loop_.get();
  auto keep_alive =
      std::make_unique<EventLoop::KeepAlive>(loop->KeepAliveToken());
  std::thread producer([&] {
    loop->Post([&] {
      promise.Set(99);
      keep_alive.reset();
    });
  });
  ASSERT_TRUE(loop->Run().ok());  // returns once the keep-alive is gone
  producer.join();
  ASSERT_TRUE(out->has_value());
  EXPECT_EQ(***out, 99);
}

TEST_F(FutureTest, LoopDestroyedWithPendingContinuations) {
  Promise<int> promise(loop_.get());
  auto out =
      Capture(std::move(promise.GetFuture()).Then([](absl::StatusOr<int> v) {
        return v;
      }));
  promise.Set(1);
  loop_.reset();  // the queued continuation is destroyed unrun, no leak
  EXPECT_FALSE(out->has_value());
}

TEST_F(FutureTest, LoopDestroyedWithChainsWaitingDownstream) {
  // Queued continuations feed a Then chain, a WhenAll and a WhenAny; all of
  // it is freed unrun with the loop (LeakSanitizer checks).
  bool ran = false;
  {
    Promise<int> a(loop_.get());
    Promise<int> b(loop_.get());
    std::vector<Future<int>> inputs;
    inputs.push_back(
        std::move(a.GetFuture()).Then([](absl::StatusOr<int> v) { return v; }));
    inputs.push_back(b.GetFuture());
    Future<void> all =
        std::move(WhenAll(loop_.get(), std::move(inputs))).Then([&](auto) {
          ran = true;
        });
    std::vector<Future<void>> any_inputs;
    any_inputs.push_back(std::move(all));
    std::move(WhenAny(loop_.get(), std::move(any_inputs)))
        .OnComplete([&](auto) { ran = true; });
    a.Set(1);
    b.Set(2);
  }
  loop_.reset();
  EXPECT_FALSE(ran);
}

TEST_F(FutureTest, AllocationsPerOperation) {
  // Warm the loop's urgent queue up.
  for (int i = 0; i < 200; ++i) {
    Promise<int> p(loop_.get());
    std::move(p.GetFuture()).OnComplete([](absl::StatusOr<int>) {});
    p.Set(i);
  }
  RunNoWait();
  int sum = 0;
  uint64_t before = bench::AllocationCount();
  {
    Promise<int> p(loop_.get());  // 1: the shared state
    Future<int> f = p.GetFuture();
    EXPECT_EQ(bench::AllocationCount() - before, 1u);
    before = bench::AllocationCount();
    std::move(f).OnComplete([&sum](absl::StatusOr<int> r) { sum += *r; });
    p.Set(5);
    RunNoWait();
    EXPECT_EQ(bench::AllocationCount() - before, 0u);  // continuation: none
  }
  EXPECT_EQ(sum, 5);
  {
    Promise<int> p(loop_.get());
    before = bench::AllocationCount();
    Future<int> f = std::move(p.GetFuture()).Then([](absl::StatusOr<int> r) {
      return *r + 1;
    });
    EXPECT_EQ(bench::AllocationCount() - before, 1u);  // the new state only
    before = bench::AllocationCount();
    p.Set(1);
    RunNoWait();
    EXPECT_EQ(bench::AllocationCount() - before, 0u);
    EXPECT_EQ(*f.result(), 2);
  }
}

}  // namespace
}  // namespace nbio
