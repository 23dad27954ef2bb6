// The loop's priorities: urgent tasks, normal tasks, and CPU jobs run in
// slices within a per-iteration budget, on every poller backend. Time is a
// ManualClock that the test's slices and callbacks advance to stand for the
// work they do; every iteration is RunOnce(kNoWait): nothing sleeps.
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "reactor/event_loop.h"
#include "reactor/poller/poller_registry.h"
#include "reactor/testing/loop_test_util.h"
#include "timers/clock.h"

namespace nbio {
namespace {

class EventLoopPriorityTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { NBIO_SKIP_IF_BACKEND_UNAVAILABLE(GetParam()); }
  std::unique_ptr<EventLoop> MakeLoop(
      absl::Duration budget = absl::Milliseconds(1), int max_slices = 1024) {
    EventLoop::Options options;
    options.backend = GetParam();
    options.clock = &clock_;
    options.cpu_budget = budget;
    options.max_cpu_slices_per_iteration = max_slices;
    return CreateTestLoop(options);
  }

  // A slice that stands for `work` of computation, forever.
  CpuJob::Slice Forever(absl::Duration work, std::string* log,
                        const char* name) {
    return [this, work, log, name] {
      clock_.Advance(work);
      *log += name;
      return CpuSliceResult::kMore;
    };
  }

