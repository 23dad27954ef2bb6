// Cancellation: a source that cancels, tokens that observe it, and
// registrations that run a callback when it happens.
//
//   CancellationSource source;
//   Future<void> nap = Sleep(loop, absl::Seconds(10), source.token());
//   CancellationRegistration reg = source.token().Register(
//       [](const absl::Status& why) { std::puts("cancelled"); });
//   source.Cancel();   // runs the callback now; `nap` fails with
//                      // absl::CancelledError (its continuation runs later)
//
// Operations that take a token (Sleep, WaitReadable, Submit, RunCpuJob, and
// the TCP layer's connects and reads) register a callback, stop what they
// were doing when it runs, and complete with the token's reason(): by
// default absl::CancelledError, absl::DeadlineExceededError for a token from
// DeadlineToken() (deadline.h). A cancelled operation always completes; it
// never just goes quiet. A token cancelled before the operation starts makes
// it fail without starting.
//
// Writing an operation that honours a token (the pattern of sleep.cc):
//
//   struct MyOp {
//     CancellationRegistration on_cancel;
//     void Start(const CancellationToken& token) {
//       if (token.is_cancelled()) return Finish(token.reason());
//       ... start the work ...
//       on_cancel = token.Register(
//           [this](const absl::Status& why) { StopWork(); Finish(why); });
//     }
//     void OnWorkDone() { on_cancel.Unregister(); Finish(absl::OkStatus()); }
//   };
//
// Thread safety: none. A source, its tokens and its registrations belong to
// one thread (the loop's), like everything in the reactor; to cancel from
// another thread, EventLoop::Post() the Cancel().
#ifndef NBIO_REACTOR_ASYNC_CANCELLATION_H_
#define NBIO_REACTOR_ASYNC_CANCELLATION_H_

#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "queue/intrusive_list.h"
#include "reactor/async/ref_ptr.h"

namespace nbio {

class CancellationToken;

namespace cancellation_internal {
class State;
}  // namespace cancellation_internal

// A callback registered on a token, and the handle that keeps it there: the
// callback runs when the token is cancelled unless the handle was destroyed
// (or Unregister()ed) first (std::stop_callback's and Envoy's handle
// discipline). Registering costs no allocation beyond the callback's own
// (none for callables of up to two pointers): the handle is the list node.
//
// Movable (the node is re-linked in place), not copyable. A default-built
// handle holds nothing. Destroying or re-assigning a handle from inside its
// own callback is safe: the callback has been taken out of it first.
class CancellationRegistration {
 public:
  using Callback = absl::AnyInvocable<void(const absl::Status& reason)>;

  CancellationRegistration() = default;
  CancellationRegistration(CancellationRegistration&& other) noexcept;
  CancellationRegistration& operator=(
      CancellationRegistration&& other) noexcept;
  ~CancellationRegistration() { Unregister(); }

  // The callback will not run. A no-op when it already ran or was never
  // registered. O(1).
  void Unregister();

  // Whether the callback is still waiting for a cancellation.
  bool is_registered() const { return state_ != nullptr; }

 private:
  friend class CancellationToken;
  friend class cancellation_internal::State;

  // Takes `other`'s place in the list.
  void MoveFrom(CancellationRegistration& other);

  cancellation_internal::State* state_ = nullptr;  // a reference, while linked
  ListHook hook_;
  Callback callback_;
};

namespace cancellation_internal {

// What a source and its tokens share. Derived classes (deadline.cc) add a
// way to cancel, such as a timer.
class State : public RefCounted {
 public:
  State() = default;

  bool cancelled() const { return !reason_.ok(); }
  const absl::Status& reason() const { return reason_; }

  // Cancels with `reason` (must not be OK) and runs the callbacks registered
  // until then, in registration order, each exactly once, synchronously.
  // False (and nothing happens) when already cancelled.
  bool Cancel(absl::Status reason);

  // Cancels this state whenever `parent` is cancelled, with its reason.
  void LinkTo(const CancellationToken& parent);

 protected:
  ~State() override = default;

  // Runs first thing in a Cancel() that cancels, before the callbacks: for
  // derived states to stop their own trigger (a timer).
  virtual void OnCancel() {}

 private:
  friend class ::nbio::CancellationToken;
  friend class ::nbio::CancellationRegistration;

  absl::Status reason_;  // OK until cancelled
  IntrusiveList<CancellationRegistration, &CancellationRegistration::hook_>
      callbacks_;
  CancellationRegistration parent_link_;
};

}  // namespace cancellation_internal

// Observes a source: cheap to copy (a reference-counted pointer), and valid
// after the source is gone (it then never gets cancelled, unless it was
// before). A default-constructed token is never cancelled.
class CancellationToken {
 public:
  CancellationToken() = default;
  // For nbio's own token kinds (DeadlineToken); users get tokens from a
  // CancellationSource.
  explicit CancellationToken(RefPtr<cancellation_internal::State> state)
      : state_(std::move(state)) {}

  // Whether cancellation has happened.
  bool is_cancelled() const { return state_ != nullptr && state_->cancelled(); }
  // False for a default-constructed token: it will never be cancelled.
  bool can_be_cancelled() const { return state_ != nullptr; }
  // Why it was cancelled (what an operation completes with); OK while not
  // cancelled.
  absl::Status reason() const {
    return state_ != nullptr ? state_->reason() : absl::OkStatus();
  }

  // Registers `callback`, to run exactly once, synchronously inside the
  // Cancel() that cancels the token, in registration order. When the token
  // is already cancelled, `callback` runs right here, before Register
  // returns, and the returned handle is empty; this is also what happens to
  // a callback registered from inside another cancel callback of the same
  // token. A token that can never be cancelled drops `callback` and returns
  // an empty handle.
  //
  // Inside a callback it is safe to: cancel the same source again (a no-op
  // returning false), cancel other sources (their callbacks run nested),
  // register or unregister any callback (an unregistered callback that has
  // not run yet will not run), and destroy the source, the token or any
  // handle.
  [[nodiscard]] CancellationRegistration Register(
      CancellationRegistration::Callback callback) const;

 private:
  RefPtr<cancellation_internal::State> state_;
};

// Cancels the tokens it hands out. One allocation (the shared state) per
// source. Destroying a source does not cancel its tokens. Movable, not
// copyable.
class CancellationSource {
 public:
  CancellationSource();
  // A linked source: cancelled when `parent` is (with the parent's reason),
  // or by its own Cancel(), which does not affect the parent.
  explicit CancellationSource(const CancellationToken& parent);

  CancellationSource(CancellationSource&&) noexcept = default;
  CancellationSource& operator=(CancellationSource&&) noexcept = default;

  // Cancels: the tokens report is_cancelled() and `reason`, and every
  // callback registered on them runs now, exactly once (see
  // CancellationToken::Register). `reason` must not be OK. Returns false and
  // does nothing when already cancelled (double cancel, or a cancel from
  // inside one of its own callbacks). Safe from inside any callback.
  bool Cancel(absl::Status reason = absl::CancelledError("cancelled"));

  bool is_cancelled() const { return state_ != nullptr && state_->cancelled(); }
  CancellationToken token() const { return CancellationToken(state_); }

 private:
  RefPtr<cancellation_internal::State> state_;
};

}  // namespace nbio

#endif  // NBIO_REACTOR_ASYNC_CANCELLATION_H_
