// A connection's outgoing bytes: what has been written to a TCP stream and not
// yet accepted by the kernel, ready for one writev() at a time.
//
// Two classes:
//
//   BlockPool     fixed-size memory blocks on a free list, one pool per loop,
//                 shared by every connection's queue. Bounded retention, so
//                 memory goes back to the heap after a burst.
//   MessageQueue  one per connection: bytes in a chain of pool blocks, plus
//                 large std::string buffers adopted without copying.
//
//   BlockPool pool;                        // the loop's
//   MessageQueue out(&pool);               // a connection's
//   out.Append("HTTP/1.1 200 OK\r\n");     // copied into a pool block
//   out.Append(std::move(big_body));       // adopted, bytes not copied
//   struct iovec iov[64];
//   const ssize_t n = writev(fd, iov, out.FillIovec(iov, 64));
//   if (n > 0) out.Consume(n);             // a partial write is fine
//
// In steady state (append, writev, consume) nothing is allocated: blocks cycle
// through the pool's free list.
#ifndef NBIO_QUEUE_MESSAGE_QUEUE_H_
#define NBIO_QUEUE_MESSAGE_QUEUE_H_

#include <limits.h>  // IOV_MAX
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>

#include "absl/strings/string_view.h"

namespace nbio {

// Hands out memory blocks of one fixed size and keeps returned ones on an
// intrusive free list for reuse, up to a cap; blocks returned beyond the cap
// are freed at once, so a burst's memory goes back to the heap.
//
// Ownership: the pool owns its free blocks; an allocated block belongs to the
// caller until it is handed back with Deallocate(). The pool must outlive
// every block it handed out (destroying it with blocks in use aborts: they
// would dangle).
//
// Thread safety: none; a pool belongs to one loop thread.
//
// Complexity: Allocate() and Deallocate() O(1); the heap is touched only when
// the free list is empty (Allocate) or full (Deallocate).
class BlockPool {
 public:
  static constexpr std::size_t kDefaultBlockSize = 4096;
  // 1 MiB retained at the default block size: enough to absorb the churn of a
  // busy loop, small next to the memory of the connections that need it.
  static constexpr std::size_t kDefaultMaxFreeBlocks = 256;
  // Room for a MessageQueue block header and some bytes after it.
  static constexpr std::size_t kMinBlockSize = 64;

  // `block_size` bytes per block, at least kMinBlockSize and at most 1 GiB
  // (a broken invariant otherwise: these are constants, not input). At most
  // `max_free_blocks` unused blocks are kept; 0 keeps none.
  explicit BlockPool(std::size_t block_size = kDefaultBlockSize,
                     std::size_t max_free_blocks = kDefaultMaxFreeBlocks);
  ~BlockPool();

  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // A block of block_size() bytes, aligned for any fundamental type: from the
  // free list, else from the heap (throws std::bad_alloc when that fails).
  // The free-list paths are inline: they run for every message a queue
  // sends.
  void* Allocate() {
    FreeBlock* block = free_list_;
    if (block == nullptr) return AllocateFromHeap();
    free_list_ = block->next;
    block->~FreeBlock();
    --blocks_free_;
    ++blocks_in_use_;
    return block;
  }
  // Takes back a block this pool allocated. Kept for reuse while fewer than
  // max_free_blocks() are kept, freed otherwise.
  void Deallocate(void* block) noexcept {
    --blocks_in_use_;
    if (blocks_free_ >= max_free_blocks_) {
      FreeToHeap(block);
      return;
    }
    free_list_ = new (block) FreeBlock{free_list_};
    ++blocks_free_;
  }
  // Frees every kept block (e.g. on memory pressure). O(blocks_free()).
  void ReleaseFreeBlocks() noexcept;

  std::size_t block_size() const { return block_size_; }
  std::size_t max_free_blocks() const { return max_free_blocks_; }
  // Blocks taken from the heap over the pool's life: stays flat in steady
  // state.
  uint64_t blocks_allocated() const { return blocks_allocated_; }
  // Blocks handed out and not yet given back.
  std::size_t blocks_in_use() const { return blocks_in_use_; }
  // Blocks kept on the free list; never above max_free_blocks().
  std::size_t blocks_free() const { return blocks_free_; }

 private:
  // Overlaid on the first bytes of a free block.
  struct FreeBlock {
    FreeBlock* next;
  };

