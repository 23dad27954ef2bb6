#include "reactor/poller/poller.h"

#include <climits>

#include "absl/strings/str_cat.h"
#include "queue/base/check.h"

namespace nbio {

absl::Status Poller::Add(PollerEntry* entry, int fd, uint32_t interest) {
  NBIO_CHECK(!entry->is_registered());
  NBIO_CHECK(fd >= 0);
  NBIO_CHECK((interest & ~(kReadable | kWritable)) == 0);
  if (EntryForFd(fd) != nullptr) {
    return absl::AlreadyExistsError(absl::StrCat(
        name(), " poller: fd ", fd,
        " is already registered (one watcher, wait or connection per fd)"));
  }
  entry->backend_flags_ = 0;
  entry->backend_index_ = -1;
  absl::Status status = AddFd(entry, fd, interest);
  if (!status.ok()) return status;
  if (static_cast<size_t>(fd) >= by_fd_.size()) by_fd_.resize(fd + 1);
  by_fd_[fd] = entry;
  entry->fd_ = fd;
  entry->interest_ = static_cast<uint8_t>(interest);
  ++size_;
  if (interest != 0) ++active_;
  return absl::OkStatus();
}

absl::Status Poller::Modify(PollerEntry* entry, uint32_t interest) {
  NBIO_CHECK(entry->is_registered());
  NBIO_CHECK((interest & ~(kReadable | kWritable)) == 0);
  if (interest == entry->interest_) return absl::OkStatus();
  absl::Status status = ModifyFd(entry, interest);
  if (!status.ok()) return status;
  active_ += (interest != 0 ? 1 : 0) - (entry->interest_ != 0 ? 1 : 0);
  entry->interest_ = static_cast<uint8_t>(interest);
  return absl::OkStatus();
}

void Poller::Remove(PollerEntry* entry) {
  if (!entry->is_registered()) return;
  by_fd_[entry->fd_] = nullptr;
  RemoveFd(entry);
  if (entry->interest_ != 0) --active_;
  --size_;
  entry->fd_ = -1;
  entry->interest_ = 0;
  entry->backend_flags_ = 0;
  entry->backend_index_ = -1;
}

int Poller::TimeoutMillis(int64_t timeout_nanos) {
  if (timeout_nanos < 0) return -1;
  constexpr int64_t kNanosPerMilli = 1000 * 1000;
  const int64_t millis = timeout_nanos / kNanosPerMilli +
                         (timeout_nanos % kNanosPerMilli != 0 ? 1 : 0);
  return millis > INT_MAX ? INT_MAX : static_cast<int>(millis);
}

}  // namespace nbio
