// Future<T> and Promise<T>: loop-affine one-shot results with continuations,
// interoperable with callbacks. No coroutines: continuations only.
//
//   Promise<int> promise(loop);
//   Future<int> answer = promise.GetFuture();
//   Future<std::string> text = std::move(answer).Then(
//       [](absl::StatusOr<int> v) -> absl::StatusOr<std::string> {
//         if (!v.ok()) return v.status();
//         return std::to_string(*v);
//       });
//   std::move(text).OnComplete([](absl::StatusOr<std::string> s) { ... });
//   promise.Set(42);   // the continuations run later, on the loop
//
// Results: a Future<T> completes with a FutureResult<T>: absl::StatusOr<T>,
// or absl::Status for Future<void>. Errors are statuses: a cancelled
// operation completes with its token's reason (cancellation.h), a timeout
// with absl::DeadlineExceededError (deadline.h), a broken promise with
// BrokenPromiseError() below.
//
// When continuations run (Then, AndThen, OnComplete; WhenAll and WhenAny
// use them too): never inline. Not inside Promise::Set, not inside Then on
// a future that is already complete: once both the result and the
// continuation are there, the continuation is posted as an urgent task
// (EventLoop::PostUrgent), so it runs at the loop's next urgent checkpoint,
// before the next poll: after the current timer batch, posted task, I/O
// batch or CPU slice. A chain a.Then(b).Then(c) whose results are all
// available completes at one checkpoint, one urgent task per link.
//
// Single consumer: a future is move-only, and Then / AndThen / OnComplete
// consume it (call them on an rvalue: std::move(f).Then(...)). A consumed
// future keeps its operation alive until its continuation has run. A future
// dropped without a consumer tells its producer nobody is listening: a
// Promise does not care, nbio's own operations (Sleep, WaitReadable,
// RunCpuJob) stop; hence [[nodiscard]].
//
// Ownership and cost: a promise and its future share one reference-counted
// state (intrusive count, not std::shared_ptr): one allocation per
// Promise/future pair, and one per Then (the new future's state, which
// holds the continuation). OnComplete allocates nothing for callables of up
// to two pointers. Posting a continuation allocates nothing once the loop's
// urgent queue has warmed up.
//
// Thread safety: loop-affine. A future, its promise and its continuations
// belong to the loop given to the promise; use them on its thread only. To
// complete a promise from another thread, EventLoop::Post() the Set.
//
// Lifetime: complete or cancel operations before destroying their loop
// (EventLoop::Run() returns only once they are done), and destroy or set
// promises before it. Continuations still queued when the loop is destroyed
// are destroyed unrun, and so are those waiting downstream of them.
#ifndef NBIO_REACTOR_ASYNC_FUTURE_H_
#define NBIO_REACTOR_ASYNC_FUTURE_H_

#include <cstddef>
#include <functional>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "queue/base/check.h"
#include "reactor/async/ref_ptr.h"
#include "reactor/event_loop.h"

namespace nbio {

template <typename T>
class Future;
template <typename T>
class Promise;

// What a Future<T> completes with.
template <typename T>
using FutureResult =
    std::conditional_t<std::is_void<T>::value, absl::Status, absl::StatusOr<T>>;

// The error of a future whose promise was destroyed without a result (or
// whose FutureCallback was dropped uncalled): absl::CancelledError("broken
// promise") with a payload that IsBrokenPromise() recognises, so it reads
// as a cancellation to code that only checks the code (the producer went
// away), and can still be told apart from a deliberate cancel.
absl::Status BrokenPromiseError();
bool IsBrokenPromise(const absl::Status& status);

namespace future_internal {

template <typename T>
struct IsFuture : std::false_type {};
template <typename T>
struct IsFuture<Future<T>> : std::true_type {};

// The value type of the future made from a continuation that returns R:
// U for U, absl::StatusOr<U> and Future<U>; void for void and absl::Status.
template <typename R>
struct ValueOf {
  using type = R;
};
template <typename U>
struct ValueOf<absl::StatusOr<U>> {
  using type = U;
};
template <>
struct ValueOf<absl::Status> {
  using type = void;
};
template <typename U>
struct ValueOf<Future<U>> {
  using type = U;
};

// The type-independent half of a future's state: the loop, and when to
// schedule the continuation.
//
// References: the promise (or the operation that completes the state)
// holds one, the future holds one. A consumer (Then, OnComplete) hands the
// future's reference to the state itself; the posted continuation task
// adopts it, so a consumed state lives until its continuation has run.
class StateBase : public RefCounted {
 public:
  explicit StateBase(EventLoop* loop) : loop_(loop) {}

