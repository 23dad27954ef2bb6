// The reactor's conformance suite: every poller backend must pass all of it.
//
// Parameterised over PollerNames() x {eventfd, self-pipe} wake-up, so a new
// backend added to the registry is tested here without touching this file.
// Timing tests use a ManualClock and RunOnce(kNoWait): nothing sleeps.
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "reactor/async/future.h"
#include "reactor/async/wait_fd.h"
#include "reactor/event_loop.h"
#include "reactor/poller/poller_registry.h"
#include "reactor/testing/loop_test_util.h"
#include "timers/clock.h"

namespace nbio {
namespace {

using Param = std::tuple<std::string, bool>;  // backend, force_pipe_wakeup

class ReactorConformanceTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    NBIO_SKIP_IF_BACKEND_UNAVAILABLE(std::get<0>(GetParam()));
  }
  std::unique_ptr<EventLoop> MakeLoop(Clock* clock = nullptr) {
    EventLoop::Options options;
    options.backend = std::get<0>(GetParam());
    options.force_pipe_wakeup = std::get<1>(GetParam());
    options.clock = clock;
    std::unique_ptr<EventLoop> loop = CreateTestLoop(options);
    if (loop != nullptr) {
      EXPECT_EQ(std::string(loop->backend_name()), std::get<0>(GetParam()));
    }
    return loop;
  }

  // MakeLoop for tests that create many loops in a row: a backend whose
  // kernel resources are released asynchronously (io_uring rings count
  // against RLIMIT_MEMLOCK until the kernel's exit work has run) may refuse
  // with RESOURCE_EXHAUSTED for a while; wait for it, up to 5 s.
  std::unique_ptr<EventLoop> MakeLoopRetrying() {
    EventLoop::Options options;
    options.backend = std::get<0>(GetParam());
    options.force_pipe_wakeup = std::get<1>(GetParam());
    const absl::Time give_up = absl::Now() + absl::Seconds(5);
    for (;;) {
      absl::StatusOr<std::unique_ptr<EventLoop>> loop =
          EventLoop::Create(options);
      if (loop.ok()) return std::move(*loop);
      if (!absl::IsResourceExhausted(loop.status()) || absl::Now() >= give_up) {
        ADD_FAILURE() << loop.status();
        return nullptr;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
};

// Runs loop->Run() while another thread watches it: `at`, if given, runs
// on that thread once `at_after` has passed; after 5 s the thread stops the
// loop. Returns false when it had to (Run() did not return by itself).
bool RunUnderWatchdog(EventLoop* loop,
                      absl::Duration at_after = absl::InfiniteDuration(),
                      std::function<void()> at = nullptr) {
  std::atomic<bool> done{false}, stopped{false};
  std::thread watchdog([&] {
    const absl::Time start = absl::Now();
    bool ran = false;
    while (!done.load() && absl::Now() - start < absl::Seconds(5)) {
      if (!ran && at && absl::Now() - start >= at_after) {
        at();
        ran = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!done.load()) {
      stopped = true;
      loop->Stop();
    }
  });
  EXPECT_TRUE(loop->Run().ok());
  done = true;
  watchdog.join();
  return !stopped.load();
}

// --- readiness --------------------------------------------------------------

TEST_P(ReactorConformanceTest, PipeReadinessReachesWatcher) {
  auto loop = MakeLoop();
  TestPipe p;
  std::string got;
  FdWatcher watcher(loop.get(), p.r, [&](uint32_t events) {
    EXPECT_TRUE(events & kReadable);
    char buf[64];
    ssize_t n;
    while ((n = read(p.r, buf, sizeof(buf))) > 0) got.append(buf, n);
    if (n == 0) watcher.Stop();  // EOF: nothing left to wait for
  });
  ASSERT_TRUE(watcher.SetInterest(kReadable).ok());
  EXPECT_TRUE(watcher.is_active());
  ASSERT_EQ(write(p.w, "hello", 5), 5);
  close(p.w);
  p.w = -1;
  // Run() returns by itself once the watcher stops: no work is left.
  ASSERT_TRUE(loop->Run().ok());
  EXPECT_EQ(got, "hello");
  EXPECT_FALSE(watcher.is_active());
}

TEST_P(ReactorConformanceTest, SocketPairBothDirectionsAndInterestChanges) {
  auto loop = MakeLoop();
  TestSocketPair s;
  std::vector<uint32_t> seen;
  FdWatcher watcher(loop.get(), s.a,
                    [&](uint32_t events) { seen.push_back(events); });
  ASSERT_TRUE(watcher.SetInterest(kWritable).ok());
  RunNoWait(loop.get());
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], kWritable);

  ASSERT_TRUE(watcher.SetInterest(kReadable).ok());
  RunNoWait(loop.get());
  EXPECT_EQ(seen.size(), 1u);  // nothing to read, no longer asks to write

  ASSERT_EQ(write(s.b, "x", 1), 1);
  RunNoWait(loop.get());
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1], kReadable);

  ASSERT_TRUE(watcher.SetInterest(kReadable | kWritable).ok());
  RunNoWait(loop.get());
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[2], kReadable | kWritable);

  ASSERT_TRUE(watcher.SetInterest(0).ok());  // paused: silent
  RunNoWait(loop.get());
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(loop->Load().fds_waiting, 0);
}

// --- unregister during dispatch ----------------------------------------------

TEST_P(ReactorConformanceTest, WatcherStopsItselfDuringDispatch) {
  auto loop = MakeLoop();
  TestPipe p;
  int calls = 0;
  FdWatcher watcher(loop.get(), p.r, [&](uint32_t) {
    ++calls;
    watcher.Stop();
  });
  ASSERT_TRUE(watcher.SetInterest(kReadable).ok());
  ASSERT_EQ(write(p.w, "x", 1), 1);
  RunNoWait(loop.get(), 3);
  EXPECT_EQ(calls, 1);
}

