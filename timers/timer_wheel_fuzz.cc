// Fuzz target: TimerWheel against its model (timer_wheel_model.h), with the
// operations decoded from the input bytes. The first bytes pick the
// resolution, the start time and the number of timers; then each operation
// takes a few bytes (which timer, what to do, how far in time). Any
// disagreement with the model aborts with a description of the step.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "timers/timer_wheel_model.h"

namespace {

// Whole bytes per request, so that a mutated byte changes one decision.
class ByteBits final : public nbio::timers_testing::BitSource {
 public:
  ByteBits(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool Done() const override { return pos_ >= size_; }

  uint64_t Bits(int bits) override {
    uint64_t v = 0;
    for (int shift = 0; shift < bits; shift += 8) {
      const uint64_t byte = pos_ < size_ ? data_[pos_] : 0;
      ++pos_;
      v |= byte << shift;
    }
    return bits >= 64 ? v : v & ((uint64_t{1} << bits) - 1);
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteBits bits(data, size);
  std::unique_ptr<nbio::timers_testing::WheelChecker> checker =
      nbio::timers_testing::MakeChecker(bits);
  nbio::timers_testing::DriveChecker(bits, size_t{1} << 20, *checker);
  if (!checker->ok()) {
    std::fprintf(stderr, "timer_wheel_fuzz: %s\n", checker->error().c_str());
    std::abort();
  }
  return 0;
}
