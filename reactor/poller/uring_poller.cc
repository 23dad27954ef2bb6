#include "reactor/poller/uring_poller.h"

#include <poll.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "queue/base/check.h"
#include "reactor/sys/syscall.h"

namespace nbio {
namespace {

// user_data of requests whose completion is never dispatched (cancels).
constexpr uint64_t kIgnored = ~uint64_t{0};

uint64_t Tag(int fd, uint32_t seq) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(fd)) << 32) | seq;
}

uint32_t ToPoll(uint32_t interest) {
  uint32_t mask = 0;
  if (interest & kReadable) mask |= POLLIN | POLLPRI | POLLRDHUP;
  if (interest & kWritable) mask |= POLLOUT;
  return mask;
}

uint32_t FromPoll(uint32_t revents) {
  uint32_t out = 0;
  if (revents & (POLLIN | POLLPRI | POLLRDHUP)) out |= kReadable;
  if (revents & POLLOUT) out |= kWritable;
  if (revents & (POLLERR | POLLNVAL)) out |= kError;
  if (revents & POLLHUP) out |= kHangup;
  return out;
}


}  // namespace

absl::StatusOr<std::unique_ptr<UringPoller>> UringPoller::Create() {
  std::unique_ptr<UringPoller> poller(new UringPoller());
  absl::Status status = poller->Init();
  if (!status.ok()) return status;
  return poller;
}

absl::Status UringPoller::Init() {
  UringPoller* poller = this;
  const unsigned preferred[] = {
      IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN |
          IORING_SETUP_TASKRUN_FLAG,
      IORING_SETUP_CQSIZE,
  };
  int ret = -EINVAL;
  for (unsigned sq = kSqEntries; sq >= kMinSqEntries; sq /= 2) {
    for (unsigned flags : preferred) {
      io_uring_params params;
      std::memset(&params, 0, sizeof(params));
      params.flags = flags;
      params.cq_entries = sq * (kCqEntries / kSqEntries);
      ret = io_uring_queue_init_params(sq, &poller->ring_, &params);
      if (ret != -EINVAL) break;  // EINVAL: a flag this kernel lacks
    }
    // ENOMEM: the user's locked-memory budget is spent (other rings of the
    // same user); a smaller ring may still fit.
    if (ret != -ENOMEM) break;
  }
  if (ret < 0) return IoUringSetupError("io_uring_setup", -ret);
  poller->ring_ready_ = true;
  return absl::OkStatus();
}

UringPoller::~UringPoller() {
  if (ring_ready_) io_uring_queue_exit(&ring_);
}