  ManualClock clock_{1'000'000'000};
};

TEST_P(EventLoopPriorityTest, UrgentBeforeNormalBeforeCpuSlices) {
  auto loop = MakeLoop();
  std::string log;
  CpuJob job(loop.get(), [&] {
    log += "c";
    return CpuSliceResult::kDone;
  });
  // Started, posted and posted-urgent in the reverse of the order they run.
  job.Start();
  loop->Post([&] { log += "n1"; });
  loop->Post([&] {
    log += "n2";
    loop->PostUrgent([&] { log += "u2"; });  // runs before n3
  });
  loop->Post([&] { log += "n3"; });
  loop->PostUrgent([&] { log += "u1"; });
  RunNoWait(loop.get());
  EXPECT_EQ(log, "u1n1n2u2n3c");
  EXPECT_EQ(loop->counters().urgent_tasks_run, 2u);
  EXPECT_EQ(loop->counters().tasks_run, 3u);
  EXPECT_EQ(loop->counters().cpu_slices, 1u);
  EXPECT_FALSE(job.is_pending());
}

TEST_P(EventLoopPriorityTest, UrgentTasksRunBeforeTheNextPoll) {
  auto loop = MakeLoop();
  TestPipe p;
  std::string log;
  int depth = 0;
  // Urgent tasks posted by urgent tasks run at the same checkpoint.
  std::function<void()> chain = [&] {
    log += "u";
    if (++depth < 5) loop->PostUrgent(chain);
  };
  FdWatcher watcher(loop.get(), p.r, [&](uint32_t) {
    char c;
    ASSERT_EQ(read(p.r, &c, 1), 1);
    log += "io";
    loop->PostUrgent(chain);  // from an I/O callback: before the CPU slice
  });
  ASSERT_TRUE(watcher.SetInterest(kReadable).ok());
  CpuJob job(loop.get(), [&] {
    log += "c";
    return CpuSliceResult::kDone;
  });
  job.Start();
  ASSERT_EQ(write(p.w, "x", 1), 1);
  const uint64_t polls = loop->counters().poll_calls;
  RunNoWait(loop.get());
  EXPECT_EQ(log, "iouuuuuc");
  EXPECT_EQ(loop->counters().poll_calls, polls + 1);
  EXPECT_EQ(loop->Load().urgent_tasks_ready, 0u);

  // Posted from a timer: run right after the timer batch, before the tasks.
  log.clear();
  depth = 4;
  Timer timer(loop.get(), [&] {
    log += "t";
    loop->PostUrgent(chain);
  });
  timer.Start(absl::Milliseconds(1));
  loop->Post([&] { log += "n"; });
  clock_.Advance(absl::Milliseconds(1));
  RunNoWait(loop.get());
  EXPECT_EQ(log, "tun");
}

TEST_P(EventLoopPriorityTest, IoIsDispatchedBetweenCpuSlices) {
  auto loop = MakeLoop(absl::Milliseconds(1));
  TestPipe p;
  std::string log;
  // Never drained: readable in every iteration, like a busy peer.
  ASSERT_EQ(write(p.w, "x", 1), 1);
  FdWatcher watcher(loop.get(), p.r, [&](uint32_t) { log += "|io"; });
  ASSERT_TRUE(watcher.SetInterest(kReadable).ok());
  CpuJob job(loop.get(), Forever(absl::Microseconds(300), &log, "c"));
  job.Start();
  RunNoWait(loop.get(), 3);
  // 300 us slices against a 1 ms budget: the fourth slice crosses it.
  EXPECT_EQ(log, "|iocccc|iocccc|iocccc");
  EXPECT_EQ(loop->counters().cpu_slices, 12u);
  EXPECT_EQ(loop->counters().poll_calls, 3u);
  EXPECT_TRUE(job.is_pending());
}

TEST_P(EventLoopPriorityTest, BudgetIsConfigurableAndCountsFromIterationStart) {
  auto loop = MakeLoop(absl::Microseconds(500));
  std::string log;
  CpuJob job(loop.get(), Forever(absl::Microseconds(100), &log, "c"));
  job.Start();
  RunNoWait(loop.get());
  EXPECT_EQ(log, "ccccc");  // 5 x 100 us = the 500 us budget

  // Tasks eat into the budget: 100 us of task leaves room for 4 slices.
  log.clear();
  loop->Post([&] { clock_.Advance(absl::Microseconds(100)); });
  RunNoWait(loop.get());
  EXPECT_EQ(log, "cccc");
}

TEST_P(EventLoopPriorityTest, SlicesRunTheRestOfTheBudgetOrAsLongAsTheRest) {
  // The slices run until the iteration has lasted the budget, and at least
  // as long as its timers, tasks and I/O took, up to one budget.
  auto loop = MakeLoop(absl::Milliseconds(1));
  std::string log;
  CpuJob job(loop.get(), Forever(absl::Microseconds(100), &log, "c"));
  job.Start();
  const struct {
    int task_us;    // the rest of the iteration: one posted task
    size_t slices;  // of 100 us
  } cases[] = {
      {0, 10},               // the budget
      {200, 8},              // the rest of the budget: the iteration lasts 1 ms
      {500, 5},   {700, 7},  // as long as the task: the iteration lasts 1.4 ms
      {3000, 10},            // capped at one budget
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.task_us);
    log.clear();
    if (c.task_us > 0) {
      loop->Post([&] { clock_.Advance(absl::Microseconds(c.task_us)); });
    }
    RunNoWait(loop.get());
    EXPECT_EQ(log.size(), c.slices);
  }
}

TEST_P(EventLoopPriorityTest, JobKeepsHalfTheThreadUnderIoFlood) {
  // A job of 10 us slices next to ten busy fds: a busy echo server's
  // iteration. Counting the budget from the top of the iteration alone
  // would leave the job one slice per iteration (1%).
  auto loop = MakeLoop(absl::Milliseconds(1));
  std::string log;
  std::vector<std::unique_ptr<TestPipe>> pipes;
  std::vector<std::unique_ptr<FdWatcher>> watchers;
  int io_callbacks = 0;
  absl::Duration io_cost = absl::Microseconds(100);
  for (int i = 0; i < 10; ++i) {
    pipes.push_back(std::make_unique<TestPipe>());
    ASSERT_EQ(write(pipes.back()->w, "x", 1), 1);
    watchers.push_back(
        std::make_unique<FdWatcher>(loop.get(), pipes.back()->r, [&](uint32_t) {
          ++io_callbacks;
          clock_.Advance(io_cost);
        }));
    ASSERT_TRUE(watchers.back()->SetInterest(kReadable).ok());
  }
  CpuJob job(loop.get(), Forever(absl::Microseconds(10), &log, "c"));
  job.Start();
  // 1 ms of I/O per iteration (one budget): 1 ms of slices.
  for (int i = 1; i <= 3; ++i) {
    RunNoWait(loop.get());
    EXPECT_EQ(io_callbacks, 10 * i);
    EXPECT_EQ(loop->counters().cpu_slices, 100u * i);
  }
  // 10 ms of I/O per iteration: still 1 ms of slices, so the jobs delay
  // the next poll by one budget at most.
  io_cost = absl::Milliseconds(1);
  RunNoWait(loop.get());
  EXPECT_EQ(io_callbacks, 40);
  EXPECT_EQ(loop->counters().cpu_slices, 400u);
  EXPECT_TRUE(job.is_pending());
}

TEST_P(EventLoopPriorityTest, RoundRobinBetweenJobs) {
  auto loop = MakeLoop(absl::Milliseconds(1));
  std::string log;
  CpuJob a(loop.get(), Forever(absl::Microseconds(400), &log, "a"));
  CpuJob b(loop.get(), Forever(absl::Microseconds(400), &log, "b"));
  a.Start();
  b.Start();
  a.Start();  // already pending: no-op
  RunNoWait(loop.get(), 2);
  // 400 us slices, 1 ms budget: three slices per iteration, taking turns.
  EXPECT_EQ(log,
            "aba"
            "bab");
  EXPECT_EQ(loop->Load().cpu_jobs_pending, 2u);
}

TEST_P(EventLoopPriorityTest, FrozenClockStopsAtSliceCap) {
  auto loop = MakeLoop(absl::Milliseconds(1), /*max_slices=*/7);
  std::string log;
  CpuJob job(loop.get(), Forever(absl::ZeroDuration(), &log, "c"));
  job.Start();
  RunNoWait(loop.get());
  EXPECT_EQ(log, "ccccccc");
}

TEST_P(EventLoopPriorityTest, PendingJobsMakeThePollNonBlocking) {
  auto loop = MakeLoop();
  Timer far(loop.get(), [] {});
  far.Start(absl::Hours(1));
  EXPECT_GT(loop->NextPollTimeoutNanos(), 0);
  int slices = 0;
  CpuJob job(loop.get(), [&] {
    return ++slices < 3 ? CpuSliceResult::kMore : CpuSliceResult::kDone;
  });
  job.Start();
  EXPECT_EQ(loop->NextPollTimeoutNanos(), 0);
  // kWait: would block for an hour if the poll did not see the job. The
  // clock does not move, so each iteration stops at the slice cap... which
  // is far above 3: the job finishes in the first iteration.
  ASSERT_TRUE(loop->RunOnce(EventLoop::RunMode::kWait).ok());
  EXPECT_EQ(slices, 3);
  EXPECT_FALSE(job.is_pending());
  EXPECT_GT(loop->NextPollTimeoutNanos(), 0);

  loop->PostUrgent([] {});
  EXPECT_EQ(loop->NextPollTimeoutNanos(), 0);
  RunNoWait(loop.get());
}

TEST_P(EventLoopPriorityTest, StartAndStopInsideOwnSlice) {
  auto loop = MakeLoop();
  int runs = 0;
  std::unique_ptr<CpuJob> job;
  // Stop() inside the slice wins over kMore; Start() inside the slice
  // re-queues over kDone.
  job = std::make_unique<CpuJob>(loop.get(), [&] {
    ++runs;
    EXPECT_TRUE(job->is_pending());
    if (runs == 1) {
      job->Stop();
      EXPECT_FALSE(job->is_pending());
      return CpuSliceResult::kMore;
    }
    if (runs == 2) {
      job->Start();
      return CpuSliceResult::kDone;
    }
    return CpuSliceResult::kDone;
  });
  job->Start();
  EXPECT_EQ(loop->Load().cpu_jobs_pending, 1u);
  RunNoWait(loop.get());
  EXPECT_EQ(runs, 1);
  EXPECT_FALSE(job->is_pending());
  EXPECT_EQ(loop->Load().cpu_jobs_pending, 0u);
  job->Start();
  RunNoWait(loop.get());
  EXPECT_EQ(runs, 3);  // re-queued by its own Start(), then done
  EXPECT_FALSE(job->is_pending());
}

TEST_P(EventLoopPriorityTest, SliceDestroysAnotherJob) {
  auto loop = MakeLoop();
  std::string log;
  auto victim = std::make_unique<CpuJob>(loop.get(), [&] {
    log += "v";
    return CpuSliceResult::kMore;
  });
  CpuJob killer(loop.get(), [&] {
    log += "k";
    victim.reset();
    return CpuSliceResult::kDone;
  });
  killer.Start();
  victim->Start();
  RunNoWait(loop.get());
  EXPECT_EQ(log, "k");
  EXPECT_EQ(loop->Load().cpu_jobs_pending, 0u);
}

TEST_P(EventLoopPriorityTest, DestroyingJobInsideOwnSliceIsCaught) {
  auto loop = MakeLoop();
  std::unique_ptr<CpuJob> job;
  job = std::make_unique<CpuJob>(loop.get(), [&] {
    job.reset();
    return CpuSliceResult::kDone;
  });
  job->Start();
  EXPECT_DEATH(RunNoWait(loop.get()), "destroyed inside its own slice");
}

TEST_P(EventLoopPriorityTest, LoadReportsEveryQueue) {
  auto loop = MakeLoop();
  TestPipe p;
  loop->Post([] {});
  loop->Post([] {});
  loop->PostUrgent([] {});
  FdWatcher watcher(loop.get(), p.r, [](uint32_t) {});
  ASSERT_TRUE(watcher.SetInterest(kReadable).ok());
  Timer timer(loop.get(), [] {});
  timer.Start(absl::Seconds(1));
  CpuJob job(loop.get(), [] { return CpuSliceResult::kDone; });
  job.Start();
  LoopLoad load = loop->Load();
  EXPECT_EQ(load.tasks_ready, 3u);
  EXPECT_EQ(load.urgent_tasks_ready, 1u);
  EXPECT_EQ(load.fds_waiting, 1);
  EXPECT_EQ(load.timers_sleeping, 1u);
  EXPECT_EQ(load.cpu_jobs_pending, 1u);
  RunNoWait(loop.get());
  load = loop->Load();
  EXPECT_EQ(load.tasks_ready, 0u);
  EXPECT_EQ(load.cpu_jobs_pending, 0u);
  EXPECT_EQ(load.timers_sleeping, 1u);
}

TEST_P(EventLoopPriorityTest, RunReturnsWhenTheLastJobFinishes) {
  // The real clock: Run() must not block while the job is pending, and
  // must return once it is done.
  EventLoop::Options options;
  options.backend = GetParam();
  auto loop = EventLoop::Create(options);
  ASSERT_TRUE(loop.ok());
  int slices = 0;
  CpuJob job(loop->get(), [&] {
    return ++slices < 100 ? CpuSliceResult::kMore : CpuSliceResult::kDone;
  });
  job.Start();
  ASSERT_TRUE((*loop)->Run().ok());
  EXPECT_EQ(slices, 100);
}

TEST_P(EventLoopPriorityTest, QueuedTasksAreDestroyedWhileTheLoopIsWhole) {
  auto loop = MakeLoop();
  // A task whose captured object, when destroyed unrun, uses the loop (as a
  // broken promise does: it posts its continuation).
  struct UsesLoopWhenDestroyed {
    EventLoop* loop = nullptr;
    bool* destroyed = nullptr;
    ~UsesLoopWhenDestroyed() {
      if (loop == nullptr) return;
      loop->PostUrgent([] {});
      loop->Post([] {});
      *destroyed = true;
    }
  };
  bool destroyed = false;
  auto holder = std::make_shared<UsesLoopWhenDestroyed>();
  holder->loop = loop.get();
  holder->destroyed = &destroyed;
  loop->Post([holder] {});
  holder.reset();
  loop.reset();
  EXPECT_TRUE(destroyed);
}

INSTANTIATE_TEST_SUITE_P(Backends, EventLoopPriorityTest,
                         ::testing::ValuesIn(PollerNames()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace nbio
