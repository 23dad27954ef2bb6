// Submit and RunCpuJob: priorities, results, and cancellation in every
// state, with a ManualClock that CPU slices advance to stand for work.
#include "reactor/async/scheduler.h"

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
#include "reactor/async/wait_fd.h"
#include "reactor/event_loop.h"
#include "reactor/testing/loop_test_util.h"
#include "timers/clock.h"

namespace nbio {
namespace {

class SchedulerTest : public LoopTest {
 protected:
  // A job of `slices` slices of 300 us each.
  CpuJob::Slice Work(int slices, int* done) {
    return [this, slices, done] {
      clock_.Advance(absl::Microseconds(300));
      return ++*done < slices ? CpuSliceResult::kMore : CpuSliceResult::kDone;
    };
  }
};

TEST_F(SchedulerTest, SubmitRunsAtItsPriority) {
  std::string log;
  auto normal = Capture(Submit(loop_.get(), [&] {
    log += "n";
    return 1;
  }));
  auto urgent = Capture(Submit(
      loop_.get(), [&] { log += "u"; }, {}, TaskPriority::kUrgent));
  EXPECT_EQ(loop_->Load().tasks_ready, 2u);
  EXPECT_TRUE(log.empty());  // never inline
  RunNoWait();
  EXPECT_EQ(log, "un");
  EXPECT_EQ(***normal, 1);
  EXPECT_TRUE(urgent->value().ok());
}

TEST_F(SchedulerTest, SubmitResultKinds) {
  auto status = Capture(
      Submit(loop_.get(), [] { return absl::PermissionDeniedError("no"); }));
  auto status_or =
      Capture(Submit(loop_.get(), []() -> absl::StatusOr<std::string> {
        return std::string("s");
      }));
  Promise<int> later(loop_.get());
  auto chained =
      Capture(Submit(loop_.get(), [&] { return later.GetFuture(); }));
  RunNoWait();
  EXPECT_EQ(status->value(), absl::PermissionDeniedError("no"));
  EXPECT_EQ(***status_or, "s");
  EXPECT_FALSE(chained->has_value());
  later.Set(8);
  RunNoWait();
  EXPECT_EQ(***chained, 8);
}

TEST_F(SchedulerTest, SubmitCancelledBeforeItRuns) {
  CancellationSource source;
  bool ran = false;
  bool captures_gone = false;
  auto out = Capture(Submit(
      loop_.get(),
      [&ran, f = DestroyFlag(&captures_gone)] {
        ran = true;
        return 1;
      },
      source.token()));
  source.Cancel();
  EXPECT_TRUE(captures_gone);  // at once
  RunNoWait();
  EXPECT_FALSE(ran);
  ASSERT_TRUE(out->has_value());
  EXPECT_TRUE(absl::IsCancelled(out->value().status()));

  // Already cancelled: nothing is queued.
  auto early = Capture(Submit(
      loop_.get(), [] { ADD_FAILURE(); }, source.token()));
  const LoopLoad load = loop_->Load();
  EXPECT_EQ(load.tasks_ready - load.urgent_tasks_ready, 0u);
  EXPECT_EQ(load.urgent_tasks_ready, 1u);  // only the continuation
  RunNoWait();
  EXPECT_TRUE(absl::IsCancelled(early->value()));
}

TEST_F(SchedulerTest, SubmitCancelsItselfFromInside) {
  CancellationSource source;
  auto out = Capture(Submit(
      loop_.get(),
      [&] {
        EXPECT_TRUE(source.Cancel());  // running already: its result stands
        return 5;
      },
      source.token()));
  RunNoWait();
  EXPECT_EQ(***out, 5);
}

TEST_F(SchedulerTest, CpuJobRunsToCompletionWithinBudgets) {
  int done = 0;
  auto out = Capture(RunCpuJob(loop_.get(), Work(10, &done)));
  EXPECT_EQ(loop_->Load().cpu_jobs_pending, 1u);
  RunNoWait();
  EXPECT_EQ(done, 4);  // 4 x 300 us crosses the 1 ms budget
  EXPECT_FALSE(out->has_value());
  RunNoWait(2);
  EXPECT_EQ(done, 10);
  ASSERT_TRUE(out->has_value());  // completed at the checkpoint after its slice
  EXPECT_TRUE(out->value().ok());
  EXPECT_EQ(loop_->Load().cpu_jobs_pending, 0u);
}

TEST_F(SchedulerTest, CpuJobCancelledBeforeStartBetweenSlicesAndAfter) {
  int done = 0;
  CancellationSource before;
  before.Cancel();
  auto a = Capture(RunCpuJob(loop_.get(), Work(10, &done), before.token()));
  EXPECT_EQ(loop_->Load().cpu_jobs_pending, 0u);
  RunNoWait();
  EXPECT_EQ(done, 0);
  EXPECT_TRUE(absl::IsCancelled(a->value()));

  CancellationSource between;
  auto b = Capture(RunCpuJob(loop_.get(), Work(10, &done), between.token()));
  RunNoWait();
  EXPECT_EQ(done, 4);
  between.Cancel();
  EXPECT_EQ(loop_->Load().cpu_jobs_pending, 0u);
  RunNoWait(3);
  EXPECT_EQ(done, 4);
  EXPECT_TRUE(absl::IsCancelled(b->value()));

  CancellationSource after;
  int done_c = 0;
  auto c = Capture(RunCpuJob(loop_.get(), Work(1, &done_c), after.token()));
  RunNoWait();
  after.Cancel();
  RunNoWait();
  EXPECT_TRUE(c->value().ok());
}

TEST_F(SchedulerTest, CpuJobCancelledInsideItsOwnSlice) {
  CancellationSource source;
  int slices = 0;
  auto out = Capture(RunCpuJob(
      loop_.get(),
      [&] {
        ++slices;
        source.Cancel();  // stops the job whatever this slice returns
        return CpuSliceResult::kDone;
      },
      source.token()));
  RunNoWait(2);
  EXPECT_EQ(slices, 1);
  ASSERT_TRUE(out->has_value());
  EXPECT_TRUE(absl::IsCancelled(out->value()));
}

TEST_F(SchedulerTest, CpuJobPastItsDeadline) {
  int done = 0;
  // 2 ms of deadline for 10 x 300 us of work with a 1 ms budget per
  // iteration: the deadline fires at the top of the third iteration.
  auto out =
      Capture(RunCpuJob(loop_.get(), Work(1000, &done),
                        DeadlineToken(loop_.get(), absl::Milliseconds(2))));
  RunNoWait(3);
  ASSERT_TRUE(out->has_value());
  EXPECT_TRUE(absl::IsDeadlineExceeded(out->value()));
  EXPECT_EQ(done, 8);
  EXPECT_EQ(loop_->Load().cpu_jobs_pending, 0u);
}

TEST_F(SchedulerTest, FutureDroppedInsideTheJobsOwnSlice) {
  std::optional<Future<void>> job;
  int slices = 0;
  job.emplace(RunCpuJob(loop_.get(), [&] {
    ++slices;
    job.reset();  // the last reference, from inside the slice
    return CpuSliceResult::kMore;
  }));
  RunNoWait(3);
  EXPECT_EQ(slices, 1);  // dropped unconsumed: the job stopped
  EXPECT_EQ(loop_->Load().cpu_jobs_pending, 0u);
}

TEST_F(SchedulerTest, LoadSeesEveryQueue) {
  int done = 0;
  auto job = Capture(RunCpuJob(loop_.get(), Work(2, &done)));
  auto task = Capture(Submit(loop_.get(), [] {}));
  LoopLoad load = loop_->Load();
  EXPECT_EQ(load.cpu_jobs_pending, 1u);
  EXPECT_EQ(load.tasks_ready, 1u);
  RunNoWait();
  load = loop_->Load();
  EXPECT_EQ(load.cpu_jobs_pending, 0u);
  EXPECT_EQ(load.tasks_ready, 0u);
  EXPECT_TRUE(job->has_value());
  EXPECT_TRUE(task->has_value());
}

// The README's example, as written there.
CpuSliceResult ParseSomeMore() { return CpuSliceResult::kDone; }

TEST_F(SchedulerTest, ReadmeExample) {
  TestPipe p;
  const int fd = p.r;
  EventLoop* loop = loop_.get();
  std::optional<absl::Status> outcome;
  // --- as in README.md
  nbio::CancellationSource stop;
  nbio::WaitReadable(loop, fd,
                     nbio::DeadlineToken(loop, absl::Seconds(5), stop.token()))
      .AndThen(
          [&] { return nbio::RunCpuJob(loop, ParseSomeMore, stop.token()); })
      .OnComplete([&](absl::Status s) {
        // OK, or DeadlineExceeded after 5 s, or Cancelled by stop.Cancel().
        outcome = s;
      });
  // ---
  RunNoWait();
  EXPECT_FALSE(outcome.has_value());
  ASSERT_EQ(write(p.w, "x", 1), 1);
  RunNoWait(2);
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok());
}

}  // namespace
}  // namespace nbio
