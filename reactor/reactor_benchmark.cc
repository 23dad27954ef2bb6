// Benchmarks for //reactor:event_loop over every poller backend (PollerNames():
// epoll, poll, select), in one binary so that the ratios between backends come
// from one run on one machine state:
//
//   BM_LoopIdle/<backend>/idle:N        one RunOnce(kNoWait) with N registered
//                                       read watchers on eventfds that never
//                                       become ready (N = 10, 1000, 10000)
//   BM_LoopOneActive/<backend>/idle:N   the same plus one eventfd that is
//                                       always readable and whose watcher
//                                       reads it (one event per iteration)
//   BM_Post/<backend>/producers:P       P threads Post() to a loop inside
//                                       Run(): posts/s and wake-ups per post
//                                       (the coalescing of bursts)
//   BM_TimerFire/<backend>/...          100,000 embedded Timers with spread
//   BM_TimerAfterFire/<backend>/...     deadlines (or as many loop-owned
//                                       Timer::After timers) started, then
//                                       fired by running the loop over a
//                                       ManualClock
//
//   tools/bazel run //reactor:reactor_benchmark -- --benchmark_repetitions=3
//       --benchmark_report_aggregates_only=true          (one command line)
//
// Every row has an allocs/... counter (//queue/testing:alloc_counter). select
// cannot watch fds >= FD_SETSIZE: its rows whose fds reach that are reported
// as skipped ("select: fds >= FD_SETSIZE"), not measured. After the table, a
// summary gives each row's cost per unit of work per backend and the ratios
// poll/epoll and select/epoll (medians when repeated; CPU time, wall time for
// the /real_time rows).
#include <sys/eventfd.h>
#include <sys/select.h>  // FD_SETSIZE
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "queue/testing/allocation_meter.h"
#include "queue/testing/summary_reporter.h"
#include "reactor/event_loop.h"
#include "reactor/poller/poller.h"
#include "reactor/poller/poller_registry.h"
#include "reactor/sys/syscall.h"
#include "timers/clock.h"

namespace nbio {
namespace {

using bench::AllocationMeter;

// Marks the row as failed when `status` is an error (before a `break` out of
// the timed loop, as Google Benchmark requires), and says whether it did.
bool Failed(benchmark::State& state, const absl::Status& status) {
  if (status.ok()) return false;
  state.SkipWithError(status.ToString().c_str());
  return true;
}

// Creates the loop for `backend`, or marks the row as failed and returns null.
std::unique_ptr<EventLoop> MakeLoop(benchmark::State& state,
                                    const std::string& backend,
                                    Clock* clock = nullptr) {
  EventLoop::Options options;
  options.backend = backend;
  options.clock = clock;
  absl::StatusOr<std::unique_ptr<EventLoop>> loop =
      EventLoop::Create(std::move(options));
  if (!loop.ok()) {
    state.SkipWithError(loop.status().ToString().c_str());
    return nullptr;
  }
  return *std::move(loop);
}

// Owns the fds it opens; closes them when destroyed.
class OwnedFds {
 public:
  OwnedFds() = default;
  OwnedFds(const OwnedFds&) = delete;
  OwnedFds& operator=(const OwnedFds&) = delete;
  ~OwnedFds() {
    for (int fd : fds_) close(fd);
  }

  // Opens one eventfd (EFD_NONBLOCK | EFD_CLOEXEC | `extra_flags`).
  absl::StatusOr<int> OpenEventFd(int extra_flags = 0) {
    const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC | extra_flags);
    if (fd < 0) return ErrnoStatus("eventfd", errno);
    fds_.push_back(fd);
    return fd;
  }

  const std::vector<int>& fds() const { return fds_; }
  int max_fd() const {
    return fds_.empty() ? -1 : *std::max_element(fds_.begin(), fds_.end());
  }

