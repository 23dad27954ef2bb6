// BytePattern: the deterministic byte streams the load generator sends, and
// the check of what comes back against them.
//
// Connection c sends the stream S_c, where S_c[i] is byte (Start(c) + i) mod
// kPeriod of one pseudo-random block shared by every connection. So an echo
// of connection A's bytes on connection B, a shifted, dropped, repeated or
// corrupted byte all show as mismatches, and neither sending nor checking
// computes anything per byte: both read the block (two slices at most).
//
// The block is built so that no two neighbouring bytes are equal (cyclically):
// two adjacent bytes swapped always make exactly two mismatches.
//
// Immutable after construction; safe to share between threads.
#ifndef NBIO_TOOLS_BYTE_PATTERN_H_
#define NBIO_TOOLS_BYTE_PATTERN_H_

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace nbio {
namespace load {

class BytePattern {
 public:
  // Prime, and longer than the most bytes in flight the load generator
  // allows on a connection (4 MiB), so a stale echo never lines up with the
  // stream. 4 MiB is read-only and shared by every connection.
  static constexpr uint64_t kPeriod = 4194319;

  // The same seed gives the same block (the tests rely on it).
  explicit BytePattern(uint64_t seed = 1);

  // Where connection `connection`'s stream starts in the block.
  static uint64_t Start(uint64_t connection);

  // Byte `position` (a block position, any size: taken mod kPeriod).
  uint8_t At(uint64_t position) const { return block_[position % kPeriod]; }

  // Describes bytes [position, position + n) of the endless repetition of
  // the block as one or two iovecs (two when it wraps); n <= kPeriod.
  // Returns the number of iovecs filled.
  int Slices(uint64_t position, size_t n, iovec out[2]) const;

  // How many of data[0..n) differ from bytes [position, position + n).
  uint64_t CountMismatches(uint64_t position, const uint8_t* data,
                           size_t n) const;

 private:
  std::vector<uint8_t> block_;
};

}  // namespace load
}  // namespace nbio

#endif  // NBIO_TOOLS_BYTE_PATTERN_H_
