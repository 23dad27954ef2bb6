// LatencyHistogram: see latency_histogram.h for the bucket layout.
#include "tools/latency_histogram.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace nbio {
namespace load {

int LatencyHistogram::BucketOf(uint64_t value) {
  if (value < 2 * kSubBuckets) return static_cast<int>(value);
  // The highest set bit picks the power of two; the kSubBucketBits bits
  // below it pick the linear bucket within it.
  const int msb = 63 - __builtin_clzll(value);
  const int shift = msb - kSubBucketBits;
  const uint64_t sub = value >> shift;  // in [kSubBuckets, 2 * kSubBuckets)
  return static_cast<int>((static_cast<uint64_t>(shift) + 1) * kSubBuckets +
                          (sub - kSubBuckets));
}

uint64_t LatencyHistogram::BucketUpperBound(int bucket) {
  const uint64_t b = static_cast<uint64_t>(bucket);
  if (b < 2 * kSubBuckets) return b;
  const int shift = static_cast<int>(b / kSubBuckets) - 1;
  const uint64_t sub = b % kSubBuckets + kSubBuckets;
  const uint64_t width = uint64_t{1} << shift;
  // For the last bucket this is exactly 2^64 - 1, no overflow.
  return (sub << shift) + (width - 1);
}

void LatencyHistogram::Record(uint64_t value) {
  ++counts_[BucketOf(value)];
  ++count_;
  min_ = std::min(min_, value);
  max_ = std::max(max_, value);
  sum_ += static_cast<double>(value);
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  for (int i = 0; i < kBucketCount; ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  sum_ += other.sum_;
}

void LatencyHistogram::Reset() {
  counts_.fill(0);
  count_ = 0;
  min_ = std::numeric_limits<uint64_t>::max();
  max_ = 0;
  sum_ = 0;
}

double LatencyHistogram::mean() const {
  return count_ == 0 ? 0.0 : sum_ / static_cast<double>(count_);
}

uint64_t LatencyHistogram::ValueAtPercentile(double percentile) const {
  if (count_ == 0) return 0;
  percentile = std::min(std::max(percentile, 0.0), 100.0);
  // The rank of the value asked for, 1-based: p50 of 2 values is the first.
  uint64_t rank = static_cast<uint64_t>(
      std::ceil(percentile / 100.0 * static_cast<double>(count_)));
  rank = std::max<uint64_t>(rank, 1);
  uint64_t seen = 0;
  for (int i = 0; i < kBucketCount; ++i) {
    seen += counts_[i];
    if (seen >= rank) return std::min(BucketUpperBound(i), max_);
  }
  return max_;
}

}  // namespace load
}  // namespace nbio
