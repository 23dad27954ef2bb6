// Scheduling work at a priority, with cancellation, as futures.
//
// The loop runs work at three priorities (event_loop.h has the iteration
// order): urgent tasks before the next poll, normal tasks once per
// iteration, and CPU-bound jobs in slices within a per-iteration time
// budget, so that a long computation never keeps the loop from answering
// I/O and I/O never takes all of a computation's share.
//
//   Future<int> sum = Submit(loop, [] { return 1 + 1; });
//   Future<void> crunch = RunCpuJob(loop, [state]() {
//     state->DoAFewMicrosecondsOfWork();
//     return state->finished() ? CpuSliceResult::kDone : CpuSliceResult::kMore;
//   }, source.token());
//
// Loop thread only; from another thread, EventLoop::Post() the call.
#ifndef NBIO_REACTOR_ASYNC_SCHEDULER_H_
#define NBIO_REACTOR_ASYNC_SCHEDULER_H_

#include <optional>
#include <type_traits>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "reactor/async/cancellation.h"
#include "reactor/async/future.h"
#include "reactor/async/operation.h"
#include "reactor/event_loop.h"

namespace nbio {

enum class TaskPriority {
  kUrgent,  // EventLoop::PostUrgent: before the next poll
  kNormal,  // EventLoop::Post: the next iteration's task phase
};

// Runs `fn()` as a task at `priority` and returns a future of what it
// returns (the same rules as Future::Then: a value, a StatusOr, a Status,
// void, or a future to follow). When `token` is cancelled before the task
// runs, `fn` never runs (its captures are destroyed at once) and the future
// fails with the token's reason; the queued task then runs as a no-op (a
// task cannot be taken out of the loop's queue). A token already cancelled
// fails it without queueing anything. One allocation (the future's state,
// which holds `fn`).
template <typename F>
auto Submit(EventLoop* loop, F&& fn, const CancellationToken& token = {},
            TaskPriority priority = TaskPriority::kNormal);

// Runs `slice()` as an EventLoop CpuJob, one slice per turn, until it returns
// CpuSliceResult::kDone; the future then completes OK. When `token` is
// cancelled first, the job is not run again (if the cancel comes from inside
// its own slice, whatever that slice returns) and the future fails with the
// token's reason. Dropping the future unconsumed stops the job. A pending
// job counts in LoopLoad::cpu_jobs_pending and keeps EventLoop::Run() going.
// One allocation, besides `slice`'s own.
Future<void> RunCpuJob(EventLoop* loop, CpuJob::Slice slice,
                       const CancellationToken& token = {});

// ---------------------------------------------------------------------------
// Implementation.

namespace scheduler_internal {

template <typename Fn, typename U>
class SubmitOp final : public Operation<U> {
 public:
  SubmitOp(EventLoop* loop, Fn fn, const CancellationToken& token,
           TaskPriority priority)
      : Operation<U>(loop),
        fn_(std::move(fn)),
        token_(token),
        priority_(priority) {}

  // Queues the call unless the token is cancelled already.
  void Start() {
    if (token_.is_cancelled()) {
      Finish(token_.reason());
      return;
    }
    on_cancel_ =
        token_.Register([this](const absl::Status& why) { Finish(why); });
    auto task = [run = OperationRef<SubmitOp>(this)]() mutable {
      run->Run();
      run.Done();
    };
    if (priority_ == TaskPriority::kUrgent) {
      this->loop()->PostUrgent(std::move(task));
    } else {
      this->loop()->Post(std::move(task));
    }
  }

 private:
  void Run() {
    if (this->is_complete()) return;  // cancelled while queued
    on_cancel_.Unregister();
    Fn fn = std::move(*fn_);
    fn_.reset();
    this->CompleteWith([&]() -> decltype(auto) { return std::invoke(fn); });
  }

  void Finish(const absl::Status& why) {
    fn_.reset();
    this->Complete(why);
  }

  std::optional<Fn> fn_;
  const CancellationToken token_;
  const TaskPriority priority_;
  CancellationRegistration on_cancel_;
};

}  // namespace scheduler_internal

template <typename F>
auto Submit(EventLoop* loop, F&& fn, const CancellationToken& token,
            TaskPriority priority) {
  using Fn = std::decay_t<F>;
  using U = typename future_internal::ValueOf<
      std::decay_t<std::invoke_result_t<Fn&>>>::type;
  using Op = scheduler_internal::SubmitOp<Fn, U>;
  return Launch<Op>(loop, Fn(std::forward<F>(fn)), token, priority);
}

}  // namespace nbio

#endif  // NBIO_REACTOR_ASYNC_SCHEDULER_H_
