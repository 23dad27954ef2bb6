// Edge cases of the timer wheel, each spelled out. The randomized comparison
// with a model is in timer_wheel_model_test.cc.
#include "timers/timer_wheel.h"

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "timers/clock.h"
#include "timers/timer_wheel_model.h"

namespace nbio {
namespace {

constexpr int64_t kMs = 1000000;
constexpr int64_t kMaxTime = std::numeric_limits<int64_t>::max();

// A timer that counts its runs and may act when it runs.
struct TestTimer : TimerNode {
  TestTimer() : TimerNode(&OnFire) {}
  static void OnFire(TimerNode* node) {
    TestTimer* self = static_cast<TestTimer*>(node);
    ++self->runs;
    if (self->on_fire) self->on_fire(self);
  }
  int runs = 0;
  std::function<void(TestTimer*)> on_fire;
};

// Advances to NextExpiry() until `timer` has run, checking that nothing runs
// early and that every wake-up makes progress; returns the wake-ups needed.
int WakeUpsUntilRun(TimerWheel& wheel, TestTimer& timer, int64_t fire_time) {
  int wake_ups = 0;
  std::optional<int64_t> last;
  while (timer.runs == 0) {
    const std::optional<int64_t> next = wheel.NextExpiry();
    EXPECT_TRUE(next.has_value());
    if (!next.has_value()) return wake_ups;
    EXPECT_LE(*next, fire_time);
    if (last.has_value()) {
      EXPECT_GT(*next, *last) << "a wake-up loop";
    }
    last = next;
    wheel.Advance(*next);
    ++wake_ups;
    if (timer.runs == 0) {
      EXPECT_LT(*next, fire_time) << "did not run on time";
    }
    if (wake_ups > 100) {
      ADD_FAILURE() << "too many wake-ups";
      break;
    }
  }
  EXPECT_EQ(wheel.now(), fire_time);
  return wake_ups;
}

// Schedules a timer for `deadline` and checks NextExpiry() (equal to
// `next_expiry` if given, else no later than `fire_time` and a multiple of
// the resolution), then that an Advance just before `fire_time` runs nothing
// and one at it runs the timer.
void ExpectRunsAt(TimerWheel& wheel, int64_t deadline, int64_t fire_time,
                  std::optional<int64_t> next_expiry = std::nullopt) {
  TestTimer t;
  wheel.Schedule(&t, deadline);
  const std::optional<int64_t> next = wheel.NextExpiry();
  ASSERT_TRUE(next.has_value());
  if (next_expiry.has_value()) {
    EXPECT_EQ(*next, *next_expiry);
  } else {
    EXPECT_LE(*next, fire_time);
    EXPECT_EQ(*next % wheel.resolution_nanos(), 0);
  }
  EXPECT_EQ(wheel.Advance(fire_time - 1), 0u);
  EXPECT_EQ(wheel.Advance(fire_time), 1u);
  EXPECT_EQ(t.runs, 1);
}

TEST(UnsignedDividerTest, MatchesDivision) {
  const uint64_t kDivisors[] = {1,
                                2,
                                3,
                                7,
                                10,
                                1000,
                                1000000,
                                1000003,
                                1000000000,
                                (uint64_t{1} << 32) - 1,
                                uint64_t{1} << 32,
                                (uint64_t{1} << 32) + 1,
                                (uint64_t{1} << 63) - 1,
                                uint64_t{1} << 63};
  std::mt19937_64 rng(42);
  for (uint64_t d : kDivisors) {
    const timers_internal::UnsignedDivider divider(d);
    const uint64_t kEdges[] = {0,
                               1,
                               d - 1,
                               d,
                               d + 1,
                               2 * d,
                               ~uint64_t{0},
                               ~uint64_t{0} - 1,
                               ~uint64_t{0} / d * d,
                               ~uint64_t{0} / d * d - 1};
    for (uint64_t n : kEdges)
      EXPECT_EQ(divider.Divide(n), n / d) << n << "/" << d;
    for (int i = 0; i < 20000; ++i) {
      const uint64_t n = rng() >> (rng() % 64);
      ASSERT_EQ(divider.Divide(n), n / d) << n << "/" << d;
    }
  }
  for (int i = 0; i < 2000; ++i) {
    const uint64_t d = 1 + (rng() >> (1 + rng() % 63));
    const timers_internal::UnsignedDivider divider(d);
    for (int j = 0; j < 100; ++j) {
      const uint64_t n = rng() >> (rng() % 64);
      ASSERT_EQ(divider.Divide(n), n / d) << n << "/" << d;
    }
  }
}

TEST(TimerNodeTest, FitsIn32BytesAndStartsIdle) {
  EXPECT_LE(sizeof(TimerNode), 32u);
  TimerNode node;
  EXPECT_FALSE(node.is_scheduled());
  EXPECT_EQ(node.deadline(), 0);
  EXPECT_EQ(node.callback(), nullptr);
  node.set_callback(&TestTimer::OnFire);
  EXPECT_EQ(node.callback(), &TestTimer::OnFire);
}

TEST(TimerWheelTest, EmptyWheel) {
  TimerWheel wheel(0);
  EXPECT_TRUE(wheel.empty());
  EXPECT_EQ(wheel.NextExpiry(), std::nullopt);
  EXPECT_EQ(wheel.Advance(1000 * kMs), 0u);
  EXPECT_EQ(wheel.now(), 1000 * kMs);
  EXPECT_EQ(wheel.resolution_nanos(), kMs);
}

TEST(TimerWheelTest, RunsAtTheDeadlineNeverBefore) {
  TimerWheel wheel(0);
  TestTimer t;
  wheel.Schedule(&t, 5 * kMs);
  EXPECT_TRUE(t.is_scheduled());
  EXPECT_FALSE(wheel.empty());
  EXPECT_EQ(t.deadline(), 5 * kMs);
  EXPECT_EQ(wheel.NextExpiry(), 5 * kMs);
  EXPECT_EQ(wheel.Advance(5 * kMs - 1), 0u);
  EXPECT_EQ(t.runs, 0);
  EXPECT_EQ(wheel.Advance(5 * kMs), 1u);
  EXPECT_EQ(t.runs, 1);
  EXPECT_FALSE(t.is_scheduled());
  EXPECT_EQ(t.deadline(), 5 * kMs);  // kept after running
  EXPECT_TRUE(wheel.empty());
  EXPECT_EQ(wheel.NextExpiry(), std::nullopt);
  EXPECT_EQ(wheel.Advance(100 * kMs), 0u);  // exactly once
  EXPECT_EQ(t.runs, 1);
}

TEST(TimerWheelTest, DeadlinesRoundUpToATick) {
  TimerWheel wheel(0);
  ExpectRunsAt(wheel, 5 * kMs + 1, 6 * kMs, 6 * kMs);
}

TEST(TimerWheelTest, DeadlineEqualToNow) {
  // On a tick boundary: due at once, runs on the next Advance, even at the
  // same time.
  TimerWheel wheel(5 * kMs);
  TestTimer t;
  wheel.Schedule(&t, 5 * kMs);
  EXPECT_EQ(wheel.NextExpiry(), 5 * kMs);
  EXPECT_EQ(wheel.Advance(5 * kMs), 1u);

  // Between ticks: rounds up to the next boundary.
  TimerWheel mid(5 * kMs + kMs / 2);
  TestTimer u;
  mid.Schedule(&u, 5 * kMs + kMs / 2);
  EXPECT_EQ(mid.NextExpiry(), 6 * kMs);
  EXPECT_EQ(mid.Advance(5 * kMs + kMs / 2), 0u);
  EXPECT_EQ(mid.Advance(6 * kMs), 1u);
}

TEST(TimerWheelTest, PastDeadlineRunsOnTheNextAdvance) {
  TimerWheel wheel(100 * kMs);
  TestTimer a, b;
  wheel.Schedule(&a, 40 * kMs);
  wheel.Schedule(&b, std::numeric_limits<int64_t>::min());
  // Not later than the earliest firing time; in the past, so poll returns at
  // once.
  ASSERT_TRUE(wheel.NextExpiry().has_value());
  EXPECT_LE(*wheel.NextExpiry(), std::numeric_limits<int64_t>::min() + kMs);
  EXPECT_EQ(wheel.Advance(100 * kMs), 2u);
  EXPECT_EQ(a.runs, 1);
  EXPECT_EQ(b.runs, 1);
  EXPECT_TRUE(wheel.empty());
}

TEST(TimerWheelTest, OverdueTimersRunFirstThenInDeadlineOrder) {
  TimerWheel wheel(0);
  std::vector<int> order;
  TestTimer t[5];
  for (int i = 0; i < 5; ++i) {
    t[i].on_fire = [&order, i](TestTimer*) { order.push_back(i); };
  }
  wheel.Advance(10 * kMs);
  wheel.Schedule(&t[0], 90000 * kMs);  // level 2
  wheel.Schedule(&t[1], 70 * kMs);     // level 1
  wheel.Schedule(&t[2], 11 * kMs);     // level 0
  wheel.Schedule(&t[3], 5 * kMs);      // overdue
  wheel.Schedule(&t[4], 8 * kMs);      // overdue, scheduled after t[3]
  EXPECT_EQ(wheel.Advance(100000 * kMs), 5u);
  EXPECT_EQ(order, (std::vector<int>{3, 4, 2, 1, 0}));
}

TEST(TimerWheelTest, CancelIsANoOpWhenIdle) {
  TimerWheel wheel(0);
  TestTimer t;
  wheel.Cancel(&t);
  EXPECT_FALSE(t.is_scheduled());
  wheel.Schedule(&t, 10 * kMs);
  wheel.Cancel(&t);
  wheel.Cancel(&t);
  EXPECT_FALSE(t.is_scheduled());
  EXPECT_TRUE(wheel.empty());
  EXPECT_EQ(wheel.NextExpiry(), std::nullopt);
  EXPECT_EQ(wheel.Advance(20 * kMs), 0u);
  EXPECT_EQ(t.runs, 0);
}

TEST(TimerWheelTest, NextExpiryFollowsScheduleAndCancel) {
  TimerWheel wheel(0);
  TestTimer a, b;
  wheel.Schedule(&a, 40 * kMs);
  EXPECT_EQ(wheel.NextExpiry(), 40 * kMs);
  EXPECT_EQ(wheel.NextExpiry(), 40 * kMs);  // cached
  wheel.Schedule(&b, 20 * kMs);
  EXPECT_EQ(wheel.NextExpiry(), 20 * kMs);
  wheel.Cancel(&b);
  EXPECT_EQ(wheel.NextExpiry(), 40 * kMs);
  wheel.Schedule(&b, 40 * kMs);  // same slot as a
  wheel.Cancel(&a);
  EXPECT_EQ(wheel.NextExpiry(), 40 * kMs);
  wheel.Cancel(&b);
  EXPECT_EQ(wheel.NextExpiry(), std::nullopt);
}

TEST(TimerWheelTest, NodeDestructorUnlinksAndKeepsBitmapsExact) {
  TimerWheel wheel(0);
  TestTimer keep;
  wheel.Schedule(&keep, 300 * kMs);
  {
    TestTimer gone;
    wheel.Schedule(&gone, 10 * kMs);
    EXPECT_EQ(wheel.NextExpiry(), 10 * kMs);
  }
  // The slot the destroyed node emptied is no longer reported.
  ASSERT_TRUE(wheel.NextExpiry().has_value());
  EXPECT_GT(*wheel.NextExpiry(), 10 * kMs);
  {
    TestTimer gone;
    wheel.Schedule(&gone, 2 * kMs);
  }
  wheel.Cancel(&keep);
  EXPECT_TRUE(wheel.empty());
  EXPECT_EQ(wheel.NextExpiry(), std::nullopt);
  EXPECT_EQ(wheel.Advance(1000 * kMs), 0u);
}

TEST(TimerWheelTest, WheelDestroyedFirstLeavesNodesIdle) {
  TestTimer a, b, c;
  {
    TimerWheel wheel(0);
    wheel.Schedule(&a, 1 * kMs);
    wheel.Schedule(&b, 100000 * kMs);
    wheel.Schedule(&c, -1);  // pending
  }
  EXPECT_FALSE(a.is_scheduled());
  EXPECT_FALSE(b.is_scheduled());
  EXPECT_FALSE(c.is_scheduled());
  EXPECT_EQ(a.runs + b.runs + c.runs, 0);
}

TEST(TimerWheelTest, ReArmWithinTheSameSlot) {
  TimerWheel wheel(0);
  TestTimer t;
  // Level 1, slot 1 covers ticks 64..127.
  wheel.Schedule(&t, 100 * kMs);
  wheel.Schedule(&t, 70 * kMs);  // earlier, same slot
  EXPECT_EQ(t.deadline(), 70 * kMs);
  EXPECT_EQ(wheel.Advance(69 * kMs), 0u);
  EXPECT_EQ(wheel.Advance(70 * kMs), 1u);

  wheel.Schedule(&t, 130 * kMs);  // level 1, slot 2
  wheel.Schedule(&t, 190 * kMs);  // later, same slot
  EXPECT_EQ(wheel.Advance(189 * kMs), 0u);
  EXPECT_EQ(wheel.Advance(190 * kMs), 1u);
}

TEST(TimerWheelTest, ReArmToAnotherSlotOrThePast) {
  TimerWheel wheel(0);
  TestTimer t;
  wheel.Schedule(&t, 100 * kMs);
  wheel.Schedule(&t, 5000 * kMs);
  EXPECT_EQ(wheel.Advance(4999 * kMs), 0u);
  EXPECT_EQ(wheel.Advance(5000 * kMs), 1u);
  wheel.Schedule(&t, 9000 * kMs);
  wheel.Schedule(&t, 5001 * kMs);
  EXPECT_EQ(wheel.Advance(5001 * kMs), 1u);
  wheel.Schedule(&t, 9000 * kMs);
  wheel.Schedule(&t, 0);  // in the past
  EXPECT_EQ(wheel.Advance(5001 * kMs), 1u);
  EXPECT_EQ(t.runs, 3);
  EXPECT_TRUE(wheel.empty());
}

// Deadlines at the level boundaries (63 / 64 / 4095 / 4096 ticks...), from
// elapsed times on and off those boundaries.
TEST(TimerWheelTest, LevelBoundaries) {
  const int64_t kStarts[] = {0, 37, 63, 64, 4000, 4096, (int64_t{1} << 30) - 1};
  for (int64_t start : kStarts) {
    for (uint64_t boundary : timers_testing::kBoundaryTicks) {
      const int64_t ticks = static_cast<int64_t>(boundary);
      SCOPED_TRACE(testing::Message()
                   << "start " << start << " ticks " << ticks);
      // Time runs from an arbitrary point, so construction and elapsed
      // differ.
      TimerWheel wheel(0);
      wheel.Advance(start * kMs);
      TestTimer t;
      const int64_t deadline = (start + ticks) * kMs;
      wheel.Schedule(&t, deadline);
      const int wake_ups = WakeUpsUntilRun(wheel, t, deadline);
      EXPECT_EQ(t.runs, 1);
      // One per level moved through, plus one per 63 top-level slots for a
      // deadline beyond the range.
      EXPECT_LE(wake_ups,
                TimerWheel::kLevels + 1 + ticks / (int64_t{63} << 30));

      // The same deadline reached by one Advance just before and one at it.
      TimerWheel direct(0);
      direct.Advance(start * kMs);
      ExpectRunsAt(direct, deadline, deadline);
    }
  }
}

TEST(TimerWheelTest, NextExpiryMayBeACascadePointAndMakesProgress) {
  TimerWheel wheel(0);
  TestTimer t;
  wheel.Schedule(&t, 5000 * kMs);  // level 2 from tick 0
  const std::optional<int64_t> first = wheel.NextExpiry();
  ASSERT_TRUE(first.has_value());
  EXPECT_LE(*first, 5000 * kMs);
  EXPECT_EQ(*first % kMs, 0);
  EXPECT_LE(WakeUpsUntilRun(wheel, t, 5000 * kMs), 3);
}

// NextExpiry() asked from a callback, mid-Advance, after a slot it may have
// reported has been cascaded away: never a time already passed while a
// timer is still to run.
TEST(TimerWheelTest, NextExpiryFromACallbackIsNotStaleAfterACascade) {
  TimerWheel wheel(0);
  TestTimer a, b, c;
  std::optional<int64_t> seen_by_b;
  a.on_fire = [&](TestTimer*) { wheel.NextExpiry(); };  // caches an answer
  b.on_fire = [&](TestTimer*) { seen_by_b = wheel.NextExpiry(); };
  wheel.Schedule(&a, 1 * kMs);
  wheel.Schedule(&b, 100 * kMs);  // a level-1 slot from tick 0
  wheel.Schedule(&c, 100 * kMs);
  EXPECT_EQ(wheel.Advance(200 * kMs), 3u);
  ASSERT_TRUE(seen_by_b.has_value());  // c was still due
  EXPECT_EQ(*seen_by_b, 100 * kMs);
}

TEST(TimerWheelTest, BeyondTheRangeIsClampedNeverEarly) {
  // 63 * 2^30 ms is 2.1 years; this is 10 years out.
  const int64_t kYear = int64_t{365} * 24 * 3600 * 1000 * kMs;
  TimerWheel wheel(12345);
  TestTimer t;
  const int64_t deadline = 10 * kYear + 7 * kMs;
  wheel.Schedule(&t, deadline);
  // One wake-up per ~2.1 years until in range, then one per level.
  EXPECT_LE(WakeUpsUntilRun(wheel, t, deadline), 5 + TimerWheel::kLevels);
  EXPECT_EQ(t.runs, 1);

  // A single Advance far past it runs it exactly once too.
  TimerWheel jump(0);
  TestTimer u;
  jump.Schedule(&u, deadline);
  EXPECT_EQ(jump.Advance(deadline - 1), 0u);
  EXPECT_EQ(jump.Advance(3 * deadline), 1u);
  EXPECT_TRUE(jump.empty());
}

TEST(TimerWheelTest, EndOfTime) {
  // At 1 ms, INT64_MAX rounds up past the largest time: it can never run.
  TimerWheel wheel(0);
  TestTimer t;
  wheel.Schedule(&t, kMaxTime);
  ASSERT_TRUE(wheel.NextExpiry().has_value());
  EXPECT_EQ(wheel.Advance(kMaxTime), 0u);
  EXPECT_EQ(wheel.NextExpiry(), kMaxTime);  // saturated, never before now
  EXPECT_TRUE(t.is_scheduled());

  // At 1 ns it is a tick like any other.
  TimerWheel fine(0, TimerWheel::Options{absl::Nanoseconds(1)});
  ExpectRunsAt(fine, kMaxTime, kMaxTime);
}

TEST(TimerWheelTest, TimeGoingBackwardsIsIgnored) {
  TimerWheel wheel(0);
  TestTimer t;
  wheel.Schedule(&t, 50 * kMs);
  wheel.Advance(40 * kMs);
  EXPECT_EQ(wheel.Advance(10 * kMs), 0u);
  EXPECT_EQ(wheel.now(), 40 * kMs);
  EXPECT_EQ(wheel.Advance(50 * kMs), 1u);
}

TEST(TimerWheelTest, OtherResolutions) {
  // 10 ms ticks, aligned to multiples of 10 ms since the clock's epoch.
  TimerWheel coarse(3 * kMs, TimerWheel::Options{absl::Milliseconds(10)});
  EXPECT_EQ(coarse.resolution_nanos(), 10 * kMs);
  ExpectRunsAt(coarse, 15 * kMs, 20 * kMs, 20 * kMs);

  // 1 us ticks from an unaligned start.
  TimerWheel micro(12345, TimerWheel::Options{absl::Microseconds(1)});
  ExpectRunsAt(micro, 12845, 13000, 13000);

  // 1 ns ticks: exact.
  TimerWheel nano(-7, TimerWheel::Options{absl::Nanoseconds(1)});
  TestTimer c;
  nano.Schedule(&c, 1000003);
  EXPECT_GT(WakeUpsUntilRun(nano, c, 1000003), 0);

  // An odd resolution and a negative clock.
  TimerWheel odd(-1000, TimerWheel::Options{absl::Nanoseconds(7)});
  // -500 rounds up to -497 = -71 * 7, 72 ticks ahead: NextExpiry() is the
  // cascade point before it.
  ExpectRunsAt(odd, -500, -497);
}

TEST(TimerWheelTest, ScheduleWithinPicksTheCoarsestLevelInTolerance) {
  TimerWheel wheel(0);
  TestTimer t;
  // 100.3 s, 5 s of tolerance: the next level 2 boundary (a multiple of
  // 4096 ms) is 102.4 s, within it; the next level 3 boundary is not.
  wheel.ScheduleWithin(&t, 100300 * kMs, 5000 * kMs);
  EXPECT_EQ(t.deadline(), 102400 * kMs);
  EXPECT_LE(t.deadline(), 105300 * kMs);
  // It sits at the start of its slot: one wake-up, no moving down.
  EXPECT_EQ(wheel.NextExpiry(), 102400 * kMs);
  EXPECT_EQ(WakeUpsUntilRun(wheel, t, 102400 * kMs), 1);

  // Without tolerance it takes a wake-up per level.
  TimerWheel exact(0);
  TestTimer u;
  exact.Schedule(&u, 100300 * kMs);
  EXPECT_GT(WakeUpsUntilRun(exact, u, 100300 * kMs), 1);
}

TEST(TimerWheelTest, ScheduleWithinSmallOrNoTolerance) {
  TimerWheel wheel(0);
  TestTimer t;
  wheel.ScheduleWithin(&t, 100 * kMs, 0);
  EXPECT_EQ(t.deadline(), 100 * kMs);
  wheel.ScheduleWithin(&t, 100 * kMs, -5);
  EXPECT_EQ(t.deadline(), 100 * kMs);
  // The next level 1 boundary, 128 ms, is 28 ticks away.
  wheel.ScheduleWithin(&t, 100 * kMs, 27 * kMs);
  EXPECT_EQ(t.deadline(), 100 * kMs);
  wheel.ScheduleWithin(&t, 100 * kMs, 28 * kMs);
  EXPECT_EQ(t.deadline(), 128 * kMs);
  // The rounding up to a tick counts against the tolerance.
  // 100 ms + 1 rounds up to 101 ms; 128 ms is 28 ms - 1 after it.
  wheel.ScheduleWithin(&t, 100 * kMs + 1, 28 * kMs - 2);
  EXPECT_EQ(t.deadline(), 100 * kMs + 1);
  wheel.ScheduleWithin(&t, 100 * kMs + 1, 28 * kMs - 1);
  EXPECT_EQ(t.deadline(), 128 * kMs);
  // Enough for level 2 (4096 ms) too.
  wheel.ScheduleWithin(&t, 100 * kMs, 3996 * kMs);
  EXPECT_EQ(t.deadline(), 4096 * kMs);
  // Overdue: runs on the next Advance like Schedule.
  wheel.Advance(200 * kMs);
  wheel.ScheduleWithin(&t, 150 * kMs, 100000 * kMs);
  EXPECT_EQ(t.deadline(), 150 * kMs);
  EXPECT_EQ(wheel.Advance(200 * kMs), 1u);
}

TEST(TimerWheelTest, CallbackCancelsAnotherDueInTheSameBatch) {
  TimerWheel wheel(0);
  TestTimer a, b;
  a.on_fire = [&](TestTimer*) { wheel.Cancel(&b); };
  b.on_fire = [&](TestTimer*) { wheel.Cancel(&a); };
  wheel.Schedule(&a, 10 * kMs);
  wheel.Schedule(&b, 10 * kMs);
  EXPECT_EQ(wheel.Advance(10 * kMs), 1u);
  EXPECT_EQ(a.runs + b.runs, 1);
  EXPECT_TRUE(wheel.empty());

  // Due later in the same Advance.
  TestTimer c, d;
  c.on_fire = [&](TestTimer*) { wheel.Cancel(&d); };
  wheel.Schedule(&c, 11 * kMs);
  wheel.Schedule(&d, 500 * kMs);
  EXPECT_EQ(wheel.Advance(1000 * kMs), 1u);
  EXPECT_EQ(c.runs, 1);
  EXPECT_EQ(d.runs, 0);
}

TEST(TimerWheelTest, CallbackDestroysAnotherDueOwner) {
  TimerWheel wheel(0);
  TestTimer a;
  auto* b = new TestTimer;
  auto* c = new TestTimer;
  a.on_fire = [&](TestTimer*) {
    delete b;
    delete c;
  };
  wheel.Schedule(&a, 10 * kMs);
  wheel.Schedule(b, 10 * kMs);    // same batch
  wheel.Schedule(c, 5000 * kMs);  // later in the same Advance
  EXPECT_EQ(wheel.Advance(10000 * kMs), 1u);
  EXPECT_TRUE(wheel.empty());
}

TEST(TimerWheelTest, CallbackDestroysItsOwnOwner) {
  TimerWheel wheel(0);
  int runs = 0;
  for (int i = 0; i < 3; ++i) {
    auto* t = new TestTimer;
    t->on_fire = [&runs](TestTimer* self) {
      ++runs;
      delete self;
    };
    wheel.Schedule(t, (i + 1) * kMs);
  }
  EXPECT_EQ(wheel.Advance(10 * kMs), 3u);
  EXPECT_EQ(runs, 3);
  EXPECT_TRUE(wheel.empty());
}

TEST(TimerWheelTest, ReArmedFromItsCallbackNeverRunsInTheSameAdvance) {
  const int64_t kDeltas[] = {
      0,         // now: due
      -5 * kMs,  // in the past
      1 * kMs,   // due within the span of this Advance
      kMs / 2,   // rounds up to the next tick
      70 * kMs,  // another level, still within the span of this Advance
  };
  for (int64_t delta : kDeltas) {
    SCOPED_TRACE(delta);
    TimerWheel wheel(0);
    TestTimer t;
    t.on_fire = [&](TestTimer* self) {
      wheel.Schedule(self, self->deadline() + delta);
    };
    wheel.Schedule(&t, 10 * kMs);
    // Each Advance runs it once, however far in the past it re-arms.
    EXPECT_EQ(wheel.Advance(1000 * kMs), 1u);
    EXPECT_TRUE(t.is_scheduled());
    ASSERT_TRUE(wheel.NextExpiry().has_value());
    EXPECT_LE(*wheel.NextExpiry(), 1000 * kMs);
    EXPECT_EQ(wheel.Advance(1000 * kMs), 1u);
    EXPECT_EQ(wheel.Advance(1000 * kMs), 1u);
    EXPECT_EQ(t.runs, 3);
  }
}

TEST(TimerWheelTest, ReArmedFromItsCallbackIntoTheFuture) {
  TimerWheel wheel(0);
  TestTimer t;
  t.on_fire = [&](TestTimer* self) {
    wheel.Schedule(self, wheel.now() + 3 * kMs);
  };
  wheel.Schedule(&t, 10 * kMs);
  EXPECT_EQ(wheel.Advance(10 * kMs), 1u);
  EXPECT_EQ(t.deadline(), 13 * kMs);
  EXPECT_EQ(wheel.NextExpiry(), 13 * kMs);
  EXPECT_EQ(wheel.Advance(12 * kMs), 0u);
  EXPECT_EQ(wheel.Advance(13 * kMs), 1u);
}

TEST(TimerWheelTest, PeriodicTimerDoesNotDrift) {
  const int64_t kPeriod = 10 * kMs;
  TimerWheel wheel(0);
  TestTimer t;
  t.on_fire = [&](TestTimer* self) { wheel.ScheduleNextPeriod(self, kPeriod); };
  wheel.Schedule(&t, kPeriod);
  // The loop wakes up late by varying amounts, always under a period.
  const int64_t kLateness[] = {0, 3 * kMs, 9 * kMs, kMs / 3, 7 * kMs, 0, 1};
  int64_t expected_deadline = kPeriod;
  for (int64_t late : kLateness) {
    EXPECT_EQ(wheel.Advance(expected_deadline + late), 1u);
    expected_deadline += kPeriod;
    EXPECT_EQ(t.deadline(), expected_deadline) << "drifted";
  }
  EXPECT_EQ(t.runs, 7);
}

TEST(TimerWheelTest, PeriodicTimerCatchesUpOnePeriodPerAdvance) {
  const int64_t kPeriod = 10 * kMs;
  TimerWheel wheel(0);
  TestTimer t;
  t.on_fire = [&](TestTimer* self) { wheel.ScheduleNextPeriod(self, kPeriod); };
  wheel.Schedule(&t, kPeriod);
  // 45 ms late: the periods at 10, 20, 30, 40 and 50 ms are all due.
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(wheel.Advance(55 * kMs), 1u) << i;
    ASSERT_TRUE(wheel.NextExpiry().has_value());
  }
  EXPECT_EQ(t.runs, 5);
  EXPECT_EQ(t.deadline(), 60 * kMs);
  EXPECT_EQ(wheel.NextExpiry(), 60 * kMs);
  EXPECT_EQ(wheel.Advance(55 * kMs), 0u);
}

TEST(TimerWheelTest, PeriodicTimerCanSkipMissedPeriods) {
  const int64_t kPeriod = 10 * kMs;
  TimerWheel wheel(0);
  TestTimer t;
  t.on_fire = [&](TestTimer* self) {
    wheel.ScheduleNextPeriod(self, kPeriod, TimerWheel::MissedPeriods::kSkip);
  };
  wheel.Schedule(&t, kPeriod);
  EXPECT_EQ(wheel.Advance(55 * kMs), 1u);
  EXPECT_EQ(t.deadline(), 60 * kMs);  // still on the 10 ms grid
  EXPECT_EQ(wheel.Advance(55 * kMs), 0u);
  EXPECT_EQ(wheel.Advance(60 * kMs), 1u);
  EXPECT_EQ(t.deadline(), 70 * kMs);
  // Exactly on a period boundary: that period is due now, so skipped too.
  EXPECT_EQ(wheel.Advance(90 * kMs), 1u);
  EXPECT_EQ(t.deadline(), 100 * kMs);
}

TEST(TimerWheelTest, ZeroPeriodRunsOncePerAdvance) {
  TimerWheel wheel(0);
  TestTimer t;
  t.on_fire = [&](TestTimer* self) { wheel.ScheduleNextPeriod(self, 0); };
  wheel.Schedule(&t, 0);
  for (int i = 1; i <= 5; ++i) {
    EXPECT_EQ(wheel.Advance(wheel.now()), 1u);
    EXPECT_EQ(t.runs, i);
  }
}

TEST(TimerWheelTest, NullCallbackRunsAndDoesNothing) {
  TimerWheel wheel(0);
  TimerNode node;
  wheel.Schedule(&node, 1 * kMs);
  EXPECT_EQ(wheel.Advance(1 * kMs), 1u);
  EXPECT_FALSE(node.is_scheduled());
}

TEST(TimerWheelTest, WorksWithAManualClock) {
  ManualClock clock(absl::ToInt64Nanoseconds(absl::Hours(5)));
  TimerWheel wheel(clock.NowNanos());
  TestTimer t;
  wheel.Schedule(&t,
                 clock.NowNanos() + absl::ToInt64Nanoseconds(absl::Seconds(2)));
  clock.Advance(absl::Milliseconds(1999));
  EXPECT_EQ(wheel.Advance(clock.NowNanos()), 0u);
  clock.Advance(absl::Milliseconds(1));
  EXPECT_EQ(wheel.Advance(clock.NowNanos()), 1u);
}

TEST(TimerWheelDeathTest, AdvanceFromACallbackIsABug) {
  EXPECT_DEATH(
      {
        TimerWheel wheel(0);
        TestTimer t;
        t.on_fire = [&](TestTimer*) { wheel.Advance(wheel.now()); };
        wheel.Schedule(&t, 0);
        wheel.Advance(0);
      },
      "must not be called from a timer callback");
}

TEST(TimerWheelDeathTest, BadResolutionIsABug) {
  EXPECT_DEATH(TimerWheel(0, TimerWheel::Options{absl::ZeroDuration()}),
               "resolution");
}

}  // namespace
}  // namespace nbio
