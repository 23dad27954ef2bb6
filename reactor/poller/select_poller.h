// The select(2) backend: the seed's mechanism, kept for portability and
// comparison.
//
// select() can only name fds below FD_SETSIZE (1024 on Linux). Registering a
// larger fd is an absl::Status error (RESOURCE_EXHAUSTED, naming the fd and
// the other backends), never an out-of-bounds FD_SET. Wait copies the two
// interest sets, calls select(), then walks the fds up to the highest one;
// Remove during dispatch clears the fd from the results, so neither the
// removed entry nor a new one reusing the fd sees stale readiness.
#ifndef NBIO_REACTOR_POLLER_SELECT_POLLER_H_
#define NBIO_REACTOR_POLLER_SELECT_POLLER_H_

#include <sys/select.h>

#include "reactor/poller/poller.h"

namespace nbio {

class SelectPoller final : public Poller {
 public:
  SelectPoller();
  ~SelectPoller() override = default;

  const char* name() const override { return "select"; }
  absl::StatusOr<int> Wait(int64_t timeout_nanos) override;

 private:
  absl::Status AddFd(PollerEntry* entry, int fd, uint32_t interest) override;
  absl::Status ModifyFd(PollerEntry* entry, uint32_t interest) override;
  void RemoveFd(PollerEntry* entry) override;
  void SetInterestBits(int fd, uint32_t interest);

  fd_set read_interest_;
  fd_set write_interest_;
  // The sets select() returned, while dispatching them.
  fd_set read_ready_;
  fd_set write_ready_;
  int max_fd_ = -1;
  // The entry of each fd (select() watches fds below FD_SETSIZE only).
  PollerEntry* by_fd_[FD_SETSIZE] = {};
};

}  // namespace nbio

#endif  // NBIO_REACTOR_POLLER_SELECT_POLLER_H_