TEST_P(ReactorConformanceTest, WatcherDeletesAnotherInSameBatch) {
  auto loop = MakeLoop();
  TestPipe p1, p2;
  int calls = 0;
  std::unique_ptr<FdWatcher> w1, w2;
  // Whichever runs first destroys the other (outside the other's callback,
  // so destroying it directly is allowed) and its fd's event is dropped.
  w1 = std::make_unique<FdWatcher>(loop.get(), p1.r, [&](uint32_t) {
    ++calls;
    w2.reset();
  });
  w2 = std::make_unique<FdWatcher>(loop.get(), p2.r, [&](uint32_t) {
    ++calls;
    w1.reset();
  });
  ASSERT_TRUE(w1->SetInterest(kReadable).ok());
  ASSERT_TRUE(w2->SetInterest(kReadable).ok());
  ASSERT_EQ(write(p1.w, "x", 1), 1);
  ASSERT_EQ(write(p2.w, "x", 1), 1);
  RunNoWait(loop.get());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(loop->Load().fds_waiting, 1);
}

// An object that owns a watcher and is destroyed from that watcher's own
// callback goes through DeleteLater: it dies after the callback returns.
struct Owner {
  Owner(EventLoop* loop, int fd, bool* destroyed)
      : destroyed(destroyed), watcher(loop, fd, [this, loop](uint32_t) {
          ++calls;
          loop->DeleteLater(std::unique_ptr<Owner>(this));
          EXPECT_FALSE(*this->destroyed);  // still alive in the callback
        }) {}
  ~Owner() { *destroyed = true; }
  bool* destroyed;
  int calls = 0;
  FdWatcher watcher;
};

TEST_P(ReactorConformanceTest, DeleteLaterInsideOwnCallback) {
  auto loop = MakeLoop();
  TestPipe p;
  bool destroyed = false;
  auto* owner = new Owner(loop.get(), p.r, &destroyed);
  ASSERT_TRUE(owner->watcher.SetInterest(kReadable).ok());
  ASSERT_EQ(write(p.w, "x", 1), 1);
  RunNoWait(loop.get());
  EXPECT_TRUE(destroyed);
  EXPECT_EQ(loop->Load().fds_waiting, 0);
  RunNoWait(loop.get());  // the fd is still readable: nobody is called
}

TEST_P(ReactorConformanceTest, DestroyingWatcherInOwnCallbackIsCaught) {
  auto loop = MakeLoop();
  TestPipe p;
  FdWatcher* watcher = nullptr;
  watcher = new FdWatcher(loop.get(), p.r, [&](uint32_t) { delete watcher; });
  ASSERT_TRUE(watcher->SetInterest(kReadable).ok());
  ASSERT_EQ(write(p.w, "x", 1), 1);
  EXPECT_DEATH(RunNoWait(loop.get()), "destroyed inside its own callback");
  delete watcher;
}

// --- timers: ordering and never early -------------------------------------

TEST_P(ReactorConformanceTest, TimersFireInDeadlineOrderNeverEarly) {
  ManualClock clock(absl::ToInt64Nanoseconds(absl::Seconds(100)));
  auto loop = MakeLoop(&clock);
  RunNoWait(loop.get());  // take the clock's reading
  std::vector<int> order;
  Timer t30(loop.get(), [&] { order.push_back(30); });
  Timer t10(loop.get(), [&] { order.push_back(10); });
  Timer t20a(loop.get(), [&] { order.push_back(20); });
  Timer t20b(loop.get(), [&] { order.push_back(21); });
  t30.Start(absl::Milliseconds(30));
  t10.Start(absl::Milliseconds(10));
  t20a.Start(absl::Milliseconds(20));
  t20b.Start(absl::Milliseconds(20));  // same deadline: after t20a (FIFO)
  EXPECT_EQ(loop->Load().timers_sleeping, 4u);

  // The poll timeout is the nearest deadline.
  EXPECT_EQ(loop->NextPollTimeoutNanos(),
            absl::ToInt64Nanoseconds(absl::Milliseconds(10)));

  clock.Advance(absl::Milliseconds(10) - absl::Nanoseconds(1));
  RunNoWait(loop.get());
  EXPECT_TRUE(order.empty()) << "fired before its deadline";
  // Rounded up, never down: 1 ns left is a whole (1 ms) poll timeout.
  EXPECT_GT(loop->NextPollTimeoutNanos(), 0);

  clock.Advance(absl::Nanoseconds(1));
  RunNoWait(loop.get());
  EXPECT_EQ(order, (std::vector<int>{10}));

  clock.Advance(absl::Milliseconds(25));  // past 20 and 30 at once
  RunNoWait(loop.get());
  EXPECT_EQ(order, (std::vector<int>{10, 20, 21, 30}));
  EXPECT_EQ(loop->Load().timers_sleeping, 0u);
  // Nothing left to do: do not block at all (Run() is about to return)...
  EXPECT_EQ(loop->NextPollTimeoutNanos(), 0);
  // ...but with something to wait for and no timer, block with no limit.
  auto keep = loop->KeepAliveToken();
  EXPECT_EQ(loop->NextPollTimeoutNanos(), -1);
}

// Time that passes between the top of an iteration and an I/O callback (the
// loop slept in the poll, or timers and tasks ran long) is seen by the
// callback: a timer it starts counts from when it runs. Here a task moves
// the clock 10 s on after the iteration read it, as a long sleep would.
TEST_P(ReactorConformanceTest, IoCallbackSeesTimePassedSinceTopOfIteration) {
  ManualClock clock(absl::ToInt64Nanoseconds(absl::Seconds(100)));
  auto loop = MakeLoop(&clock);
  TestPipe p;
  int64_t seen = 0;
  int fired = 0;
  Timer timer(loop.get(), [&] { ++fired; });
  FdWatcher watcher(loop.get(), p.r, [&](uint32_t) {
    char c;
    while (read(p.r, &c, 1) == 1) {
    }
    seen = loop->NowNanos();
    timer.Start(absl::Seconds(1));
  });
  ASSERT_TRUE(watcher.SetInterest(kReadable).ok());
  loop->Post([&] {
    clock.Advance(absl::Seconds(10));
    ASSERT_EQ(write(p.w, "x", 1), 1);
  });
  RunNoWait(loop.get());  // top: 100 s; the task; the poll: the callback
  EXPECT_EQ(seen, absl::ToInt64Nanoseconds(absl::Seconds(110)));
  RunNoWait(loop.get());
  EXPECT_EQ(fired, 0) << "a 1 s timer started at 110 s fired at 110 s";
  clock.Advance(absl::Seconds(1));
  RunNoWait(loop.get());
  EXPECT_EQ(fired, 1);
}

