#include "reactor/poller/poll_poller.h"

#include <cerrno>

#include "reactor/sys/syscall.h"

namespace nbio {
namespace {

short ToPoll(uint32_t interest) {
  short events = 0;
  if (interest & kReadable) events |= POLLIN;
  if (interest & kWritable) events |= POLLOUT;
  return events;
}

uint32_t FromPoll(short revents) {
  uint32_t out = 0;
  if (revents & (POLLIN | POLLPRI)) out |= kReadable;
  if (revents & POLLOUT) out |= kWritable;
  if (revents & (POLLERR | POLLNVAL)) out |= kError;
  if (revents & POLLHUP) out |= kHangup;
  return out;
}

// An entry with no interest polls fd -1, which poll() skips: POLLHUP and
// POLLERR are reported even for events == 0 and would wake a paused reader.
pollfd MakePollfd(int fd, uint32_t interest) {
  return pollfd{interest != 0 ? fd : -1, ToPoll(interest), 0};
}

}  // namespace

absl::Status PollPoller::AddFd(PollerEntry* entry, int fd, uint32_t interest) {
  // New slots always go at the end, so a Wait in progress (which stops at the
  // count it polled) never visits them.
  BackendIndex(entry) = static_cast<int32_t>(pollfds_.size());
  pollfds_.push_back(MakePollfd(fd, interest));
  entries_.push_back(entry);
  return absl::OkStatus();
}

absl::Status PollPoller::ModifyFd(PollerEntry* entry, uint32_t interest) {
  pollfd& slot = pollfds_[BackendIndex(entry)];
  const short revents = slot.revents;  // a Wait in progress may still read it
  slot = MakePollfd(entry->fd(), interest);
  slot.revents = revents;
  return absl::OkStatus();
}

void PollPoller::RemoveFd(PollerEntry* entry) {
  const int32_t i = BackendIndex(entry);
  if (dispatching_) {
    pollfds_[i] = pollfd{-1, 0, 0};
    entries_[i] = nullptr;
    ++holes_;
    return;
  }
  // Not dispatching: move the last slot into this one.
  const int32_t last = static_cast<int32_t>(pollfds_.size()) - 1;
  if (i != last) {
    pollfds_[i] = pollfds_[last];
    entries_[i] = entries_[last];
    if (entries_[i] != nullptr) BackendIndex(entries_[i]) = i;
  }
  pollfds_.pop_back();
  entries_.pop_back();
}

void PollPoller::Compact() {
  size_t out = 0;
  for (size_t in = 0; in < entries_.size(); ++in) {
    if (entries_[in] == nullptr) continue;
    pollfds_[out] = pollfds_[in];
    entries_[out] = entries_[in];
    BackendIndex(entries_[out]) = static_cast<int32_t>(out);
    ++out;
  }
  pollfds_.resize(out);
  entries_.resize(out);
  holes_ = 0;
}

absl::StatusOr<int> PollPoller::Wait(int64_t timeout_nanos) {
  if (holes_ > 0) Compact();
  const int n =
      poll(pollfds_.data(), pollfds_.size(), TimeoutMillis(timeout_nanos));
  if (n < 0) {
    if (errno == EINTR) return 0;
    return ErrnoStatus("poll", errno);
  }
  if (n == 0) return 0;
  dispatching_ = true;
  int dispatched = 0;
  // Only the slots that were polled; Add() appends beyond them.
  const size_t polled = pollfds_.size();
  int seen = 0;  // poll() said n slots have revents: stop after the n-th
  for (size_t i = 0; i < polled && seen < n; ++i) {
    const short revents = pollfds_[i].revents;
    if (revents == 0) continue;
    ++seen;
    pollfds_[i].revents = 0;
    PollerEntry* entry = entries_[i];
    if (entry == nullptr) continue;  // removed earlier in this batch
    if (Dispatch(entry, FromPoll(revents))) ++dispatched;
  }
  dispatching_ = false;
  return dispatched;
}

}  // namespace nbio
