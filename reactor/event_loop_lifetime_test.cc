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

// --- checked teardown -------------------------------------------------------

TEST_F(EventLoopLifetimeDeathTest, LiveFdWatcherIsRefused) {
  TestPipe p;
  FdWatcher watcher(loop_.get(), p.r, [](uint32_t) {});
  EXPECT_DEATH(loop_.reset(),
               "EventLoop destroyed with live handles: 1 FdWatcher; destroy "
               "them first");
}

TEST_F(EventLoopLifetimeDeathTest, LiveTimersAreRefusedPendingOrNot) {
  Timer pending(loop_.get(), [] {});
  pending.Start(absl::Seconds(1));
  Timer idle(loop_.get(), [] {});
  EXPECT_DEATH(loop_.reset(),
               "EventLoop destroyed with live handles: 2 Timer; destroy them "
               "first");
}

TEST_F(EventLoopLifetimeDeathTest, LiveCpuJobIsRefused) {
  CpuJob job(loop_.get(), [] { return CpuSliceResult::kDone; });
  EXPECT_DEATH(loop_.reset(),
               "EventLoop destroyed with live handles: 1 CpuJob; destroy them "
               "first");
}

TEST_F(EventLoopLifetimeDeathTest, EveryKindLeftIsNamed) {
  TestPipe p;
  FdWatcher watcher(loop_.get(), p.r, [](uint32_t) {});
  Timer a(loop_.get(), [] {});
  Timer b(loop_.get(), [] {});
  CpuJob job(loop_.get(), [] { return CpuSliceResult::kDone; });
  EXPECT_DEATH(loop_.reset(),
               "EventLoop destroyed with live handles: 1 FdWatcher, 2 Timer, "
               "1 CpuJob; destroy them first");
}

TEST_F(EventLoopLifetimeDeathTest, DestroyingTheLoopInItsCallbackIsRefused) {
  loop_->Post([this] { loop_.reset(); });
  EXPECT_DEATH(RunNoWait(),
               "EventLoop destroyed inside a callback of the same loop");
}

// What the loop owns does not trip the check, even when it owns handles:
// deferred deletes, RunAfter/RunEvery callbacks, signal handlers and queued
// tasks are destroyed first, and the handles with them.
TEST_F(EventLoopLifetimeTest, HandlesOwnedThroughTheLoopAreDestroyedFirst) {
  TestPipe p;
  bool deferred_gone = false;
  bool after_gone = false;
  bool every_gone = false;
  bool task_gone = false;
  bool urgent_gone = false;
  bool signal_gone = false;
  loop_->DeleteLater(
      std::make_unique<FdWatcher>(loop_.get(), p.r, [](uint32_t) {}));
  auto with_timer = [&](bool* gone) {
    return [timer = std::make_shared<Timer>(loop_.get(), [] {}),
            flag = DestroyFlag(gone)] {};
  };
  loop_->DeleteLater(std::make_unique<DestroyFlag>(&deferred_gone));
  // One loop-owned timer whose handle is dropped, one whose handle outlives
  // the loop: both callbacks (and what they own) go with the loop.
  Timer::After(loop_.get(), absl::Seconds(1), with_timer(&after_gone));
  Timer::Handle kept =
      Timer::After(loop_.get(), absl::Seconds(1), with_timer(&every_gone));
  loop_->Post(with_timer(&task_gone));
  loop_->PostUrgent(with_timer(&urgent_gone));
  ASSERT_TRUE(
      loop_
          ->OnSignal(SIGUSR2,
                     [job = std::make_shared<CpuJob>(
                          loop_.get(), [] { return CpuSliceResult::kDone; }),
                      flag = DestroyFlag(&signal_gone)](int) {})
          .ok());
  loop_.reset();  // no check fails
  EXPECT_FALSE(kept.is_pending());
  EXPECT_FALSE(kept.Cancel());
  EXPECT_TRUE(deferred_gone);
  EXPECT_TRUE(after_gone);
  EXPECT_TRUE(every_gone);
  EXPECT_TRUE(task_gone);
  EXPECT_TRUE(urgent_gone);
  EXPECT_TRUE(signal_gone);
}

// --- continuations destroyed with the loop ----------------------------------

// Counts its destructions and whether anything ran it.
struct Probe {
  Probe(int* destroyed, int* ran) : destroyed(destroyed), ran(ran) {}
  Probe(Probe&& o) noexcept
      : destroyed(std::exchange(o.destroyed, nullptr)), ran(o.ran) {}
  ~Probe() {
    if (destroyed != nullptr) ++*destroyed;
  }
  int* destroyed;
  int* ran;
};

// Owned by DeleteLater: an unset promise whose future's continuation
// forwards into a second promise, whose future's continuation holds a Probe.
struct PromiseOwner {
  explicit PromiseOwner(EventLoop* loop) : promise(loop) {}
  Promise<int> promise;
};

// Destroying the owner breaks the first promise, which posts its
// continuation; destroying that task unrun destroys the second promise,
// which posts the next one. Were the queues emptied before the deferred
// deletes (as they were), the posted continuations would be left in the
// queues: never destroyed (a leak under ASan), or destroyed by ~TaskQueue
// while they post into it (heap-use-after-free).
TEST_F(EventLoopLifetimeTest, DeferredPromiseChainsAreDestroyedUnrun) {
  constexpr int kObjects = 1000;
  int destroyed = 0;
  int ran = 0;
  for (int i = 0; i < kObjects; ++i) {
    auto owner = std::make_unique<PromiseOwner>(loop_.get());
    Promise<int> second(loop_.get());
    std::move(second.GetFuture())
        .OnComplete([probe = Probe(&destroyed, &ran)](absl::StatusOr<int>) {
          ++*probe.ran;
        });
    Future<void> forwarded = std::move(owner->promise.GetFuture())
                                 .Then([second = std::move(second),
                                        &ran](absl::StatusOr<int> v) mutable {
                                   ++ran;
                                   second.Set(std::move(v));
                                 });
    (void)forwarded;  // dropped: nobody waits for the forwarding itself
    loop_->DeleteLater(std::move(owner));
  }
  loop_.reset();
  EXPECT_EQ(destroyed, kObjects);
  EXPECT_EQ(ran, 0);
}

// A Post() or PostUrgent() made while the loop is being destroyed queues a
// task that is destroyed, never run.
TEST_F(EventLoopLifetimeTest, PostsDuringDestructionAreDestroyedUnrun) {
  bool ran = false;
  bool posted_gone = false;
  bool urgent_gone = false;
  EventLoop* loop = loop_.get();
  struct PostsWhenDestroyed {
    PostsWhenDestroyed(EventLoop* loop, bool* ran, bool* posted_gone,
                       bool* urgent_gone)
        : loop(loop),
          ran(ran),
          posted_gone(posted_gone),
          urgent_gone(urgent_gone) {}
    ~PostsWhenDestroyed() {
      loop->Post(
          [&ran = *ran, flag = DestroyFlag(posted_gone)] { ran = true; });
      loop->PostUrgent(
          [&ran = *ran, flag = DestroyFlag(urgent_gone)] { ran = true; });
    }
    EventLoop* loop;
    bool* ran;
    bool* posted_gone;
    bool* urgent_gone;
  };
  loop_->DeleteLater(std::make_unique<PostsWhenDestroyed>(
      loop, &ran, &posted_gone, &urgent_gone));
  loop_.reset();
  EXPECT_TRUE(posted_gone);
  EXPECT_TRUE(urgent_gone);
  EXPECT_FALSE(ran);
}

}  // namespace
}  // namespace nbio
