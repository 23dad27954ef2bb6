#include "tools/latency_histogram.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace nbio {
namespace load {
namespace {

using H = LatencyHistogram;

TEST(LatencyHistogramTest, EmptyReportsZeros) {
  H h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.mean(), 0.0);
  EXPECT_EQ(h.ValueAtPercentile(50), 0u);
}

TEST(LatencyHistogramTest, SmallValuesAreExact) {
  for (uint64_t v = 0; v < 2 * H::kSubBuckets; ++v) {
    EXPECT_EQ(H::BucketOf(v), static_cast<int>(v));
    EXPECT_EQ(H::BucketUpperBound(static_cast<int>(v)), v);
  }
}

TEST(LatencyHistogramTest, BucketsTileTheRangeWithoutGapsOrOverlap) {
  // Every bucket starts one past the previous bucket's upper bound, and the
  // last one ends at the largest uint64_t.
  uint64_t next = 0;
  for (int b = 0; b < H::kBucketCount; ++b) {
    ASSERT_EQ(H::BucketOf(next), b) << "value " << next;
    const uint64_t upper = H::BucketUpperBound(b);
    ASSERT_GE(upper, next);
    ASSERT_EQ(H::BucketOf(upper), b) << "value " << upper;
    if (b + 1 < H::kBucketCount) next = upper + 1;
  }
  EXPECT_EQ(H::BucketUpperBound(H::kBucketCount - 1), UINT64_MAX);
  EXPECT_EQ(H::BucketOf(UINT64_MAX), H::kBucketCount - 1);
}

TEST(LatencyHistogramTest, RelativeErrorIsBounded) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100000; ++i) {
    const uint64_t v = rng() >> (rng() % 64);
    const uint64_t upper = H::BucketUpperBound(H::BucketOf(v));
    ASSERT_GE(upper, v);
    // (upper - v) / v <= 1 / kSubBuckets
    ASSERT_LE(static_cast<double>(upper - v),
              static_cast<double>(v) / H::kSubBuckets + 0.5)
        << v;
  }
}

TEST(LatencyHistogramTest, PercentilesOfAUniformRun) {
  H h;
  for (uint64_t v = 1; v <= 10000; ++v) h.Record(v * 1000);  // 1us .. 10ms
  EXPECT_EQ(h.count(), 10000u);
  EXPECT_EQ(h.min(), 1000u);
  EXPECT_EQ(h.max(), 10000000u);
  EXPECT_NEAR(h.mean(), 5000500.0, 0.5);
  auto near = [](uint64_t got, double want) {
    EXPECT_GE(static_cast<double>(got), want);
    EXPECT_LE(static_cast<double>(got), want * (1 + 1.0 / H::kSubBuckets));
  };
  near(h.ValueAtPercentile(50), 5000000);
  near(h.ValueAtPercentile(99), 9900000);
  near(h.ValueAtPercentile(99.9), 9990000);
  EXPECT_EQ(h.ValueAtPercentile(100), 10000000u);
  near(h.ValueAtPercentile(0), 1000);
}

TEST(LatencyHistogramTest, MergeEqualsRecordingEverythingInOne) {
  std::mt19937_64 rng(11);
  H a, b, all;
  for (int i = 0; i < 5000; ++i) {
    const uint64_t v = rng() % 50000000;
    (i % 3 == 0 ? a : b).Record(v);
    all.Record(v);
  }
  a.Merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  EXPECT_DOUBLE_EQ(a.mean(), all.mean());
  for (double p : {1.0, 50.0, 90.0, 99.0, 99.9, 100.0}) {
    EXPECT_EQ(a.ValueAtPercentile(p), all.ValueAtPercentile(p)) << p;
  }
}

TEST(LatencyHistogramTest, MergingAnEmptyHistogramChangesNothing) {
  H a, empty;
  a.Record(42);
  a.Merge(empty);
  EXPECT_EQ(a.count(), 1u);
  EXPECT_EQ(a.min(), 42u);
  EXPECT_EQ(a.max(), 42u);
}

TEST(LatencyHistogramTest, ResetEmpties) {
  H h;
  h.Record(5);
  h.Reset();
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.ValueAtPercentile(99), 0u);
}

}  // namespace
}  // namespace load
}  // namespace nbio