// A zero delay fires at the next iteration, also when the loop's time is
// between two ticks (the wheel rounds deadlines up to a tick) and has moved
// since that iteration's timers ran.
TEST_P(ReactorConformanceTest, ZeroDelayTimerFiresAtTheNextIteration) {
  ManualClock clock(absl::ToInt64Nanoseconds(absl::Seconds(100)));
  auto loop = MakeLoop(&clock);
  clock.Advance(absl::Microseconds(300));  // a third of a 1 ms tick
  RunNoWait(loop.get());
  int fired = 0;
  Timer zero(loop.get(), [&] { ++fired; });
  Timer negative(loop.get(), [&] { ++fired; });
  zero.Start(absl::ZeroDuration());
  negative.Start(-absl::Seconds(1));
  EXPECT_EQ(loop->NextPollTimeoutNanos(), 0);
  RunNoWait(loop.get());  // the clock has not moved
  EXPECT_EQ(fired, 2);
}

TEST_P(ReactorConformanceTest, PeriodicTimerDoesNotDriftAndSkipsMissed) {
  ManualClock clock(0);
  auto loop = MakeLoop(&clock);
  RunNoWait(loop.get());
  std::vector<int64_t> fired_at;
  Timer tick(loop.get(), [&] { fired_at.push_back(loop->NowNanos()); });
  tick.StartPeriodic(absl::Milliseconds(10));
  // The loop runs a little late each time: the deadlines stay on the grid.
  for (int i = 1; i <= 3; ++i) {
    clock.Set(absl::ToInt64Nanoseconds(absl::Milliseconds(10 * i + 3)));
    RunNoWait(loop.get());
    EXPECT_EQ(tick.deadline_nanos(),
              absl::ToInt64Nanoseconds(absl::Milliseconds(10 * (i + 1))));
  }
  EXPECT_EQ(fired_at.size(), 3u);
  // A long stall: one firing, then back on the grid (no burst of 10).
  clock.Set(absl::ToInt64Nanoseconds(absl::Milliseconds(145)));
  RunNoWait(loop.get());
  EXPECT_EQ(fired_at.size(), 4u);
  EXPECT_EQ(tick.deadline_nanos(),
            absl::ToInt64Nanoseconds(absl::Milliseconds(150)));
  tick.Cancel();
  EXPECT_FALSE(tick.is_pending());
}

