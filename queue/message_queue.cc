#include "queue/message_queue.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

#include "queue/base/check.h"

namespace nbio {

// ---------------------------------------------------------------- BlockPool

BlockPool::BlockPool(std::size_t block_size, std::size_t max_free_blocks)
    : block_size_(block_size), max_free_blocks_(max_free_blocks) {
  NBIO_CHECK_MSG(block_size >= kMinBlockSize, "block size too small");
  NBIO_CHECK_MSG(block_size <= (std::size_t{1} << 30), "block size too large");
}

BlockPool::~BlockPool() {
  // A block still out would point at freed memory's owner; better to stop
  // here than to corrupt the heap later.
  NBIO_CHECK_MSG(blocks_in_use_ == 0, "BlockPool destroyed with blocks in use");
  ReleaseFreeBlocks();
}

void* BlockPool::AllocateFromHeap() {
  // operator new: aligned for any fundamental type, and counted by
  // //queue/testing:alloc_counter, so benchmarks see every heap block.
  void* block = ::operator new(block_size_);
  ++blocks_allocated_;
  ++blocks_in_use_;
  return block;
}

void BlockPool::FreeToHeap(void* block) noexcept { ::operator delete(block); }

void BlockPool::ReleaseFreeBlocks() noexcept {
  while (free_list_ != nullptr) {
    FreeBlock* free = free_list_;
    free_list_ = free->next;
    free->~FreeBlock();
    ::operator delete(free);
  }
  blocks_free_ = 0;
}

// ------------------------------------------------------------- MessageQueue

MessageQueue::MessageQueue(MessageQueue&& other) noexcept
    : pool_(other.pool_),
      head_(std::exchange(other.head_, nullptr)),
      tail_(std::exchange(other.tail_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

MessageQueue& MessageQueue::operator=(MessageQueue&& other) noexcept {
  if (this != &other) {
    Clear();
    // The blocks belong to other's pool: the pool comes with them.
    pool_ = other.pool_;
    head_ = std::exchange(other.head_, nullptr);
    tail_ = std::exchange(other.tail_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

inline void MessageQueue::Link(Block* block) {
  if (tail_ == nullptr) {
    head_ = block;
  } else {
    tail_->next = block;
  }
  tail_ = block;
}

inline void MessageQueue::Release(Block* block) noexcept {
  if (block->kind == kAdopted) {
    using std::string;
    std::launder(reinterpret_cast<std::string*>(block->payload()))->~string();
  } else if (block->kind == kLent) {
    const Lent lent = *std::launder(reinterpret_cast<Lent*>(block->payload()));
    block->~Block();
    pool_->Deallocate(block);
    lent.release(lent.lender, lent.token);
    return;
  }
  block->~Block();
  pool_->Deallocate(block);
}

void MessageQueue::AppendSlow(absl::string_view bytes) {
  const char* src = bytes.data();
  std::size_t left = bytes.size();
  size_ += left;
  // Fill what the tail block has left first: many small messages share one
  // block, and so one iovec.
  const std::size_t room = std::min(left, TailRoom());
  if (room > 0) {
    std::memcpy(tail_->end, src, room);
    tail_->end += room;
    src += room;
    left -= room;
  }
  const std::size_t capacity = BlockCapacity();
  while (left > 0) {
    Block* block = NewBlock(kCopied);
    const std::size_t n = std::min(left, capacity);
    std::memcpy(block->end, src, n);
    block->end += n;
    src += n;
    left -= n;
    Link(block);
  }
}

void MessageQueue::Append(std::string&& owned) {
  // A block must hold its header and one adopted std::string, aligned.
  static_assert(sizeof(Block) + sizeof(std::string) <= BlockPool::kMinBlockSize,
                "kMinBlockSize cannot hold a header and an adopted string");
  static_assert(alignof(std::string) <= alignof(Block) &&
                    sizeof(Block) % alignof(std::string) == 0,
                "an adopted string would be misaligned after the header");
  if (owned.size() < kMinAdoptSize) {
    Append(absl::string_view(owned));
    return;
  }
  Block* block = NewBlock(kAdopted);
  // Moving a heap-backed std::string hands over its buffer pointer: the
  // bytes stay where the caller wrote them.
  std::string* s = new (block->payload()) std::string(std::move(owned));
  block->read = s->data();
  block->end = s->data() + s->size();
  size_ += s->size();
  Link(block);
}

void MessageQueue::AppendLent(absl::string_view bytes, ReleaseFn release,
                              void* lender, uint64_t token) {
  static_assert(sizeof(Block) + sizeof(Lent) <= BlockPool::kMinBlockSize,
                "kMinBlockSize cannot hold a header and a lent block's hook");
  static_assert(alignof(Lent) <= alignof(Block) &&
                    sizeof(Block) % alignof(Lent) == 0,
                "a lent block's hook would be misaligned after the header");
  if (bytes.empty()) {
    release(lender, token);
    return;
  }
  Block* block = NewBlock(kLent);
  new (block->payload()) Lent{release, lender, token};
  // The queue never writes through these: TailRoom() is 0 for a lent block.
  block->read = const_cast<char*>(bytes.data());
  block->end = block->read + bytes.size();
  size_ += bytes.size();
  Link(block);
}

void MessageQueue::ConsumeSlow(std::size_t n) {
  NBIO_CHECK_MSG(n <= size_, "Consume() past the end of the queue");
  size_ -= n;
  while (n > 0) {
    Block* block = head_;
    const std::size_t queued =
        static_cast<std::size_t>(block->end - block->read);
    if (n < queued) {
      block->read += n;
      return;
    }
    n -= queued;
    head_ = block->next;
    Release(block);
  }
  if (head_ == nullptr) tail_ = nullptr;
}

void MessageQueue::Clear() noexcept {
  while (head_ != nullptr) {
    Block* block = head_;
    head_ = block->next;
    Release(block);
  }
  tail_ = nullptr;
  size_ = 0;
}

}  // namespace nbio