  EventLoop* loop() const { return loop_; }
  bool ready() const { return ready_; }

  // GetFuture() may be called once.
  void MarkFutureRetrieved() {
    NBIO_CHECK_MSG(!future_retrieved_, "GetFuture called twice");
    future_retrieved_ = true;
  }

 protected:
  ~StateBase() override = default;

  // Call after storing the result.
  void MarkReady() {
    ready_ = true;
    if (has_continuation_) Schedule();
  }
  // Call after storing the continuation; takes over the consumer's
  // reference.
  void MarkHasContinuation() {
    NBIO_CHECK_MSG(!has_continuation_, "a future has one consumer");
    has_continuation_ = true;
    if (ready_) Schedule();
  }

  virtual void RunContinuation() = 0;
  virtual void DropContinuation() = 0;

 public:
  // The producer that was to complete this state went away without doing
  // so: only possible when the loop is destroyed with the producer's task
  // queued. Drops the continuation unrun (which may abandon states further
  // down the chain) and the consumer's reference; touches no loop, so it is
  // safe during and after the loop's destruction.
  void Abandon() {
    if (ready_ || !has_continuation_) return;
    has_continuation_ = false;
    DropContinuation();
    Release();
  }

 private:
  void Schedule() {
    loop_->PostUrgent(
        [self = RefPtr<StateBase>::Adopt(this)] { self->RunContinuation(); });
  }

  EventLoop* const loop_;
  bool ready_ = false;
  bool has_continuation_ = false;
  bool future_retrieved_ = false;
};

// A future's state: the result once there is one, and the consumer's
// continuation once there is one. nbio's operations derive from it to keep
// their own machinery (a Timer, an FdWatcher) in the same allocation.
template <typename T>
class State : public StateBase {
 public:
  using Result = FutureResult<T>;
  using Continuation = absl::AnyInvocable<void(Result)>;

  explicit State(EventLoop* loop) : StateBase(loop) {}

  // Stores `result` and schedules the continuation, if any. False (and
  // `result` is dropped) when there is a result already.
  bool TrySetResult(Result result) {
    if (ready()) return false;
    result_ = std::move(result);
    MarkReady();
    return true;
  }

  // For Future::result(): valid while ready and not yet consumed.
  const Result& result() const { return result_; }

  // Consumes the future: `this` must carry the consumer's reference, which
  // the state keeps until `continuation` has run.
  void SetContinuation(Continuation continuation) {
    continuation_ = std::move(continuation);
    MarkHasContinuation();
  }

 protected:
  ~State() override = default;

 private:
  void RunContinuation() override {
    // Moved out first: the continuation's captures die when it returns.
    Continuation continuation = std::move(continuation_);
    continuation(std::move(result_));
  }
  void DropContinuation() override { continuation_ = nullptr; }

  Result result_;
  Continuation continuation_;
};

template <typename T>
Future<T> MakeFutureFromState(RefPtr<State<T>> state);

// The reference that a continuation or task holds to the state it is to
// complete. If it is destroyed before Done() (its task destroyed unrun with
// the loop), the state is abandoned rather than left holding its own
// consumer reference forever. One pointer: fits AnyInvocable's inline
// storage.
template <typename S>
class CompleterRef {
 public:
  explicit CompleterRef(S* state) : state_(state) {}
  CompleterRef(CompleterRef&&) noexcept = default;
  CompleterRef& operator=(CompleterRef&&) = delete;
  ~CompleterRef() {
    if (state_ != nullptr) state_->Abandon();
  }

  S* operator->() const { return state_.get(); }
  // The state has been completed, or the duty handed on.
  void Done() { state_.reset(); }

 private:
  RefPtr<S> state_;
};

// Completes `state` with what `thunk()` returns: a value, a status, a
// StatusOr, nothing (OK), or a future to wait for.
template <typename U, typename Thunk>
void CompleteWith(State<U>* state, Thunk&& thunk);

// The state of the future returned by Then: holds the continuation.
template <typename T, typename Fn, typename U>
class ThenState final : public State<U> {
 public:
  ThenState(EventLoop* loop, Fn fn) : State<U>(loop), fn_(std::move(fn)) {}

