#include "reactor/async/scheduler.h"

namespace nbio {
namespace {

// The job's future state, CpuJob and cancel registration in one object.
class CpuJobState final : public future_internal::State<void> {
 public:
  CpuJobState(EventLoop* loop, CpuJob::Slice slice)
      : State<void>(loop),
        slice_(std::move(slice)),
        job_(loop, [this] { return RunSlice(); }) {}

  void Start(const CancellationToken& token) {
    if (token.is_cancelled()) {
      Finish(token.reason());
      return;
    }
    job_.Start();
    on_cancel_ = token.Register([this](const absl::Status& why) {
      job_.Stop();  // inside its own slice: not run again
      Finish(why);
    });
  }

 private:
  CpuSliceResult RunSlice() {
    // The slice may drop the last reference to this state (the future's
    // holder), but a CpuJob must not be destroyed inside its own slice:
    // hold a reference through it, and if it is the last one, let an urgent
    // task (the loop runs one right after this slice) drop it.
    RefPtr<CpuJobState> keep(this);
    const CpuSliceResult result = slice_();
    if (result == CpuSliceResult::kDone) {
      on_cancel_.Unregister();
      Finish(absl::OkStatus());
    }
    // Done, or cancelled inside the slice: its captures go now that it has
    // returned.
    if (ready()) slice_ = nullptr;
    if (keep->HasOneRef()) loop()->PostUrgent([keep = std::move(keep)] {});
    return result;
  }

  void Finish(const absl::Status& status) {
    if (!job_.in_slice()) slice_ = nullptr;  // its captures go now
    TrySetResult(status);
  }

  CpuJob::Slice slice_;
  CpuJob job_;
  CancellationRegistration on_cancel_;
};

}  // namespace

Future<void> RunCpuJob(EventLoop* loop, CpuJob::Slice slice,
                       const CancellationToken& token) {
  NBIO_DCHECK(loop->IsInLoopThread());
  RefPtr<CpuJobState> state(new CpuJobState(loop, std::move(slice)));
  state->Start(token);
  return future_internal::MakeFutureFromState<void>(std::move(state));
}

}  // namespace nbio
