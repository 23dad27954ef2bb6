// Benchmarks for //queue against the standard-library structures they
// replace, run side by side in one binary so the ratios come from one run:
//
//   IntrusiveList   push_back + pop_front, and unlink-from-middle + push_back,
//                   vs std::list (target: >= 3x faster, 0 allocations/op)
//   MpscQueue       1 and 3 producers to one consumer, vs std::mutex +
//                   std::deque (items/s)
//   MessageQueue    append a 64-byte message, then a writev-shaped drain
//                   (FillIovec + Consume), vs std::deque<std::string>
//                   (target: >= 2x faster, 0 allocations/message)
//
//   tools/bazel run //queue:queue_benchmark -- --benchmark_repetitions=3
//       --benchmark_report_aggregates_only=true          (one command line)
//
// Every row has an allocs/op counter (//queue/testing:alloc_counter; for the
// MPSC rows it is per item). After the table, a "speed-up" line per pair
// gives baseline time / nbio time for the same work (CPU time; wall time for
// the threaded /real_time rows; from the means when repeated). The console
// table is always printed (--benchmark_out still writes other formats to a
// file).
#include <limits.h>  // IOV_MAX
#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "benchmark/benchmark.h"
#include "queue/intrusive_list.h"
#include "queue/message_queue.h"
#include "queue/mpsc_queue.h"
#include "queue/testing/allocation_meter.h"
#include "queue/testing/summary_reporter.h"

namespace nbio {
namespace {

using bench::AllocationMeter;

// ---------------------------------------------------------- IntrusiveList

struct ListNode {
  ListHook hook;
  int value = 0;
};
using NodeList = IntrusiveList<ListNode, &ListNode::hook>;

// Elements resident on the list while the benchmark pushes and pops.
constexpr int kResident = 64;
// Elements for the unlink benchmark: more than fit in L1 as std::list nodes.
constexpr int kUnlinkNodes = 1024;
// Visits every element once per kUnlinkNodes steps, in a cache-unfriendly
// order (odd stride, co-prime with the power-of-two count).
constexpr int kUnlinkStride = 389;

void BM_IntrusiveList_PushPop(benchmark::State& state) {
  std::vector<ListNode> nodes(kResident + 1);
  NodeList list;
  for (int i = 0; i < kResident; ++i) list.PushBack(nodes[i]);
  ListNode* spare = &nodes[kResident];
  AllocationMeter allocs;
  for (auto _ : state) {
    list.PushBack(*spare);
    spare = list.PopFront();
    benchmark::DoNotOptimize(spare);
  }
  allocs.Report(state);
}

void BM_StdList_PushPop(benchmark::State& state) {
  std::list<int> list(kResident, 0);
  int value = 0;
  AllocationMeter allocs;
  for (auto _ : state) {
    list.push_back(value);
    value = list.front();
    list.pop_front();
    benchmark::DoNotOptimize(value);
  }
  allocs.Report(state);
}

// Take an element out of the middle (a cancelled timer, a connection leaving
// the idle list) and append it again.
void BM_IntrusiveList_UnlinkPushBack(benchmark::State& state) {
  std::vector<ListNode> nodes(kUnlinkNodes);
  NodeList list;
  for (ListNode& n : nodes) list.PushBack(n);
  int i = 0;
  AllocationMeter allocs;
  for (auto _ : state) {
    ListNode& n = nodes[i];
    n.hook.Unlink();
    list.PushBack(n);
    i = (i + kUnlinkStride) % kUnlinkNodes;
  }
  allocs.Report(state);
  benchmark::DoNotOptimize(list.front().value);
}

// The std::list equivalent keeps an iterator per element as its handle;
// erase frees the node and insert allocates a new one.
void BM_StdList_EraseInsert(benchmark::State& state) {
  std::list<int> list;
  std::vector<std::list<int>::iterator> handles;
  for (int v = 0; v < kUnlinkNodes; ++v) {
    handles.push_back(list.insert(list.end(), v));
  }
  int i = 0;
  AllocationMeter allocs;
  for (auto _ : state) {
    list.erase(handles[i]);
    handles[i] = list.insert(list.end(), i);
    i = (i + kUnlinkStride) % kUnlinkNodes;
  }
  allocs.Report(state);
  benchmark::DoNotOptimize(list.front());
}

// ---------------------------------------------------------------- MPSC

// Items handed from the producers to the consumer per iteration.
constexpr int kItemsPerRound = 300'000;  // divisible by 1, 2, 3

struct Work {
  MpscNode node;
  int seq = 0;
};

// The baseline: what a loop would write without MpscQueue.
class MutexDeque {
 public:
  bool Push(Work* w) {
    std::lock_guard<std::mutex> lock(mu_);
    const bool was_empty = items_.empty();
    items_.push_back(w);
    return was_empty;
  }
  Work* Pop() {
    std::lock_guard<std::mutex> lock(mu_);
    if (items_.empty()) return nullptr;
    Work* w = items_.front();
    items_.pop_front();
    return w;
  }

