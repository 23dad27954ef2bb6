#include "reactor/async/wait_fd.h"

#include <type_traits>

#include "reactor/async/operation.h"

namespace nbio {
namespace {

// The wait's future state, fd watcher and cancel registration in one object.
// T: uint32_t (the events) or void.
template <typename T>
class WaitFdOp final : public Operation<T> {
 public:
  WaitFdOp(EventLoop* loop, int fd, uint32_t interest,
           const CancellationToken& token)
      : Operation<T>(loop),
        interest_(interest),
        token_(token),
        watcher_(loop, fd, [this](uint32_t events) { Ready(events); }) {}

  void Start() {
    if (token_.is_cancelled()) {
      this->Complete(token_.reason());
      return;
    }
    absl::Status status = watcher_.SetInterest(interest_);
    if (!status.ok()) {
      this->Complete(std::move(status));
      return;
    }
    on_cancel_ = token_.Register([this](const absl::Status& why) {
      watcher_.Stop();
      this->Complete(why);
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
      this->Complete(absl::OkStatus());
    } else {
      this->Complete(events);
    }
  }

  const uint32_t interest_;
  const CancellationToken token_;
  FdWatcher watcher_;
  CancellationRegistration on_cancel_;
};

template <typename T>
Future<T> StartWait(EventLoop* loop, int fd, uint32_t interest,
                    const CancellationToken& token) {
  NBIO_CHECK_MSG(interest != 0 && (interest & ~(kReadable | kWritable)) == 0,
                 "wait for kReadable and/or kWritable");
  return Launch<WaitFdOp<T>>(loop, fd, interest, token);
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
