#include "reactor/async/wait_fd.h"

#include <type_traits>

namespace nbio {
namespace {

// The wait's future state, fd watcher and cancel registration in one object.
// T: uint32_t (the events) or void.
template <typename T>
class WaitFdState final : public future_internal::State<T> {
 public:
  WaitFdState(EventLoop* loop, int fd)
      : future_internal::State<T>(loop),
        watcher_(loop, fd, [this](uint32_t events) { Ready(events); }) {}

  void Start(uint32_t interest, const CancellationToken& token) {
    NBIO_CHECK_MSG(interest != 0 && (interest & ~(kReadable | kWritable)) == 0,
                   "wait for kReadable and/or kWritable");
    if (token.is_cancelled()) {
      this->TrySetResult(token.reason());
      return;
    }
    absl::Status status = watcher_.SetInterest(interest);
    if (!status.ok()) {
      this->TrySetResult(std::move(status));
      return;
    }
    on_cancel_ = token.Register([this](const absl::Status& why) {
      watcher_.Stop();
      this->TrySetResult(why);
    });
  }

 private:
  void Ready(uint32_t events) {
    // Stop() inside the watcher's own callback is allowed (destruction is
    // not, and cannot happen here: this object's reference holders run no
    // code inside it).
    watcher_.Stop();
    on_cancel_.Unregister();
    if constexpr (std::is_void<T>::value) {
      this->TrySetResult(absl::OkStatus());
    } else {
      this->TrySetResult(events);
    }
  }

  FdWatcher watcher_;
  CancellationRegistration on_cancel_;
};

template <typename T>
Future<T> StartWait(EventLoop* loop, int fd, uint32_t interest,
                    const CancellationToken& token) {
  NBIO_DCHECK(loop->IsInLoopThread());
  RefPtr<WaitFdState<T>> state(new WaitFdState<T>(loop, fd));
  state->Start(interest, token);
  return future_internal::MakeFutureFromState<T>(std::move(state));
}

}  // namespace

Future<uint32_t> WaitFd(EventLoop* loop, int fd, uint32_t interest,
                        const CancellationToken& token) {
  return StartWait<uint32_t>(loop, fd, interest, token);
}

Future<void> WaitReadable(EventLoop* loop, int fd,
                          const CancellationToken& token) {
  return StartWait<void>(loop, fd, kReadable, token);
}

Future<void> WaitWritable(EventLoop* loop, int fd,
                          const CancellationToken& token) {
  return StartWait<void>(loop, fd, kWritable, token);
}

}  // namespace nbio
