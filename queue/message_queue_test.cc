#include "queue/message_queue.h"

#include <limits.h>  // IOV_MAX
#include <sys/uio.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "queue/message_queue_model.h"
#include "queue/testing/alloc_counter.h"

namespace nbio {
namespace {

// 64-byte blocks hold 32 bytes after the 32-byte header: block boundaries
// every 32 bytes make the edge cases cheap to reach.
constexpr std::size_t kSmallBlock = 64;
constexpr std::size_t kSmallCapacity = 32;

// The bytes FillIovec exposes, concatenated.
std::string Exposed(const MessageQueue& q, int max_iov = IOV_MAX) {
  std::vector<struct iovec> iov(IOV_MAX);
  const int n = q.FillIovec(iov.data(), max_iov);
  std::string out;
  for (int i = 0; i < n; ++i) {
    out.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
  }
  return out;
}

std::vector<std::size_t> IovecLengths(const MessageQueue& q) {
  std::vector<struct iovec> iov(IOV_MAX);
  const int n = q.FillIovec(iov.data(), IOV_MAX);
  std::vector<std::size_t> out;
  for (int i = 0; i < n; ++i) out.push_back(iov[i].iov_len);
  return out;
}

std::string Pattern(std::size_t len, char first = 'a') {
  std::string s(len, '\0');
  for (std::size_t i = 0; i < len; ++i)
    s[i] = static_cast<char>(first + i % 26);
  return s;
}

// ------------------------------------------------------------ BlockPool

TEST(BlockPoolTest, ReusesFreedBlocks) {
  BlockPool pool;
  EXPECT_EQ(pool.block_size(), 4096u);
  void* a = pool.Allocate();
  EXPECT_EQ(pool.blocks_allocated(), 1u);
  EXPECT_EQ(pool.blocks_in_use(), 1u);
  EXPECT_EQ(pool.blocks_free(), 0u);
  std::memset(a, 0xab, pool.block_size());  // the whole block is ours
  pool.Deallocate(a);
  EXPECT_EQ(pool.blocks_in_use(), 0u);
  EXPECT_EQ(pool.blocks_free(), 1u);
  EXPECT_EQ(pool.Allocate(), a);  // from the free list, not the heap
  EXPECT_EQ(pool.blocks_allocated(), 1u);
  pool.Deallocate(a);
}

TEST(BlockPoolTest, CapOnFreeBlocksIsHonoured) {
  BlockPool pool(kSmallBlock, /*max_free_blocks=*/4);
  EXPECT_EQ(pool.max_free_blocks(), 4u);
  std::vector<void*> blocks;
  for (int i = 0; i < 10; ++i) blocks.push_back(pool.Allocate());
  EXPECT_EQ(pool.blocks_allocated(), 10u);
  for (void* b : blocks) pool.Deallocate(b);
  // Four kept, six went back to the heap.
  EXPECT_EQ(pool.blocks_free(), 4u);
  EXPECT_EQ(pool.blocks_in_use(), 0u);
  blocks.clear();
  for (int i = 0; i < 10; ++i) blocks.push_back(pool.Allocate());
  EXPECT_EQ(pool.blocks_allocated(), 16u);  // four reused, six new
  EXPECT_EQ(pool.blocks_free(), 0u);
  for (void* b : blocks) pool.Deallocate(b);
  EXPECT_EQ(pool.blocks_free(), 4u);
}

TEST(BlockPoolTest, ZeroCapKeepsNothing) {
  BlockPool pool(kSmallBlock, /*max_free_blocks=*/0);
  pool.Deallocate(pool.Allocate());
  EXPECT_EQ(pool.blocks_free(), 0u);
  pool.Deallocate(pool.Allocate());
  EXPECT_EQ(pool.blocks_allocated(), 2u);
}

TEST(BlockPoolTest, ReleaseFreeBlocksEmptiesTheFreeList) {
  BlockPool pool(kSmallBlock);
  void* a = pool.Allocate();
  void* b = pool.Allocate();
  pool.Deallocate(a);
  pool.Deallocate(b);
  EXPECT_EQ(pool.blocks_free(), 2u);
  pool.ReleaseFreeBlocks();
  EXPECT_EQ(pool.blocks_free(), 0u);
  pool.Deallocate(pool.Allocate());
  EXPECT_EQ(pool.blocks_allocated(), 3u);
}

TEST(BlockPoolDeathTest, DestroyedWithBlocksInUseAborts) {
  EXPECT_DEATH(
      {
        BlockPool pool(kSmallBlock);
        pool.Allocate();
      },
      "BlockPool destroyed with blocks in use");
}

TEST(BlockPoolDeathTest, TooSmallBlocksAbort) {
  EXPECT_DEATH(BlockPool pool(BlockPool::kMinBlockSize - 1),
               "block size too small");
}

// --------------------------------------------------------- MessageQueue

TEST(MessageQueueTest, FitsTheIdleConnectionBudget) {
  EXPECT_LE(sizeof(MessageQueue), 32u);
}

TEST(MessageQueueTest, EmptyQueueOwnsNoBlock) {
  BlockPool pool;
  MessageQueue q(&pool);
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.size(), 0u);
  struct iovec iov[4];
  EXPECT_EQ(q.FillIovec(iov, 4), 0);
  q.Consume(0);
  q.Clear();
  EXPECT_EQ(pool.blocks_in_use(), 0u);
  EXPECT_EQ(pool.blocks_allocated(), 0u);
}

TEST(MessageQueueTest, ZeroLengthAppendsAreNoOps) {
  BlockPool pool;
  MessageQueue q(&pool);
  q.Append("");
  q.Append(absl::string_view());
  q.Append(std::string());
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(pool.blocks_in_use(), 0u);
  // Also at the back of a non-empty queue.
  q.Append("x");
  q.Append("");
  EXPECT_EQ(IovecLengths(q), std::vector<std::size_t>{1});
}

TEST(MessageQueueTest, OneByte) {
  BlockPool pool;
  MessageQueue q(&pool);
  q.Append("z");
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(Exposed(q), "z");
  EXPECT_EQ(pool.blocks_in_use(), 1u);
  q.Consume(1);
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(pool.blocks_in_use(), 0u);  // emptied block went back
  EXPECT_EQ(pool.blocks_free(), 1u);
}

TEST(MessageQueueTest, SmallAppendsShareOneBlockAndOneIovec) {
  BlockPool pool;
  MessageQueue q(&pool);
  q.Append("GET / HTTP/1.1\r\n");
  q.Append(std::string("Host: x\r\n"));  // short owned strings are copied
  q.Append(absl::string_view("\r\n"));
  EXPECT_EQ(Exposed(q), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(IovecLengths(q).size(), 1u);
  EXPECT_EQ(pool.blocks_in_use(), 1u);
}

TEST(MessageQueueTest, AppendFillsTheTailThenNewBlocks) {
  BlockPool pool(kSmallBlock);
  MessageQueue q(&pool);
  q.Append(Pattern(20));
  q.Append(Pattern(80, 'A'));  // 12 into the tail, then 32 + 32 + 4
  EXPECT_EQ(IovecLengths(q), (std::vector<std::size_t>{32, 32, 32, 4}));
  EXPECT_EQ(Exposed(q), Pattern(20) + Pattern(80, 'A'));
  EXPECT_EQ(q.size(), 100u);
}

TEST(MessageQueueTest, PartialConsumeAcrossBlockBoundaries) {
  BlockPool pool(kSmallBlock);
  MessageQueue q(&pool);
  const std::string all = Pattern(100);
  q.Append(all);  // blocks of 32, 32, 32, 4
  q.Consume(5);   // inside the first block
  EXPECT_EQ(IovecLengths(q), (std::vector<std::size_t>{27, 32, 32, 4}));
  EXPECT_EQ(pool.blocks_in_use(), 4u);
  q.Consume(27);  // exactly to the first boundary
  EXPECT_EQ(IovecLengths(q), (std::vector<std::size_t>{32, 32, 4}));
  EXPECT_EQ(pool.blocks_in_use(), 3u);
  q.Consume(40);  // across a boundary into the third block
  EXPECT_EQ(IovecLengths(q), (std::vector<std::size_t>{24, 4}));
  EXPECT_EQ(Exposed(q), all.substr(72));
  EXPECT_EQ(pool.blocks_in_use(), 2u);
  q.Consume(28);  // everything left
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(pool.blocks_in_use(), 0u);
  // The emptied queue appends into a fresh block.
  q.Append("again");
  EXPECT_EQ(Exposed(q), "again");
}

TEST(MessageQueueTest, FillIovecHonoursMaxIovAndIovMax) {
  BlockPool pool(kSmallBlock);
  MessageQueue q(&pool);
  // An lvalue, so copied: a temporary std::string would be adopted whole.
  const std::string bytes = Pattern(IOV_MAX * kSmallCapacity);
  q.Append(bytes);  // exactly IOV_MAX blocks
  std::vector<struct iovec> iov(IOV_MAX + 10);
  EXPECT_EQ(q.FillIovec(iov.data(), IOV_MAX), IOV_MAX);
  EXPECT_EQ(q.FillIovec(iov.data(), IOV_MAX + 10), IOV_MAX);
  EXPECT_EQ(q.FillIovec(iov.data(), 5), 5);
  EXPECT_EQ(q.FillIovec(iov.data(), 0), 0);
  EXPECT_EQ(q.FillIovec(iov.data(), -1), 0);

  q.Append("!");  // one block beyond IOV_MAX
  EXPECT_EQ(q.FillIovec(iov.data(), IOV_MAX + 10), IOV_MAX);
  std::size_t exposed = 0;
  for (int i = 0; i < IOV_MAX; ++i) exposed += iov[i].iov_len;
  EXPECT_EQ(exposed, q.size() - 1);
  // After writing all IOV_MAX ranges, the last byte is next.
  q.Consume(exposed);
  EXPECT_EQ(Exposed(q), "!");
}

TEST(MessageQueueTest, OwnedBufferIsExposedWithoutCopy) {
  BlockPool pool;
  MessageQueue q(&pool);
  std::string body = Pattern(100'000);
  const std::string expected = body;
  const char* const buffer = body.data();
  q.Append(std::move(body));
  struct iovec iov[4];
  ASSERT_EQ(q.FillIovec(iov, 4), 1);
  EXPECT_EQ(iov[0].iov_base, buffer);  // the caller's bytes, in place
  EXPECT_EQ(iov[0].iov_len, expected.size());
  q.Consume(60'000);
  ASSERT_EQ(q.FillIovec(iov, 4), 1);
  EXPECT_EQ(iov[0].iov_base, buffer + 60'000);
  EXPECT_EQ(Exposed(q), expected.substr(60'000));
  q.Consume(40'000);
  EXPECT_EQ(pool.blocks_in_use(), 0u);
}

TEST(MessageQueueTest, OwnedBuffersMixWithCopiedBytes) {
  BlockPool pool(kSmallBlock);
  MessageQueue q(&pool);
  const std::string big1 = Pattern(MessageQueue::kMinAdoptSize, 'A');
  const std::string big2 = Pattern(5000, 'a');
  q.Append("head:");                 // copied into block 1
  q.Append(std::string(big1));       // adopted: block 2
  q.Append("mid");                   // copied: block 3 (not into block 2)
  q.Append(std::string(big2));       // adopted: block 4
  q.Append(std::string("tail", 4));  // short owned string: copied, block 5
  EXPECT_EQ(IovecLengths(q),
            (std::vector<std::size_t>{5, big1.size(), 3, big2.size(), 4}));
  const std::string all = "head:" + big1 + "mid" + big2 + "tail";
  EXPECT_EQ(Exposed(q), all);
  q.Consume(7);  // into the first adopted buffer
  EXPECT_EQ(Exposed(q), all.substr(7));
  q.Consume(big1.size() + 1);  // out of it, into "mid"
  EXPECT_EQ(Exposed(q), all.substr(8 + big1.size()));
  q.Clear();
  EXPECT_EQ(pool.blocks_in_use(), 0u);  // and ASan checks the strings died
}

// Records the releases of lent memory: token per call, in order.
struct Lender {
  std::vector<uint64_t> returned;
  static void Return(void* lender, uint64_t token) {
    static_cast<Lender*>(lender)->returned.push_back(token);
  }
};

TEST(MessageQueueTest, LentBytesAreSentInPlaceAndReturnedOnceWhenConsumed) {
  BlockPool pool(kSmallBlock);
  MessageQueue q(&pool);
  Lender lender;
  const std::string lent = Pattern(5000, 'A');
  q.Append("head:");
  q.AppendLent(lent, &Lender::Return, &lender, 7);
  q.Append("tail");  // not written into the lent memory
  EXPECT_EQ(lent, Pattern(5000, 'A'));
  EXPECT_EQ(IovecLengths(q), (std::vector<std::size_t>{5, 5000, 4}));
  struct iovec iov[3];
  ASSERT_EQ(q.FillIovec(iov, 3), 3);
  EXPECT_EQ(iov[1].iov_base, lent.data());  // in place
  EXPECT_EQ(q.size(), 5u + 5000u + 4u);
  q.Consume(5 + 4999);  // all but the last lent byte
  EXPECT_TRUE(lender.returned.empty());
  EXPECT_EQ(Exposed(q), lent.substr(4999) + "tail");
  q.Consume(1);  // the last one: returned now, once
  EXPECT_EQ(lender.returned, std::vector<uint64_t>{7});
  EXPECT_EQ(Exposed(q), "tail");
  q.Consume(4);
  EXPECT_EQ(lender.returned, std::vector<uint64_t>{7});
  EXPECT_EQ(pool.blocks_in_use(), 0u);
}

TEST(MessageQueueTest, LentBytesAreReturnedByClearDestructionAndAMoveOver) {
  BlockPool pool(kSmallBlock);
  Lender lender;
  const std::string lent = Pattern(300);
  {
    MessageQueue q(&pool);
    q.AppendLent(lent, &Lender::Return, &lender, 1);
    q.AppendLent(absl::string_view(lent).substr(10, 20), &Lender::Return,
                 &lender, 2);
    EXPECT_EQ(Exposed(q), lent + lent.substr(10, 20));
    q.Consume(100);
    q.Clear();
    EXPECT_EQ(lender.returned, (std::vector<uint64_t>{1, 2}));
    q.AppendLent(lent, &Lender::Return, &lender, 3);
    MessageQueue other(&pool);
    other.AppendLent(lent, &Lender::Return, &lender, 4);
    other = std::move(q);  // other's own lent bytes go back first
    EXPECT_EQ(lender.returned, (std::vector<uint64_t>{1, 2, 4}));
    // Consumed exactly to the end of the lent block in one call that
    // spans it (ConsumeSlow), on a queue of one block.
    other.Consume(lent.size());
    EXPECT_EQ(lender.returned, (std::vector<uint64_t>{1, 2, 4, 3}));
    other.AppendLent(lent, &Lender::Return, &lender, 5);
  }  // destroyed with lent bytes queued
  EXPECT_EQ(lender.returned, (std::vector<uint64_t>{1, 2, 4, 3, 5}));
  EXPECT_EQ(pool.blocks_in_use(), 0u);
  // Empty: returned at once, nothing queued.
  MessageQueue q(&pool);
  q.AppendLent(absl::string_view(), &Lender::Return, &lender, 6);
  EXPECT_EQ(lender.returned.back(), 6u);
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(pool.blocks_in_use(), 0u);
}

TEST(MessageQueueTest, ClearAndDestructionReturnEveryBlock) {
  BlockPool pool(kSmallBlock, /*max_free_blocks=*/1000);
  {
    MessageQueue q(&pool);
    q.Append(Pattern(1000));
    q.Append(Pattern(2000));
    EXPECT_GT(pool.blocks_in_use(), 1u);
    q.Clear();
    EXPECT_TRUE(q.empty());
    EXPECT_EQ(pool.blocks_in_use(), 0u);
    q.Append(Pattern(500));
    q.Append(std::string(Pattern(3000)));
  }
  EXPECT_EQ(pool.blocks_in_use(), 0u);
}

TEST(MessageQueueTest, MoveTakesBytesAndBlocks) {
  BlockPool pool(kSmallBlock);
  MessageQueue a(&pool);
  a.Append(Pattern(70));
  MessageQueue b(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT: testing the moved-from state
  EXPECT_EQ(Exposed(b), Pattern(70));
  MessageQueue c(&pool);
  c.Append("dropped");
  c = std::move(b);  // c's own bytes are cleared first
  EXPECT_EQ(Exposed(c), Pattern(70));
  EXPECT_EQ(pool.blocks_in_use(), 3u);
  a.Append("moved-from queues are usable");
  EXPECT_EQ(Exposed(a), "moved-from queues are usable");
}

TEST(MessageQueueDeathTest, ConsumePastTheEndAborts) {
  BlockPool pool;
  MessageQueue q(&pool);
  q.Append("abc");
  EXPECT_DEATH(q.Consume(4), "Consume\\(\\) past the end");
}

// The steady load the TCP layer puts on a queue: append a 64-byte message,
// writev, consume. After the first round, blocks cycle through the pool.
TEST(MessageQueueTest, SteadyLoadAllocatesNothingAfterWarmUp) {
  BlockPool pool;
  MessageQueue q(&pool);
  const std::string message = Pattern(64);
  struct iovec iov[16];
  auto round = [&] {
    q.Append(message);
    const int n = q.FillIovec(iov, 16);
    std::size_t written = 0;
    for (int i = 0; i < n; ++i) written += iov[i].iov_len;
    q.Consume(written);
  };
  round();
  const uint64_t before = bench::AllocationCount();
  for (int i = 0; i < 100'000; ++i) round();
  EXPECT_EQ(bench::AllocationCount() - before, 0u);
  EXPECT_EQ(pool.blocks_allocated(), 1u);
}

// Long random operation sequences against a std::string model (see
// message_queue_model.h), over block sizes that put boundaries everywhere
// (64, an odd 97) and the default, and free-list caps of some, none (every
// block from the heap) and the default.
struct ModelParams {
  std::size_t block_size;
  std::size_t max_free_blocks;
  uint32_t seed;
};

class MessageQueueModelTest : public ::testing::TestWithParam<ModelParams> {};

TEST_P(MessageQueueModelTest, MatchesStringModel) {
  constexpr int kOps = 700'000;
  // Keep the queue at a few KiB (~60 small blocks) so each Fill check stays
  // cheap; boundaries, not volume, are what the model test is after.
  constexpr std::size_t kSoftLimit = 2 * 1024;
  const ModelParams& p = GetParam();
  MessageQueueModelChecker checker(p.block_size, p.max_free_blocks);
  std::mt19937 rng(p.seed);
  auto below = [&](std::size_t n) { return n == 0 ? 0 : rng() % n; };

  for (int op = 0; op < kOps; ++op) {
    const uint32_t r = rng() % 100;
    const bool full = checker.size() > kSoftLimit;
    if (r < 30 && !full) {
      // Mostly small messages, some zero-length, some spanning blocks.
      const uint32_t kind = rng() % 10;
      checker.AppendCopy(kind == 0 ? 0 : kind < 8 ? below(200) : below(5000));
    } else if (r < 36 && !full) {
      const std::size_t len = rng() % 2
                                  ? below(MessageQueue::kMinAdoptSize)
                                  : MessageQueue::kMinAdoptSize + below(6000);
      if (rng() % 2) {
        checker.AppendOwned(len);
      } else {
        checker.AppendLent(rng() % 8 == 0 ? 0 : len);
      }
    } else if (r < 56) {
      // Fill with small, exact-IOV_MAX and oversized limits.
      const uint32_t kind = rng() % 8;
      checker.Fill(kind == 0   ? IOV_MAX
                   : kind == 1 ? IOV_MAX + 3
                   : kind == 2 ? -1
                               : static_cast<int>(below(8)));
    } else if (r < 86) {
      // A partial write of random length, all of it, or nothing.
      const uint32_t kind = rng() % 10;
      checker.Consume(kind == 0   ? 0
                      : kind == 1 ? checker.size()
                                  : below(checker.size() + 1));
    } else if (r < 96) {
      checker.ConsumeIovecs(static_cast<int>(below(4)));
    } else if (r < 99) {
      checker.MoveOutAndBack();
    } else {
      // Rarely: drop everything, or (small blocks) grow past IOV_MAX blocks
      // so that Fill's cap is checked in the middle of a run too.
      const uint32_t kind = rng() % 40;
      if (kind == 0) {
        checker.Clear();
      } else if (kind == 1 && p.block_size <= 128) {
        checker.AppendCopy(p.block_size * (IOV_MAX + 2));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    BlockSizesAndCaps, MessageQueueModelTest,
    ::testing::Values(ModelParams{64, 16, 1}, ModelParams{97, 0, 2},
                      ModelParams{4096, BlockPool::kDefaultMaxFreeBlocks, 3}),
    [](const ::testing::TestParamInfo<ModelParams>& info) {
      return "Block" + std::to_string(info.param.block_size) + "Cap" +
             std::to_string(info.param.max_free_blocks);
    });

}  // namespace
}  // namespace nbio
