// Slab: fixed-size memory slots for objects that are created and destroyed
// often (TCP connections), with no malloc header per object and no
// allocation once the slab has grown to its high-water mark.
//
// Slots are carved from chunks of kSlotsPerChunk and recycled through an
// intrusive free list (the link lives in the free slot itself). Each chunk
// keeps one bit per slot in use, so the slots in use can be walked
// (ForEachInUse) without a list hook in every object: the walk is O(chunks *
// kSlotsPerChunk), which suits rare whole-set operations (close all, drain).
//
//   Slab slab(sizeof(Connection));
//   auto* c = new (slab.Allocate()) Connection(...);
//   slab.ForEachInUse([](void* slot) { static_cast<Connection*>(slot)->...; });
//   c->~Connection();
//   slab.Free(c);
//
// Memory: a slot costs exactly slot_size bytes; per chunk the slab keeps one
// 64-bit mask and an entry in an address index. Chunks are never returned
// before the slab is destroyed (memory stays at the high-water mark) and never
// move, so a slot's address is stable for as long as it is in use.
//
// Alignment: chunks come from operator new[], aligned for any fundamental
// type; a slot is aligned to the largest power of two dividing slot_size, up
// to that. So an object of type T fits a slab of sizeof(T) when alignof(T) <=
// alignof(std::max_align_t).
//
// Ownership: the slab owns its chunks, not the objects placed in slots: the
// caller destroys them before Free(). Destroying a slab with slots still in
// use aborts (they would dangle).
//
// Thread safety: none; a slab belongs to one thread (a loop's).
//
// Complexity: Allocate() O(1) from the free list, O(chunks) when a chunk is
// added; Free() O(log chunks) (the chunk is found by binary search on
// address).
#ifndef NBIO_QUEUE_SLAB_H_
#define NBIO_QUEUE_SLAB_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace nbio {

class Slab {
 public:
  // One bit of a chunk's in-use mask per slot.
  static constexpr std::size_t kSlotsPerChunk = 64;

  // Slots of `slot_size` bytes: at least sizeof(void*) and a multiple of
  // alignof(void*) (room and alignment for the free-list link; a broken
  // invariant otherwise).
  explicit Slab(std::size_t slot_size);
  ~Slab();

  Slab(const Slab&) = delete;
  Slab& operator=(const Slab&) = delete;

  // A slot of slot_size() bytes, uninitialised. Takes a new chunk from the
  // heap when no slot is free (throws std::bad_alloc when that fails).
  void* Allocate();
  // Gives back a slot this slab handed out; the object in it must already
  // be destroyed. Freeing a slot that is not in use aborts.
  void Free(void* slot);

  // Calls fn(void* slot) for each slot in use, chunk by chunk in the order
  // the chunks were added, slots in address order within a chunk. fn may
  // Allocate() and Free(): a slot freed before the walk reaches it is not
  // visited; one allocated during the walk may or may not be (a new chunk is
  // walked too); every slot in use from the start of the walk until the walk
  // reaches it is visited exactly once.
  template <typename Fn>
  void ForEachInUse(Fn fn);

  std::size_t slot_size() const { return slot_size_; }
  // Slots handed out and not yet freed.
  std::size_t in_use() const { return in_use_; }
  // Chunks taken from the heap (each holds kSlotsPerChunk slots).
  std::size_t chunk_count() const { return chunks_.size(); }

 private:
  struct FreeLink {
    FreeLink* next;
  };
  struct Chunk {
    std::unique_ptr<char[]> slots;
    uint64_t in_use = 0;  // bit i: slot i is handed out
  };

  void AddChunk();
  // The index in chunks_ of the chunk holding `slot`, and the slot's index
  // in it; aborts when `slot` is not a slot of this slab.
  std::pair<std::size_t, std::size_t> Locate(const void* slot) const;

  const std::size_t slot_size_;
  std::size_t in_use_ = 0;
  FreeLink* free_ = nullptr;
  // In the order added (append only, so a walk by index is not disturbed by
  // a chunk added during it).
  std::vector<Chunk> chunks_;
  // (chunk start, index in chunks_), sorted by address, for Locate().
  std::vector<std::pair<const char*, std::size_t>> by_address_;
};

template <typename Fn>
void Slab::ForEachInUse(Fn fn) {
  // By index, re-reading the chunk list and mask after every call: fn may
  // add a chunk (chunks_ may reallocate) or free slots not yet reached.
  for (std::size_t c = 0; c < chunks_.size(); ++c) {
    for (std::size_t i = 0; i < kSlotsPerChunk; ++i) {
      const uint64_t from_here = chunks_[c].in_use >> i;
      if (from_here == 0) break;
      i += static_cast<std::size_t>(__builtin_ctzll(from_here));
      fn(static_cast<void*>(chunks_[c].slots.get() + i * slot_size_));
    }
  }
}

}  // namespace nbio

#endif  // NBIO_QUEUE_SLAB_H_
