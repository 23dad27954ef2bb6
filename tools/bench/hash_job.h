// HashJob: a CPU-bound job for benchmarks, to run as an EventLoop CpuJob.
//
// It hashes `bytes_per_pass` bytes, `slice_bytes` per slice, reading a
// reusable buffer over and over (so a 1 GiB pass costs 1 GiB of hashing and
// no 1 GiB of memory), and either stops after one pass or starts another.
// The hash is a 64-bit, four-lane multiply-rotate hash with the structure of
// xxHash64's main loop (32-byte stripes, independent lanes, a final
// avalanche), written for this benchmark: fast enough that a 64 KiB slice
// takes microseconds, not compatible with xxHash, not for use elsewhere.
//
//   HashJob hash(HashJob::Options{});
//   CpuJob job(loop, [&hash] { return hash.Slice(); });
//   job.Start();
//
// The digest does not depend on where slices begin and end, so tests can
// check that slicing loses or repeats nothing.
//
// Threading: none; one thread at a time. Owns its buffer (allocated once, in
// the constructor). Slice() costs O(slice_bytes) and allocates nothing.
#ifndef NBIO_TOOLS_BENCH_HASH_JOB_H_
#define NBIO_TOOLS_BENCH_HASH_JOB_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "reactor/event_loop.h"

namespace nbio {
namespace bench {

class HashJob {
 public:
  // Stripes are this long; slices and the buffer are whole stripes.
  static constexpr size_t kStripeBytes = 32;

  struct Options {
    // Bytes per pass (> 0); need not be a multiple of kStripeBytes.
    uint64_t bytes_per_pass = uint64_t{1} << 30;
    // Bytes hashed per Slice() (a positive multiple of kStripeBytes); the
    // last slice of a pass may be shorter.
    uint64_t slice_bytes = 64 * 1024;
    // After a pass: start the next one (Slice() never returns kDone), or
    // finish.
    bool repeat = true;
    // The reusable input (a positive multiple of kStripeBytes), filled with
    // pseudo-random bytes derived from `seed`. Small enough for the CPU's
    // L2 cache by default, so the job measures the CPU, not memory.
    size_t buffer_bytes = 256 * 1024;
    uint64_t seed = 1;
  };

  // INVALID_ARGUMENT naming the first bad option, for flag checking.
  static absl::Status Validate(const Options& options);

  // `options` must pass Validate() (checked).
  explicit HashJob(const Options& options);

  HashJob(const HashJob&) = delete;
  HashJob& operator=(const HashJob&) = delete;

  // Hashes the next slice. kDone after the last slice of the pass when
  // !repeat; must not be called again after kDone.
  CpuSliceResult Slice();

  uint64_t bytes_hashed() const { return bytes_hashed_; }
  uint64_t slices() const { return slices_; }
  uint64_t passes_done() const { return passes_done_; }
  // The hash of the last pass completed (0 before the first): the same for
  // every pass, since every pass reads the same bytes.
  uint64_t digest() const { return digest_; }
  const Options& options() const { return options_; }

 private:
  void StartPass();
  void FinishPass();

  const Options options_;
  std::vector<unsigned char> buffer_;
  uint64_t lanes_[4];
  uint64_t pass_offset_ = 0;  // bytes of the current pass hashed
  uint64_t bytes_hashed_ = 0;
  uint64_t slices_ = 0;
  uint64_t passes_done_ = 0;
  uint64_t digest_ = 0;
  bool done_ = false;
};

}  // namespace bench
}  // namespace nbio

#endif  // NBIO_TOOLS_BENCH_HASH_JOB_H_
