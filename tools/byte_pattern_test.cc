#include "tools/byte_pattern.h"

#include <cstdint>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace nbio {
namespace load {
namespace {

constexpr uint64_t kP = BytePattern::kPeriod;

std::vector<uint8_t> Stream(const BytePattern& p, uint64_t position, size_t n) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = p.At(position + i);
  return out;
}

TEST(BytePatternTest, SameSeedSameBytesOtherSeedOtherBytes) {
  BytePattern a(5), b(5), c(6);
  EXPECT_EQ(Stream(a, 0, 1000), Stream(b, 0, 1000));
  EXPECT_NE(Stream(a, 0, 1000), Stream(c, 0, 1000));
}

TEST(BytePatternTest, NeighboursDifferIncludingAcrossTheWrap) {
  BytePattern p;
  for (uint64_t i = 0; i < kP; ++i) {
    ASSERT_NE(p.At(i), p.At(i + 1)) << i;
  }
}

TEST(BytePatternTest, UsesEveryByteValue) {
  BytePattern p;
  std::set<uint8_t> seen;
  for (uint64_t i = 0; i < kP; ++i) seen.insert(p.At(i));
  EXPECT_EQ(seen.size(), 256u);
}

TEST(BytePatternTest, ConnectionsStartApart) {
  std::set<uint64_t> starts;
  for (uint64_t c = 0; c < 1000; ++c) {
    EXPECT_LT(BytePattern::Start(c), kP);
    starts.insert(BytePattern::Start(c));
  }
  EXPECT_EQ(starts.size(), 1000u);
  EXPECT_NE(BytePattern::Start(0), BytePattern::Start(1));
}

TEST(BytePatternTest, SlicesCoverTheStreamAndWrap) {
  BytePattern p;
  iovec iov[2];
  ASSERT_EQ(p.Slices(10, 100, iov), 1);
  EXPECT_EQ(iov[0].iov_len, 100u);
  EXPECT_EQ(std::vector<uint8_t>(static_cast<uint8_t*>(iov[0].iov_base),
                                 static_cast<uint8_t*>(iov[0].iov_base) + 100),
            Stream(p, 10, 100));

  // 3 bytes before the end of the block, 7 after its start; and a position
  // past one period behaves like its remainder.
  for (uint64_t pos : {kP - 3, 2 * kP - 3}) {
    ASSERT_EQ(p.Slices(pos, 10, iov), 2);
    EXPECT_EQ(iov[0].iov_len, 3u);
    EXPECT_EQ(iov[1].iov_len, 7u);
    std::vector<uint8_t> joined(static_cast<uint8_t*>(iov[0].iov_base),
                                static_cast<uint8_t*>(iov[0].iov_base) + 3);
    joined.insert(joined.end(), static_cast<uint8_t*>(iov[1].iov_base),
                  static_cast<uint8_t*>(iov[1].iov_base) + 7);
    EXPECT_EQ(joined, Stream(p, pos, 10));
  }
}

TEST(BytePatternTest, CountsMismatchesExactly) {
  BytePattern p;
  const uint64_t pos = kP - 50;  // the check crosses the wrap
  std::vector<uint8_t> data = Stream(p, pos, 200);
  EXPECT_EQ(p.CountMismatches(pos, data.data(), data.size()), 0u);

  data[3] ^= 0xFF;  // corrupt one byte
  EXPECT_EQ(p.CountMismatches(pos, data.data(), data.size()), 1u);
  data[3] ^= 0xFF;

  std::swap(data[60], data[61]);  // reorder two neighbours across the wrap
  EXPECT_EQ(p.CountMismatches(pos, data.data(), data.size()), 2u);
  std::swap(data[60], data[61]);

  // The stream shifted by a byte (a byte dropped or inserted before it)
  // mismatches everywhere, since neighbours always differ.
  std::vector<uint8_t> shifted = Stream(p, pos + 1, 200);
  EXPECT_EQ(p.CountMismatches(pos, shifted.data(), shifted.size()), 200u);
  EXPECT_EQ(p.CountMismatches(pos, data.data(), 0), 0u);
}

}  // namespace
}  // namespace load
}  // namespace nbio
