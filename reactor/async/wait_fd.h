// Waiting for fd readiness as a future: the waiting queue's user-facing end.
//
//   WaitReadable(loop, fd, DeadlineToken(loop, absl::Seconds(1)))
//       .OnComplete([](absl::Status s) {
//         if (s.ok()) { /* read(fd, ...) will not block */ }
//       });
//
// Each wait is a one-shot fd watcher: registered when the wait starts,
// removed when it completes. A pending wait counts in LoopLoad::fds_waiting
// and keeps EventLoop::Run() going. For a stream of events on a long-lived
// fd, an FdWatcher (event_loop.h) costs less than a future per event.
#ifndef NBIO_REACTOR_ASYNC_WAIT_FD_H_
#define NBIO_REACTOR_ASYNC_WAIT_FD_H_

#include <cstdint>

#include "reactor/async/cancellation.h"
#include "reactor/async/future.h"
#include "reactor/event_loop.h"

namespace nbio {

// Completes with the PollEvents seen (poller.h: kReadable / kWritable, with
// kError / kHangup when the fd has an error or was hung up, in which case
// the next read or write reports it) once `fd` is ready for some of
// `interest` (kReadable | kWritable, not 0). Fails with:
//  - the token's reason when `token` is cancelled first (the fd is
//    unregistered at once; a token already cancelled fails the wait without
//    registering);
//  - the poller's error when it cannot watch `fd`: an fd the backend cannot
//    take (select: fd >= FD_SETSIZE), a bad fd, or ALREADY_EXISTS for an fd
//    that something else on this loop is already watching (one FdWatcher,
//    wait or connection per fd at a time, on every backend: poller.h).
// Dropping the future unconsumed unregisters the fd. Does not own the fd:
// end the wait (cancel, or drop the future) before closing it. One
// allocation. Loop thread only.
Future<uint32_t> WaitFd(EventLoop* loop, int fd, uint32_t interest,
                        const CancellationToken& token = {});

// WaitFd for kReadable / kWritable, completing with OK instead of the events
// (an error or hang-up also completes it OK: the read or write that follows
// reports it).
Future<void> WaitReadable(EventLoop* loop, int fd,
                          const CancellationToken& token = {});
Future<void> WaitWritable(EventLoop* loop, int fd,
                          const CancellationToken& token = {});

}  // namespace nbio

#endif  // NBIO_REACTOR_ASYNC_WAIT_FD_H_
