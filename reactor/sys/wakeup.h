// Wakes a loop blocked in its poller, from any thread or a signal handler.
//
// An eventfd where the kernel has one, else a non-blocking self-pipe (also
// selectable for tests). Signal() is async-signal-safe and thread-safe and
// coalesces: any number of Signal() calls before the next Drain() make the
// fd readable once. Drain() belongs to the loop's thread.
#ifndef NBIO_REACTOR_SYS_WAKEUP_H_
#define NBIO_REACTOR_SYS_WAKEUP_H_

#include <memory>

#include "absl/status/statusor.h"

namespace nbio {

class Wakeup {
 public:
  enum class Kind { kEventFd, kPipe };

  // kEventFd falls back to kPipe when eventfd() is unavailable (ENOSYS).
  static absl::StatusOr<std::unique_ptr<Wakeup>> Create(
      Kind preferred = Kind::kEventFd);
  ~Wakeup();

  Wakeup(const Wakeup&) = delete;
  Wakeup& operator=(const Wakeup&) = delete;

  Kind kind() const { return kind_; }
  // The fd to watch for readability.
  int fd() const { return read_fd_; }
  // Makes fd() readable. Any thread, async-signal-safe, never blocks.
  void Signal();
  // Clears the signal; returns whether there was one. Loop thread only.
  bool Drain();

 private:
  Wakeup(Kind kind, int read_fd, int write_fd)
      : kind_(kind), read_fd_(read_fd), write_fd_(write_fd) {}

  const Kind kind_;
  const int read_fd_;
  const int write_fd_;  // == read_fd_ for an eventfd
};

}  // namespace nbio

#endif  // NBIO_REACTOR_SYS_WAKEUP_H_