io_uring_sqe* UringPoller::GetSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (sqe == nullptr) {
    // Full: hand the queued requests to the kernel. -EBUSY means the
    // completion side needs reaping first; our CQ is sized to hold every
    // armed request, so only a burst of cancels can get here.
    int ret = io_uring_submit(&ring_);
    NBIO_CHECK_MSG(ret >= 0 || ret == -EBUSY || ret == -EINTR || ret == -EAGAIN,
                   "io_uring_submit failed");
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

void UringPoller::Arm(int fd, Slot& slot, uint32_t interest) {
  slot.seq = slot.seq + 1 == 0 ? 1 : slot.seq + 1;
  slot.armed_mask = ToPoll(interest);
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_poll_add(sqe, fd, slot.armed_mask);
  io_uring_sqe_set_data64(sqe, Tag(fd, slot.seq));
}

void UringPoller::Disarm(int fd, Slot& slot) {
  if (slot.armed_mask == 0) return;
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_poll_remove(sqe, Tag(fd, slot.seq));
  io_uring_sqe_set_data64(sqe, kIgnored);
  slot.armed_mask = 0;
  // A new tag: the cancelled request's completion, if it was already on its
  // way, no longer matches.
  slot.seq = slot.seq + 1 == 0 ? 1 : slot.seq + 1;
}

absl::Status UringPoller::AddFd(PollerEntry* entry, int fd, uint32_t interest) {
  if (static_cast<size_t>(fd) >= slots_.size()) {
    slots_.resize(std::max<size_t>(fd + 1, slots_.size() * 2));
  }
  Slot& slot = slots_[fd];
  slot.entry = entry;
  slot.armed_mask = 0;
  slot.seq = slot.seq + 1 == 0 ? 1 : slot.seq + 1;
  if (interest != 0) Arm(fd, slot, interest);
  return absl::OkStatus();
}

absl::Status UringPoller::ModifyFd(PollerEntry* entry, uint32_t interest) {
  const int fd = entry->fd();
  Slot& slot = slots_[fd];
  // Replace the request only if its mask is wrong; one that fired this
  // batch (not armed) is re-armed after dispatch, or here.
  if (slot.armed_mask != 0 && slot.armed_mask == ToPoll(interest)) {
    return absl::OkStatus();
  }
  Disarm(fd, slot);
  if (interest != 0) Arm(fd, slot, interest);
  return absl::OkStatus();
}

void UringPoller::RemoveFd(PollerEntry* entry) {
  const int fd = entry->fd();
  Slot& slot = slots_[fd];
  const bool had_request = slot.armed_mask != 0;
  Disarm(fd, slot);
  slot.entry = nullptr;
  slot.seq = slot.seq + 1 == 0 ? 1 : slot.seq + 1;
  // The poll request holds a reference to the file: cancel it now, so that
  // the owner's close() really closes (the peer sees FIN now, not at the
  // next Wait).
  if (had_request) io_uring_submit(&ring_);
}

absl::StatusOr<int> UringPoller::Wait(int64_t timeout_nanos) {
  __kernel_timespec ts{};
  __kernel_timespec* tsp = nullptr;
  if (timeout_nanos >= 0) {
    ts.tv_sec = timeout_nanos / 1'000'000'000;
    ts.tv_nsec = timeout_nanos % 1'000'000'000;
    tsp = &ts;
  }
  io_uring_cqe* cqe = nullptr;
  int ret;
  if (timeout_nanos == 0) {
    ret = io_uring_submit(&ring_);
  } else {
    ret = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, tsp, nullptr);
  }
  if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN &&
      ret != -EBUSY) {
    return ErrnoStatus("io_uring_enter", -ret);
  }

  // Copy the batch out before dispatching: callbacks queue and submit new
  // requests, whose completions belong to the next Wait.
  batch_.clear();
  unsigned head;
  unsigned seen = 0;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    batch_.push_back({cqe->user_data, cqe->res});
    ++seen;
  }
  io_uring_cq_advance(&ring_, seen);

  int dispatched = 0;
  fired_.clear();
  for (const Completion& c : batch_) {
    if (c.user_data == kIgnored) continue;
    const int fd = static_cast<int>(c.user_data >> 32);
    const uint32_t seq = static_cast<uint32_t>(c.user_data);
    Slot* slot = SlotOf(fd);
    PollerEntry* entry = slot != nullptr ? slot->entry : nullptr;
    // Removed, re-added or re-armed since: not this entry's event.
    if (slot == nullptr || entry == nullptr || slot->seq != seq ||
        slot->armed_mask == 0) {
      continue;
    }
    if (c.res == -ECANCELED) continue;
    slot->armed_mask = 0;  // one-shot: this request is done
    fired_.push_back(fd);
    const uint32_t raw = c.res < 0 ? (kError | kReadable | kWritable)
                                   : FromPoll(static_cast<uint32_t>(c.res));
    if (Dispatch(entry, raw)) ++dispatched;
  }
  // Level-triggered: what fired and still wants events is asked again.
  for (int fd : fired_) {
    Slot& slot = slots_[fd];
    const PollerEntry* entry = slot.entry;
    if (entry != nullptr && slot.armed_mask == 0 && entry->interest() != 0) {
      Arm(fd, slot, entry->interest());
    }
  }
  return dispatched;
}

}  // namespace nbio
