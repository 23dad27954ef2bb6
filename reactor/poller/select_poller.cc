#include "reactor/poller/select_poller.h"

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "reactor/sys/syscall.h"

namespace nbio {

SelectPoller::SelectPoller() {
  FD_ZERO(&read_interest_);
  FD_ZERO(&write_interest_);
  FD_ZERO(&read_ready_);
  FD_ZERO(&write_ready_);
}

void SelectPoller::SetInterestBits(int fd, uint32_t interest) {
  if (interest & kReadable) {
    FD_SET(fd, &read_interest_);
  } else {
    FD_CLR(fd, &read_interest_);
  }
  if (interest & kWritable) {
    FD_SET(fd, &write_interest_);
  } else {
    FD_CLR(fd, &write_interest_);
  }
}

absl::Status SelectPoller::AddFd(PollerEntry* entry, int fd,
                                 uint32_t interest) {
  if (fd >= FD_SETSIZE) {
    return absl::ResourceExhaustedError(
        absl::StrCat("select backend cannot watch fd ", fd,
                     ": select() handles fds below "
                     "FD_SETSIZE (",
                     FD_SETSIZE, "); use the poll or epoll backend"));
  }
  SetInterestBits(fd, interest);
  by_fd_[fd] = entry;
  if (fd > max_fd_) max_fd_ = fd;
  return absl::OkStatus();
}

absl::Status SelectPoller::ModifyFd(PollerEntry* entry, uint32_t interest) {
  SetInterestBits(entry->fd(), interest);
  return absl::OkStatus();
}

void SelectPoller::RemoveFd(PollerEntry* entry) {
  const int fd = entry->fd();
  SetInterestBits(fd, 0);
  // Drop anything this Wait collected for the fd (harmless when idle).
  FD_CLR(fd, &read_ready_);
  FD_CLR(fd, &write_ready_);
  by_fd_[fd] = nullptr;
  while (max_fd_ >= 0 && by_fd_[max_fd_] == nullptr) --max_fd_;
}

absl::StatusOr<int> SelectPoller::Wait(int64_t timeout_nanos) {
  read_ready_ = read_interest_;
  write_ready_ = write_interest_;
  timeval tv;
  timeval* tvp = nullptr;
  if (timeout_nanos >= 0) {
    // Round up to whole microseconds: never wake before the deadline.
    const int64_t micros = (timeout_nanos + 999) / 1000;
    tv.tv_sec = micros / 1000000;
    tv.tv_usec = micros % 1000000;
    tvp = &tv;
  }
  const int limit = max_fd_ + 1;
  const int n = select(limit, &read_ready_, &write_ready_, nullptr, tvp);
  if (n < 0) {
    const int err = errno;
    FD_ZERO(&read_ready_);
    FD_ZERO(&write_ready_);
    if (err == EINTR) return 0;
    // EBADF: an fd was closed while still registered (a caller bug).
    return ErrnoStatus("select", err);
  }
  int dispatched = 0;
  // select() counts ready bits, not fds: stop once all n have been seen.
  int bits_left = n;
  for (int fd = 0; fd < limit && bits_left > 0; ++fd) {
    uint32_t raw = 0;
    if (FD_ISSET(fd, &read_ready_)) raw |= kReadable;
    if (FD_ISSET(fd, &write_ready_)) raw |= kWritable;
    if (raw == 0) continue;
    bits_left -= ((raw & kReadable) ? 1 : 0) + ((raw & kWritable) ? 1 : 0);
    FD_CLR(fd, &read_ready_);
    FD_CLR(fd, &write_ready_);
    PollerEntry* entry = by_fd_[fd];
    if (entry != nullptr && Dispatch(entry, raw)) ++dispatched;
  }
  return dispatched;
}

}  // namespace nbio