 private:
  std::mutex mu_;
  std::deque<Work*> items_;
};

// One iteration: `producers` threads push kItemsPerRound items between them;
// this thread pops them all, yielding when it finds the queue empty (the
// machine may have fewer cores than threads). The producers live across
// iterations, each waiting for the next round number, so thread start-up is
// neither timed nor counted as allocations.
template <typename Queue>
void RunProducerConsumer(benchmark::State& state) {
  const int producers = static_cast<int>(state.range(0));
  const int per_producer = kItemsPerRound / producers;
  std::vector<Work> work(kItemsPerRound);
  Queue queue;
  std::atomic<int> round{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      Work* first = &work[p * per_producer];
      int done = 0;
      while (true) {
        // acquire: the consumer's use of last round's items happens-before
        // they are pushed again.
        while (round.load(std::memory_order_acquire) == done) {
          if (stop.load(std::memory_order_relaxed)) return;
          std::this_thread::yield();
        }
        ++done;
        for (int s = 0; s < per_producer; ++s) queue.Push(first + s);
      }
    });
  }
  AllocationMeter allocs;
  for (auto _ : state) {
    round.fetch_add(1, std::memory_order_release);
    int received = 0;
    while (received < producers * per_producer) {
      if (Work* w = queue.Pop()) {
        benchmark::DoNotOptimize(w->seq);
        ++received;
      } else {
        std::this_thread::yield();
      }
    }
  }
  allocs.Report(state, "allocs/op", kItemsPerRound);
  state.SetItemsProcessed(state.iterations() * kItemsPerRound);
  stop.store(true, std::memory_order_relaxed);
  for (std::thread& t : threads) t.join();
}

void BM_MpscQueue(benchmark::State& state) {
  RunProducerConsumer<MpscQueue<Work, &Work::node>>(state);
}

void BM_MutexDeque(benchmark::State& state) {
  RunProducerConsumer<MutexDeque>(state);
}

// --------------------------------------------------------- MessageQueue

constexpr std::size_t kMessageSize = 64;
constexpr int kMaxIov = 64;

// The baseline: a deque of owned strings and an offset into the first.
class StringDequeOutput {
 public:
  void Append(absl::string_view bytes) { pending_.emplace_back(bytes); }
  int FillIovec(struct iovec* iov, int max_iov) {
    int n = 0;
    std::size_t skip = front_offset_;
    for (auto it = pending_.begin(); it != pending_.end() && n < max_iov;
         ++it, skip = 0) {
      iov[n].iov_base = &(*it)[skip];
      iov[n].iov_len = it->size() - skip;
      ++n;
    }
    return n;
  }
  void Consume(std::size_t n) {
    while (n > 0) {
      const std::size_t left = pending_.front().size() - front_offset_;
      if (n < left) {
        front_offset_ += n;
        return;
      }
      n -= left;
      pending_.pop_front();
      front_offset_ = 0;
    }
  }

 private:
  std::deque<std::string> pending_;
  std::size_t front_offset_ = 0;
};

