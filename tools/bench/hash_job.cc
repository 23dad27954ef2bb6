#include "tools/bench/hash_job.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "queue/base/check.h"

namespace nbio {
namespace bench {
namespace {

// Odd 64-bit constants with well-mixed bits (the primes xxHash64 uses; any
// such constants would do).
constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime5 = 0x27D4EB2F165667C5ULL;

inline uint64_t RotateLeft(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

inline uint64_t Load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));  // one unaligned load on x86 and arm64
  return v;
}

inline uint64_t Round(uint64_t lane, uint64_t input) {
  return RotateLeft(lane + input * kPrime2, 31) * kPrime1;
}

// splitmix64: the buffer's pseudo-random contents.
uint64_t SplitMix(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

absl::Status HashJob::Validate(const Options& options) {
  if (options.bytes_per_pass == 0) {
    return absl::InvalidArgumentError("bytes per pass must be positive");
  }
  if (options.slice_bytes == 0 || options.slice_bytes % kStripeBytes != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("slice bytes must be a positive multiple of ",
                     kStripeBytes, ", not ", options.slice_bytes));
  }
  if (options.buffer_bytes == 0 || options.buffer_bytes % kStripeBytes != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("buffer bytes must be a positive multiple of ",
                     kStripeBytes, ", not ", options.buffer_bytes));
  }
  return absl::OkStatus();
}

HashJob::HashJob(const Options& options)
    : options_(options), buffer_(options.buffer_bytes) {
  NBIO_CHECK(Validate(options_).ok());
  uint64_t state = options_.seed;
  for (size_t i = 0; i < buffer_.size(); i += 8) {
    const uint64_t v = SplitMix(&state);
    std::memcpy(&buffer_[i], &v, std::min<size_t>(8, buffer_.size() - i));
  }
  StartPass();
}

void HashJob::StartPass() {
  lanes_[0] = options_.seed + kPrime1 + kPrime2;
  lanes_[1] = options_.seed + kPrime2;
  lanes_[2] = options_.seed;
  lanes_[3] = options_.seed - kPrime1;
  pass_offset_ = 0;
}

CpuSliceResult HashJob::Slice() {
  NBIO_CHECK_MSG(!done_, "HashJob::Slice() called after kDone");
  const uint64_t n =
      std::min(options_.slice_bytes, options_.bytes_per_pass - pass_offset_);
  // Whole stripes. A slice starts on a stripe boundary of the pass (slices
  // are whole stripes), and the buffer is whole stripes, so a stripe never
  // straddles the end of the buffer.
  uint64_t stripes_left = n / kStripeBytes;
  uint64_t a = lanes_[0], b = lanes_[1], c = lanes_[2], d = lanes_[3];
  while (stripes_left > 0) {
    const size_t at = static_cast<size_t>(pass_offset_ % buffer_.size());
    const uint64_t run =
        std::min<uint64_t>(stripes_left, (buffer_.size() - at) / kStripeBytes);
    const unsigned char* p = buffer_.data() + at;
    for (uint64_t i = 0; i < run; ++i, p += kStripeBytes) {
      a = Round(a, Load64(p));
      b = Round(b, Load64(p + 8));
      c = Round(c, Load64(p + 16));
      d = Round(d, Load64(p + 24));
    }
    stripes_left -= run;
    pass_offset_ += run * kStripeBytes;
  }
  lanes_[0] = a;
  lanes_[1] = b;
  lanes_[2] = c;
  lanes_[3] = d;
  // The bytes past the last whole stripe: only in the last slice of a pass.
  // They are folded in by FinishPass(), which reads them where they are.
  pass_offset_ += n % kStripeBytes;
  bytes_hashed_ += n;
  ++slices_;
  if (pass_offset_ < options_.bytes_per_pass) return CpuSliceResult::kMore;
  FinishPass();
  if (options_.repeat) {
    StartPass();
    return CpuSliceResult::kMore;
  }
  done_ = true;
  return CpuSliceResult::kDone;
}

void HashJob::FinishPass() {
  const uint64_t total = options_.bytes_per_pass;
  uint64_t h = RotateLeft(lanes_[0], 1) + RotateLeft(lanes_[1], 7) +
               RotateLeft(lanes_[2], 12) + RotateLeft(lanes_[3], 18);
  h += total;
  const uint64_t tail = total % kStripeBytes;
  const size_t at = static_cast<size_t>((total - tail) % buffer_.size());
  for (uint64_t i = 0; i < tail; ++i) {
    h = RotateLeft(h ^ (buffer_[at + i] * kPrime5), 11) * kPrime1;
  }
  // Avalanche: every input bit reaches every output bit.
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  h *= kPrime3;
  h ^= h >> 32;
  digest_ = h;
  ++passes_done_;
}

}  // namespace bench
}  // namespace nbio
