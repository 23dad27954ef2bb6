// LatencyHistogram: a fixed-size log-linear histogram of round-trip times,
// in the manner of HdrHistogram, for the load generator (//tools:echo_load).
//
// Values are non-negative integers (echo_load records nanoseconds). Values
// below 2 * kSubBuckets are counted exactly; above that each power-of-two
// range [2^k, 2^(k+1)) is split into kSubBuckets linear buckets, so any value
// reported back (a percentile) is within 1 / kSubBuckets (0.8%) of a value
// that was recorded. Memory is fixed (kBucketCount counters, about 60 KiB)
// whatever is recorded, Record() is O(1) and never allocates, and two
// histograms merge by adding counters, so each load thread keeps its own and
// they are merged once at the end.
//
// Thread-compatible: one writer, no internal locking.
#ifndef NBIO_TOOLS_LATENCY_HISTOGRAM_H_
#define NBIO_TOOLS_LATENCY_HISTOGRAM_H_

#include <array>
#include <cstdint>

namespace nbio {
namespace load {

class LatencyHistogram {
 public:
  // Linear buckets per power of two: the relative precision.
  static constexpr int kSubBucketBits = 7;
  static constexpr uint64_t kSubBuckets = uint64_t{1} << kSubBucketBits;
  // Values 0 .. 2*kSubBuckets-1 get a bucket each; then kSubBuckets buckets
  // for each of the remaining 64 - kSubBucketBits - 1 powers of two.
  static constexpr int kBucketCount =
      static_cast<int>((64 - kSubBucketBits + 1) * kSubBuckets);

  LatencyHistogram() { Reset(); }

  // Counts one value. O(1), no allocation.
  void Record(uint64_t value);

  // Adds every count of `other` to this histogram.
  void Merge(const LatencyHistogram& other);

  void Reset();

  uint64_t count() const { return count_; }
  // Exact minimum / maximum recorded; 0 when empty.
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  // Exact mean of the recorded values; 0 when empty.
  double mean() const;

  // The value at `percentile` (0..100]: the smallest bucket upper bound
  // below which at least that share of the values lies, capped at max().
  // 0 when empty. O(kBucketCount).
  uint64_t ValueAtPercentile(double percentile) const;

  // The bucket a value falls in, and the largest value that bucket holds
  // (exposed for the tests).
  static int BucketOf(uint64_t value);
  static uint64_t BucketUpperBound(int bucket);

 private:
  std::array<uint64_t, kBucketCount> counts_;
  uint64_t count_;
  uint64_t min_;
  uint64_t max_;
  // The sum of all values, as a double: sums of nanoseconds overflow
  // nothing a run can produce, and the mean is only reported.
  double sum_;
};

}  // namespace load
}  // namespace nbio

#endif  // NBIO_TOOLS_LATENCY_HISTOGRAM_H_
