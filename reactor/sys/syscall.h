// The syscall boundary: errno to absl::Status, and EINTR retried in one place.
//
// Every setup call that can fail (socket, bind, listen, epoll_create1, ...)
// returns absl::Status or absl::StatusOr<T> whose message names the syscall,
// its argument where that helps, and the errno text, e.g.
//   "bind(127.0.0.1:7007): Address already in use [EADDRINUSE]".
// EAGAIN is not an error: the I/O paths test for it before converting.
#ifndef NBIO_REACTOR_SYS_SYSCALL_H_
#define NBIO_REACTOR_SYS_SYSCALL_H_

#include <cerrno>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace nbio {

// absl::Status for a failed syscall. The code is absl::ErrnoToStatusCode(err)
// (EMFILE -> RESOURCE_EXHAUSTED, EADDRINUSE -> FAILED_PRECONDITION, ...); the
// message is "<call>: <strerror> [<ENAME>]", and `call` may carry arguments:
// "bind(127.0.0.1:7007)".
absl::Status ErrnoStatus(absl::string_view call, int err);

// ErrnoStatus for a failed io_uring set-up call (io_uring_setup, a
// registration), prefixed with why io_uring cannot be used here in the
// words an operator needs: no io_uring in the kernel (ENOSYS), refused by
// sysctl kernel.io_uring_disabled or a seccomp profile (EPERM), not enough
// locked memory (ENOMEM). Shared by every io_uring user in nbio, so that
// they all say it the same way.
absl::Status IoUringSetupError(absl::string_view call, int err);

// The symbolic name of an errno value ("EAGAIN"), or "errno <n>".
const char* ErrnoName(int err);

// Calls `fn()` until it does not fail with EINTR; returns its last result.
// The one place where EINTR is retried (libuv's habit): a signal arriving
// during a blocking call is never mistaken for an error.
template <typename Fn>
auto RetryOnEintr(Fn&& fn) -> decltype(fn()) {
  decltype(fn()) result;
  do {
    result = fn();
  } while (result == -1 && errno == EINTR);
  return result;
}

}  // namespace nbio

#endif  // NBIO_REACTOR_SYS_SYSCALL_H_
