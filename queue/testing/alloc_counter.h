// Counts heap allocations made by this process, for benchmarks that must show
// "0 allocations per operation".
//
// Linking //queue/testing:alloc_counter replaces the global operator new and
// delete (all forms) with versions that count, then call malloc/free. Only a
// benchmark or test binary should link it. Thread-safe (relaxed atomics).
//
//   const uint64_t before = nbio::bench::AllocationCount();
//   ... work ...
//   state.counters["allocs/op"] = benchmark::Counter(
//       nbio::bench::AllocationCount() - before,
//       benchmark::Counter::kAvgIterations);
#ifndef NBIO_QUEUE_TESTING_ALLOC_COUNTER_H_
#define NBIO_QUEUE_TESTING_ALLOC_COUNTER_H_

#include <cstdint>

namespace nbio {
namespace bench {

// Calls of any operator new since the process started.
uint64_t AllocationCount();

}  // namespace bench
}  // namespace nbio

#endif  // NBIO_QUEUE_TESTING_ALLOC_COUNTER_H_
