// Time sources for the event loop and its timers.
//
// Code that reads the clock takes a Clock* it can be given (STYLE.md, habit
// 7): the loop uses DefaultClock(), tests hand in a ManualClock and move time
// themselves, so no timer test ever sleeps.
//
//   nbio::ManualClock clock;
//   nbio::TimerWheel wheel(clock.NowNanos());
//   clock.Advance(absl::Milliseconds(5));
//   wheel.Advance(clock.NowNanos());
#ifndef NBIO_TIMERS_CLOCK_H_
#define NBIO_TIMERS_CLOCK_H_

#include <cstdint>

#include "absl/time/time.h"

namespace nbio {

// A monotonic time source: NowNanos() never goes backwards. The epoch is
// arbitrary (only differences mean anything), and times are nanoseconds in an
// int64_t, which covers 292 years either side of it.
//
// Thread safety: NowNanos() is const and may be called from any thread for
// the implementations below except ManualClock, which belongs to one thread.
class Clock {
 public:
  virtual ~Clock() = default;

  // The current time in nanoseconds since the clock's epoch.
  virtual int64_t NowNanos() const = 0;
};

// CLOCK_MONOTONIC: steady, unaffected by changes to the wall clock, stopped
// while the machine is suspended. Stateless; thread-safe.
class MonotonicClock final : public Clock {
 public:
  int64_t NowNanos() const override;
};

// The process-wide MonotonicClock. Never destroyed, so it stays usable from
// static destructors and other threads at exit. Thread-safe.
Clock* DefaultClock();

// A clock that only moves when told to, for tests. Starts at `start_nanos`.
// Not thread-safe: one thread sets and reads it.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_nanos = 0) : now_nanos_(start_nanos) {}

  // Moves the clock to `nanos`, which must not be earlier than NowNanos()
  // (NBIO_CHECK): a monotonic clock never goes backwards.
  void Set(int64_t nanos);

  // Moves the clock forward by `d`, which must not be negative (NBIO_CHECK).
  // Saturates at the largest representable time instead of overflowing.
  void Advance(absl::Duration d);

  int64_t NowNanos() const override { return now_nanos_; }

 private:
  int64_t now_nanos_;
};

}  // namespace nbio

#endif  // NBIO_TIMERS_CLOCK_H_