  void* AllocateFromHeap();
  void FreeToHeap(void* block) noexcept;

  const std::size_t block_size_;
  const std::size_t max_free_blocks_;
  FreeBlock* free_list_ = nullptr;
  uint64_t blocks_allocated_ = 0;
  std::size_t blocks_in_use_ = 0;
  std::size_t blocks_free_ = 0;
};

// A FIFO of bytes waiting to be written to one connection, shaped for
// writev(): FillIovec() exposes the front as iovecs, Consume() drops what the
// kernel took.
//
// Layout: a singly linked chain of blocks from a BlockPool. Each block starts
// with a small header (next block, first unsent byte, end of data) and holds
// either copied bytes right after the header, an adopted std::string
// (Append(std::string&&)) whose own buffer the header points into, or the
// release hook of memory the queue was lent (AppendLent). Small
// appends fill the tail block's free space before a new block is taken, so
// many small messages share a block and go out in one iovec. Every block on
// the chain holds at least one unsent byte: an empty queue owns no block.
//
// Ownership: the queue owns its blocks (returned to the pool as they empty,
// or on Clear() and destruction) and the strings it adopted. It does not own
// the pool, which must outlive it, nor lent memory, which it hands back
// through the lender's hook. Movable, not copyable.
//
// Thread safety: none; a queue belongs to its connection's loop thread (the
// pool's).
//
// Complexity: Append O(bytes copied / block size + 1); FillIovec O(iovecs
// filled); Consume O(blocks emptied + 1); size() and empty() O(1); Clear()
// O(blocks). sizeof(MessageQueue) is 32 bytes (four words), so an idle
// connection pays for its queue with no heap memory.
class MessageQueue {
 public:
  // Owned strings shorter than this are copied instead of adopted: they may
  // live in the string object itself (SSO), and below about 1 KiB a memcpy
  // into the tail block is cheaper than taking a block for the string, an
  // extra iovec, and freeing the string's buffer later.
  static constexpr std::size_t kMinAdoptSize = 1024;

  // The BlockPool block size whose blocks each hold `payload` bytes after
  // the queue's per-block header.
  static constexpr std::size_t BlockSizeFor(std::size_t payload) {
    return payload + sizeof(Block);
  }

  // `pool` must outlive the queue.
  explicit MessageQueue(BlockPool* pool) noexcept : pool_(pool) {}

  // The pool this queue takes its blocks from.
  BlockPool* pool() const noexcept { return pool_; }
  ~MessageQueue() { Clear(); }

  // Takes `other`'s bytes (and its pool); `other` is left empty.
  MessageQueue(MessageQueue&& other) noexcept;
  MessageQueue& operator=(MessageQueue&& other) noexcept;
  MessageQueue(const MessageQueue&) = delete;
  MessageQueue& operator=(const MessageQueue&) = delete;

  // Copies `bytes` to the back: into the tail block's free space, then into
  // new pool blocks. Zero bytes: a no-op.
  void Append(absl::string_view bytes) {
    if (bytes.empty()) return;
    // The common cases inline: the bytes fit in the tail block, or the queue
    // is empty and they fit in one new block.
    if (bytes.size() <= TailRoom()) {
      std::memcpy(tail_->end, bytes.data(), bytes.size());
      tail_->end += bytes.size();
      size_ += bytes.size();
      return;
    }
    if (tail_ == nullptr && bytes.size() <= BlockCapacity()) {
      Block* block = NewBlock(kCopied);
      std::memcpy(block->end, bytes.data(), bytes.size());
      block->end += bytes.size();
      head_ = tail_ = block;
      size_ = bytes.size();
      return;
    }
    AppendSlow(bytes);
  }
  // For string literals, which would otherwise be ambiguous between the
  // string_view and std::string&& overloads.
  void Append(const char* bytes) { Append(absl::string_view(bytes)); }
  // Moves `owned` to the back. From kMinAdoptSize bytes up the string itself
  // is kept and its bytes are never copied (FillIovec points into its
  // buffer); shorter ones are copied as by Append(string_view). Either way
  // `owned` is left valid but unspecified.
  void Append(std::string&& owned);

