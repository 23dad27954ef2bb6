// TimerWheel against a model (timer_wheel_model.h) under long random
// sequences of schedule / cancel / re-arm / ScheduleWithin / periodic re-arm /
// destroy / advance, with time jumps small and huge (beyond the wheel's
// range too), and callbacks that act on other timers and themselves. Every
// step is checked; seeds are fixed, so a failure replays.
#include "timers/timer_wheel_model.h"

#include <cstdint>
#include <memory>
#include <random>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace nbio {
namespace timers_testing {
namespace {

class RandomBits final : public BitSource {
 public:
  explicit RandomBits(uint64_t seed) : rng_(seed) {}
  bool Done() const override { return false; }
  uint64_t Bits(int bits) override {
    const uint64_t v = rng_();
    return bits >= 64 ? v : v & ((uint64_t{1} << bits) - 1);
  }

 private:
  std::mt19937_64 rng_;
};

struct Config {
  absl::Duration resolution;
  int64_t start_nanos;
  int timers;
  int seeds;
  size_t ops_per_seed;
  // Whether deadlines beyond the wheel's range (63 * 2^30 ticks) fit in an
  // int64_t at this resolution.
  bool beyond_range = true;
};

class TimerWheelModelTest : public testing::TestWithParam<Config> {};

TEST_P(TimerWheelModelTest, AgreesWithModel) {
  const Config& config = GetParam();
  uint64_t steps = 0, runs = 0, clamped = 0;
  for (int seed = 1; seed <= config.seeds; ++seed) {
    RandomBits bits(static_cast<uint64_t>(seed) * 7919 +
                    static_cast<uint64_t>(config.timers));
    WheelChecker checker(config.start_nanos, config.resolution, config.timers);
    DriveChecker(bits, config.ops_per_seed, checker);
    ASSERT_TRUE(checker.ok()) << "seed " << seed << ": " << checker.error();
    steps += checker.steps();
    runs += checker.runs();
    clamped += checker.clamped();
  }
  // The run must have exercised what it claims to: timers ran, and some were
  // beyond the wheel's range.
  EXPECT_GT(runs, steps / 20) << "steps " << steps;
  if (config.beyond_range) {
    EXPECT_GT(clamped, 0u);
  }
  std::printf("%llu steps, %llu timers run, %llu beyond range\n",
              static_cast<unsigned long long>(steps),
              static_cast<unsigned long long>(runs),
              static_cast<unsigned long long>(clamped));
}

INSTANTIATE_TEST_SUITE_P(
    Resolutions, TimerWheelModelTest,
    testing::Values(
        // The default: 1 ms ticks, clock at 0.
        Config{absl::Milliseconds(1), 0, 64, 5, 50000},
        // Few timers: more re-arms of the same node, more emptied slots.
        Config{absl::Milliseconds(1), 123456789012, 4, 6, 40000},
        // Many timers: crowded slots, long batches.
        Config{absl::Milliseconds(1), 5, 256, 2, 60000},
        // 1 ns ticks: the range is only 68 s, so much is clamped.
        Config{absl::Nanoseconds(1), 1000000000, 64, 5, 40000},
        // A resolution that is no power of ten and an unaligned start.
        Config{absl::Nanoseconds(1000003), -5000000001, 64, 5, 40000},
        Config{absl::Nanoseconds(7), 17, 32, 5, 40000},
        // 1 s ticks from late in int64_t time: saturated deadlines, the end
        // of time; 2^36 s is beyond int64_t nanoseconds.
        Config{absl::Seconds(1), int64_t{1} << 61, 64, 5, 40000, false}));

// Configurations drawn as the fuzz target draws them.
TEST(TimerWheelModelRandomConfigTest, AgreesWithModel) {
  for (uint64_t seed = 1000; seed < 1080; ++seed) {
    RandomBits bits(seed);
    std::unique_ptr<WheelChecker> checker = MakeChecker(bits);
    DriveChecker(bits, 5000, *checker);
    ASSERT_TRUE(checker->ok()) << "seed " << seed << ": " << checker->error();
  }
}

}  // namespace
}  // namespace timers_testing
}  // namespace nbio
