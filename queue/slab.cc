#include "queue/slab.h"

#include <algorithm>
#include <new>

#include "queue/base/check.h"

namespace nbio {

Slab::Slab(std::size_t slot_size) : slot_size_(slot_size) {
  NBIO_CHECK_MSG(
      slot_size >= sizeof(FreeLink) && slot_size % alignof(FreeLink) == 0,
      "Slab slot too small or misaligned for its free-list link");
}

Slab::~Slab() {
  NBIO_CHECK_MSG(in_use_ == 0, "Slab destroyed with slots in use");
}

namespace {

template <typename Vector>
void GrowForOneMore(Vector& v) {
  if (v.size() < v.capacity()) return;
  v.reserve(v.capacity() < 8 ? 8 : 2 * v.capacity());
}

}  // namespace

void Slab::AddChunk() {
  Chunk chunk;
  chunk.slots.reset(new char[kSlotsPerChunk * slot_size_]);
  const char* base = chunk.slots.get();
  // Reserve both before changing either, so a bad_alloc leaves them in step.
  // Geometrically: reserve(size() + 1) would reallocate (and copy) both on
  // every chunk, and the trail of freed arrays cost an idle connection
  // about 18 bytes of resident memory at 10,000 connections.
  GrowForOneMore(chunks_);
  GrowForOneMore(by_address_);
  const auto at = std::upper_bound(
      by_address_.begin(), by_address_.end(), base,
      [](const char* p, const std::pair<const char*, std::size_t>& entry) {
        return p < entry.first;
      });
  by_address_.insert(at, {base, chunks_.size()});
  chunks_.push_back(std::move(chunk));
  // Lowest address first on the free list.
  for (std::size_t i = kSlotsPerChunk; i-- > 0;) {
    auto* link = new (chunks_.back().slots.get() + i * slot_size_) FreeLink;
    link->next = free_;
    free_ = link;
  }
}

std::pair<std::size_t, std::size_t> Slab::Locate(const void* slot) const {
  const char* p = static_cast<const char*>(slot);
  const auto after = std::upper_bound(
      by_address_.begin(), by_address_.end(), p,
      [](const char* q, const std::pair<const char*, std::size_t>& entry) {
        return q < entry.first;
      });
  NBIO_CHECK_MSG(after != by_address_.begin(), "not a slot of this slab");
  const auto& [base, chunk] = *(after - 1);
  const std::size_t offset = static_cast<std::size_t>(p - base);
  NBIO_CHECK_MSG(
      offset < kSlotsPerChunk * slot_size_ && offset % slot_size_ == 0,
      "not a slot of this slab");
  return {chunk, offset / slot_size_};
}

void* Slab::Allocate() {
  if (free_ == nullptr) AddChunk();
  FreeLink* link = free_;
  free_ = link->next;
  link->~FreeLink();
  const auto [chunk, index] = Locate(link);
  chunks_[chunk].in_use |= uint64_t{1} << index;
  ++in_use_;
  return link;
}

void Slab::Free(void* slot) {
  const auto [chunk, index] = Locate(slot);
  const uint64_t bit = uint64_t{1} << index;
  NBIO_CHECK_MSG(chunks_[chunk].in_use & bit,
                 "Slab::Free of a slot not in use");
  chunks_[chunk].in_use &= ~bit;
  --in_use_;
  free_ = new (slot) FreeLink{free_};
}

}  // namespace nbio
