// The timer wheel against the heaps libuv, libev and a naive loop use
// (timer_heaps.h), on the same workloads, in one binary:
//
//   tools/bazel run //timers:timer_benchmark --
//       --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//
// (one command line).
//
// Each workload runs for the wheel and then each baseline, so the rows are
// adjacent; after the table the binary prints each baseline's CPU time
// divided by the wheel's (above 1: the wheel is faster; CPU rather than real
// time because the build machines are shared). Every row reports allocs/op
// from //queue/testing:alloc_counter.
//
//   ScheduleCancel      one timer scheduled and cancelled again and again,
//                       1024 others in the structure: the hot pair.
//   RearmRandom/N       N outstanding timers (deadlines spread over 60 s); a
//                       random one is cancelled and re-armed to a random
//                       deadline: connection timeouts under load.
//   RandomNodeTouch/N   its floor: a read and write of a random node of the
//                       same size, the cache miss no structure avoids.
//   Expire/N            N timers over 10 s, all run by one Advance.
//   ExpireStepwise/N    the same, one Advance per millisecond, as a loop
//                       does.
//   NextExpiry_Cached   NextExpiry() with nothing changed in between.
//   NextExpiry_AfterCancel(Baseline)  schedule + cancel of a lone timer (so
//                       its slot empties and the wheel's cache is
//                       invalidated), with and without NextExpiry(): the
//                       difference is the wheel's O(levels) recomputation.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"
#include "queue/testing/alloc_counter.h"
#include "queue/testing/allocation_meter.h"
#include "queue/testing/summary_reporter.h"
#include "timers/timer_heaps.h"
#include "timers/timer_wheel.h"

namespace nbio {
namespace {

constexpr int64_t kMs = 1000000;
constexpr int64_t kSecond = 1000 * kMs;
constexpr int64_t kStart = 1000 * kSecond;

// The wheel and the heaps behind one interface.
class Wheel {
 public:
  using Timer = TimerNode;
  explicit Wheel(int64_t now) : wheel_(now) {}
  void Reserve(size_t) {}
  void Schedule(Timer* t, int64_t deadline) { wheel_.Schedule(t, deadline); }
  void Cancel(Timer* t) { wheel_.Cancel(t); }
  std::optional<int64_t> NextExpiry() { return wheel_.NextExpiry(); }
  size_t Advance(int64_t now) { return wheel_.Advance(now); }

 private:
  TimerWheel wheel_;
};

template <typename Heap>
class HeapQueue {
 public:
  using Timer = bench::HeapTimer;
  explicit HeapQueue(int64_t) {}
  void Reserve(size_t n) { heap_.Reserve(n); }
  void Schedule(Timer* t, int64_t deadline) { heap_.Schedule(t, deadline); }
  void Cancel(Timer* t) { heap_.Cancel(t); }
  std::optional<int64_t> NextExpiry() { return heap_.NextExpiry(); }
  size_t Advance(int64_t now) { return heap_.Advance(now); }

