// The benchmark baselines must be correct for the comparison to mean
// anything: each heap against a model under random schedule / re-arm /
// cancel / advance.
#include "timers/timer_heaps.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>

#include "gtest/gtest.h"

namespace nbio {
namespace bench {
namespace {

template <typename Heap>
class TimerHeapTest : public testing::Test {};

using Heaps =
    testing::Types<BinaryTimerHeap, QuaternaryTimerHeap, LazyTimerQueue>;
TYPED_TEST_SUITE(TimerHeapTest, Heaps);

std::set<HeapTimer*>* g_fired = nullptr;

void RecordFire(HeapTimer* t) {
  EXPECT_TRUE(g_fired->insert(t).second) << "ran twice";
}

TYPED_TEST(TimerHeapTest, AgreesWithModel) {
  constexpr int kTimers = 200;
  TypeParam heap;
  heap.Reserve(kTimers);
  std::unique_ptr<HeapTimer[]> timers(new HeapTimer[kTimers]);
  for (int i = 0; i < kTimers; ++i) timers[i].callback = &RecordFire;
  std::map<HeapTimer*, int64_t> model;
  std::set<HeapTimer*> fired;
  g_fired = &fired;
  std::mt19937_64 rng(7);
  int64_t now = 0;
  for (int step = 0; step < 200000; ++step) {
    HeapTimer* t = &timers[rng() % kTimers];
    switch (rng() % 4) {
      case 0:
      case 1: {
        const int64_t deadline = now + static_cast<int64_t>(rng() % 1000);
        heap.Schedule(t, deadline);
        model[t] = deadline;
        break;
      }
      case 2:
        heap.Cancel(t);
        model.erase(t);
        break;
      default: {
        now += static_cast<int64_t>(rng() % 50);
        fired.clear();
        const size_t ran = heap.Advance(now);
        std::set<HeapTimer*> due;
        for (auto it = model.begin(); it != model.end();) {
          if (it->second <= now) {
            due.insert(it->first);
            it = model.erase(it);
          } else {
            ++it;
          }
        }
        ASSERT_EQ(fired, due) << "step " << step;
        ASSERT_EQ(ran, due.size());
        break;
      }
    }
    ASSERT_EQ(heap.size(), model.size());
    ASSERT_EQ(t->is_scheduled(), model.count(t) == 1);
    std::optional<int64_t> earliest;
    for (const auto& [timer, deadline] : model) {
      if (!earliest || deadline < *earliest) earliest = deadline;
    }
    ASSERT_EQ(heap.NextExpiry(), earliest) << "step " << step;
  }
  g_fired = nullptr;
}

}  // namespace
}  // namespace bench
}  // namespace nbio
