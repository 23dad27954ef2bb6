#include "reactor/poller/poller.h"

#include <climits>

#include "absl/strings/str_cat.h"
#include "queue/base/check.h"

namespace nbio {

absl::Status Poller::Add(PollerEntry* entry, int fd, uint32_t interest) {
  NBIO_CHECK(!entry->is_registered());
  NBIO_CHECK(fd >= 0);
  NBIO_CHECK((interest & ~(kReadable | kWritable)) == 0);
  if (IsRegistered(fd)) {
    return absl::AlreadyExistsError(absl::StrCat(
        name(), " poller: fd ", fd,
        " is already registered (one watcher, wait or connection per fd)"));
  }
  entry->backend_flags_ = 0;
  entry->backend_index_ = -1;
  absl::Status status = AddFd(entry, fd, interest);
  if (!status.ok()) return status;
  const size_t word = static_cast<size_t>(fd) / 64;
  if (word >= registered_.size()) registered_.resize(word + 1);
  registered_[word] |= uint64_t{1} << (fd % 64);
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
  registered_[static_cast<size_t>(entry->fd_) / 64] &=
      ~(uint64_t{1} << (entry->fd_ % 64));
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
