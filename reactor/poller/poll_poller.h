// The poll(2) backend: no fd ceiling, O(registered fds) per Wait.
//
// Keeps a dense pollfd array and, beside it, the entry of each slot; an entry
// remembers its slot, so Modify and Remove are O(1). Remove during dispatch
// leaves a hole (fd -1, which poll ignores) and clears the slot's revents, so
// neither the removed entry nor a new one that reuses the fd sees stale
// readiness; holes are filled from the tail before the next poll().
#ifndef NBIO_REACTOR_POLLER_POLL_POLLER_H_
#define NBIO_REACTOR_POLLER_POLL_POLLER_H_

#include <poll.h>

#include <memory>
#include <vector>

#include "reactor/poller/poller.h"

namespace nbio {

class PollPoller final : public Poller {
 public:
  PollPoller() = default;
  ~PollPoller() override = default;

  const char* name() const override { return "poll"; }
  absl::StatusOr<int> Wait(int64_t timeout_nanos) override;

 private:
  absl::Status AddFd(PollerEntry* entry, int fd, uint32_t interest) override;
  absl::Status ModifyFd(PollerEntry* entry, uint32_t interest) override;
  void RemoveFd(PollerEntry* entry) override;
  void Compact();

  std::vector<pollfd> pollfds_;
  std::vector<PollerEntry*> entries_;  // parallel to pollfds_; null = hole
  int holes_ = 0;
  bool dispatching_ = false;
};

}  // namespace nbio

#endif  // NBIO_REACTOR_POLLER_POLL_POLLER_H_
