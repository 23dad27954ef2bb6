#include "reactor/poller/poller.h"

#include <climits>

namespace nbio {

int Poller::TimeoutMillis(int64_t timeout_nanos) {
  if (timeout_nanos < 0) return -1;
  constexpr int64_t kNanosPerMilli = 1000 * 1000;
  const int64_t millis = timeout_nanos / kNanosPerMilli +
                         (timeout_nanos % kNanosPerMilli != 0 ? 1 : 0);
  return millis > INT_MAX ? INT_MAX : static_cast<int>(millis);
}

}  // namespace nbio
