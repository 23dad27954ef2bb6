// Benchmark baselines for the timer wheel: the heaps other event loops keep
// their timers in, written to the same small interface so that one benchmark
// template runs them all (timer_benchmark.cc). Not for production use.
//
//   BinaryTimerHeap      libuv: a binary min-heap ordered by (deadline,
//                        sequence number), intrusive, each timer knowing its
//                        index for O(log n) removal.
//   QuaternaryTimerHeap  libev: a 4-ary heap whose array holds the deadline
//                        next to the timer pointer (libev's ANHE), so that
//                        sifting compares without touching the timers, and
//                        the root at index 3 (HEAP0) so that a node's four
//                        children share a cache line.
//   LazyTimerQueue       the naive loop: std::priority_queue of (deadline,
//                        timer, generation); cancel bumps the timer's
//                        generation and leaves the entry, which is dropped
//                        when it reaches the top; compacted when more than
//                        half the entries are stale.
//
// Each has Schedule (re-arms if scheduled), Cancel (no-op if idle),
// NextExpiry, Advance (runs timers with deadline <= now) and Reserve. Like
// libuv and libev they make no promise about timers re-armed from inside a
// callback. Single-threaded. LazyTimerQueue's timers must outlive it (stale
// entries still point at them).
#ifndef NBIO_TIMERS_TIMER_HEAPS_H_
#define NBIO_TIMERS_TIMER_HEAPS_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <queue>
#include <utility>
#include <vector>

namespace nbio {
namespace bench {

// A timer of any of the heaps below: the heap-specific fields are in one
// struct so the benchmark can embed the same node type everywhere.
struct HeapTimer {
  using Callback = void (*)(HeapTimer* timer);
  static constexpr size_t kNotScheduled = ~size_t{0};

  explicit HeapTimer(Callback cb = nullptr) : callback(cb) {}
  HeapTimer(const HeapTimer&) = delete;
  HeapTimer& operator=(const HeapTimer&) = delete;

  bool is_scheduled() const { return index != kNotScheduled; }

  int64_t deadline = 0;
  uint64_t sequence = 0;         // BinaryTimerHeap: FIFO among equal deadlines
  size_t index = kNotScheduled;  // position in the heap; LazyTimerQueue: 0 live
  uint64_t generation = 0;       // LazyTimerQueue
  Callback callback;
};

// libuv's timer heap, array-backed.
class BinaryTimerHeap {
 public:
  void Reserve(size_t n) { heap_.reserve(n); }

  void Schedule(HeapTimer* t, int64_t deadline) {
    Cancel(t);  // as uv_timer_start does
    t->deadline = deadline;
    t->sequence = next_sequence_++;
    t->index = heap_.size();
    heap_.push_back(t);
    SiftUp(t->index);
  }

  void Cancel(HeapTimer* t) {
    if (!t->is_scheduled()) return;
    const size_t i = t->index;
    t->index = HeapTimer::kNotScheduled;
    HeapTimer* last = heap_.back();
    heap_.pop_back();
    if (i == heap_.size()) return;
    heap_[i] = last;
    last->index = i;
    SiftUp(i);
    SiftDown(last->index);
  }

  std::optional<int64_t> NextExpiry() const {
    if (heap_.empty()) return std::nullopt;
    return heap_[0]->deadline;
  }

  size_t Advance(int64_t now) {
    size_t ran = 0;
    while (!heap_.empty() && heap_[0]->deadline <= now) {
      HeapTimer* t = heap_[0];
      Cancel(t);
      ++ran;
      if (t->callback != nullptr) t->callback(t);
    }
    return ran;
  }

  size_t size() const { return heap_.size(); }

 private:
  static bool Less(const HeapTimer* a, const HeapTimer* b) {
    if (a->deadline != b->deadline) return a->deadline < b->deadline;
    return a->sequence < b->sequence;
  }

  void Place(size_t i, HeapTimer* t) {
    heap_[i] = t;
    t->index = i;
  }

  void SiftUp(size_t i) {
    HeapTimer* t = heap_[i];
    while (i > 0) {
      const size_t parent = (i - 1) / 2;
      if (!Less(t, heap_[parent])) break;
      Place(i, heap_[parent]);
      i = parent;
    }
    Place(i, t);
  }

  void SiftDown(size_t i) {
    HeapTimer* t = heap_[i];
    const size_t n = heap_.size();
    for (;;) {
      size_t child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && Less(heap_[child + 1], heap_[child])) ++child;
      if (!Less(heap_[child], t)) break;
      Place(i, heap_[child]);
      i = child;
    }
    Place(i, t);
  }

  std::vector<HeapTimer*> heap_;
  uint64_t next_sequence_ = 0;
};

// libev's 4-ary heap (ev.c, DHEAP 4 with EV_HEAP_CACHE_AT).
class QuaternaryTimerHeap {
 public:
  QuaternaryTimerHeap() : heap_(kRoot) {}

  void Reserve(size_t n) { heap_.reserve(n + kRoot); }

  void Schedule(HeapTimer* t, int64_t deadline) {
    if (t->is_scheduled()) {
      // ev_timer_again: change the key in place.
      heap_[t->index].at = deadline;
      t->deadline = deadline;
      Adjust(t->index);
      return;
    }
    t->deadline = deadline;
    t->index = heap_.size();
    heap_.push_back(Entry{deadline, t});
    SiftUp(t->index);
  }

