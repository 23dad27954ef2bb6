#include "reactor/async/deadline.h"

#include "timers/timer_wheel.h"

namespace nbio {
namespace {

// A token's state that its own timer cancels. The timer is a bare TimerNode
// on the loop's wheel (EventLoop::ScheduleNode) rather than a Timer: a node may
// be destroyed inside its own callback, which happens when the cancel callbacks
// drop the last reference; and a deadline should not keep the loop running by
// itself.
class DeadlineState final : public cancellation_internal::State,
                            private TimerNode {
 public:
  DeadlineState() : TimerNode(&DeadlineState::Fire) {}

  void Start(EventLoop* loop, int64_t deadline_nanos,
             const CancellationToken& parent) {
    loop_ = loop;
    LinkTo(parent);
    if (cancelled()) return;
    if (deadline_nanos <= loop->NowNanos()) {
      Cancel(Exceeded());
      return;
    }
    loop->ScheduleNode(this, deadline_nanos);
  }

 private:
  static absl::Status Exceeded() {
    return absl::DeadlineExceededError("deadline exceeded");
  }

  // A parent's cancel, or the timer itself (then already unlinked).
  void OnCancel() override {
    if (loop_ != nullptr) loop_->CancelNode(this);
  }

  static void Fire(TimerNode* node) {
    static_cast<DeadlineState*>(node)->Cancel(Exceeded());
  }

  EventLoop* loop_ = nullptr;
};

}  // namespace

CancellationToken DeadlineTokenAt(EventLoop* loop, int64_t deadline_nanos,
                                  const CancellationToken& parent) {
  NBIO_DCHECK(loop->IsInLoopThread());
  RefPtr<DeadlineState> state(new DeadlineState);
  state->Start(loop, deadline_nanos, parent);
  return CancellationToken(std::move(state));
}

CancellationToken DeadlineToken(EventLoop* loop, absl::Duration timeout,
                                const CancellationToken& parent) {
  return DeadlineTokenAt(loop, loop->DeadlineAfter(timeout), parent);
}

}  // namespace nbio