  void Run(FutureResult<T> input) {
    CompleteWith<U>(this, [&]() -> decltype(auto) {
      return std::invoke(*fn_, std::move(input));
    });
    fn_.reset();  // its captures go now, not when the future is dropped
  }

 private:
  std::optional<Fn> fn_;
};

}  // namespace future_internal

// The consumer's side. See the file comment for when continuations run.
template <typename T>
class [[nodiscard]] Future {
 public:
  using ValueType = T;
  using Result = FutureResult<T>;

  // An invalid future: valid() is false; only assignment and destruction
  // are allowed.
  Future() = default;
  Future(Future&&) noexcept = default;
  Future& operator=(Future&&) noexcept = default;
  Future(const Future&) = delete;
  Future& operator=(const Future&) = delete;

  bool valid() const { return state_ != nullptr; }
  // Whether the result is there (the continuation may not have run yet).
  bool is_ready() const { return state_->ready(); }
  // The result, without consuming the future. The future must be ready.
  const Result& result() const {
    NBIO_CHECK_MSG(is_ready(), "result() of a future not ready");
    return state_->result();
  }
  EventLoop* loop() const { return state_->loop(); }

  // Runs `fn(Result)` once the result is there (never inline), and returns
  // a future of what it returns: `fn` may return U (Future<U>),
  // absl::StatusOr<U> (Future<U>), absl::Status or void (Future<void>), or
  // a Future<U> on the same loop, which the returned future then follows.
  // `fn` sees errors too. Consumes this future; allocates the new future's
  // state, which holds `fn`.
  template <typename F>
  auto Then(F&& fn) &&;

  // Like Then, but `fn` gets the value (nothing for Future<void>) and runs
  // only on success; an error skips it and reaches the returned future.
  template <typename F>
  auto AndThen(F&& fn) &&;

  // Hands the result to `callback(Result)` once it is there (never inline):
  // the adapter from futures to callback-style code. Consumes this future.
  // No allocation for callables of up to two pointers.
  template <typename F>
  void OnComplete(F&& callback) &&;

 private:
  template <typename U>
  friend Future<U> future_internal::MakeFutureFromState(
      RefPtr<future_internal::State<U>> state);

  explicit Future(RefPtr<future_internal::State<T>> state)
      : state_(std::move(state)) {}

  // Consumes the future; `continuation` gets the result.
  void Consume(typename future_internal::State<T>::Continuation continuation) {
    NBIO_CHECK_MSG(valid(), "consuming an invalid (moved-from) future");
    NBIO_DCHECK(loop()->IsInLoopThread());
    state_.release()->SetContinuation(std::move(continuation));
  }

  RefPtr<future_internal::State<T>> state_;
};

// The producer's side: sets the result of the future it hands out once.
// Move-only. Destroying a promise that was never set completes its future
// with BrokenPromiseError().
template <typename T>
class Promise {
 public:
  using Result = FutureResult<T>;

