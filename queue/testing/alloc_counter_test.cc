#include "queue/testing/alloc_counter.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"

namespace {

// Makes a pointer escape so the compiler cannot elide the allocation (clang
// removes unused new/delete pairs).
void Escape(void* p) { asm volatile("" : : "g"(p) : "memory"); }

TEST(AllocCounterTest, CountsEveryOperatorNew) {
  const uint64_t before = nbio::bench::AllocationCount();
  auto a = std::make_unique<int>(1);
  Escape(a.get());
  auto b = std::make_unique<int[]>(8);
  Escape(b.get());
  std::vector<int> v(100);
  Escape(v.data());
  EXPECT_EQ(nbio::bench::AllocationCount() - before, 3u);
}

TEST(AllocCounterTest, NoAllocationNoCount) {
  const uint64_t before = nbio::bench::AllocationCount();
  int x = 0;
  for (int i = 0; i < 100; ++i) x += i;
  EXPECT_EQ(x, 4950);
  EXPECT_EQ(nbio::bench::AllocationCount(), before);
}

}  // namespace
