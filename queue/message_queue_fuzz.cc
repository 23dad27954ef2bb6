// Fuzz target: the input bytes are a sequence of MessageQueue operations, each
// checked against a std::string model by MessageQueueModelChecker.
//
// Input layout:
//   byte 0        block size: one of kBlockSizes
//   byte 1        free-list cap (0..15)
//   then ops      an opcode byte, then its argument bytes (missing bytes read
//                 as 0, so every input is valid)
//
//   op % 8   operation               argument
//   0        AppendCopy(a)           a: 1 byte (0..255)
//   1        AppendCopy(a * 37)      a: 1 byte (up to ~9 KiB: spans blocks)
//   2        AppendOwned(a * 41)     a: 1 byte (up to ~10 KiB: adopted)
//   3        Fill(a - 8)             a: 2 bytes (negative..IOV_MAX and past)
//   4        Consume(a % (size+1))   a: 2 bytes
//   5        ConsumeIovecs(a % 8)    a: 1 byte
//   6        MoveOutAndBack()
//   7        Clear()
#include <cstddef>
#include <cstdint>

#include "queue/message_queue_model.h"

namespace {

constexpr std::size_t kBlockSizes[] = {64, 65, 100, 128, 1000, 4096};
// Appends stop past this, so long inputs explore operations, not memory.
constexpr std::size_t kMaxQueued = 16 * 1024;

class Input {
 public:
  Input(const uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint32_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint32_t Word() { return Byte() | (Byte() << 8); }

 private:
  const uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  Input in(data, size);
  constexpr std::size_t kNumSizes =
      sizeof(kBlockSizes) / sizeof(kBlockSizes[0]);
  const std::size_t block_size = kBlockSizes[in.Byte() % kNumSizes];
  const std::size_t max_free = in.Byte() % 16;
  nbio::MessageQueueModelChecker checker(block_size, max_free);
  while (!in.done()) {
    const bool room = checker.size() < kMaxQueued;
    switch (in.Byte() % 8) {
      case 0: {
        const uint32_t a = in.Byte();
        if (room) checker.AppendCopy(a);
        break;
      }
      case 1: {
        const uint32_t a = in.Byte();
        if (room) checker.AppendCopy(a * 37);
        break;
      }
      case 2: {
        const uint32_t a = in.Byte();
        if (room) {
          // The low bit picks: an owned string, or lent bytes.
          if (a & 1) {
            checker.AppendLent((a >> 1) * 83);
          } else {
            checker.AppendOwned(a * 41);
          }
        }
        break;
      }
      case 3:
        checker.Fill(static_cast<int>(in.Word()) - 8);
        break;
      case 4:
        checker.Consume(in.Word() % (checker.size() + 1));
        break;
      case 5:
        checker.ConsumeIovecs(static_cast<int>(in.Byte() % 8));
        break;
      case 6:
        checker.MoveOutAndBack();
        break;
      case 7:
        checker.Clear();
        break;
    }
  }
  return 0;
}