 private:
  std::vector<int> fds_;
};

// ------------------------------------------------ loop overhead per iteration

// One iteration: RunOnce(kNoWait). `idle` watchers with read interest sit on
// eventfds nobody writes. With `one_active`, one more eventfd, opened last
// (so it is the highest fd and the last poll slot), is always readable: an
// EFD_SEMAPHORE eventfd holding the largest count, so each read takes 1 and
// it stays readable for 2^64 - 2 reads. Its watcher reads it, as a real
// reader would. Counters: events/iter (0 idle, 1 with the active fd) and
// allocs/iter (the loop's steady state: expected 0).
void RunLoopIteration(benchmark::State& state, const std::string& backend,
                      int idle, bool one_active) {
  std::unique_ptr<EventLoop> loop = MakeLoop(state, backend);
  if (loop == nullptr) return;
  OwnedFds fds;  // declared after the loop, before the watchers: closed
                 // after the watchers stop, before the loop goes
  for (int i = 0; i < idle; ++i) {
    absl::StatusOr<int> fd = fds.OpenEventFd();
    if (!fd.ok()) {
      state.SkipWithError(fd.status().ToString().c_str());
      return;
    }
  }
  int active_fd = -1;
  if (one_active) {
    absl::StatusOr<int> fd = fds.OpenEventFd(EFD_SEMAPHORE);
    if (!fd.ok()) {
      state.SkipWithError(fd.status().ToString().c_str());
      return;
    }
    active_fd = *fd;
    const uint64_t plenty = 0xfffffffffffffffeULL;  // eventfd's maximum
    if (write(active_fd, &plenty, sizeof(plenty)) != sizeof(plenty)) {
      state.SkipWithError(
          ErrnoStatus("write(eventfd)", errno).ToString().c_str());
      return;
    }
  }
  if (backend == "select" && fds.max_fd() >= FD_SETSIZE) {
    state.SkipWithError("select: fds >= FD_SETSIZE");
    return;
  }

  uint64_t unexpected_events = 0;
  uint64_t reads = 0;
  std::vector<std::unique_ptr<FdWatcher>> watchers;
  watchers.reserve(fds.fds().size());
  for (int fd : fds.fds()) {
    FdWatcher::Callback callback;
    if (fd == active_fd) {
      callback = [fd, &reads](uint32_t /*events*/) {
        uint64_t value;
        if (read(fd, &value, sizeof(value)) == sizeof(value)) ++reads;
      };
    } else {
      callback = [&unexpected_events](uint32_t) { ++unexpected_events; };
    }
    watchers.push_back(
        std::make_unique<FdWatcher>(loop.get(), fd, std::move(callback)));
    absl::Status status = watchers.back()->SetInterest(kReadable);
    if (!status.ok()) {
      state.SkipWithError(status.ToString().c_str());
      return;
    }
  }

  // Warm-up: anything the first iteration sets up is not counted.
  if (absl::Status s = loop->RunOnce(EventLoop::RunMode::kNoWait); !s.ok()) {
    state.SkipWithError(s.ToString().c_str());
    return;
  }
  const uint64_t events_before = loop->counters().events_dispatched;
  const uint64_t reads_before = reads;
  AllocationMeter allocs;
  for (auto _ : state) {
    if (Failed(state, loop->RunOnce(EventLoop::RunMode::kNoWait))) return;
  }
  allocs.Report(state, "allocs/iter");
  const uint64_t expected_reads =
      one_active ? static_cast<uint64_t>(state.iterations()) : 0;
  if (unexpected_events != 0 || reads - reads_before != expected_reads) {
    state.SkipWithError(
        "an idle fd was reported ready, or the active one was not read");
    return;
  }
  state.counters["events/iter"] = benchmark::Counter(
      static_cast<double>(loop->counters().events_dispatched - events_before),
      benchmark::Counter::kAvgIterations);
}

// -------------------------------------------------------- cross-thread posts

// Posts per iteration, split between the producers.
constexpr int kPostsPerRound = 30'000;  // divisible by 1, 2, 3

// Loop-thread state the posted tasks touch; a task captures one pointer to
// it, so it is stored inline in the AnyInvocable.
struct PostSink {
  EventLoop* loop = nullptr;
  uint64_t received = 0;
  uint64_t target = 0;
};

// Threads that each run `work` once per round, when told to. They wait on a
// condition variable between rounds, so their idle time does not compete with
// the loop for the two cores. Joined on destruction.
class ProducerPool {
 public:
  ProducerPool(int threads, std::function<void()> work)
      : work_(std::move(work)) {
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this] { Serve(); });
    }
  }
  ~ProducerPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    start_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  ProducerPool(const ProducerPool&) = delete;
  ProducerPool& operator=(const ProducerPool&) = delete;

  // Starts a round on every thread; does not wait for it to finish.
  void StartRound() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++round_;
    }
    start_.notify_all();
  }

 private:
  void Serve() {
    int done = 0;
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        start_.wait(lock, [&] { return stop_ || round_ != done; });
        if (stop_) return;
        done = round_;
      }
      work_();
    }
  }

  const std::function<void()> work_;
  std::mutex mu_;
  std::condition_variable start_;
  int round_ = 0;      // guarded by mu_
  bool stop_ = false;  // guarded by mu_
  std::vector<std::thread> threads_;
};

