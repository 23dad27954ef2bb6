// What a future costs next to a plain posted callback, measured in one run:
//
//   PostedCallback        EventLoop::Post(cb), run by the loop (the baseline)
//   FutureSetOnComplete   Promise + GetFuture + OnComplete(cb) + Set, the
//                         continuation run by the loop as an urgent task
//   FutureSetThen         the same with Then(fn) (a new future per link)
//
//   tools/bazel run //reactor/async:sched_benchmark --
//   --benchmark_repetitions=3
//       --benchmark_report_aggregates_only=true          (one command line)
//
// Work is done in batches of kBatch operations per loop iteration, as a
// busy loop would, so one poll (a syscall) is shared by the batch. Every row
// has an allocs/op counter (//queue/testing:alloc_counter). After the table, a
// "cost" line per future row gives future time / posted-callback time (CPU
// time; from the means when repeated).
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"
#include "queue/testing/allocation_meter.h"
#include "queue/testing/summary_reporter.h"
#include "reactor/async/future.h"
#include "reactor/event_loop.h"

namespace nbio {
namespace {

constexpr int kBatch = 256;

std::unique_ptr<EventLoop> MakeLoop() {
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
  if (!loop.ok()) std::abort();
  return std::move(*loop);
}

// Runs `op(loop, &sum)` once per benchmark iteration, from inside the
// running loop (an urgent task runs kBatch of them, as a callback would:
// only inside a run does Post() take the allocation-free path), and one
// loop iteration per kBatch, with an allocation count per operation.
template <typename Op>
void RunBatched(benchmark::State& state, Op op) {
  std::unique_ptr<EventLoop> loop = MakeLoop();
  int64_t sum = 0;
  auto batch = [&] {
    loop->PostUrgent([&] {
      for (int i = 0; i < kBatch; ++i) op(loop.get(), &sum);
    });
    (void)loop->RunOnce(EventLoop::RunMode::kNoWait);
  };
  // Warm-up: grow the loop's task queues to their working size.
  for (int i = 0; i < 4; ++i) batch();
  (void)loop->RunOnce(EventLoop::RunMode::kNoWait);
  const bench::AllocationMeter allocs;
  while (state.KeepRunningBatch(kBatch)) batch();
  (void)loop->RunOnce(EventLoop::RunMode::kNoWait);
  allocs.Report(state);
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations());
}

void BM_PostedCallback(benchmark::State& state) {
  RunBatched(state, [](EventLoop* loop, int64_t* sum) {
    loop->Post([sum] { *sum += 1; });
  });
}

void BM_PostUrgentCallback(benchmark::State& state) {
  RunBatched(state, [](EventLoop* loop, int64_t* sum) {
    loop->PostUrgent([sum] { *sum += 1; });
  });
}

void BM_FutureSetOnComplete(benchmark::State& state) {
  RunBatched(state, [](EventLoop* loop, int64_t* sum) {
    Promise<int> promise(loop);
    std::move(promise.GetFuture()).OnComplete([sum](absl::StatusOr<int> r) {
      *sum += *r;
    });
    promise.Set(1);
  });
}

void BM_FutureSetThen(benchmark::State& state) {
  RunBatched(state, [](EventLoop* loop, int64_t* sum) {
    Promise<int> promise(loop);
    Future<void> next =
        std::move(promise.GetFuture()).Then([sum](absl::StatusOr<int> r) {
          *sum += *r;
        });
    promise.Set(1);
  });
}

BENCHMARK(BM_PostedCallback);
BENCHMARK(BM_PostUrgentCallback);
BENCHMARK(BM_FutureSetOnComplete);
BENCHMARK(BM_FutureSetThen);

// After the console table, each row's CPU time over the baseline's (the
// mean when repeated), rows by name.
class CostReporter : public bench::SummaryReporter {
 protected:
  void PrintSummary(std::FILE* out) override {
    const std::optional<double> base = rows().Seconds("BM_PostedCallback");
    if (!base) return;
    std::map<std::string, double> cpu_time;  // by name, for the order
    for (const std::string& name : rows().names()) {
      if (const std::optional<double> t = rows().Seconds(name)) {
        cpu_time[name] = *t;
      }
    }
    std::fprintf(out, "\ncost (CPU time / BM_PostedCallback's, same run):\n");
    for (const auto& [name, time] : cpu_time) {
      std::fprintf(out, "  %-26s %6.2fx\n", name.c_str(), time / *base);
    }
  }
};

}  // namespace
}  // namespace nbio

int main(int argc, char** argv) {
  nbio::CostReporter reporter;
  return nbio::bench::RunBenchmarks(argc, argv, &reporter);
}