  // One allocation: the state the promise and its future share.
  explicit Promise(EventLoop* loop)
      : state_(new future_internal::State<T>(loop)) {}
  Promise(Promise&&) noexcept = default;
  Promise& operator=(Promise&& other) noexcept {
    if (this != &other) {
      Break();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  ~Promise() { Break(); }

  // The future; once per promise (a check fails on a second call).
  Future<T> GetFuture() {
    state_->MarkFutureRetrieved();
    return future_internal::MakeFutureFromState(state_);
  }

  // Completes the future: with a value, an error status (for Future<void>,
  // a status, OK included), or a StatusOr. A check fails when it is already
  // set. The continuation runs later (never inside Set).
  void Set(Result result) {
    NBIO_CHECK_MSG(TrySet(std::move(result)), "promise set twice");
  }
  // Like Set, but returns false (and drops `result`) when already set.
  bool TrySet(Result result) {
    NBIO_CHECK_MSG(state_ != nullptr, "moved-from promise");
    NBIO_DCHECK(state_->loop()->IsInLoopThread());
    return state_->TrySetResult(std::move(result));
  }

  bool is_set() const { return state_->ready(); }
  EventLoop* loop() const { return state_->loop(); }

 private:
  void Break() {
    if (state_ != nullptr && !state_->ready()) {
      state_->TrySetResult(BrokenPromiseError());
    }
  }

  RefPtr<future_internal::State<T>> state_;
};

// A future that is already complete (its continuation still runs later).
template <typename T>
Future<T> MakeReadyFuture(EventLoop* loop, FutureResult<T> result) {
  Promise<T> promise(loop);
  Future<T> future = promise.GetFuture();
  promise.Set(std::move(result));
  return future;
}
inline Future<void> MakeReadyFuture(EventLoop* loop) {
  return MakeReadyFuture<void>(loop, absl::OkStatus());
}

// The callback MakeFuture hands to a callback-style API: call it once with
// the result. Move-only (it owns the promise): APIs that take an
// absl::AnyInvocable accept it; dropping it uncalled breaks the promise.
template <typename T>
class FutureCallback {
 public:
  explicit FutureCallback(Promise<T> promise) : promise_(std::move(promise)) {}
  // A check fails on a second call.
  void operator()(FutureResult<T> result) { promise_.Set(std::move(result)); }

 private:
  Promise<T> promise_;
};

// The adapter from callback-style code to futures: calls `start(done)` right
// away, inline, with a FutureCallback<T> `done`, and returns the future that
// `done(result)` completes. `done` must be called on the loop's thread.
//
//   Future<std::string> f = MakeFuture<std::string>(loop, [&](auto done) {
//     legacy_client.Fetch(key, std::move(done));
//   });
template <typename T, typename Start>
Future<T> MakeFuture(EventLoop* loop, Start&& start) {
  Promise<T> promise(loop);
  Future<T> future = promise.GetFuture();
  std::forward<Start>(start)(FutureCallback<T>(std::move(promise)));
  return future;
}

// Completes once every input has completed, with every input's result in
// input order, errors included: it never fails itself (folly's collectAll).
// Zero inputs complete at once. All inputs must belong to `loop`.
template <typename T>
Future<std::vector<FutureResult<T>>> WhenAll(EventLoop* loop,
                                             std::vector<Future<T>> futures);

template <typename T>
struct WhenAnyResult {
  size_t index;            // of the input that completed first
  FutureResult<T> result;  // its result, success or error
};

// Completes with the first input to complete, success or error (folly's
// collectAny). The others run on; their results are dropped (cancel them
// through a token if they should stop). Zero inputs: InvalidArgument. All
// inputs must belong to `loop`.
template <typename T>
Future<WhenAnyResult<T>> WhenAny(EventLoop* loop,
                                 std::vector<Future<T>> futures);

// ---------------------------------------------------------------------------
// Implementation.

namespace future_internal {

template <typename T>
Future<T> MakeFutureFromState(RefPtr<State<T>> state) {
  return Future<T>(std::move(state));
}

template <typename U, typename Thunk>
void CompleteWith(State<U>* state, Thunk&& thunk) {
  using R = decltype(thunk());
  if constexpr (std::is_void<R>::value) {
    thunk();
    state->TrySetResult(absl::OkStatus());
  } else if constexpr (IsFuture<std::decay_t<R>>::value) {
    Future<U> inner = thunk();
    if (!inner.valid()) {
      state->TrySetResult(
          absl::InternalError("continuation returned an invalid future"));
      return;
    }
    NBIO_CHECK_MSG(inner.loop() == state->loop(),
                   "continuation returned a future of another loop");
    std::move(inner).OnComplete([target = CompleterRef<State<U>>(state)](
                                    FutureResult<U> result) mutable {
      target->TrySetResult(std::move(result));
      target.Done();
    });
  } else {
    state->TrySetResult(FutureResult<U>(thunk()));
  }
}

// AndThen's call: fn(value), or fn() for Future<void>.
template <typename T, typename Fn>
struct CallWithValue {
  using Type = std::invoke_result_t<Fn&, T&&>;
  static Type Run(Fn& fn, absl::StatusOr<T>& result) {
    return std::invoke(fn, std::move(*result));
  }
};
template <typename Fn>
struct CallWithValue<void, Fn> {
  using Type = std::invoke_result_t<Fn&>;
  static Type Run(Fn& fn, absl::Status&) { return std::invoke(fn); }
};

inline const absl::Status& StatusOf(const absl::Status& status) {
  return status;
}
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& result) {
  return result.status();
}

template <typename T>
class WhenAllState final : public State<std::vector<FutureResult<T>>> {
 public:
  WhenAllState(EventLoop* loop, size_t n)
      : State<std::vector<FutureResult<T>>>(loop), results_(n), remaining_(n) {
    if (n == 0) this->TrySetResult(std::move(results_));
  }
  void Arrive(size_t index, FutureResult<T> result) {
    results_[index] = std::move(result);
    if (--remaining_ == 0) this->TrySetResult(std::move(results_));
  }

 private:
  std::vector<FutureResult<T>> results_;
  size_t remaining_;
};

}  // namespace future_internal

template <typename T>
template <typename F>
auto Future<T>::Then(F&& fn) && {
  using Fn = std::decay_t<F>;
  using R = std::invoke_result_t<Fn&, Result>;
  using U = typename future_internal::ValueOf<std::decay_t<R>>::type;
  using Child = future_internal::ThenState<T, Fn, U>;
  NBIO_CHECK_MSG(valid(), "Then on an invalid (moved-from) future");
  Child* child = new Child(loop(), std::forward<F>(fn));
  Future<U> next = future_internal::MakeFutureFromState<U>(
      RefPtr<future_internal::State<U>>(child));
  Consume([child = future_internal::CompleterRef<Child>(child)](
              Result result) mutable {
    child->Run(std::move(result));
    child.Done();
  });
  return next;
}

template <typename T>
template <typename F>
auto Future<T>::AndThen(F&& fn) && {
  using Fn = std::decay_t<F>;
  using Call = future_internal::CallWithValue<T, Fn>;
  using R = typename Call::Type;
  using U = typename future_internal::ValueOf<std::decay_t<R>>::type;
  EventLoop* const loop = this->loop();
  return std::move(*this).Then(
      [fn = Fn(std::forward<F>(fn)), loop](Result result) mutable {
        const absl::Status& status = future_internal::StatusOf(result);
        (void)loop;  // used by the future-returning kind only
        if constexpr (future_internal::IsFuture<std::decay_t<R>>::value) {
          if (!status.ok()) return MakeReadyFuture<U>(loop, status);
          return Call::Run(fn, result);
        } else if constexpr (std::is_void<R>::value) {
          if (!status.ok()) return status;
          Call::Run(fn, result);
          return absl::OkStatus();
        } else {
          if (!status.ok()) return FutureResult<U>(status);
          return FutureResult<U>(Call::Run(fn, result));
        }
      });
}

template <typename T>
template <typename F>
void Future<T>::OnComplete(F&& callback) && {
  Consume(std::forward<F>(callback));
}

template <typename T>
Future<std::vector<FutureResult<T>>> WhenAll(EventLoop* loop,
                                             std::vector<Future<T>> futures) {
  using AllState = future_internal::WhenAllState<T>;
  RefPtr<AllState> state(new AllState(loop, futures.size()));
  for (size_t i = 0; i < futures.size(); ++i) {
    NBIO_CHECK_MSG(futures[i].loop() == loop, "WhenAll across loops");
    std::move(futures[i])
        .OnComplete(
            [state = future_internal::CompleterRef<AllState>(state.get()),
             i](FutureResult<T> result) mutable {
              state->Arrive(i, std::move(result));
              state.Done();
            });
  }
  return future_internal::MakeFutureFromState<std::vector<FutureResult<T>>>(
      std::move(state));
}

template <typename T>
Future<WhenAnyResult<T>> WhenAny(EventLoop* loop,
                                 std::vector<Future<T>> futures) {
  using AnyState = future_internal::State<WhenAnyResult<T>>;
  if (futures.empty()) {
    return MakeReadyFuture<WhenAnyResult<T>>(
        loop, absl::InvalidArgumentError("WhenAny of no futures"));
  }
  // The first input to complete sets the result; every input completes
  // eventually (a producer that goes away breaks its promise).
  RefPtr<AnyState> state(new AnyState(loop));
  for (size_t i = 0; i < futures.size(); ++i) {
    NBIO_CHECK_MSG(futures[i].loop() == loop, "WhenAny across loops");
    std::move(futures[i])
        .OnComplete(
            [state = future_internal::CompleterRef<AnyState>(state.get()),
             i](FutureResult<T> result) mutable {
              state->TrySetResult(WhenAnyResult<T>{i, std::move(result)});
              state.Done();
            });
  }
  return future_internal::MakeFutureFromState<WhenAnyResult<T>>(
      std::move(state));
}

}  // namespace nbio

#endif  // NBIO_REACTOR_ASYNC_FUTURE_H_