 private:
  Heap heap_;
};

struct QuaternaryHeap : HeapQueue<bench::QuaternaryTimerHeap> {
  using HeapQueue::HeapQueue;
};
struct BinaryHeap : HeapQueue<bench::BinaryTimerHeap> {
  using HeapQueue::HeapQueue;
};
struct LazyQueue : HeapQueue<bench::LazyTimerQueue> {
  using HeapQueue::HeapQueue;
};

using bench::AllocationMeter;

// Schedules timers[0..n) at uniformly random times in [from, from + spread).
template <typename Q>
void Populate(Q& q, typename Q::Timer* timers, size_t n, int64_t from,
              int64_t spread, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> offset(0, spread - 1);
  for (size_t i = 0; i < n; ++i) q.Schedule(&timers[i], from + offset(rng));
}

template <typename Q>
void BM_ScheduleCancel(benchmark::State& state) {
  Q q(kStart);
  q.Reserve(1025);
  auto background = std::make_unique<typename Q::Timer[]>(1024);
  Populate(q, background.get(), 1024, kStart, 60 * kSecond, 1);
  typename Q::Timer hot;
  int64_t i = 0;
  AllocationMeter meter;
  for (auto _ : state) {
    q.Schedule(&hot, kStart + 30 * kSecond + (i++ & 1023) * kMs);
    q.Cancel(&hot);
  }
  meter.Report(state);
}

template <typename Q>
void BM_RearmRandom(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  constexpr size_t kOps = size_t{1} << 20;
  Q q(kStart);
  q.Reserve(n);
  auto timers = std::make_unique<typename Q::Timer[]>(n);
  Populate(q, timers.get(), n, kStart, 60 * kSecond, 2);
  // Which timer and where to, drawn before timing.
  std::vector<std::pair<uint32_t, int64_t>> ops(kOps);
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<uint32_t> which(0,
                                                static_cast<uint32_t>(n - 1));
  std::uniform_int_distribution<int64_t> when(kMs, 60 * kSecond);
  for (auto& op : ops) op = {which(rng), kStart + when(rng)};
  size_t k = 0;
  AllocationMeter meter;
  for (auto _ : state) {
    typename Q::Timer* t = &timers[ops[k].first];
    q.Cancel(t);
    q.Schedule(t, ops[k].second);
    k = (k + 1) & (kOps - 1);
  }
  meter.Report(state);
}

// The floor under RearmRandom: the one cache miss every structure pays per
// operation, a read and a write of a random 32-byte node among n. Not a
// timer structure, so not in the ratio table.
void BM_RandomNodeTouch(benchmark::State& state) {
  struct Node {
    int64_t fields[4];
  };
  static_assert(sizeof(Node) == sizeof(TimerNode), "same footprint");
  const size_t n = static_cast<size_t>(state.range(0));
  constexpr size_t kOps = size_t{1} << 20;
  auto nodes = std::make_unique<Node[]>(n);
  std::vector<std::pair<uint32_t, int64_t>> ops(kOps);
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<uint32_t> which(0,
                                                static_cast<uint32_t>(n - 1));
  for (auto& op : ops) op = {which(rng), static_cast<int64_t>(rng())};
  size_t k = 0;
  for (auto _ : state) {
    Node& node = nodes[ops[k].first];
    node.fields[0] = node.fields[1] + ops[k].second;
    k = (k + 1) & (kOps - 1);
  }
  benchmark::DoNotOptimize(nodes.get());
}
BENCHMARK(BM_RandomNodeTouch)->Arg(1000000);

// One Advance (or one per millisecond) runs n timers spread over 10 s.
template <typename Q, bool kStepwise>
void ExpireBenchmark(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  constexpr int64_t kSpread = 10 * kSecond;
  Q q(kStart);
  q.Reserve(n);
  auto timers = std::make_unique<typename Q::Timer[]>(n);
  int64_t now = kStart;
  uint64_t seed = 4;
  size_t ran = 0;
  uint64_t allocations = 0;
  for (auto _ : state) {
    state.PauseTiming();
    Populate(q, timers.get(), n, now + 1, kSpread, seed++);
    const uint64_t before = bench::AllocationCount();
    state.ResumeTiming();
    if (kStepwise) {
      for (int64_t t = now + kMs; t <= now + kSpread; t += kMs) {
        ran += q.Advance(t);
      }
    } else {
      ran += q.Advance(now + kSpread);
    }
    state.PauseTiming();
    allocations += bench::AllocationCount() - before;
    now += kSpread + kSecond;
    q.Advance(now);
    state.ResumeTiming();
  }
  if (ran != n * state.iterations()) state.SkipWithError("not every timer ran");
  // Seconds per timer (printed with an SI prefix: "25n" is 25 ns).
  state.counters["time/timer"] = benchmark::Counter(
      static_cast<double>(ran),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["allocs/op"] = benchmark::Counter(
      static_cast<double>(allocations) / static_cast<double>(n),
      benchmark::Counter::kAvgIterations);
}

template <typename Q>
void BM_Expire(benchmark::State& state) {
  ExpireBenchmark<Q, false>(state);
}

template <typename Q>
void BM_ExpireStepwise(benchmark::State& state) {
  ExpireBenchmark<Q, true>(state);
}

template <typename Q>
void BM_NextExpiry_Cached(benchmark::State& state) {
  Q q(kStart);
  q.Reserve(1025);
  auto background = std::make_unique<typename Q::Timer[]>(1024);
  Populate(q, background.get(), 1024, kStart + 60 * kSecond, 60 * kSecond, 5);
  q.NextExpiry();
  AllocationMeter meter;
  for (auto _ : state) benchmark::DoNotOptimize(q.NextExpiry());
  meter.Report(state);
}

// A lone timer 5 ms out (the wheel's level 0), the others 13 days out (its
// top level), so that each cancel empties a slot and NextExpiry() has to
// scan every level.
template <typename Q, bool kAskNextExpiry>
void AfterCancelBenchmark(benchmark::State& state) {
  Q q(kStart);
  q.Reserve(1025);
  auto background = std::make_unique<typename Q::Timer[]>(1024);
  Populate(q, background.get(), 1024, kStart + 13 * 24 * 3600 * kSecond,
           3600 * kSecond, 6);
  typename Q::Timer hot;
  AllocationMeter meter;
  for (auto _ : state) {
    q.Schedule(&hot, kStart + 5 * kMs);
    q.Cancel(&hot);
    if (kAskNextExpiry) benchmark::DoNotOptimize(q.NextExpiry());
  }
  meter.Report(state);
}

template <typename Q>
void BM_NextExpiry_AfterCancel(benchmark::State& state) {
  AfterCancelBenchmark<Q, true>(state);
}

template <typename Q>
void BM_NextExpiry_AfterCancelBaseline(benchmark::State& state) {
  AfterCancelBenchmark<Q, false>(state);
}

#define NBIO_TIMER_BENCHMARK(name, ...)                 \
  BENCHMARK_TEMPLATE(name, Wheel) __VA_ARGS__;          \
  BENCHMARK_TEMPLATE(name, QuaternaryHeap) __VA_ARGS__; \
  BENCHMARK_TEMPLATE(name, BinaryHeap) __VA_ARGS__;     \
  BENCHMARK_TEMPLATE(name, LazyQueue) __VA_ARGS__

NBIO_TIMER_BENCHMARK(BM_ScheduleCancel, );
NBIO_TIMER_BENCHMARK(BM_RearmRandom, ->Arg(1000000));
NBIO_TIMER_BENCHMARK(BM_Expire, ->Arg(1000000)->Unit(benchmark::kMillisecond));
NBIO_TIMER_BENCHMARK(
    BM_ExpireStepwise, ->Arg(1000000)->Unit(benchmark::kMillisecond));
NBIO_TIMER_BENCHMARK(BM_NextExpiry_Cached, );
NBIO_TIMER_BENCHMARK(BM_NextExpiry_AfterCancel, );
NBIO_TIMER_BENCHMARK(BM_NextExpiry_AfterCancelBaseline, );

// After the console table, each baseline's time over the wheel's (CPU time;
// the mean when repeated).
class RatioReporter : public bench::SummaryReporter {
 protected:
  void PrintSummary(std::FILE* out) override {
    std::map<std::string, std::map<std::string, double>> times;  // seconds
    std::vector<std::string> order;
    for (const std::string& name : rows().names()) {
      const std::optional<double> seconds = rows().Seconds(name);
      if (!seconds) continue;
      // "BM_X<Impl>/arg": the workload is the name without "<Impl>".
      const size_t open = name.find('<');
      const size_t close = name.find('>');
      if (open == std::string::npos || close == std::string::npos) continue;
      const std::string workload =
          name.substr(0, open) + name.substr(close + 1);
      const std::string impl = name.substr(open + 1, close - open - 1);
      if (times.find(workload) == times.end()) order.push_back(workload);
      times[workload][impl] = *seconds;
    }
    std::fprintf(out,
                 "\nBaseline CPU time / wheel CPU time (above 1: the wheel is "
                 "faster)\n");
    std::fprintf(out, "%-44s %10s %10s %10s\n", "workload", "4-ary", "binary",
                 "lazy pq");
    for (const std::string& workload : order) {
      const auto& by_impl = times[workload];
      const auto wheel = by_impl.find("Wheel");
      if (wheel == by_impl.end()) continue;
      std::fprintf(out, "%-44s", workload.c_str());
      for (const char* impl : {"QuaternaryHeap", "BinaryHeap", "LazyQueue"}) {
        const auto it = by_impl.find(impl);
        if (it == by_impl.end()) {
          std::fprintf(out, " %10s", "-");
        } else {
          std::fprintf(out, " %9.2fx", it->second / wheel->second);
        }
      }
      std::fprintf(out, "\n");
    }
    const auto with = times.find("BM_NextExpiry_AfterCancel");
    const auto without = times.find("BM_NextExpiry_AfterCancelBaseline");
    if (with != times.end() && without != times.end()) {
      std::fprintf(
          out,
          "\nWheel NextExpiry() recomputed after its slot emptied: %.2f ns "
          "(AfterCancel - AfterCancelBaseline)\n",
          (with->second["Wheel"] - without->second["Wheel"]) * 1e9);
    }
  }
};

}  // namespace
}  // namespace nbio

int main(int argc, char** argv) {
  nbio::RatioReporter reporter;
  return nbio::bench::RunBenchmarks(argc, argv, &reporter);
}
