#include "reactor/sys/wakeup.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "reactor/sys/syscall.h"

namespace nbio {

absl::StatusOr<std::unique_ptr<Wakeup>> Wakeup::Create(Kind preferred) {
  if (preferred == Kind::kEventFd) {
    const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd >= 0) {
      return std::unique_ptr<Wakeup>(new Wakeup(Kind::kEventFd, fd, fd));
    }
    if (errno != ENOSYS && errno != EINVAL) {
      return ErrnoStatus("eventfd", errno);
    }
  }
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    return ErrnoStatus("pipe2", errno);
  }
  return std::unique_ptr<Wakeup>(new Wakeup(Kind::kPipe, fds[0], fds[1]));
}

Wakeup::~Wakeup() {
  close(read_fd_);
  if (write_fd_ != read_fd_) close(write_fd_);
}

void Wakeup::Signal() {
  // EAGAIN means the counter or the pipe is full: it is readable already,
  // which is all a signal promises. Only write() here: async-signal-safe.
  const int saved_errno = errno;
  if (kind_ == Kind::kEventFd) {
    const uint64_t one = 1;
    RetryOnEintr([&] { return write(write_fd_, &one, sizeof(one)); });
  } else {
    const char byte = 0;
    RetryOnEintr([&] { return write(write_fd_, &byte, 1); });
  }
  errno = saved_errno;
}

bool Wakeup::Drain() {
  if (kind_ == Kind::kEventFd) {
    uint64_t count = 0;
    return RetryOnEintr([&] {
             return read(read_fd_, &count, sizeof(count));
           }) == static_cast<ssize_t>(sizeof(count));
  }
  bool any = false;
  char buf[256];
  while (RetryOnEintr([&] { return read(read_fd_, buf, sizeof(buf)); }) > 0) {
    any = true;
  }
  return any;
}

}  // namespace nbio
