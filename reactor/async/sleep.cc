#include "reactor/async/sleep.h"

namespace nbio {
namespace {

// The sleep's future state, timer and cancel registration in one object.
class SleepState final : public future_internal::State<void> {
 public:
  explicit SleepState(EventLoop* loop)
      : State<void>(loop), timer_(loop, [this] { Fire(); }) {}

  void Start(int64_t deadline_nanos, const CancellationToken& token) {
    if (token.is_cancelled()) {
      TrySetResult(token.reason());
      return;
    }
    timer_.StartAt(deadline_nanos);
    on_cancel_ = token.Register([this](const absl::Status& why) {
      timer_.Cancel();
      TrySetResult(why);
    });
  }

 private:
  void Fire() {
    on_cancel_.Unregister();
    TrySetResult(absl::OkStatus());
  }

  Timer timer_;
  CancellationRegistration on_cancel_;
};

}  // namespace

Future<void> SleepUntil(EventLoop* loop, int64_t deadline_nanos,
                        const CancellationToken& token) {
  NBIO_DCHECK(loop->IsInLoopThread());
  RefPtr<SleepState> state(new SleepState(loop));
  state->Start(deadline_nanos, token);
  return future_internal::MakeFutureFromState<void>(std::move(state));
}

Future<void> Sleep(EventLoop* loop, absl::Duration delay,
                   const CancellationToken& token) {
  return SleepUntil(loop, loop->DeadlineAfter(delay), token);
}

}  // namespace nbio
