#include "timers/clock.h"

#include <time.h>

#include <cstdint>
#include <limits>

#include "queue/base/check.h"

namespace nbio {

int64_t MonotonicClock::NowNanos() const {
  struct timespec ts;
  // Cannot fail for CLOCK_MONOTONIC with a valid pointer (the only errors
  // are EFAULT and EINVAL); a failure is a broken invariant, not an outcome.
  NBIO_CHECK(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

Clock* DefaultClock() {
  // Leaked on purpose: nothing that runs at exit may find it destroyed.
  static MonotonicClock* const clock = new MonotonicClock();
  return clock;
}

void ManualClock::Set(int64_t nanos) {
  NBIO_CHECK_MSG(nanos >= now_nanos_, "ManualClock must not go backwards");
  now_nanos_ = nanos;
}

void ManualClock::Advance(absl::Duration d) {
  NBIO_CHECK_MSG(d >= absl::ZeroDuration(),
                 "ManualClock must not go backwards");
  // ToInt64Nanoseconds saturates for huge durations; so does the sum.
  const int64_t step = absl::ToInt64Nanoseconds(d);
  now_nanos_ = step > std::numeric_limits<int64_t>::max() - now_nanos_
                   ? std::numeric_limits<int64_t>::max()
                   : now_nanos_ + step;
}

}  // namespace nbio