// One iteration: `producers` threads post kPostsPerRound tasks between them
// while this thread runs the loop (Run(), blocking in the poller when idle);
// the last task stops it. The producers live across iterations, so thread
// start-up is neither timed nor counted. Counters: wakeups/post (loop
// wake-ups signalled per post: 1 would mean no coalescing at all),
// allocs/post (the RemoteTask node: expected 1).
void RunCrossThreadPost(benchmark::State& state, const std::string& backend,
                        int producers) {
  std::unique_ptr<EventLoop> loop = MakeLoop(state, backend);
  if (loop == nullptr) return;
  // No watcher or timer is registered: this keeps Run() blocking in the
  // poller between bursts instead of returning for lack of work.
  EventLoop::KeepAlive keep_alive = loop->KeepAliveToken();
  PostSink sink;
  sink.loop = loop.get();
  const int per_producer = kPostsPerRound / producers;
  const uint64_t per_round = static_cast<uint64_t>(per_producer) * producers;
  // Declared after the loop and the sink: joined before they go.
  ProducerPool pool(producers, [&loop, &sink, per_producer] {
    for (int s = 0; s < per_producer; ++s) {
      loop->Post([&sink] {
        if (++sink.received == sink.target) sink.loop->Stop();
      });
    }
  });
  auto run_round = [&] {
    sink.target = sink.received + per_round;
    pool.StartRound();
    return loop->Run();
  };

  // Warm-up: grows the task ring to its working size.
  if (Failed(state, run_round())) return;
  const uint64_t wakeups_before = loop->counters().wakeups_sent;
  const uint64_t received_before = sink.received;
  AllocationMeter allocs;
  for (auto _ : state) {
    if (Failed(state, run_round())) return;
  }
  allocs.Report(state, "allocs/post", static_cast<double>(per_round));
  const double posts = static_cast<double>(sink.received - received_before);
  state.counters["wakeups/post"] = benchmark::Counter(
      static_cast<double>(loop->counters().wakeups_sent - wakeups_before) /
      posts);
  state.SetItemsProcessed(static_cast<int64_t>(posts));
}

// -------------------------------------------------------------------- timers

constexpr int kTimers = 100'000;
// Deadlines spread over 1..kSpreadMillis ms in a scattered order (about 100
// timers per 1 ms tick of the wheel); the clock then moves 1 ms per loop
// iteration, as a loop on a real clock would.
constexpr int kSpreadMillis = 1000;

absl::Duration SpreadDelay(int i) {
  // 7919 is prime, so i -> i * 7919 mod kSpreadMillis visits every
  // millisecond equally often, in a scattered order.
  return absl::Milliseconds(1 +
                            (static_cast<int64_t>(i) * 7919) % kSpreadMillis);
}

// One iteration: start kTimers timers (embedded Timers, or Timer::After when
// `owned`, dropping the handle), then advance the ManualClock 1 ms at a time
// and RunOnce(kNoWait) until all have fired. items = timers scheduled and
// fired; allocs/timer is what scheduling and firing one timer costs in
// allocations (Timer: expected 0; Timer::After: expected 1, the loop-owned
// timer).
void RunTimers(benchmark::State& state, const std::string& backend,
               bool owned) {
  ManualClock clock(0);
  std::unique_ptr<EventLoop> loop = MakeLoop(state, backend, &clock);
  if (loop == nullptr) return;
  uint64_t fired = 0;
  std::vector<std::unique_ptr<Timer>> timers;
  if (!owned) {
    timers.reserve(kTimers);
    for (int i = 0; i < kTimers; ++i) {
      timers.push_back(
          std::make_unique<Timer>(loop.get(), [&fired] { ++fired; }));
    }
  }
  std::vector<absl::Duration> delays(kTimers);
  for (int i = 0; i < kTimers; ++i) delays[i] = SpreadDelay(i);

  auto round = [&]() -> absl::Status {
    const uint64_t target = fired + kTimers;
    for (int i = 0; i < kTimers; ++i) {
      if (owned) {
        Timer::After(loop.get(), delays[i], [&fired] { ++fired; });
      } else {
        timers[i]->Start(delays[i]);
      }
    }
    // A bound on the steps, so a broken loop fails the row instead of hanging.
    for (int step = 0; fired < target && step <= 2 * kSpreadMillis; ++step) {
      clock.Advance(absl::Milliseconds(1));
      absl::Status status = loop->RunOnce(EventLoop::RunMode::kNoWait);
      if (!status.ok()) return status;
    }
    if (fired != target) {
      return absl::InternalError("not every timer fired within 2x its spread");
    }
    return absl::OkStatus();
  };

  // Warm-up: the wheel and the allocator reach their working state.
  if (Failed(state, round())) return;
  const uint64_t fired_before = fired;
  AllocationMeter allocs;
  for (auto _ : state) {
    if (Failed(state, round())) return;
  }
  allocs.Report(state, "allocs/timer", kTimers);
  state.SetItemsProcessed(static_cast<int64_t>(fired - fired_before));
}

