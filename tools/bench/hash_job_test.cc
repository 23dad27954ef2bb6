#include "tools/bench/hash_job.h"

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "reactor/event_loop.h"

namespace nbio {
namespace bench {
namespace {

HashJob::Options Small(uint64_t bytes_per_pass, uint64_t slice_bytes) {
  HashJob::Options o;
  o.bytes_per_pass = bytes_per_pass;
  o.slice_bytes = slice_bytes;
  o.repeat = false;
  o.buffer_bytes = 4096;  // a pass reads it many times over
  return o;
}

// Runs one pass to kDone; returns the digest.
uint64_t DigestOf(const HashJob::Options& options) {
  HashJob job(options);
  while (job.Slice() == CpuSliceResult::kMore) {
  }
  EXPECT_EQ(job.passes_done(), 1u);
  EXPECT_EQ(job.bytes_hashed(), options.bytes_per_pass);
  return job.digest();
}

TEST(HashJobTest, DigestDoesNotDependOnSliceSize) {
  // Not a multiple of the stripe (a tail) nor of the buffer (a wrap inside a
  // slice for most slice sizes).
  const uint64_t bytes = 100003;
  const uint64_t reference =
      DigestOf(Small(bytes, bytes + 31 - (bytes + 31) % 32));
  for (uint64_t slice : {32u, 96u, 4096u, 4128u, 65536u}) {
    SCOPED_TRACE(slice);
    EXPECT_EQ(DigestOf(Small(bytes, slice)), reference);
  }
}

TEST(HashJobTest, DigestDependsOnLengthAndContent) {
  const uint64_t base = DigestOf(Small(1000, 64));
  EXPECT_NE(DigestOf(Small(1001, 64)), base);  // one more tail byte
  EXPECT_NE(DigestOf(Small(1024, 64)), base);  // whole stripes only
  EXPECT_NE(DigestOf(Small(1001, 64)), DigestOf(Small(1002, 64)));
  HashJob::Options other_bytes = Small(1000, 64);
  other_bytes.seed = 2;
  EXPECT_NE(DigestOf(other_bytes), base);
}

TEST(HashJobTest, OnePassEndsWithDone) {
  HashJob job(Small(1000, 64));  // 15 slices of 64 bytes, then 40
  for (int i = 0; i < 15; ++i) {
    ASSERT_EQ(job.Slice(), CpuSliceResult::kMore) << "slice " << i;
  }
  EXPECT_EQ(job.passes_done(), 0u);
  EXPECT_EQ(job.digest(), 0u);
  EXPECT_EQ(job.Slice(), CpuSliceResult::kDone);
  EXPECT_EQ(job.slices(), 16u);
  EXPECT_EQ(job.bytes_hashed(), 1000u);
  EXPECT_EQ(job.passes_done(), 1u);
  EXPECT_NE(job.digest(), 0u);
}

TEST(HashJobTest, RepeatStartsTheNextPassWithTheSameDigest) {
  HashJob::Options options = Small(1000, 64);
  const uint64_t one_pass = DigestOf(options);
  options.repeat = true;
  HashJob job(options);
  for (int i = 0; i < 16 * 3; ++i) {
    ASSERT_EQ(job.Slice(), CpuSliceResult::kMore) << "slice " << i;
  }
  EXPECT_EQ(job.passes_done(), 3u);
  EXPECT_EQ(job.bytes_hashed(), 3000u);
  EXPECT_EQ(job.digest(), one_pass);
}

TEST(HashJobTest, ValidateNamesTheBadOption) {
  EXPECT_TRUE(HashJob::Validate(Small(1000, 64)).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(HashJob::Validate(Small(0, 64))));
  EXPECT_TRUE(absl::IsInvalidArgument(HashJob::Validate(Small(1000, 0))));
  absl::Status not_stripes = HashJob::Validate(Small(1000, 48));
  EXPECT_TRUE(absl::IsInvalidArgument(not_stripes));
  EXPECT_NE(not_stripes.message().find("slice"), absl::string_view::npos)
      << not_stripes;
  HashJob::Options odd_buffer = Small(1000, 64);
  odd_buffer.buffer_bytes = 100;
  absl::Status buffer = HashJob::Validate(odd_buffer);
  EXPECT_TRUE(absl::IsInvalidArgument(buffer));
  EXPECT_NE(buffer.message().find("buffer"), absl::string_view::npos) << buffer;
}

TEST(HashJobTest, RunsToTheEndAsACpuJob) {
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok()) << loop.status();
  HashJob hash(Small(100003, 4096));
  CpuJob job(loop->get(), [&hash] { return hash.Slice(); });
  job.Start();
  ASSERT_TRUE((*loop)->Run().ok());  // returns once the job is done
  EXPECT_FALSE(job.is_pending());
  EXPECT_EQ(hash.bytes_hashed(), 100003u);
  EXPECT_EQ(hash.slices(), 25u);  // 24 of 4096 bytes and one of 1,699
  EXPECT_EQ((*loop)->counters().cpu_slices, 25u);
  EXPECT_EQ(hash.digest(), DigestOf(Small(100003, 32)));
}

}  // namespace
}  // namespace bench
}  // namespace nbio
