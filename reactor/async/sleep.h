// Sleep: a future that completes after a while on the loop clock, the
// sleeping queue's user-facing end.
//
//   Sleep(loop, absl::Milliseconds(50))
//       .AndThen([] { std::puts("50 ms later"); })
//       .OnComplete([](absl::Status) {});
//
// A pending sleep is a scheduled user timer: it keeps EventLoop::Run() going
// and counts in LoopLoad::timers_sleeping.
#ifndef NBIO_REACTOR_ASYNC_SLEEP_H_
#define NBIO_REACTOR_ASYNC_SLEEP_H_

#include <cstdint>

#include "absl/time/time.h"
#include "reactor/async/cancellation.h"
#include "reactor/async/future.h"
#include "reactor/event_loop.h"

namespace nbio {

// Completes OK `delay` after the loop's current time (EventLoop::NowNanos()),
// never earlier (timer-wheel rounding makes it up to one timer_resolution
// later); a zero or negative delay completes in the next iteration. When
// `token` is cancelled first, the timer stops and the future fails with the
// token's reason; a token already cancelled fails it without starting the
// timer; a cancel after completion changes nothing. Dropping the future
// unconsumed stops the timer. One allocation. Loop thread only.
Future<void> Sleep(EventLoop* loop, absl::Duration delay,
                   const CancellationToken& token = {});

// The same, until `deadline_nanos` on the loop clock.
Future<void> SleepUntil(EventLoop* loop, int64_t deadline_nanos,
                        const CancellationToken& token = {});

}  // namespace nbio

#endif  // NBIO_REACTOR_ASYNC_SLEEP_H_