// A period so long that the next deadline passes INT64_MAX: it saturates to
// "never" instead of wrapping into the past (which fired the timer again at
// once, on a clock standing still, and was signed overflow for UBSan).
TEST_P(ReactorConformanceTest, PeriodicTimerPastInt64MaxSaturates) {
  ManualClock clock(0);
  auto loop = MakeLoop(&clock);
  RunNoWait(loop.get());
  int fired = 0;
  Timer tick(loop.get(), [&] { ++fired; });
  const int64_t period = 5'000'000'000'000'000'000;  // 5e18 ns, ~158 years
  tick.StartPeriodic(absl::Nanoseconds(period));
  clock.Set(period);
  RunNoWait(loop.get());
  EXPECT_EQ(fired, 1);
  EXPECT_TRUE(tick.is_pending());
  EXPECT_EQ(tick.deadline_nanos(), std::numeric_limits<int64_t>::max());
  for (int i = 0; i < 3; ++i) RunNoWait(loop.get());  // the clock stands still
  EXPECT_EQ(fired, 1);
  // A second short of the end of time: still not due.
  clock.Set(std::numeric_limits<int64_t>::max() - 1'000'000'000);
  RunNoWait(loop.get());
  EXPECT_EQ(fired, 1);
  tick.Cancel();
}

// Timer::After: the loop owns the timer; the handle cancels it, may be
// dropped (the timer still fires) or kept past the timer's end.
TEST_P(ReactorConformanceTest, TimerAfterFiresOnceAndHandleCancels) {
  ManualClock clock(0);
  auto loop = MakeLoop(&clock);
  RunNoWait(loop.get());
  int once = 0, cancelled = 0, dropped = 0, inside = 0;
  Timer::Handle a =
      Timer::After(loop.get(), absl::Milliseconds(5), [&] { ++once; });
  Timer::Handle b =
      Timer::After(loop.get(), absl::Milliseconds(5), [&] { ++cancelled; });
  Timer::After(loop.get(), absl::Milliseconds(3), [&] { ++dropped; });
  Timer::Handle c;
  c = Timer::After(loop.get(), absl::Milliseconds(2), [&] {
    ++inside;
    EXPECT_FALSE(c.is_pending());
    EXPECT_FALSE(c.Cancel());  // from inside itself: it has already run
    c = Timer::Handle();       // drops the handle inside the callback
  });
  EXPECT_EQ(loop->Load().timers_sleeping, 4u);
  EXPECT_TRUE(a.is_pending());
  EXPECT_TRUE(b.Cancel());
  EXPECT_FALSE(b.is_pending());
  EXPECT_FALSE(b.Cancel());  // already cancelled
  EXPECT_EQ(loop->Load().timers_sleeping, 3u);
  for (int ms = 1; ms <= 20; ++ms) {
    clock.Set(absl::ToInt64Nanoseconds(absl::Milliseconds(ms)));
    RunNoWait(loop.get());
  }
  EXPECT_EQ(once, 1);
  EXPECT_EQ(cancelled, 0);
  EXPECT_EQ(dropped, 1);
  EXPECT_EQ(inside, 1);
  EXPECT_FALSE(a.is_pending());
  EXPECT_FALSE(a.Cancel());  // already ran
  EXPECT_FALSE(Timer::Handle().Cancel());
  EXPECT_EQ(loop->Load().timers_sleeping, 0u);
}

// Timers still pending when the loop goes are freed with it (LeakSanitizer
// checks), and a handle may outlive the loop.
TEST_P(ReactorConformanceTest, TimerAfterPendingAtLoopDestruction) {
  ManualClock clock(0);
  auto loop = MakeLoop(&clock);
  int fired = 0;
  Timer::After(loop.get(), absl::Seconds(1), [&] { ++fired; });
  Timer::Handle kept =
      Timer::After(loop.get(), absl::Seconds(1), [&] { ++fired; });
  loop.reset();
  EXPECT_FALSE(kept.is_pending());
  EXPECT_FALSE(kept.Cancel());
  EXPECT_EQ(fired, 0);
}

TEST_P(ReactorConformanceTest, TimerCallbackCancelsAnotherDueInSameBatch) {
  ManualClock clock(0);
  auto loop = MakeLoop(&clock);
  RunNoWait(loop.get());
  int second_ran = 0;
  Timer second(loop.get(), [&] { ++second_ran; });
  Timer first(loop.get(), [&] { second.Cancel(); });
  first.Start(absl::Milliseconds(1));
  second.Start(absl::Milliseconds(2));
  clock.Advance(absl::Milliseconds(5));  // both due in one Advance
  RunNoWait(loop.get());
  EXPECT_EQ(second_ran, 0);
  EXPECT_FALSE(second.is_pending());
}

TEST_P(ReactorConformanceTest, RealClockTimerWakesBlockedLoop) {
  auto loop = MakeLoop();  // monotonic clock: the poll timeout is real
  bool fired = false;
  // A timer counts from the loop's time (its last clock reading), which is
  // what "never early" is measured against.
  const int64_t start = loop->NowNanos();
  Timer::After(loop.get(), absl::Milliseconds(5), [&] { fired = true; });
  ASSERT_TRUE(loop->Run().ok());  // returns once the only timer has run
  EXPECT_TRUE(fired);
  // Never early (no upper bound: machines are noisy).
  EXPECT_GE(DefaultClock()->NowNanos() - start,
            absl::ToInt64Nanoseconds(absl::Milliseconds(5)));
}

// A Timer that does not keep the loop alive (libuv's uv_unref): Run() does
// not wait for it. A watchdog stops a Run() that would (the test then fails
// instead of hanging).
TEST_P(ReactorConformanceTest, TimerNotKeepingLoopAliveLetsRunReturn) {
  auto loop = MakeLoop();
  int fired = 0;
  Timer housekeeping(loop.get(), [&] { ++fired; });
  housekeeping.set_keeps_loop_alive(false);
  housekeeping.StartPeriodic(absl::Seconds(3600));
  EXPECT_FALSE(housekeeping.keeps_loop_alive());
  EXPECT_EQ(loop->Load().timers_sleeping, 1u);  // still sleeping, still counted
  EXPECT_TRUE(RunUnderWatchdog(loop.get()))
      << "a timer that does not keep the loop alive kept Run() going";
  EXPECT_EQ(fired, 0);
  EXPECT_TRUE(housekeeping.is_pending());
}

// It still fires on time while other work keeps the loop running: here a
// timer that does keep it alive and is due later.
TEST_P(ReactorConformanceTest, TimerNotKeepingLoopAliveFiresWhileLoopRuns) {
  auto loop = MakeLoop();  // real clock: Run() really waits
  std::vector<std::string> order;
  Timer unref(loop.get(), [&] { order.push_back("unref"); });
  unref.set_keeps_loop_alive(false);
  unref.Start(absl::Milliseconds(1));
  Timer ref(loop.get(), [&] { order.push_back("ref"); });
  ref.Start(absl::Milliseconds(20));
  ASSERT_TRUE(loop->Run().ok());
  EXPECT_EQ(order, (std::vector<std::string>{"unref", "ref"}));

  // And on a ManualClock, kept running by a watched fd.
  ManualClock clock(0);
  auto manual = MakeLoop(&clock);
  TestPipe p;
  FdWatcher watcher(manual.get(), p.r, [](uint32_t) {});
  ASSERT_TRUE(watcher.SetInterest(kReadable).ok());
  int ticks = 0;
  Timer tick(manual.get(), [&] { ++ticks; });
  tick.set_keeps_loop_alive(false);
  tick.StartPeriodic(absl::Milliseconds(5));
  EXPECT_EQ(manual->NextPollTimeoutNanos(),
            absl::ToInt64Nanoseconds(absl::Milliseconds(5)));
  for (int i = 1; i <= 3; ++i) {
    clock.Advance(absl::Milliseconds(5));
    RunNoWait(manual.get());
    EXPECT_EQ(ticks, i);
  }
  watcher.Stop();
  // Only the tick is left: nothing to wait for.
  EXPECT_EQ(manual->NextPollTimeoutNanos(), 0);
  tick.Cancel();
}

// Re-ref: keeping the loop alive again makes Run() wait for it, whether
// changed while pending or before the timer starts.
TEST_P(ReactorConformanceTest, TimerKeepsLoopAliveAgainAfterReRef) {
  auto loop = MakeLoop();
  int fired = 0;
  Timer pending(loop.get(), [&] { ++fired; });
  pending.set_keeps_loop_alive(false);
  pending.Start(absl::Milliseconds(2));
  pending.set_keeps_loop_alive(true);  // while pending
  ASSERT_TRUE(loop->Run().ok());
  EXPECT_EQ(fired, 1);

  Timer idle(loop.get(), [&] { ++fired; });
  idle.set_keeps_loop_alive(false);
  idle.set_keeps_loop_alive(true);  // while not pending
  idle.Start(absl::Milliseconds(2));
  ASSERT_TRUE(loop->Run().ok());
  EXPECT_EQ(fired, 2);

  // Dropped while pending, then cancelled: nothing is left counted.
  Timer dropped(loop.get(), [&] { ++fired; });
  dropped.Start(absl::Seconds(3600));
  dropped.set_keeps_loop_alive(false);
  dropped.Cancel();
  dropped.set_keeps_loop_alive(true);
  EXPECT_EQ(loop->Load().timers_sleeping, 0u);
  EXPECT_EQ(loop->NextPollTimeoutNanos(), 0);
  ASSERT_TRUE(loop->Run().ok());
  EXPECT_EQ(fired, 2);
}

// --- tasks ------------------------------------------------------------------

TEST_P(ReactorConformanceTest, PostedTasksRunFifoAndDoNotStarveIo) {
  auto loop = MakeLoop();
  std::vector<int> order;
  for (int i = 0; i < 5; ++i) loop->Post([&, i] { order.push_back(i); });
  RunNoWait(loop.get());
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));

  // A task that re-posts itself forever must not keep the fd from being
  // served: each iteration runs only what was queued before it.
  TestPipe p;
  bool io_seen = false;
  int spins = 0;
  std::function<void()> spin = [&] {
    ++spins;
    if (!io_seen) loop->Post(spin);
  };
  FdWatcher watcher(loop.get(), p.r, [&](uint32_t) {
    io_seen = true;
    watcher.Stop();
  });
  ASSERT_TRUE(watcher.SetInterest(kReadable).ok());
  ASSERT_EQ(write(p.w, "x", 1), 1);
  loop->Post(spin);
  ASSERT_TRUE(loop->Run().ok());
  EXPECT_TRUE(io_seen);
  EXPECT_LE(spins, 2);
}

