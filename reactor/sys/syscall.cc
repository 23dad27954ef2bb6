#include "reactor/sys/syscall.h"

#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace nbio {

const char* ErrnoName(int err) {
  switch (err) {
#define NBIO_ERRNO_CASE(e) \
  case e:                  \
    return #e;
    NBIO_ERRNO_CASE(EPERM)
    NBIO_ERRNO_CASE(ENOENT)
    NBIO_ERRNO_CASE(EINTR)
    NBIO_ERRNO_CASE(EIO)
    NBIO_ERRNO_CASE(EBADF)
    NBIO_ERRNO_CASE(EAGAIN)
    NBIO_ERRNO_CASE(ENOMEM)
    NBIO_ERRNO_CASE(EACCES)
    NBIO_ERRNO_CASE(EFAULT)
    NBIO_ERRNO_CASE(EEXIST)
    NBIO_ERRNO_CASE(EINVAL)
    NBIO_ERRNO_CASE(ENFILE)
    NBIO_ERRNO_CASE(EMFILE)
    NBIO_ERRNO_CASE(ENOSPC)
    NBIO_ERRNO_CASE(EPIPE)
    NBIO_ERRNO_CASE(ENOSYS)
    NBIO_ERRNO_CASE(ENOTSOCK)
    NBIO_ERRNO_CASE(EPROTONOSUPPORT)
    NBIO_ERRNO_CASE(EOPNOTSUPP)
    NBIO_ERRNO_CASE(EAFNOSUPPORT)
    NBIO_ERRNO_CASE(EADDRINUSE)
    NBIO_ERRNO_CASE(EADDRNOTAVAIL)
    NBIO_ERRNO_CASE(ENETDOWN)
    NBIO_ERRNO_CASE(ENETUNREACH)
    NBIO_ERRNO_CASE(ECONNABORTED)
    NBIO_ERRNO_CASE(ECONNRESET)
    NBIO_ERRNO_CASE(ENOBUFS)
    NBIO_ERRNO_CASE(EISCONN)
    NBIO_ERRNO_CASE(ENOTCONN)
    NBIO_ERRNO_CASE(ETIMEDOUT)
    NBIO_ERRNO_CASE(ECONNREFUSED)
    NBIO_ERRNO_CASE(EHOSTUNREACH)
    NBIO_ERRNO_CASE(EALREADY)
    NBIO_ERRNO_CASE(EINPROGRESS)
#undef NBIO_ERRNO_CASE
    default:
      return nullptr;
  }
}

absl::Status IoUringSetupError(absl::string_view call, int err) {
  absl::Status status = ErrnoStatus(call, err);
  const char* why = nullptr;
  switch (err) {
    case ENOSYS:
      why = "this kernel has no io_uring";
      break;
    case EPERM:
      why =
          "io_uring refused: sysctl kernel.io_uring_disabled, or a "
          "seccomp profile (containers)";
      break;
    case ENOMEM:
      why =
          "not enough locked memory for the ring's queues (RLIMIT_MEMLOCK, "
          "counted per user unless the process has CAP_IPC_LOCK)";
      break;
    default:
      break;
  }
  if (why == nullptr) return status;
  return absl::Status(status.code(), absl::StrCat(why, ": ", status.message()));
}

absl::Status ErrnoStatus(absl::string_view call, int err) {
  const char* name = ErrnoName(err);
  char number[24];
  if (name == nullptr) {
    std::snprintf(number, sizeof(number), "errno %d", err);
    name = number;
  }
  // absl::ErrnoToStatusCode gives the canonical code (EMFILE ->
  // RESOURCE_EXHAUSTED, EADDRINUSE -> FAILED_PRECONDITION, EAGAIN ->
  // UNAVAILABLE, ...).
  return absl::Status(
      absl::ErrnoToStatusCode(err),
      absl::StrCat(call, ": ", std::strerror(err), " [", name, "]"));
}

}  // namespace nbio