// One iteration: append range(0) 64-byte messages to `output` (a
// MessageQueue or the baseline; both copy the bytes), then one writev-shaped
// drain: expose the front as iovecs and consume what
// "writev" took (all of it). items = messages; allocs/op is per message,
// after one warm-up round.
template <typename Output>
void RunAppend64Writev(benchmark::State& state, Output& output) {
  const int messages = static_cast<int>(state.range(0));
  // The messages come from an 8 KiB buffer at offsets that move by 72 bytes
  // each time, as a server's read buffers do. Copying from one fixed string
  // made the figure depend on where ASLR put that string relative to the
  // pool's block (one process ran at 9 ns per message, the next at 21 ns:
  // likely 4 KiB aliasing between the copy's loads and stores).
  const std::string source(8192 + kMessageSize, 'm');
  std::size_t offset = 0;
  struct iovec iov[kMaxIov];
  auto round = [&] {
    for (int m = 0; m < messages; ++m) {
      output.Append(absl::string_view(source.data() + offset, kMessageSize));
      offset = (offset + 72) & 8191;
    }
    const int n = output.FillIovec(iov, kMaxIov);
    std::size_t written = 0;
    for (int i = 0; i < n; ++i) written += iov[i].iov_len;
    benchmark::DoNotOptimize(iov);
    output.Consume(written);
  };
  round();
  AllocationMeter allocs;
  for (auto _ : state) round();
  allocs.Report(state, "allocs/op", messages);
  state.SetItemsProcessed(state.iterations() * messages);
}

void BM_MessageQueue_Append64Writev(benchmark::State& state) {
  BlockPool pool;
  MessageQueue queue(&pool);
  RunAppend64Writev(state, queue);
}

void BM_DequeString_Append64Writev(benchmark::State& state) {
  StringDequeOutput queue;
  RunAppend64Writev(state, queue);
}

// Registered in pairs, nbio first, so each baseline is the next row.
BENCHMARK(BM_IntrusiveList_PushPop);
BENCHMARK(BM_StdList_PushPop);
BENCHMARK(BM_IntrusiveList_UnlinkPushBack);
BENCHMARK(BM_StdList_EraseInsert);
BENCHMARK(BM_MpscQueue)->ArgName("producers")->Arg(1)->UseRealTime();
BENCHMARK(BM_MutexDeque)->ArgName("producers")->Arg(1)->UseRealTime();
BENCHMARK(BM_MpscQueue)->ArgName("producers")->Arg(3)->UseRealTime();
BENCHMARK(BM_MutexDeque)->ArgName("producers")->Arg(3)->UseRealTime();
BENCHMARK(BM_MessageQueue_Append64Writev)->ArgName("msgs_per_writev")->Arg(1);
BENCHMARK(BM_DequeString_Append64Writev)->ArgName("msgs_per_writev")->Arg(1);
BENCHMARK(BM_MessageQueue_Append64Writev)->ArgName("msgs_per_writev")->Arg(16);
BENCHMARK(BM_DequeString_Append64Writev)->ArgName("msgs_per_writev")->Arg(16);

// (nbio family, baseline family): rows whose names differ only in the family.
constexpr const char* kPairs[][2] = {
    {"BM_IntrusiveList_PushPop", "BM_StdList_PushPop"},
    {"BM_IntrusiveList_UnlinkPushBack", "BM_StdList_EraseInsert"},
    {"BM_MpscQueue", "BM_MutexDeque"},
    {"BM_MessageQueue_Append64Writev", "BM_DequeString_Append64Writev"},
};

// After the console table, one "speed-up" line per nbio row that has a
// baseline row: baseline time / nbio time per iteration (same work; CPU time,
// or wall time for the /real_time rows), from the mean when repeated.
class SpeedUpReporter : public bench::SummaryReporter {
 public:
  SpeedUpReporter() : SummaryReporter(OO_Tabular) {}

 protected:
  void PrintSummary(std::FILE* out) override {
    std::fprintf(out,
                 "\nspeed-up (baseline time / nbio time, same work; CPU time,"
                 " wall time for /real_time rows):\n");
    for (const std::string& name : rows().names()) {
      for (const auto& pair : kPairs) {
        const std::string ours = pair[0];
        if (name.compare(0, ours.size(), ours) != 0) continue;
        const std::string rest = name.substr(ours.size());
        if (!rest.empty() && rest[0] != '/') continue;
        const std::string base_name = pair[1] + rest;
        const std::optional<double> time = rows().Seconds(name);
        const std::optional<double> base = rows().Seconds(base_name);
        if (!time || !base) continue;
        std::fprintf(out, "  %-55s %6.2fx vs %s\n", name.c_str(), *base / *time,
                     base_name.c_str());
      }
    }
  }
};

}  // namespace
}  // namespace nbio

int main(int argc, char** argv) {
  nbio::SpeedUpReporter reporter;
  return nbio::bench::RunBenchmarks(argc, argv, &reporter);
}