TEST_P(ReactorConformanceTest, StopFromCallback) {
  auto loop = MakeLoop();
  auto keep = loop->KeepAliveToken();  // otherwise Run() would just return
  int iterations_after_stop = 0;
  bool stopped = false;
  std::function<void()> task = [&] {
    if (stopped) ++iterations_after_stop;
    loop->Post(task);
  };
  loop->Post(task);
  loop->Post([&] {
    stopped = true;
    loop->Stop();
  });
  ASSERT_TRUE(loop->Run().ok());
  EXPECT_TRUE(stopped);
  EXPECT_LE(iterations_after_stop, 1);
}

// Whether thread `tid` of this process is asleep inside one of the system
// calls the pollers wait in, as the kernel reports it: the thread's state in
// /proc/self/task/<tid>/stat is S (sleeping) and .../syscall names the call
// it is in. A thread spinning through zero-timeout polls is never seen so:
// it is running (R), or between calls.
bool AsleepInPollerWait(pid_t tid) {
  const std::string dir = absl::StrCat("/proc/self/task/", tid, "/");
  std::ifstream stat(dir + "stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  // "pid (comm) S ...": the state follows the last ')' (comm may hold one).
  const size_t paren = line.rfind(')');
  if (paren == std::string::npos || paren + 2 >= line.size() ||
      line[paren + 2] != 'S') {
    return false;
  }
  std::ifstream syscall_file(dir + "syscall");
  long nr = -1;
  if (!(syscall_file >> nr)) return false;  // "running"
  for (long wait : {
#ifdef SYS_poll
           static_cast<long>(SYS_poll),
#endif
#ifdef SYS_select
           static_cast<long>(SYS_select),
#endif
#ifdef SYS_epoll_wait
           static_cast<long>(SYS_epoll_wait),
#endif
#ifdef SYS_epoll_pwait2
           static_cast<long>(SYS_epoll_pwait2),
#endif
#ifdef SYS_io_uring_enter
           static_cast<long>(SYS_io_uring_enter),
#endif
           static_cast<long>(SYS_ppoll), static_cast<long>(SYS_pselect6),
           static_cast<long>(SYS_epoll_pwait)}) {
    if (nr == wait) return true;
  }
  return false;
}

// The stop must be what ends the poll: the stopper waits until the kernel
// shows the loop thread asleep in the poller's wait (twice, 20 ms apart), and
// only then calls Stop(). No timer is scheduled, so the poll has no timeout
// and only fd activity ends it: the wake-up fd, or a rescue pipe that the
// stopper writes to if Run() has not returned 10 s after the Stop() (so a
// lost wake-up fails the test instead of hanging it). The assertions fail if
// the loop spun instead of blocking (never seen asleep there; many polls),
// or if the Stop() did not wake it (the rescue ran).
//
// The loop runs on a thread of its own, created for this case: a thread
// that has torn down io_uring rings (earlier cases' loops, on any backend's
// engine probe) may see its next blocking waits interrupted by the kernel's
// deferred ring teardown (EINTR, which the loop answers by polling again),
// and this case counts polls.
void StopFromAnotherThreadWakesBlockedLoopOnThisThread(
    const std::function<std::unique_ptr<EventLoop>()>& make_loop) {
  const pid_t loop_tid = static_cast<pid_t>(syscall(SYS_gettid));
  std::unique_ptr<EventLoop> loop = make_loop();
  ASSERT_NE(loop, nullptr);
  TestPipe rescue;
  bool rescued = false;
  // Keeps Run() going meanwhile, without a timer.
  FdWatcher rescue_watcher(loop.get(), rescue.r, [&](uint32_t) {
    rescued = true;
    loop->Stop();
  });
  ASSERT_TRUE(rescue_watcher.SetInterest(kReadable).ok());
  std::atomic<bool> running{false};
  std::atomic<bool> seen_asleep{false};
  std::atomic<bool> returned{false};
  loop->Post([&] { running = true; });
  std::thread stopper([&] {
    while (!running) std::this_thread::yield();
    absl::Time give_up = absl::Now() + absl::Seconds(20);
    int in_a_row = 0;
    while (in_a_row < 2 && absl::Now() < give_up) {
      in_a_row = AsleepInPollerWait(loop_tid) ? in_a_row + 1 : 0;
      absl::SleepFor(absl::Milliseconds(in_a_row == 0 ? 1 : 20));
    }
    seen_asleep = in_a_row == 2;
    loop->Stop();
    give_up = absl::Now() + absl::Seconds(10);
    while (!returned && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    if (!returned) {
      ASSERT_EQ(write(rescue.w, "x", 1), 1);
    }
  });
  ASSERT_TRUE(loop->Run().ok());
  returned = true;
  stopper.join();
  EXPECT_TRUE(running);
  EXPECT_TRUE(seen_asleep) << "the loop thread was never seen blocked in the "
                              "poller";
  EXPECT_FALSE(rescued) << "Stop() did not wake the blocked poll";
  const LoopCounters counters = loop->counters();
  // One poll that returns at once (the wake-up of the Post() made before
  // Run()), one that blocks until Stop(): a spinning loop makes thousands in
  // the 40 ms this takes. A few more are allowed for the io_uring backends,
  // whose own engine probe tears a ring down on this thread at Create().
  EXPECT_LE(counters.poll_calls, 10u);
  EXPECT_GT(counters.poll_blocked_nanos, 0);
}

TEST_P(ReactorConformanceTest, StopFromAnotherThreadWakesBlockedLoop) {
  if (!std::ifstream("/proc/thread-self/syscall")) {
    GTEST_SKIP() << "/proc/thread-self/syscall is not readable here";
  }
  std::thread loop_thread([this] {
    StopFromAnotherThreadWakesBlockedLoopOnThisThread(
        [this] { return MakeLoop(); });
  });
  loop_thread.join();
}

// A loop created on one thread and run on another, posted to by its creator
// at once, as a multi-reactor server starts its reactors. The creator is not
// the loop's thread any more, even before the runner has said so: its posts
// must take the cross-thread path (and wake the loop), never push to the task
// queue the runner reads (a data race TSan reports, and a post the loop may
// sleep through). Every task runs exactly once, in order, in every round.
TEST_P(ReactorConformanceTest, PostsFromCreatorWhileAnotherThreadStartsLoop) {
  constexpr int kRounds = 200;
  constexpr int kPosts = 8;
  for (int round = 0; round < kRounds; ++round) {
    std::unique_ptr<EventLoop> loop = MakeLoopRetrying();
    ASSERT_NE(loop, nullptr) << "round " << round;
    std::vector<int> runs(kPosts, 0);  // loop thread only, read after join
    std::vector<int> order;
    absl::Notification all_ran;
    // Made before the runner starts; the last task drops it on the loop
    // thread, and Run() returns.
    std::optional<EventLoop::KeepAlive> keep(loop->KeepAliveToken());
    absl::Status run_status;
    std::thread runner([&] { run_status = loop->Run(); });
    for (int i = 0; i < kPosts; ++i) {
      loop->Post([&runs, &order, i] {
        ++runs[i];
        order.push_back(i);
      });
    }
    loop->Post([&] {
      keep.reset();
      all_ran.Notify();
    });
    // A post the loop slept through: end the run rather than hang the test.
    const bool in_time =
        all_ran.WaitForNotificationWithTimeout(absl::Seconds(20));
    if (!in_time) loop->Stop();
    runner.join();
    keep.reset();
    ASSERT_TRUE(in_time) << "round " << round << ": a post was not run";
    ASSERT_TRUE(run_status.ok()) << run_status;
    for (int i = 0; i < kPosts; ++i) {
      ASSERT_EQ(runs[i], 1) << "round " << round << ", task " << i;
    }
    ASSERT_EQ(order.size(), static_cast<size_t>(kPosts)) << "round " << round;
    for (int i = 0; i < kPosts; ++i) {
      ASSERT_EQ(order[i], i) << "round " << round;
    }
  }
}

TEST_P(ReactorConformanceTest, PostsFromFourThreadsRunExactlyOnceInOrder) {
  auto loop = MakeLoop();
  constexpr int kThreads = 4;
  constexpr int kPerThread = 20000;
  std::vector<std::vector<int>> seen(kThreads);
  std::atomic<int> producers_done{0};
  auto keep = std::make_unique<EventLoop::KeepAlive>(loop->KeepAliveToken());
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        loop->Post([&seen, t, i] { seen[t].push_back(i); });
      }
      if (producers_done.fetch_add(1) + 1 == kThreads) {
        // The last producer ends the run once everything before it has run.
        loop->Post([&] { keep.reset(); });
      }
    });
  }
  ASSERT_TRUE(loop->Run().ok());
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(seen[t].size(), static_cast<size_t>(kPerThread)) << t;
    for (int i = 0; i < kPerThread; ++i) ASSERT_EQ(seen[t][i], i) << t;
  }
  EXPECT_EQ(loop->counters().remote_posts, uint64_t{kThreads * kPerThread + 1});
}