// ------------------------------------------------------------ registration

// What the summary needs to know about a row, by its registered name.
struct Row {
  std::string family;  // e.g. "BM_LoopIdle"
  std::string backend;
  std::string variant;  // e.g. "idle:1000"
  double units_per_iteration;
  const char* unit;  // what the summary's cost is per
};
std::map<std::string, Row>& Rows() {
  static auto* rows = new std::map<std::string, Row>;
  return *rows;
}
std::vector<std::string>& Families() {
  static auto* families = new std::vector<std::string>;
  return *families;
}

template <typename Fn>
benchmark::internal::Benchmark* Register(const std::string& family,
                                         const std::string& backend,
                                         const std::string& variant,
                                         double units_per_iteration,
                                         const char* unit, Fn&& fn) {
  const std::string name = absl::StrCat(family, "/", backend, "/", variant);
  Rows()[name] = Row{family, backend, variant, units_per_iteration, unit};
  if (std::find(Families().begin(), Families().end(), family) ==
      Families().end()) {
    Families().push_back(family);
  }
  return benchmark::RegisterBenchmark(name.c_str(), std::forward<Fn>(fn));
}

void RegisterAll() {
  const std::vector<std::string> backends = PollerNames();
  for (const std::string& backend : backends) {
    for (int n : {10, 1000, 10000}) {
      const std::string variant = absl::StrCat("idle:", n);
      Register("BM_LoopIdle", backend, variant, 1, "RunOnce",
               [backend, n](benchmark::State& state) {
                 RunLoopIteration(state, backend, n, /*one_active=*/false);
               });
      Register("BM_LoopOneActive", backend, variant, 1, "RunOnce",
               [backend, n](benchmark::State& state) {
                 RunLoopIteration(state, backend, n, /*one_active=*/true);
               });
    }
  }
  for (const std::string& backend : backends) {
    for (int producers : {1, 3}) {
      Register("BM_Post", backend, absl::StrCat("producers:", producers),
               kPostsPerRound, "post",
               [backend, producers](benchmark::State& state) {
                 RunCrossThreadPost(state, backend, producers);
               })
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
  for (const std::string& backend : backends) {
    const std::string variant = absl::StrCat("timers:", kTimers);
    Register("BM_TimerFire", backend, variant, kTimers, "timer",
             [backend](benchmark::State& state) {
               RunTimers(state, backend, /*owned=*/false);
             })
        ->Unit(benchmark::kMillisecond);
    Register("BM_TimerAfterFire", backend, variant, kTimers, "timer",
             [backend](benchmark::State& state) {
               RunTimers(state, backend, /*owned=*/true);
             })
        ->Unit(benchmark::kMillisecond);
  }
}

// ----------------------------------------------------------------- summary

// The console table, then per family a line per variant: the cost per unit
// of work on each backend (ns; CPU time, wall time for /real_time rows; the
// median when repeated) and the ratios poll/epoll and select/epoll.
class BackendReporter : public bench::SummaryReporter {
 public:
  BackendReporter() : SummaryReporter(OO_Tabular, "median") {}

 protected:
  void PrintSummary(std::FILE* out) override {
    CollectResults();
    const std::vector<std::string> backends = PollerNames();
    std::fprintf(out,
                 "\nreactor summary: ns per unit of work (median when "
                 "repeated; CPU time, wall time for BM_Post)\n");
    for (const std::string& family : Families()) {
      std::vector<std::string> variants;
      for (const auto& [name, row] : Rows()) {
        if (row.family == family && std::find(variants.begin(), variants.end(),
                                              row.variant) == variants.end()) {
          variants.push_back(row.variant);
        }
      }
      std::sort(variants.begin(), variants.end(), VariantLess);
      std::fprintf(out, "\n%s (ns per %s)\n", family.c_str(), UnitOf(family));
      std::fprintf(out, "  %-16s", "");
      for (const std::string& b : backends)
        std::fprintf(out, " %12s", b.c_str());
      for (size_t i = 1; i < backends.size(); ++i) {
        std::fprintf(out, " %13s",
                     absl::StrCat(backends[i], "/", backends[0]).c_str());
      }
      std::fprintf(out, "\n");
      for (const std::string& variant : variants) {
        std::fprintf(out, "  %-16s", variant.c_str());
        std::vector<const Result*> found;
        for (const std::string& b : backends) {
          const Result* r = Find(family, b, variant);
          found.push_back(r);
          if (r == nullptr) {
            std::fprintf(out, " %12s", "-");
          } else if (!r->error.empty()) {
            std::fprintf(out, " %12s", "skipped");
          } else {
            std::fprintf(out, " %12.1f", r->ns_per_unit);
          }
        }
        for (size_t i = 1; i < backends.size(); ++i) {
          const Result* base = found[0];
          const Result* r = found[i];
          if (base == nullptr || r == nullptr || !base->error.empty() ||
              !r->error.empty() || base->ns_per_unit <= 0) {
            std::fprintf(out, " %13s", "-");
          } else {
            std::fprintf(out, " %12.2fx", r->ns_per_unit / base->ns_per_unit);
          }
        }
        std::fprintf(out, "\n");
        for (size_t i = 0; i < backends.size(); ++i) {
          const Result* r = found[i];
          if (r == nullptr) continue;
          if (!r->error.empty()) {
            std::fprintf(out, "    %s skipped: %s\n", backends[i].c_str(),
                         r->error.c_str());
          } else if (!r->counters.empty()) {
            std::fprintf(out, "    %s:%s\n", backends[i].c_str(),
                         r->counters.c_str());
          }
        }
      }
    }
  }

 private:
  struct Result {
    double ns_per_unit = 0;
    std::string error;
    std::string counters;  // " name=value ..." from the same run
  };

  // Fills results_ from rows(), for the rows registered by Register().
  void CollectResults() {
    for (const std::string& name : rows().names()) {
      const Run& run = *rows().Find(name);
      const auto row = Rows().find(run.run_name.function_name);
      if (row == Rows().end()) continue;
      Result& result = results_[run.run_name.function_name];
      if (run.error_occurred) {
        result.error = run.error_message;
        continue;
      }
      result.ns_per_unit = bench::SecondsPerIteration(run) * 1e9 /
                           row->second.units_per_iteration;
      for (const auto& counter : run.counters) {
        if (counter.first == "items_per_second") continue;
        result.counters += absl::StrCat(" ", counter.first, "=",
                                        FormatCounter(counter.second.value));
      }
    }
  }

  static std::string FormatCounter(double v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.3g", v);
    return buf;
  }

  // "idle:10" < "idle:1000" by number, not by text.
  static bool VariantLess(const std::string& a, const std::string& b) {
    const size_t ca = a.find(':');
    const size_t cb = b.find(':');
    if (ca == std::string::npos || cb == std::string::npos ||
        a.compare(0, ca, b, 0, cb) != 0) {
      return a < b;
    }
    return std::atoll(a.c_str() + ca + 1) < std::atoll(b.c_str() + cb + 1);
  }

  static const char* UnitOf(const std::string& family) {
    for (const auto& [name, row] : Rows()) {
      if (row.family == family) return row.unit;
    }
    return "iteration";
  }

  const Result* Find(const std::string& family, const std::string& backend,
                     const std::string& variant) const {
    auto it = results_.find(absl::StrCat(family, "/", backend, "/", variant));
    return it == results_.end() ? nullptr : &it->second;
  }

  std::map<std::string, Result> results_;
};

}  // namespace
}  // namespace nbio

int main(int argc, char** argv) {
  nbio::RegisterAll();
  nbio::BackendReporter reporter;
  return nbio::bench::RunBenchmarks(argc, argv, &reporter);
}
