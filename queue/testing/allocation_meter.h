// AllocationMeter: a benchmark's heap allocations per iteration, as a
// Google Benchmark counter. Counts through //queue/testing:alloc_counter, which
// the benchmark binary must link (this library does).
//
//   AllocationMeter allocs;                  // after the warm-up
//   for (auto _ : state) { ... }
//   allocs.Report(state);                    // "allocs/op" per iteration
//   allocs.Report(state, "allocs/msg", 16);  // per message, 16 an iteration
#ifndef NBIO_QUEUE_TESTING_ALLOCATION_METER_H_
#define NBIO_QUEUE_TESTING_ALLOCATION_METER_H_

#include <cstdint>

#include "benchmark/benchmark.h"
#include "queue/testing/alloc_counter.h"

namespace nbio {
namespace bench {

class AllocationMeter {
 public:
  AllocationMeter() : start_(AllocationCount()) {}

  // Sets counter `name` to the allocations since construction, per
  // iteration, divided by `per_iteration` (operations in one iteration).
  // Call it before SetItemsProcessed(): adding a counter allocates (a map
  // node and its key).
  void Report(benchmark::State& state, const char* name = "allocs/op",
              double per_iteration = 1) const {
    state.counters[name] = benchmark::Counter(
        static_cast<double>(AllocationCount() - start_) / per_iteration,
        benchmark::Counter::kAvgIterations);
  }

 private:
  const uint64_t start_;
};

}  // namespace bench
}  // namespace nbio

#endif  // NBIO_QUEUE_TESTING_ALLOCATION_METER_H_