TEST_P(ReactorConformanceTest, BurstOfRemotePostsCostsOneWakeup) {
  auto loop = MakeLoop();
  int ran = 0;
  std::thread producer([&] {
    for (int i = 0; i < 1000; ++i) loop->Post([&ran] { ++ran; });
  });
  producer.join();  // the loop is not draining meanwhile: one burst
  EXPECT_EQ(loop->counters().wakeups_sent, 1u);
  RunNoWait(loop.get(), 2);
  EXPECT_EQ(ran, 1000);
}

// --- signals ----------------------------------------------------------------

TEST_P(ReactorConformanceTest, SignalDeliveredOnLoop) {
  auto loop = MakeLoop();
  int got = 0;
  const pthread_t loop_thread = pthread_self();
  ASSERT_TRUE(
      loop->OnSignal(SIGUSR1,
                     [&](int signo) {
                       EXPECT_EQ(signo, SIGUSR1);
                       EXPECT_TRUE(pthread_equal(pthread_self(), loop_thread));
                       ++got;
                       loop->RemoveSignal(SIGUSR1);  // from inside its handler
                     })
          .ok());
  ASSERT_EQ(kill(getpid(), SIGUSR1), 0);  // blocked: waits in the signalfd
  ASSERT_TRUE(loop->Run().ok());  // returns once the handler removed itself
  EXPECT_EQ(got, 1);
  EXPECT_FALSE(loop->OnSignal(SIGKILL, [](int) {}).ok());
}

// --- one watcher per fd
// -------------------------------------------------------

