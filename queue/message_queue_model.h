// A MessageQueue driven in lockstep with a plain std::string model: every
// operation is applied to both and every result the queue gives is compared.
//
// Shared by message_queue_test (random operations from a seeded generator)
// and message_queue_fuzz (operations decoded from the fuzzer's bytes), so the
// two check exactly the same things. A mismatch aborts through NBIO_CHECK with
// the failing condition, which both gtest and libFuzzer report as a crash.
//
// Ownership: owns its BlockPool and MessageQueue; the queue is the pool's only
// user, which lets the checker compare the pool's counters with the queue's
// blocks. Thread safety: none. Not for production code.
#ifndef NBIO_QUEUE_MESSAGE_QUEUE_MODEL_H_
#define NBIO_QUEUE_MESSAGE_QUEUE_MODEL_H_

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "queue/message_queue.h"

namespace nbio {

class MessageQueueModelChecker {
 public:
  MessageQueueModelChecker(std::size_t block_size, std::size_t max_free_blocks);
  // Clears the queue first: it hands lent buffers back to this checker.
  ~MessageQueueModelChecker();

  // Appends `len` fresh bytes (a running pattern, so misordered or repeated
  // bytes show) by copy, or as an owned std::string. An adopted string is
  // checked to be exposed in place, not copied, when FillIovec reaches it.
  void AppendCopy(std::size_t len);
  void AppendOwned(std::size_t len);
  // AppendLent of `len` fresh bytes in a buffer the checker owns: checked
  // to be exposed in place, handed back exactly once, never before its
  // last byte is consumed (or the queue cleared), and at once after. The
  // buffer is freed when handed back, so ASan catches a later read.
  void AppendLent(std::size_t len);

  // FillIovec(max_iov): checks the count against the queue's block count and
  // the bytes against the model's front. Returns the bytes exposed.
  std::size_t Fill(int max_iov);

  // Consume(n) for n <= size(); ConsumeIovecs(k) consumes exactly the first
  // k iovecs' bytes (a write that ends on a block boundary).
  void Consume(std::size_t n);
  void ConsumeIovecs(int k);

  void Clear();
  // Moves the queue out to a temporary and back (both move operations).
  void MoveOutAndBack();

  std::size_t size() const { return model_.size() - model_front_; }

 private:
  char NextByte();
  static void ReturnLent(void* checker, uint64_t token);
  // Every lent buffer whose bytes are all consumed has been handed back.
  void CheckLentReturned() const;
  const char* ModelData() const { return model_.data() + model_front_; }
  void CheckInvariants() const;

  BlockPool pool_;
  MessageQueue queue_;
  // The model is model_[model_front_..]: consuming advances model_front_,
  // and the consumed prefix is erased only once it is most of the string,
  // so long runs stay linear.
  std::string model_;
  std::size_t model_front_ = 0;
  uint32_t next_byte_ = 0;
  std::vector<struct iovec> iov_;
  std::string scratch_;
  // Lent buffers by token: the bytes (null once handed back) and the
  // stream offset one past their last byte.
  struct Lent {
    std::unique_ptr<char[]> bytes;
    uint64_t end;
  };
  std::vector<Lent> lent_;
  std::size_t lent_checked_ = 0;  // lent_[0, this) are all handed back
  uint64_t appended_ = 0;         // bytes appended since the start
  uint64_t consumed_ = 0;         // bytes consumed or cleared
};

}  // namespace nbio

#endif  // NBIO_QUEUE_MESSAGE_QUEUE_MODEL_H_
