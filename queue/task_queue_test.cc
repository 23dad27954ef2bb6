#include "queue/task_queue.h"

#include <deque>
#include <random>

#include "gtest/gtest.h"
#include "queue/testing/alloc_counter.h"

namespace nbio {
namespace {

TEST(TaskQueueTest, FifoAcrossGrowthAndWraparound) {
  TaskQueue q;
  std::deque<int> model;
  std::vector<int> ran;
  std::mt19937 rng(7);
  int next = 0;
  for (int op = 0; op < 200000; ++op) {
    if (rng() % 3 != 0 || model.empty()) {
      const int v = next++;
      q.Push([&ran, v] { ran.push_back(v); });
      model.push_back(v);
    } else {
      q.Pop()();
      ASSERT_EQ(ran.back(), model.front());
      model.pop_front();
    }
    ASSERT_EQ(q.size(), model.size());
  }
}

TEST(TaskQueueTest, SteadyStateAllocatesNothing) {
  TaskQueue q;
  int sum = 0;
  for (int i = 0; i < 100; ++i) q.Push([&sum, i] { sum += i; });
  while (!q.empty()) q.Pop()();
  const uint64_t before = bench::AllocationCount();
  for (int round = 0; round < 1000; ++round) {
    for (int i = 0; i < 50; ++i) q.Push([&sum, i] { sum += i; });
    while (!q.empty()) q.Pop()();
  }
  EXPECT_EQ(bench::AllocationCount(), before);
  EXPECT_EQ(sum, 4950 + 1000 * 1225);
}

}  // namespace
}  // namespace nbio
