#include "reactor/poller/epoll_poller.h"

#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "reactor/sys/syscall.h"

namespace nbio {
namespace {

uint32_t ToEpoll(uint32_t interest) {
  uint32_t events = 0;
  if (interest & kReadable) events |= EPOLLIN;
  if (interest & kWritable) events |= EPOLLOUT;
  return events;
}

uint32_t FromEpoll(uint32_t events) {
  uint32_t out = 0;
  if (events & (EPOLLIN | EPOLLPRI | EPOLLRDHUP)) out |= kReadable;
  if (events & EPOLLOUT) out |= kWritable;
  if (events & EPOLLERR) out |= kError;
  if (events & EPOLLHUP) out |= kHangup;
  return out;
}

// backend_flags_: whether the kernel's interest list has the fd. An entry
// with no interest is kept out of it (EPOLLERR/EPOLLHUP are reported even
// for events == 0, which would wake a paused reader forever).
constexpr uint8_t kInKernel = 1;

}  // namespace

absl::StatusOr<std::unique_ptr<EpollPoller>> EpollPoller::Create() {
  const int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return ErrnoStatus("epoll_create1", errno);
  return std::unique_ptr<EpollPoller>(new EpollPoller(epfd));
}

EpollPoller::EpollPoller(int epfd) : epfd_(epfd), events_(kInitialEvents) {}

EpollPoller::~EpollPoller() { close(epfd_); }

absl::Status EpollPoller::Control(PollerEntry* entry, int fd,
                                  uint32_t interest) {
  const bool in_kernel = BackendFlags(entry) & kInKernel;
  if (interest == 0) {
    if (in_kernel) {
      // Cannot fail for a live fd; a closed one has left the set already.
      epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
      BackendFlags(entry) &= ~kInKernel;
    }
    return absl::OkStatus();
  }
  epoll_event ev{};
  ev.events = ToEpoll(interest);
  ev.data.ptr = entry;
  const int op = in_kernel ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (epoll_ctl(epfd_, op, fd, &ev) != 0) {
    return ErrnoStatus(
        absl::StrCat("epoll_ctl(", in_kernel ? "MOD" : "ADD", ", fd ", fd, ")"),
        errno);
  }
  BackendFlags(entry) |= kInKernel;
  return absl::OkStatus();
}

absl::Status EpollPoller::AddFd(PollerEntry* entry, int fd, uint32_t interest) {
  return Control(entry, fd, interest);
}

absl::Status EpollPoller::ModifyFd(PollerEntry* entry, uint32_t interest) {
  return Control(entry, entry->fd(), interest);
}

void EpollPoller::RemoveFd(PollerEntry* entry) {
  // EBADF/ENOENT mean the fd was closed first (which removed it from the
  // interest list if it was the last reference); nothing else to undo.
  if (BackendFlags(entry) & kInKernel) {
    epoll_ctl(epfd_, EPOLL_CTL_DEL, entry->fd(), nullptr);
  }
  // Wait() noted the entry's slot in this batch: drop its event if not
  // dispatched yet. O(1); epoll reports an fd once per batch, and the
  // pointer check rejects a slot noted in an earlier batch.
  const int32_t slot = BackendIndex(entry);
  if (dispatching_ && slot > dispatch_index_ && slot < dispatch_count_ &&
      events_[slot].data.ptr == entry) {
    events_[slot].data.ptr = nullptr;
  }
}

absl::StatusOr<int> EpollPoller::Wait(int64_t timeout_nanos) {
  const int n =
      epoll_wait(epfd_, events_.data(), static_cast<int>(events_.size()),
                 TimeoutMillis(timeout_nanos));
  if (n < 0) {
    if (errno == EINTR) return 0;
    return ErrnoStatus("epoll_wait", errno);
  }
  // Note each entry's slot, for Remove() during dispatch (backend_index_ is
  // otherwise unused by this backend).
  for (int i = 0; i < n; ++i) {
    BackendIndex(static_cast<PollerEntry*>(events_[i].data.ptr)) = i;
  }
  dispatching_ = true;
  dispatch_count_ = n;
  int dispatched = 0;
  for (dispatch_index_ = 0; dispatch_index_ < n; ++dispatch_index_) {
    auto* entry = static_cast<PollerEntry*>(events_[dispatch_index_].data.ptr);
    if (entry == nullptr) continue;  // removed earlier in this batch
    if (Dispatch(entry, FromEpoll(events_[dispatch_index_].events))) {
      ++dispatched;
    }
  }
  dispatching_ = false;
  // A full batch suggests more were ready: offer a bigger array next time.
  if (n == static_cast<int>(events_.size()) && n < kMaxEvents) {
    events_.resize(events_.size() * 2);
  }
  return dispatched;
}

}  // namespace nbio