// Every backend refuses a second FdWatcher or wait on an fd the loop already
// watches, with ALREADY_EXISTS (wait_fd.h), whether or not the first one has
// interest; the first keeps working, and the fd is free again once it stops.
// A watcher that does not keep the loop alive: Run() returns when only it
// is left, yet it is dispatched when the loop runs, and it counts in
// fds_waiting. Stop and re-arm keep the flag; set back, the watcher keeps
// Run() waiting for it; cleared inside its own callback, Run() returns.
TEST_P(ReactorConformanceTest, WatcherNotKeepingLoopAliveLetsRunReturn) {
  auto loop = MakeLoop();
  TestPipe p;
  int events = 0;
  FdWatcher* self = nullptr;
  FdWatcher watcher(loop.get(), p.r, [&](uint32_t) {
    ++events;
    char c;
    EXPECT_EQ(read(p.r, &c, 1), 1);
    self->set_keeps_loop_alive(false);
  });
  self = &watcher;
  watcher.set_keeps_loop_alive(false);
  EXPECT_FALSE(watcher.keeps_loop_alive());
  ASSERT_TRUE(watcher.SetInterest(kReadable).ok());
  EXPECT_EQ(loop->Load().fds_waiting, 1);
  auto run = [&](absl::Duration write_after) {
    return RunUnderWatchdog(loop.get(), write_after,
                            [&] { EXPECT_EQ(write(p.w, "y", 1), 1); });
  };
  // Only the unref'd watcher: Run() returns at once, nothing dispatched.
  EXPECT_TRUE(run(absl::InfiniteDuration()))
      << "a watcher that does not keep the loop alive kept Run() going";
  EXPECT_EQ(events, 0);
  // Still dispatched when the loop runs.
  ASSERT_EQ(write(p.w, "x", 1), 1);
  RunNoWait(loop.get());
  EXPECT_EQ(events, 1);
  // Stopped and re-armed: the flag stays.
  watcher.Stop();
  EXPECT_EQ(loop->Load().fds_waiting, 0);
  ASSERT_TRUE(watcher.SetInterest(kReadable).ok());
  EXPECT_TRUE(run(absl::InfiniteDuration()));
  EXPECT_EQ(events, 1);
  // Keeping it alive again: Run() waits for the byte written 100 ms later;
  // the callback clears the flag, and Run() returns after it.
  watcher.set_keeps_loop_alive(true);
  EXPECT_TRUE(run(absl::Milliseconds(100)));
  EXPECT_EQ(events, 2) << "Run() did not wait for the watcher";
  EXPECT_FALSE(watcher.keeps_loop_alive());
  EXPECT_TRUE(watcher.is_active());
  EXPECT_EQ(loop->Load().fds_waiting, 1);
  watcher.Stop();
  EXPECT_EQ(loop->Load().fds_waiting, 0);
}

// The count of watchers that do not keep the loop alive survives a second
// call and the destruction of such a watcher while it is armed: a watcher
// that does keep it alive, made afterwards, still holds Run() until its
// byte comes (a count left behind would let Run() return at once).
TEST_P(ReactorConformanceTest, DestroyingAnUnrefdArmedWatcherLeavesNoCount) {
  auto loop = MakeLoop();
  TestPipe p;
  {
    FdWatcher unref(loop.get(), p.r, [](uint32_t) {});
    unref.set_keeps_loop_alive(false);
    unref.set_keeps_loop_alive(false);  // a second call changes nothing
    ASSERT_TRUE(unref.SetInterest(kReadable).ok());
    ASSERT_TRUE(unref.SetInterest(kReadable).ok());
    EXPECT_TRUE(RunUnderWatchdog(loop.get()));
  }  // destroyed armed
  EXPECT_EQ(loop->Load().fds_waiting, 0);
  int events = 0;
  FdWatcher* self = nullptr;
  FdWatcher kept(loop.get(), p.r, [&](uint32_t) {
    ++events;
    char c;
    EXPECT_EQ(read(p.r, &c, 1), 1);
    self->Stop();
  });
  self = &kept;
  ASSERT_TRUE(kept.SetInterest(kReadable).ok());
  EXPECT_TRUE(RunUnderWatchdog(loop.get(), absl::Milliseconds(100),
                               [&] { EXPECT_EQ(write(p.w, "y", 1), 1); }));
  EXPECT_EQ(events, 1) << "Run() returned without waiting for the watcher";
}

// --- embedded entries and timer nodes (EventLoop::AddEntry, ScheduleNode) ---

// A PollerEntry embedded in the caller's object, as TcpConnection does.
struct CountingEntry : PollerEntry {
  CountingEntry() : PollerEntry(&CountingEntry::OnEvents) {}
  static void OnEvents(PollerEntry* entry, uint32_t events) {
    auto* self = static_cast<CountingEntry*>(entry);
    ++self->calls;
    self->last = events;
    if (self->on_event) self->on_event();
  }
  int calls = 0;
  uint32_t last = 0;
  std::function<void()> on_event;
};

