// Deadlines and timeouts: a cancellation token that a timer cancels, and a
// timeout on any future.
//
// Two tools for two needs:
//
//  - DeadlineToken() stops the operation itself. Hand the token to anything
//    that takes a CancellationToken (Sleep, WaitReadable, Submit, RunCpuJob,
//    the TCP layer's connects and reads): at the deadline the token is
//    cancelled with absl::DeadlineExceededError, the operation's cancel
//    callback stops it (closes the half-open connect, unregisters the read)
//    and its future fails with that status.
//
//      Future<void> ready = WaitReadable(loop, fd,
//                                        DeadlineToken(loop,
//                                        absl::Seconds(5)));
//
//    With a parent token the operation stops at the deadline or when the
//    parent is cancelled, whichever comes first, with that one's reason:
//
//      CancellationToken t = DeadlineToken(loop, absl::Seconds(5),
//      user.token());
//
//    For the TCP layer: take a `const CancellationToken&` in every operation
//    that can hang (connect, read, write-drain), register a callback that
//    undoes the pending I/O and completes with `reason` (see the pattern in
//    cancellation.h), and let callers combine deadlines and user
//    cancellation through DeadlineToken's parent. A per-connection idle
//    timeout that is re-armed on every read is cheaper as an embedded Timer
//    (event_loop.h) than as a token per read.
//
//  - WithTimeout() only stops waiting: the returned future fails with
//    absl::DeadlineExceededError at the deadline, while the operation behind
//    the input future runs on (its result is dropped). Use it for
//    operations that take no token.
#ifndef NBIO_REACTOR_ASYNC_DEADLINE_H_
#define NBIO_REACTOR_ASYNC_DEADLINE_H_

#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "reactor/async/cancellation.h"
#include "reactor/async/future.h"
#include "reactor/async/operation.h"
#include "reactor/event_loop.h"

namespace nbio {

// A token cancelled with absl::DeadlineExceededError("deadline exceeded")
// `timeout` after the loop's current time, or with the parent's reason when
// `parent` is cancelled first. A deadline that has already passed (timeout
// <= 0) cancels the token before it is returned, so an operation given it
// fails without starting.
//
// Cost: one allocation (the token's state, with an embedded timer node). The
// timer lives as long as a copy of the token or a registration on it does:
// once the operation completes and drops its registration, the timer goes
// with the last reference. The timer does not keep EventLoop::Run() going
// (the operation it guards does) and is not counted in
// LoopLoad::timers_sleeping. Loop thread only.
CancellationToken DeadlineToken(EventLoop* loop, absl::Duration timeout,
                                const CancellationToken& parent = {});
// The same with an absolute deadline on the loop clock.
CancellationToken DeadlineTokenAt(EventLoop* loop, int64_t deadline_nanos,
                                  const CancellationToken& parent = {});

// A future that completes like `future` if it completes within `timeout` of
// the loop's current time, else fails with
// absl::DeadlineExceededError("timeout") at that point (never earlier; the
// timer is a user Timer, so it keeps Run() going). The operation behind
// `future` is not stopped; see the file comment. One allocation.
template <typename T>
Future<T> WithTimeout(Future<T> future, absl::Duration timeout);
// The same with an absolute deadline on the loop clock.
template <typename T>
Future<T> WithDeadline(Future<T> future, int64_t deadline_nanos);

// ---------------------------------------------------------------------------
// Implementation.

namespace deadline_internal {

template <typename T>
class TimeoutOp final : public Operation<T> {
 public:
  TimeoutOp(EventLoop* loop, Future<T> input, int64_t deadline_nanos)
      : Operation<T>(loop),
        input_(std::move(input)),
        deadline_nanos_(deadline_nanos),
        timer_(loop, [this] {
          this->Complete(absl::DeadlineExceededError("timeout"));
        }) {}

  void Start() {
    timer_.StartAt(deadline_nanos_);
    std::move(input_).OnComplete(
        [self = OperationRef<TimeoutOp>(this)](FutureResult<T> result) mutable {
          self->timer_.Cancel();
          self->Complete(std::move(result));
          self.Done();
        });
  }

 private:
  Future<T> input_;  // consumed by Start()
  const int64_t deadline_nanos_;
  Timer timer_;
};

}  // namespace deadline_internal

template <typename T>
Future<T> WithDeadline(Future<T> future, int64_t deadline_nanos) {
  NBIO_CHECK_MSG(future.valid(), "WithDeadline on an invalid future");
  EventLoop* loop = future.loop();
  return Launch<deadline_internal::TimeoutOp<T>>(loop, std::move(future),
                                                 deadline_nanos);
}

template <typename T>
Future<T> WithTimeout(Future<T> future, absl::Duration timeout) {
  NBIO_CHECK_MSG(future.valid(), "WithTimeout on an invalid future");
  EventLoop* loop = future.loop();
  return WithDeadline(std::move(future), loop->DeadlineAfter(timeout));
}

}  // namespace nbio

#endif  // NBIO_REACTOR_ASYNC_DEADLINE_H_
