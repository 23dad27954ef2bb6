#include "reactor/async/sleep.h"

#include "reactor/async/operation.h"

namespace nbio {
namespace {

// The sleep's future state, timer and cancel registration in one object.
class SleepOp final : public Operation<void> {
 public:
  SleepOp(EventLoop* loop, int64_t deadline_nanos,
          const CancellationToken& token)
      : Operation<void>(loop),
        deadline_nanos_(deadline_nanos),
        token_(token),
        timer_(loop, [this] { Fire(); }) {}

  void Start() {
    if (token_.is_cancelled()) {
      Complete(token_.reason());
      return;
    }
    timer_.StartAt(deadline_nanos_);
    on_cancel_ = token_.Register([this](const absl::Status& why) {
      timer_.Cancel();
      Complete(why);
    });
  }

 private:
  void Fire() {
    on_cancel_.Unregister();
    Complete(absl::OkStatus());
  }

  const int64_t deadline_nanos_;
  const CancellationToken token_;
  Timer timer_;
  CancellationRegistration on_cancel_;
};

}  // namespace

Future<void> SleepUntil(EventLoop* loop, int64_t deadline_nanos,
                        const CancellationToken& token) {
  return Launch<SleepOp>(loop, deadline_nanos, token);
}

Future<void> Sleep(EventLoop* loop, absl::Duration delay,
                   const CancellationToken& token) {
  return SleepUntil(loop, loop->DeadlineAfter(delay), token);
}

}  // namespace nbio