TEST_P(ReactorConformanceTest, EmbeddedEntryFollowsThePollerContract) {
  auto loop = MakeLoop();
  TestPipe p;
  CountingEntry entry;
  // Registered quiet: no events, not waiting, Run() has nothing to wait on.
  ASSERT_TRUE(loop->AddEntry(&entry, p.r, 0).ok());
  EXPECT_TRUE(entry.is_registered());
  EXPECT_EQ(loop->Load().fds_waiting, 0);
  ASSERT_EQ(write(p.w, "x", 1), 1);
  RunNoWait(loop.get());
  EXPECT_EQ(entry.calls, 0) << "an entry with no interest was dispatched";
  // A second entry (or watcher) on the same fd is refused.
  CountingEntry second;
  EXPECT_EQ(loop->AddEntry(&second, p.r, kReadable).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(second.is_registered());
  // Interest: level-triggered until read; counted as waiting.
  ASSERT_TRUE(loop->ModifyEntry(&entry, kReadable).ok());
  EXPECT_EQ(loop->Load().fds_waiting, 1);
  RunNoWait(loop.get());
  RunNoWait(loop.get());
  EXPECT_EQ(entry.calls, 2);
  EXPECT_TRUE(entry.last & kReadable);
  // Removed from inside its own callback: nothing more, and the fd is free
  // for another entry.
  entry.on_event = [&] { loop->RemoveEntry(&entry); };
  RunNoWait(loop.get());
  EXPECT_EQ(entry.calls, 3);
  EXPECT_FALSE(entry.is_registered());
  EXPECT_EQ(loop->Load().fds_waiting, 0);
  RunNoWait(loop.get());
  EXPECT_EQ(entry.calls, 3) << "dispatched after RemoveEntry";
  ASSERT_TRUE(loop->AddEntry(&second, p.r, kReadable).ok());
  RunNoWait(loop.get());
  EXPECT_EQ(second.calls, 1);
  // An entry with interest keeps Run() going until it is removed.
  second.on_event = [&] {
    char c;
    EXPECT_EQ(read(p.r, &c, 1), 1);
    loop->RemoveEntry(&second);
  };
  ASSERT_TRUE(loop->Run().ok());
  EXPECT_EQ(second.calls, 2);
}

// A TimerNode embedded in the caller's object; records when it fired.
struct RecordingNode : TimerNode {
  explicit RecordingNode(EventLoop* l)
      : TimerNode(&RecordingNode::Fire), loop(l) {}
  static void Fire(TimerNode* node) {
    auto* self = static_cast<RecordingNode*>(node);
    self->at.push_back(self->loop->NowNanos());
  }
  EventLoop* loop;
  std::vector<int64_t> at;
};

TEST_P(ReactorConformanceTest, TimerNodeFiresWithinToleranceNeverEarly) {
  ManualClock clock(absl::ToInt64Nanoseconds(absl::Seconds(100)));
  auto loop = MakeLoop(&clock);
  const int64_t start = clock.NowNanos();
  constexpr int64_t kMs = 1000 * 1000;
  RecordingNode exact(loop.get()), lax(loop.get());
  std::vector<int64_t>& exact_at = exact.at;
  std::vector<int64_t>& lax_at = lax.at;
  loop->ScheduleNode(&exact, start + 50 * kMs);
  loop->ScheduleNode(&lax, start + 50 * kMs, 20 * kMs);
  // A node is not a user timer: not counted, and it does not keep Run()
  // going (Run() returns at once with nothing else to do).
  EXPECT_EQ(loop->Load().timers_sleeping, 0u);
  ASSERT_TRUE(loop->Run().ok());
  EXPECT_TRUE(exact_at.empty());
  // Never early.
  clock.Advance(absl::Milliseconds(49));
  RunNoWait(loop.get());
  EXPECT_TRUE(exact_at.empty());
  EXPECT_TRUE(lax_at.empty());
  clock.Advance(absl::Milliseconds(1));
  RunNoWait(loop.get());
  ASSERT_EQ(exact_at.size(), 1u);
  EXPECT_EQ(exact_at[0], start + 50 * kMs);
  // Within the tolerance: at most 20 ms late.
  for (int i = 0; i < 20 && lax_at.empty(); ++i) {
    clock.Advance(absl::Milliseconds(1));
    RunNoWait(loop.get());
  }
  ASSERT_EQ(lax_at.size(), 1u);
  EXPECT_GE(lax_at[0], start + 50 * kMs);
  EXPECT_LE(lax_at[0], start + 70 * kMs);
  EXPECT_FALSE(lax.is_scheduled());
  // Re-armed from outside, cancelled before it is due: nothing runs; a
  // second cancel (and one of a node never scheduled) is a no-op.
  loop->ScheduleNode(&exact, clock.NowNanos() + 10 * kMs);
  EXPECT_TRUE(exact.is_scheduled());
  loop->CancelNode(&exact);
  loop->CancelNode(&exact);
  TimerNode never;
  loop->CancelNode(&never);
  clock.Advance(absl::Milliseconds(100));
  RunNoWait(loop.get());
  EXPECT_EQ(exact_at.size(), 1u);
}

TEST_P(ReactorConformanceTest, SecondWatcherOnAnFdIsAlreadyExists) {
  auto loop = MakeLoop();
  TestPipe p;
  int first_events = 0, second_events = 0;
  FdWatcher first(loop.get(), p.r, [&](uint32_t) { ++first_events; });
  FdWatcher second(loop.get(), p.r, [&](uint32_t) { ++second_events; });
  ASSERT_TRUE(first.SetInterest(0).ok());
  EXPECT_EQ(second.SetInterest(kReadable).code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(first.SetInterest(kReadable).ok());
  EXPECT_EQ(second.SetInterest(kReadable).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(second.is_active());
  EXPECT_EQ(loop->Load().fds_waiting, 1);
  ASSERT_EQ(write(p.w, "x", 1), 1);
  RunNoWait(loop.get());
  EXPECT_EQ(first_events, 1);
  EXPECT_EQ(second_events, 0);
  first.Stop();
  EXPECT_TRUE(second.SetInterest(kReadable).ok());
  RunNoWait(loop.get());
  EXPECT_EQ(second_events, 1);
  second.Stop();
}

TEST_P(ReactorConformanceTest, WaitOnAWatchedFdIsAlreadyExists) {
  auto loop = MakeLoop();
  TestPipe p;
  // A wait on an fd an FdWatcher watches.
  FdWatcher watcher(loop.get(), p.r, [](uint32_t) {});
  ASSERT_TRUE(watcher.SetInterest(kReadable).ok());
  auto refused = Capture(WaitReadable(loop.get(), p.r));
  RunNoWait(loop.get());  // futures complete at the next checkpoint
  ASSERT_TRUE(refused->has_value());
  EXPECT_EQ(refused->value().code(), absl::StatusCode::kAlreadyExists);
  watcher.Stop();
  // A second wait on an fd a wait is waiting on.
  auto waiting = Capture(WaitReadable(loop.get(), p.r));
  auto second = Capture(WaitReadable(loop.get(), p.r));
  RunNoWait(loop.get());
  ASSERT_TRUE(second->has_value());
  EXPECT_EQ(second->value().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(waiting->has_value());
  ASSERT_EQ(write(p.w, "x", 1), 1);
  RunNoWait(loop.get(), 2);
  ASSERT_TRUE(waiting->has_value());
  EXPECT_TRUE(waiting->value().ok()) << waiting->value();
  EXPECT_EQ(loop->Load().fds_waiting, 0);
}

// --- the select ceiling
// -------------------------------------------------------

TEST_P(ReactorConformanceTest, FdAboveFdSetsize) {
  auto loop = MakeLoop();
  TestPipe p;
  const int high = fcntl(p.r, F_DUPFD_CLOEXEC, FD_SETSIZE + 5);
  ASSERT_GE(high, FD_SETSIZE);
  FdWatcher watcher(loop.get(), high, [](uint32_t) {});
  absl::Status status = watcher.SetInterest(kReadable);
  if (std::get<0>(GetParam()) == "select") {
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
    EXPECT_FALSE(watcher.is_active());
    EXPECT_EQ(loop->Load().fds_waiting, 0);
  } else {
    EXPECT_TRUE(status.ok()) << status;
  }
  watcher.Stop();
  close(high);
}

TEST(ReactorTest, UnknownBackendIsAnError) {
  EventLoop::Options options;
  options.backend = "io_uring_v9";
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create(options);
  EXPECT_EQ(loop.status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(AllBackends, ReactorConformanceTest,
                         ::testing::Combine(::testing::ValuesIn(PollerNames()),
                                            ::testing::Bool()),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::get<0>(info.param) +
                                  (std::get<1>(info.param) ? "_pipe"
                                                           : "_eventfd");
                         });

}  // namespace
}  // namespace nbio
