#include "queue/slab.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "queue/testing/alloc_counter.h"

namespace nbio {
namespace {

// The slots in use, as the walk reports them.
std::vector<void*> Walk(Slab& slab) {
  std::vector<void*> seen;
  slab.ForEachInUse([&](void* slot) { seen.push_back(slot); });
  return seen;
}

std::vector<void*> Sorted(std::vector<void*> v) {
  std::sort(v.begin(), v.end());
  return v;
}

TEST(SlabTest, AllocateFreeReuse) {
  Slab slab(96);
  EXPECT_EQ(slab.slot_size(), 96u);
  void* a = slab.Allocate();
  void* b = slab.Allocate();
  EXPECT_NE(a, b);
  EXPECT_EQ(slab.in_use(), 2u);
  EXPECT_EQ(slab.chunk_count(), 1u);
  std::memset(a, 0xab, 96);  // the whole slot is the caller's
  std::memset(b, 0xcd, 96);
  slab.Free(a);
  EXPECT_EQ(slab.in_use(), 1u);
  // The slot just freed is the next one handed out.
  EXPECT_EQ(slab.Allocate(), a);
  slab.Free(a);
  slab.Free(b);
  EXPECT_EQ(slab.in_use(), 0u);
  EXPECT_TRUE(Walk(slab).empty());
}

TEST(SlabTest, SlotsAreDistinctAlignedAndStableAcrossGrowth) {
  Slab slab(24);
  std::vector<char*> slots;
  for (int i = 0; i < 1000; ++i) {
    char* p = static_cast<char*>(slab.Allocate());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 8, 0u);
    // Stamp every slot; growth must never move or overwrite it.
    std::memset(p, static_cast<char>(i), 24);
    slots.push_back(p);
  }
  EXPECT_EQ(slab.chunk_count(),
            (1000 + Slab::kSlotsPerChunk - 1) / Slab::kSlotsPerChunk);
  std::set<char*> distinct(slots.begin(), slots.end());
  EXPECT_EQ(distinct.size(), slots.size());
  for (int i = 0; i < 1000; ++i) {
    for (int j = 0; j < 24; ++j) {
      ASSERT_EQ(slots[i][j], static_cast<char>(i)) << "slot " << i;
    }
  }
  // No two slots overlap.
  std::vector<char*> by_address(slots);
  std::sort(by_address.begin(), by_address.end());
  for (size_t i = 1; i < by_address.size(); ++i) {
    EXPECT_GE(by_address[i] - by_address[i - 1], 24);
  }
  for (char* p : slots) slab.Free(p);
}

TEST(SlabTest, WalkVisitsSlotsInUseAcrossChunksWithHoles) {
  Slab slab(32);
  std::vector<void*> slots;
  for (size_t i = 0; i < 3 * Slab::kSlotsPerChunk + 5; ++i) {
    slots.push_back(slab.Allocate());
  }
  ASSERT_EQ(slab.chunk_count(), 4u);
  // Holes at the ends of chunks, a whole chunk emptied, and random ones.
  std::vector<void*> kept;
  std::mt19937 rng(3);
  for (size_t i = 0; i < slots.size(); ++i) {
    const bool hole = i == 0 || i == 63 || i == 64 || (i >= 128 && i < 192) ||
                      i == slots.size() - 1 || rng() % 4 == 0;
    if (hole) {
      slab.Free(slots[i]);
    } else {
      kept.push_back(slots[i]);
    }
  }
  const std::vector<void*> seen = Walk(slab);
  EXPECT_EQ(Sorted(seen), Sorted(kept));
  EXPECT_EQ(seen.size(), slab.in_use());
  for (void* p : kept) slab.Free(p);
  EXPECT_TRUE(Walk(slab).empty());
}

// fn may free slots not yet reached (not visited), free the current one,
// and allocate (a new chunk too): every slot in use throughout is visited
// exactly once.
TEST(SlabTest, WalkToleratesFreeAndAllocateDuringTheWalk) {
  Slab slab(16);
  std::vector<void*> slots;
  for (size_t i = 0; i < 2 * Slab::kSlotsPerChunk; ++i) {
    slots.push_back(slab.Allocate());  // two full chunks: the next grows
  }
  // Slot 10 frees slot 100 (not yet reached) and itself; slot 20 allocates
  // 100 more slots (new chunks); slot 30 frees slot 5 (already visited).
  std::set<void*> freed_ahead = {slots[100]};
  std::vector<void*> added;
  std::vector<void*> seen;
  slab.ForEachInUse([&](void* slot) {
    seen.push_back(slot);
    if (slot == slots[10]) {
      slab.Free(slots[100]);
      slab.Free(slots[10]);
    } else if (slot == slots[20]) {
      for (int i = 0; i < 100; ++i) added.push_back(slab.Allocate());
    } else if (slot == slots[30]) {
      slab.Free(slots[5]);
    }
  });
  // slots[100] and slots[10] were reused by the allocations at slot 20:
  // they count as new slots.
  std::multiset<void*> counts(seen.begin(), seen.end());
  const std::set<void*> added_set(added.begin(), added.end());
  for (size_t i = 0; i < slots.size(); ++i) {
    if (added_set.count(slots[i]) != 0) continue;  // reused: a new slot
    if (i == 100) {
      EXPECT_EQ(counts.count(slots[i]), 0u) << "freed before it was reached";
    } else {
      EXPECT_EQ(counts.count(slots[i]), 1u) << "slot " << i;
    }
  }
  for (void* p : seen) EXPECT_LE(counts.count(p), 1u);
  EXPECT_GT(slab.chunk_count(), 2u);
  // A second walk sees exactly what is in use now.
  std::vector<void*> now;
  for (size_t i = 0; i < slots.size(); ++i) {
    if (i != 5 && i != 10 && i != 100) now.push_back(slots[i]);
  }
  // Including slots[10] and slots[100] if the allocations reused them.
  now.insert(now.end(), added.begin(), added.end());
  EXPECT_EQ(Sorted(Walk(slab)), Sorted(now));
  for (void* p : now) slab.Free(p);
  EXPECT_EQ(slab.in_use(), 0u);
}

TEST(SlabTest, NoAllocationAfterWarmUp) {
  Slab slab(96);
  std::vector<void*> slots;
  slots.reserve(500);
  for (int i = 0; i < 500; ++i) slots.push_back(slab.Allocate());
  for (void* p : slots) slab.Free(p);
  slots.clear();
  const uint64_t before = bench::AllocationCount();
  std::mt19937 rng(9);
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 500; ++i) slots.push_back(slab.Allocate());
    std::shuffle(slots.begin(), slots.end(), rng);
    size_t walked = 0;
    slab.ForEachInUse([&](void*) { ++walked; });
    EXPECT_EQ(walked, 500u);
    for (void* p : slots) slab.Free(p);
    slots.clear();
  }
  EXPECT_EQ(bench::AllocationCount(), before);
  EXPECT_EQ(slab.chunk_count(),
            (500 + Slab::kSlotsPerChunk - 1) / Slab::kSlotsPerChunk);
}

TEST(SlabDeathTest, FreeingASlotNotInUseAborts) {
  Slab slab(16);
  void* p = slab.Allocate();
  slab.Free(p);
  EXPECT_DEATH(slab.Free(p), "not in use");
  int outside = 0;
  EXPECT_DEATH(slab.Free(&outside), "not a slot of this slab");
}

TEST(SlabDeathTest, DestroyingWithSlotsInUseAborts) {
  EXPECT_DEATH(
      {
        Slab slab(16);
        slab.Allocate();
      },
      "slots in use");
}

}  // namespace
}  // namespace nbio
