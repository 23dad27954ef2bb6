// The epoll(7) backend: the scalable default on Linux.
//
// Level-triggered. The kernel learns an fd's interest once when it is added
// and again only when the interest really changes (a re-arm per operation is
// the classic 25% throughput loss); an entry with no interest leaves the
// kernel's set until it has some again. The event array grows when a Wait fills
// it, up to kMaxEvents. Before dispatching, each entry's slot in the batch is
// noted in the entry, so removing an entry during dispatch drops its pending
// event in O(1) (libuv scans the rest of the batch instead): nothing is ever
// delivered to a removed or re-added entry.
#ifndef NBIO_REACTOR_POLLER_EPOLL_POLLER_H_
#define NBIO_REACTOR_POLLER_EPOLL_POLLER_H_

#include <sys/epoll.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "reactor/poller/poller.h"

namespace nbio {

class EpollPoller final : public Poller {
 public:
  // epoll_create1(EPOLL_CLOEXEC); the error names the syscall and errno.
  static absl::StatusOr<std::unique_ptr<EpollPoller>> Create();
  ~EpollPoller() override;

  const char* name() const override { return "epoll"; }
  absl::StatusOr<int> Wait(int64_t timeout_nanos) override;

  static constexpr int kInitialEvents = 256;
  static constexpr int kMaxEvents = 4096;

 private:
  explicit EpollPoller(int epfd);
  absl::Status AddFd(PollerEntry* entry, int fd, uint32_t interest) override;
  absl::Status ModifyFd(PollerEntry* entry, uint32_t interest) override;
  void RemoveFd(PollerEntry* entry) override;
  // Tells the kernel `interest` for `fd`: ADD, MOD or DEL as needed.
  absl::Status Control(PollerEntry* entry, int fd, uint32_t interest);

  int epfd_;
  std::vector<epoll_event> events_;
  // During dispatch: the index of the event being dispatched and the batch
  // size, so Remove() can drop the entry's later events in this batch.
  bool dispatching_ = false;
  int dispatch_index_ = 0;
  int dispatch_count_ = 0;
};

}  // namespace nbio

#endif  // NBIO_REACTOR_POLLER_EPOLL_POLLER_H_
