// The poller: the one polymorphic seam of the reactor.
//
// A Poller waits for readiness on a set of file descriptors and reports it.
// The event loop owns exactly one and never knows which kind: select, poll,
// epoll and io_uring implement this interface, one file pair each, and are
// created by name at run time (poller_registry.h); the loop does not change.
//
// A new backend derives from Poller, implements exactly these five calls and
// registers itself in poller_registry.cc:
//   name()            its name for EventLoop::Options::backend;
//   AddFd()           tell the kernel about a new entry;
//   ModifyFd()        tell it a changed interest;
//   RemoveFd()        forget an entry (and drop its events still pending in
//                     a Wait in progress);
//   Wait()            wait, then Dispatch() each ready entry.
// A completion backend also overrides streams() and returns its
// StreamEngine (stream_engine.h): the stream operations it performs itself
// ("io_uring" does; readiness backends return nullptr).
// The public Add / Modify / Remove here do what every backend would repeat:
// the argument checks, the entry's fd and interest, the counts (size(),
// active()) and the table of which entry has which fd. A backend never
// writes them.
//
// What the loop registers is a PollerEntry: the fd, the interest, and the
// function to call with the readiness. An entry is embedded in whatever owns
// the fd (a watcher, a connection), so registering never allocates per fd in
// the loop, and the poller does not own it.
//
// Semantics every backend must honour (the conformance suite in
// //tests:reactor_conformance_test checks them):
//   - Level-triggered: an fd that stays ready is reported on every Wait.
//   - Interest is told to the kernel only when it changes. An entry with no
//     interest is not in the kernel's set at all (as in libuv), so a peer's
//     hang-up cannot make a paused reader spin.
//   - Only what the entry is interested in *now* is delivered: an interest
//     dropped earlier in the same batch is not reported.
//   - An entry removed during dispatch, or whose fd was removed and added
//     again during dispatch, receives none of this Wait's remaining events.
//   - One entry per fd: adding a second entry for an fd that is registered
//     (with or without interest) fails with ALREADY_EXISTS, on every
//     backend, and leaves the first entry as it was. The kernels disagree
//     (epoll says EEXIST only while the first entry has interest, poll
//     and io_uring take both, select has one slot per fd), so the rule is kept
//     here, once, in the fd table libuv keeps too (loop->watchers).
//   - Errors and hang-ups are reported as kError / kHangup together with the
//     entry's kReadable / kWritable interest, so they surface through the
//     read or write path (read() and write() return the error or EOF). The
//     kError / kHangup bits are hints: select cannot tell them apart.
//
// Thread safety: none; a poller belongs to its loop's thread.
#ifndef NBIO_REACTOR_POLLER_POLLER_H_
#define NBIO_REACTOR_POLLER_POLLER_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nbio {

// Interest and readiness bits.
enum PollEvents : uint32_t {
  kReadable = 1u << 0,
  kWritable = 1u << 1,
  kError = 1u << 2,   // reported with kReadable: read() tells which error
  kHangup = 1u << 3,  // the peer closed both directions (or reset)
};

class Poller;
class StreamEngine;

// A registration: embedded in its owner, which must Remove() it from the
// poller before the fd is closed and before the entry is destroyed.
class PollerEntry {
 public:
  // Called from Poller::Wait with the readiness bits (PollEvents).
  using Callback = void (*)(PollerEntry* entry, uint32_t events);

  explicit PollerEntry(Callback callback) : callback_(callback) {}
  PollerEntry(const PollerEntry&) = delete;
  PollerEntry& operator=(const PollerEntry&) = delete;

  int fd() const { return fd_; }
  // The interest last given to Add or Modify (kReadable | kWritable).
  uint32_t interest() const { return interest_; }
  bool is_registered() const { return fd_ >= 0; }

 protected:
  // For an owner whose stream the backend performs (stream_engine.h): such
  // an entry is never registered, and keeps the engine's handle here.
  uint32_t stream_handle() const {
    return static_cast<uint32_t>(backend_index_);
  }
  void set_stream_handle(uint32_t handle) {
    backend_index_ = static_cast<int32_t>(handle);
  }

 private:
  friend class Poller;
  // Ordered so the data ends at byte 18 on LP64: a class deriving from
  // PollerEntry (a TCP connection) may place its own small fields in the
  // 6 bytes of tail padding (Itanium C++ ABI), which keeps an idle
  // connection within its 128-byte budget.
  Callback callback_;
  int fd_ = -1;
  // Backend-private state: the poll backend's slot index and the epoll
  // backend's "interest the kernel has". Kept here so backends need no
  // per-fd map.
  int32_t backend_index_ = -1;
  uint8_t interest_ = 0;
  uint8_t backend_flags_ = 0;
};