  // Queues `bytes` without copying them: the queue points into the caller's
  // memory, which must stay valid and unchanged until the queue calls
  // `release(lender, token)`, exactly once, when the last of these bytes is
  // consumed, or at Clear() or destruction. Nothing is appended to that
  // memory. `release` must not touch this queue. Empty `bytes`: released
  // at once.
  using ReleaseFn = void (*)(void* lender, uint64_t token);
  void AppendLent(absl::string_view bytes, ReleaseFn release, void* lender,
                  uint64_t token);

  // Points `iov[0..n)` at the first n unsent byte ranges, in order, where
  // n = min(max_iov, IOV_MAX, ranges queued), and returns n (0 when empty or
  // max_iov <= 0). The pointers stay valid until the next Consume() or
  // Clear(); appends do not move queued bytes.
  int FillIovec(struct iovec* iov, int max_iov) const {
    const int limit = max_iov < IOV_MAX ? max_iov : IOV_MAX;
    int n = 0;
    for (const Block* block = head_; block != nullptr && n < limit;
         block = block->next) {
      iov[n].iov_base = block->read;
      iov[n].iov_len = static_cast<std::size_t>(block->end - block->read);
      ++n;
    }
    return n;
  }

  // Drops the first `n` bytes, `n <= size()` (a broken invariant otherwise),
  // typically what writev() returned. Blocks emptied go back to the pool.
  void Consume(std::size_t n) {
    // The common cases inline: a partial write inside the first block, and
    // a write that took everything from a one-block queue.
    if (head_ != nullptr) {
      if (n < static_cast<std::size_t>(head_->end - head_->read)) {
        head_->read += n;
        size_ -= n;
        return;
      }
      if (n == size_ && head_ == tail_ && head_->kind == kCopied) {
        Block* block = head_;
        head_ = tail_ = nullptr;
        size_ = 0;
        block->~Block();
        pool_->Deallocate(block);
        return;
      }
    }
    ConsumeSlow(n);
  }

  // Drops everything (e.g. when the connection closes); blocks go back to the
  // pool.
  void Clear() noexcept;

  // Bytes queued, for write watermarks. O(1).
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  // The header at the start of every block. Copied bytes follow it up to the
  // end of the pool block; an adopted block holds a std::string there
  // instead, and [read, end) lies in that string's buffer; a lent block
  // holds a Lent and [read, end) lies in the lender's memory. Pointers rather
  // than offsets so FillIovec copies two fields per block; 32 bytes of a
  // 4 KiB block.
  enum Kind : uint8_t { kCopied, kAdopted, kLent };
  // A lent block's payload.
  struct Lent {
    ReleaseFn release;
    void* lender;
    uint64_t token;
  };

  struct Block {
    Block* next;
    char* read;  // first unsent byte
    char* end;   // one past the last queued byte
    uint8_t kind;  // Kind

    char* payload() { return reinterpret_cast<char*>(this + 1); }
  };

  // Free bytes after the tail block's data; 0 without a tail, or when the
  // tail is an adopted string or lent memory (not the queue's to write).
  std::size_t TailRoom() const {
    if (tail_ == nullptr || tail_->kind != kCopied) return 0;
    return static_cast<std::size_t>(reinterpret_cast<char*>(tail_) +
                                    pool_->block_size() - tail_->end);
  }

  // Bytes of copied data a block holds after its header.
  std::size_t BlockCapacity() const {
    return pool_->block_size() - sizeof(Block);
  }

  // A new block from the pool, header initialised, not yet linked.
  Block* NewBlock(Kind kind) {
    Block* block = new (pool_->Allocate()) Block;
    block->next = nullptr;
    block->read = block->end = block->payload();
    block->kind = kind;
    return block;
  }

  // The out-of-line halves of Append and Consume: filling the tail and
  // taking new blocks; consuming past the first block.
  void AppendSlow(absl::string_view bytes);
  void ConsumeSlow(std::size_t n);
  void Link(Block* block);
  void Release(Block* block) noexcept;

  BlockPool* pool_;
  Block* head_ = nullptr;  // oldest; nullptr iff empty
  Block* tail_ = nullptr;  // newest; nullptr iff empty
  std::size_t size_ = 0;
};

// The per-connection budget is 128 bytes for an idle connection; the output
// queue gets a quarter of it.
static_assert(sizeof(MessageQueue) <= 32, "MessageQueue grew past 32 bytes");

}  // namespace nbio

#endif  // NBIO_QUEUE_MESSAGE_QUEUE_H_
