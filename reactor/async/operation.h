// Operation<T>: how to add a new asynchronous operation to nbio, the way
// Sleep, WaitReadable, Submit, RunCpuJob and WithTimeout are written.
//
// An operation is one reference-counted object that is at once the state of
// the future it hands out and the home of its own machinery (a Timer, an
// FdWatcher, a cancel registration): one allocation per call. It completes
// its future exactly once with Complete(); later completions are ignored, so
// the operation's own event and a cancellation may race freely.
//
//   // A future that completes when `fd` is readable or `token` is cancelled.
//   class ReadableOp final : public Operation<void> {
//    public:
//     ReadableOp(EventLoop* loop, int fd, CancellationToken token)
//         : Operation<void>(loop), token_(std::move(token)),
//           watcher_(loop, fd, [this](uint32_t) { Done(absl::OkStatus()); }) {}
//
//     // Called once by Launch(), after the future exists.
//     void Start() {
//       if (token_.is_cancelled()) return Done(token_.reason());
//       if (absl::Status s = watcher_.SetInterest(kReadable); !s.ok()) {
//         return Done(std::move(s));
//       }
//       on_cancel_ = token_.Register([this](const absl::Status& why) {
//       Done(why); });
//     }
//
//    private:
//     void Done(absl::Status result) {
//       watcher_.Stop();            // allowed inside the watcher's callback
//       on_cancel_.Unregister();    // allowed inside the token's callback
//       Complete(std::move(result));
//     }
//     CancellationToken token_;
//     FdWatcher watcher_;
//     CancellationRegistration on_cancel_;
//   };
//
//   Future<void> f = Launch<ReadableOp>(loop, fd, token);
//
// The contract an operation keeps:
//  - Lifetime. The future holds a reference to the operation; a consumer
//    (Then, OnComplete) hands it to the continuation, which keeps the
//    operation alive until it has run. A future dropped unconsumed destroys
//    the operation, and with it its Timer and FdWatcher: that is how nbio's
//    operations stop when nobody listens. So callbacks of the operation's
//    own members may use `this` freely, and nothing else may keep a raw
//    pointer to it.
//  - A task or callback held outside the operation (a Post()ed task, as
//    Submit does) holds an OperationRef<Op>, never a raw pointer: it keeps
//    the operation alive, and if it is destroyed without having completed
//    the operation (the loop destroyed with the task queued), the
//    operation's continuation is dropped unrun instead of leaking.
//  - Completion. Complete() stores the result and schedules the
//    continuation as an urgent task: it never runs the consumer's code
//    inline, so it is safe from inside any callback, including the
//    operation's own. A cancelled operation completes with the token's
//    reason (CANCELLED, or DEADLINE_EXCEEDED from a DeadlineToken).
//  - Thread: the loop's thread only, like everything in this directory.
#ifndef NBIO_REACTOR_ASYNC_OPERATION_H_
#define NBIO_REACTOR_ASYNC_OPERATION_H_

#include <utility>

#include "queue/base/check.h"
#include "reactor/async/future.h"
#include "reactor/async/ref_ptr.h"
#include "reactor/event_loop.h"

namespace nbio {

// The base of an operation that completes a Future<T>. Derive from it, give
// the derived class a constructor whose first parameter is the EventLoop*,
// and a `void Start()`; create it with Launch().
template <typename T>
class Operation : public future_internal::State<T> {
 public:
  using ValueType = T;
  using Result = FutureResult<T>;

  // Completes the future with `result` (a value or a status for T, a
  // status for void). Returns false, dropping `result`, when the operation
  // was complete already.
  bool Complete(Result result) { return this->TrySetResult(std::move(result)); }

  // Completes the future with what `thunk()` returns: a value, a status, a
  // StatusOr, nothing (OK), or a Future<T> on the same loop to follow.
  template <typename Thunk>
  void CompleteWith(Thunk&& thunk) {
    future_internal::CompleteWith<T>(this, std::forward<Thunk>(thunk));
  }

  bool is_complete() const { return this->ready(); }
  using future_internal::StateBase::loop;

 protected:
  explicit Operation(EventLoop* loop) : future_internal::State<T>(loop) {}
  ~Operation() override = default;
};

// A counted reference to an operation, for a task or callback outside the
// operation that is to complete it (see the file comment). One pointer:
// fits absl::AnyInvocable's inline storage, so the task allocates nothing.
// Call Done() once the operation has been completed, or its duty handed on.
template <typename Op>
using OperationRef = future_internal::CompleterRef<Op>;

// Creates `Op(loop, args...)`, takes its future, then calls `op->Start()`
// and returns the future. Start() may complete the operation at once (a
// token already cancelled, an argument refused); the consumer still sees the
// result only from the loop, never inline. Loop thread only.
template <typename Op, typename... Args>
Future<typename Op::ValueType> Launch(EventLoop* loop, Args&&... args) {
  NBIO_DCHECK(loop->IsInLoopThread());
  RefPtr<Op> op(new Op(loop, std::forward<Args>(args)...));
  Op* raw = op.get();
  Future<typename Op::ValueType> future =
      future_internal::MakeFutureFromState<typename Op::ValueType>(
          std::move(op));
  raw->Start();  // the future's reference keeps `raw` alive here
  return future;
}

}  // namespace nbio

#endif  // NBIO_REACTOR_ASYNC_OPERATION_H_