class Poller {
 public:
  virtual ~Poller() = default;

  // "select", "poll", "epoll", "io_uring", "io_uring_poll".
  virtual const char* name() const = 0;

  // Starts watching `fd` for `interest` (may be 0: registered but quiet).
  // Errors: the fd cannot be watched by this backend (select: fd >=
  // FD_SETSIZE), or the kernel refused it (EBADF, ENOMEM, EPERM for regular
  // files under epoll), ALREADY_EXISTS when another entry has `fd`. The
  // entry must not be registered already. Allocates only when `fd` is
  // higher than any fd seen before (the fd table grows).
  absl::Status Add(PollerEntry* entry, int fd, uint32_t interest);

  // Changes the interest of a registered entry; a no-op when unchanged.
  absl::Status Modify(PollerEntry* entry, uint32_t interest);

  // Stops watching; the entry receives no further event, not even one already
  // collected by the Wait in progress. A no-op when not registered. Call it
  // before closing the fd.
  void Remove(PollerEntry* entry);

  // Blocks for at most `timeout_nanos` (-1: no limit, 0: do not block; the
  // backend rounds up to its own granularity, so it never returns early for
  // lack of precision), then calls each ready entry's callback. Returns the
  // number of events dispatched. EINTR is not an error (0 events). Only
  // unrecoverable errors (EBADF on the poller's own fd, ENOMEM) are returned.
  virtual absl::StatusOr<int> Wait(int64_t timeout_nanos) = 0;

  // The backend's stream engine when it performs stream I/O itself (a
  // completion backend: stream_engine.h), else nullptr (readiness).
  virtual StreamEngine* streams() { return nullptr; }

  // How many entries are registered.
  int size() const { return size_; }

  // How many registered entries have some interest: what keeps a loop alive,
  // whoever embeds the entry (a watcher, a connection).
  int active() const { return active_; }

 protected:
  // The backend's half of Add: `entry` is not registered yet (its fd() is
  // -1, its backend fields are reset); on success the caller records `fd`
  // and `interest` in it. On error the entry must be left as it was.
  virtual absl::Status AddFd(PollerEntry* entry, int fd, uint32_t interest) = 0;
  // The backend's half of Modify: `interest` differs from entry->interest(),
  // which the caller updates on success.
  virtual absl::Status ModifyFd(PollerEntry* entry, uint32_t interest) = 0;
  // The backend's half of Remove: `entry` is registered (fd(), interest()
  // and the backend fields still hold), though IsRegistered(its fd) is
  // false already; the caller clears it afterwards.
  virtual void RemoveFd(PollerEntry* entry) = 0;

  // Whether an entry has `fd`. O(1). A backend that needs the entry of an
  // fd keeps its own table (select's is bounded by FD_SETSIZE).
  bool IsRegistered(int fd) const {
    const size_t word = static_cast<size_t>(fd) / 64;
    return fd >= 0 && word < registered_.size() &&
           (registered_[word] >> (fd % 64) & 1) != 0;
  }

  // Backend-private state kept in the entry, so backends need no per-fd map.
  static uint8_t& BackendFlags(PollerEntry* e) { return e->backend_flags_; }
  static int32_t& BackendIndex(PollerEntry* e) { return e->backend_index_; }
  // Delivers `raw` readiness, filtered by the entry's current interest as
  // the contract above says. Returns whether anything was delivered.
  static bool Dispatch(PollerEntry* e, uint32_t raw) {
    const uint32_t interest = e->interest_;
    uint32_t events = raw & (interest | kError | kHangup);
    if (raw & (kError | kHangup)) events |= interest;
    if ((events & (kReadable | kWritable)) == 0) return false;
    e->callback_(e, events);
    return true;
  }

  // Rounds a timeout up to whole milliseconds for poll(2)/epoll_wait(2);
  // -1 stays -1, and huge values are capped at INT_MAX ms (24 days: the loop
  // simply waits again).
  static int TimeoutMillis(int64_t timeout_nanos);

 private:
  int size_ = 0;
  int active_ = 0;
  // One bit per fd: whether an entry has it (the one-entry-per-fd rule).
  // fds are small and dense (the kernel hands out the lowest free one). A
  // bit, not a pointer: at 10,000 idle connections a pointer table cost
  // each connection 8 of its 128-byte budget.
  std::vector<uint64_t> registered_;
};

}  // namespace nbio

#endif  // NBIO_REACTOR_POLLER_POLLER_H_
