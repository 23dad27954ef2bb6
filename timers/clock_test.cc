#include "timers/clock.h"

#include <cstdint>
#include <limits>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace nbio {
namespace {

TEST(MonotonicClockTest, NeverGoesBackwards) {
  MonotonicClock clock;
  int64_t last = clock.NowNanos();
  for (int i = 0; i < 10000; ++i) {
    const int64_t now = clock.NowNanos();
    ASSERT_GE(now, last);
    last = now;
  }
}

TEST(MonotonicClockTest, AgreesWithDefaultClock) {
  Clock* clock = DefaultClock();
  ASSERT_NE(clock, nullptr);
  EXPECT_EQ(clock, DefaultClock());  // one process-wide instance
  MonotonicClock mine;
  const int64_t a = mine.NowNanos();
  const int64_t b = clock->NowNanos();
  const int64_t c = mine.NowNanos();
  EXPECT_LE(a, b);  // same time source
  EXPECT_LE(b, c);
}

TEST(ManualClockTest, StartsAtZeroOrWhereTold) {
  EXPECT_EQ(ManualClock().NowNanos(), 0);
  EXPECT_EQ(ManualClock(-5).NowNanos(), -5);
  EXPECT_EQ(ManualClock(123456789).NowNanos(), 123456789);
}

TEST(ManualClockTest, MovesOnlyWhenTold) {
  ManualClock clock(100);
  EXPECT_EQ(clock.NowNanos(), 100);
  EXPECT_EQ(clock.NowNanos(), 100);
  clock.Advance(absl::Microseconds(3));
  EXPECT_EQ(clock.NowNanos(), 3100);
  clock.Advance(absl::ZeroDuration());
  EXPECT_EQ(clock.NowNanos(), 3100);
  clock.Set(3100);  // the same time is not backwards
  clock.Set(1000000);
  EXPECT_EQ(clock.NowNanos(), 1000000);
}

TEST(ManualClockTest, WorksThroughTheInterface) {
  ManualClock manual;
  const Clock& clock = manual;
  manual.Advance(absl::Seconds(2));
  EXPECT_EQ(clock.NowNanos(), 2000000000);
}

TEST(ManualClockTest, AdvanceSaturatesInsteadOfOverflowing) {
  ManualClock clock(std::numeric_limits<int64_t>::max() - 10);
  clock.Advance(absl::Nanoseconds(100));
  EXPECT_EQ(clock.NowNanos(), std::numeric_limits<int64_t>::max());
  clock.Advance(absl::InfiniteDuration());
  EXPECT_EQ(clock.NowNanos(), std::numeric_limits<int64_t>::max());
}

TEST(ManualClockDeathTest, SetBackwardsIsABug) {
  ManualClock clock(1000);
  EXPECT_DEATH(clock.Set(999), "must not go backwards");
}

TEST(ManualClockDeathTest, NegativeAdvanceIsABug) {
  ManualClock clock;
  EXPECT_DEATH(clock.Advance(absl::Nanoseconds(-1)), "must not go backwards");
}

}  // namespace
}  // namespace nbio