  void Cancel(HeapTimer* t) {
    if (!t->is_scheduled()) return;
    const size_t i = t->index;
    t->index = HeapTimer::kNotScheduled;
    const Entry last = heap_.back();
    heap_.pop_back();
    if (i == heap_.size()) return;
    heap_[i] = last;
    last.timer->index = i;
    Adjust(i);
  }

  std::optional<int64_t> NextExpiry() const {
    if (heap_.size() == kRoot) return std::nullopt;
    return heap_[kRoot].at;
  }

  size_t Advance(int64_t now) {
    size_t ran = 0;
    while (heap_.size() > kRoot && heap_[kRoot].at <= now) {
      HeapTimer* t = heap_[kRoot].timer;
      Cancel(t);
      ++ran;
      if (t->callback != nullptr) t->callback(t);
    }
    return ran;
  }

  size_t size() const { return heap_.size() - kRoot; }

 private:
  static constexpr size_t kArity = 4;
  static constexpr size_t kRoot = kArity - 1;  // libev's HEAP0

  struct Entry {
    int64_t at;
    HeapTimer* timer;
  };

  static size_t Parent(size_t i) { return (i - kRoot - 1) / kArity + kRoot; }
  static size_t FirstChild(size_t i) {
    return kArity * (i - kRoot) + kRoot + 1;
  }

  void Place(size_t i, const Entry& e) {
    heap_[i] = e;
    e.timer->index = i;
  }

  void Adjust(size_t i) {
    if (i > kRoot && heap_[i].at <= heap_[Parent(i)].at) {
      SiftUp(i);
    } else {
      SiftDown(i);
    }
  }

  void SiftUp(size_t i) {
    const Entry e = heap_[i];
    while (i > kRoot) {
      const size_t parent = Parent(i);
      if (heap_[parent].at <= e.at) break;
      Place(i, heap_[parent]);
      i = parent;
    }
    Place(i, e);
  }

  void SiftDown(size_t i) {
    const Entry e = heap_[i];
    const size_t n = heap_.size();
    for (;;) {
      const size_t first = FirstChild(i);
      if (first >= n) break;
      size_t best = first;
      const size_t end = std::min(first + kArity, n);
      for (size_t c = first + 1; c < end; ++c) {
        if (heap_[c].at < heap_[best].at) best = c;
      }
      if (heap_[best].at >= e.at) break;
      Place(i, heap_[best]);
      i = best;
    }
    Place(i, e);
  }

  std::vector<Entry> heap_;
};

// std::priority_queue with lazy deletion.
class LazyTimerQueue {
 public:
  // Compaction keeps at most 2 * live + kSlack + 1 entries.
  void Reserve(size_t n) { queue_.Reserve(2 * n + kSlack + 1); }

  void Schedule(HeapTimer* t, int64_t deadline) {
    Cancel(t);
    t->deadline = deadline;
    t->index = 0;  // live
    ++live_;
    queue_.push(Entry{deadline, t, t->generation});
    if (queue_.size() > 2 * live_ + kSlack) Compact();
  }

  void Cancel(HeapTimer* t) {
    if (!t->is_scheduled()) return;
    t->index = HeapTimer::kNotScheduled;
    ++t->generation;  // its entry is stale from now on
    --live_;
  }

  std::optional<int64_t> NextExpiry() {
    DropStale();
    if (queue_.empty()) return std::nullopt;
    return queue_.top().deadline;
  }

  size_t Advance(int64_t now) {
    size_t ran = 0;
    for (;;) {
      DropStale();
      if (queue_.empty() || queue_.top().deadline > now) break;
      HeapTimer* t = queue_.top().timer;
      queue_.pop();
      Cancel(t);
      ++ran;
      if (t->callback != nullptr) t->callback(t);
    }
    return ran;
  }

  size_t size() const { return live_; }

 private:
  static constexpr size_t kSlack = 64;

  struct Entry {
    int64_t deadline;
    HeapTimer* timer;
    uint64_t generation;
    bool stale() const { return generation != timer->generation; }
    // For a min-heap on top of std::priority_queue's max-heap.
    friend bool operator>(const Entry& a, const Entry& b) {
      return a.deadline > b.deadline;
    }
  };

  // std::priority_queue with access to its container, for Reserve and
  // Compact.
  class Queue : public std::priority_queue<Entry, std::vector<Entry>,
                                           std::greater<Entry>> {
   public:
    void Reserve(size_t n) { c.reserve(n); }
    // Drops stale entries in place (no allocation) and restores the heap.
    void RemoveStale() {
      c.erase(std::remove_if(c.begin(), c.end(),
                             [](const Entry& e) { return e.stale(); }),
              c.end());
      std::make_heap(c.begin(), c.end(), comp);
    }
  };

  void DropStale() {
    while (!queue_.empty() && queue_.top().stale()) queue_.pop();
  }

  void Compact() { queue_.RemoveStale(); }

  Queue queue_;
  size_t live_ = 0;
};

}  // namespace bench
}  // namespace nbio

#endif  // NBIO_TIMERS_TIMER_HEAPS_H_
