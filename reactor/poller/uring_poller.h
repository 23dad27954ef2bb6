// The io_uring readiness backend: the Poller contract over IORING_OP_POLL_ADD.
//
// Each registered entry with interest has one one-shot poll request in the
// ring. When it completes, the entry is dispatched and, if it still has
// interest, re-armed before the next wait: a still-ready fd completes again
// at once, which gives the level-triggered semantics the contract asks for.
// Changing the interest replaces the request; no interest means no request
// (so a hang-up cannot wake a paused reader). The wait for completions and
// for the loop's next timer is one io_uring_enter (EXT_ARG timeout where the
// kernel has it).
//
// Requests are tagged with the fd and a per-fd sequence number that
// changes on every Remove, Add and re-arm, so a completion that belongs to
// a request already replaced or removed (including one collected in the
// same batch) is recognised and dropped: nothing reaches a removed or
// re-added entry. Remove() submits its cancel at once, so the kernel lets
// go of the file before the owner closes it.
//
// Setup flags: COOP_TASKRUN | TASKRUN_FLAG where the kernel has them (no
// interrupt to run completion work on the loop's thread), else none.
// SINGLE_ISSUER | DEFER_TASKRUN bind a ring to the thread that submits
// first, while a loop may be set up on one thread and run on another, so
// this backend does not use them.
//
// This backend carries readiness only, like epoll, poll and select; it is
// "io_uring_poll". The "io_uring" backend (uring_stream_poller.h) derives
// from it and adds stream I/O on direct descriptors.
#ifndef NBIO_REACTOR_POLLER_URING_POLLER_H_
#define NBIO_REACTOR_POLLER_URING_POLLER_H_

#include <liburing.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "reactor/poller/poller.h"

namespace nbio {

class UringPoller : public Poller {
 public:
  // io_uring_queue_init_params with the flags above. Errors name the cause:
  // no io_uring in this kernel (ENOSYS), disabled by sysctl
  // kernel.io_uring_disabled or refused by a seccomp profile (EPERM), ...
  static absl::StatusOr<std::unique_ptr<UringPoller>> Create();
  ~UringPoller() override;

  const char* name() const override { return "io_uring_poll"; }
  absl::StatusOr<int> Wait(int64_t timeout_nanos) override;

  // Submission and completion queue entries. A ring's memory is pinned and
  // counted against RLIMIT_MEMLOCK of the *user* (all of the user's
  // processes together: 8 MiB by default) unless the process has
  // CAP_IPC_LOCK, so a loop's ring is kept small (about 48 KiB); Create()
  // halves it, down to kMinSqEntries, when the kernel says ENOMEM. A full
  // completion queue loses nothing (IORING_FEAT_NODROP: the kernel keeps
  // the overflow and hands it over at the next wait).
  static constexpr unsigned kSqEntries = 256;
  static constexpr unsigned kCqEntries = 2048;
  static constexpr unsigned kMinSqEntries = 32;

 protected:
  UringPoller() = default;
  // Sets up the ring (Create's work).
  absl::Status Init();
  // For a derived backend that blocks in another ring: this ring's fd (it
  // polls readable while completions wait), whether completions wait, and
  // handing queued requests to the kernel (no system call when none are
  // queued and no completion work is flagged).
  int readiness_ring_fd() const { return ring_.ring_fd; }
  bool HasCompletions() const { return io_uring_cq_ready(&ring_) > 0; }
  void SubmitPending() { io_uring_submit(&ring_); }

 private:
  // The ring's state for one fd.
  struct Slot {
    PollerEntry* entry = nullptr;  // registered for this fd, or nullptr
    uint32_t seq = 0;              // tag of the request in the ring, if armed
    uint32_t armed_mask = 0;       // poll mask of that request; 0: none
  };

  absl::Status AddFd(PollerEntry* entry, int fd, uint32_t interest) override;
  absl::Status ModifyFd(PollerEntry* entry, uint32_t interest) override;
  void RemoveFd(PollerEntry* entry) override;
  // A free SQE, submitting what is queued when the ring is full.
  io_uring_sqe* GetSqe();
  // Queues a poll request for `fd`'s interest (a new tag).
  void Arm(int fd, Slot& slot, uint32_t interest);
  // Queues the cancel of `fd`'s request, if any.
  void Disarm(int fd, Slot& slot);
  Slot* SlotOf(int fd) {
    return fd >= 0 && static_cast<size_t>(fd) < slots_.size() ? &slots_[fd]
                                                              : nullptr;
  }

  io_uring ring_{};
  bool ring_ready_ = false;
  std::vector<Slot> slots_;  // indexed by fd
  struct Completion {
    uint64_t user_data;
    int32_t res;
  };
  std::vector<Completion> batch_;  // one Wait's completions
  std::vector<int> fired_;         // fds dispatched this Wait (re-arm)
};

}  // namespace nbio

#endif  // NBIO_REACTOR_POLLER_URING_POLLER_H_
