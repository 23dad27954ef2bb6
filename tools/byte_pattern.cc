// BytePattern: see byte_pattern.h.
#include "tools/byte_pattern.h"

#include <algorithm>
#include <cstring>

namespace nbio {
namespace load {
namespace {

// splitmix64: a small, well-mixed generator; the block only has to look
// random to a buggy server, not to an adversary.
uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t CountMismatchesIn(const uint8_t* want, const uint8_t* got, size_t n) {
  // memcmp first: the common case is "all equal", and memcmp is vectorised.
  if (std::memcmp(want, got, n) == 0) return 0;
  uint64_t count = 0;
  for (size_t i = 0; i < n; ++i) count += want[i] != got[i];
  return count;
}

}  // namespace

BytePattern::BytePattern(uint64_t seed) : block_(kPeriod) {
  uint64_t state = seed;
  for (uint64_t i = 0; i < kPeriod; ++i) {
    uint8_t b;
    do {
      b = static_cast<uint8_t>(SplitMix64(state) >> 56);
      // Differ from the previous byte; the last also from the first, since
      // the block repeats.
    } while ((i > 0 && b == block_[i - 1]) ||
             (i == kPeriod - 1 && b == block_[0]));
    block_[i] = b;
  }
}

uint64_t BytePattern::Start(uint64_t connection) {
  // A stride coprime with the prime period spreads the starts over the
  // whole block; neighbouring connections start far apart.
  constexpr uint64_t kStride = 2654435761 % kPeriod;
  return (connection * kStride) % kPeriod;
}

int BytePattern::Slices(uint64_t position, size_t n, iovec out[2]) const {
  const uint64_t at = position % kPeriod;
  const size_t first = static_cast<size_t>(std::min<uint64_t>(n, kPeriod - at));
  out[0].iov_base = const_cast<uint8_t*>(block_.data() + at);
  out[0].iov_len = first;
  if (first == n) return 1;
  out[1].iov_base = const_cast<uint8_t*>(block_.data());
  out[1].iov_len = n - first;
  return 2;
}

uint64_t BytePattern::CountMismatches(uint64_t position, const uint8_t* data,
                                      size_t n) const {
  uint64_t count = 0;
  while (n > 0) {
    const uint64_t at = position % kPeriod;
    const size_t chunk =
        static_cast<size_t>(std::min<uint64_t>(n, kPeriod - at));
    count += CountMismatchesIn(block_.data() + at, data, chunk);
    data += chunk;
    position += chunk;
    n -= chunk;
  }
  return count;
}

}  // namespace load
}  // namespace nbio
