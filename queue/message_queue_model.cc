#include "queue/message_queue_model.h"

#include <limits.h>  // IOV_MAX

#include <algorithm>
#include <cstring>
#include <utility>

#include "queue/base/check.h"

namespace nbio {

MessageQueueModelChecker::MessageQueueModelChecker(std::size_t block_size,
                                                   std::size_t max_free_blocks)
    : pool_(block_size, max_free_blocks), queue_(&pool_), iov_(IOV_MAX + 8) {}

MessageQueueModelChecker::~MessageQueueModelChecker() {
  consumed_ = appended_;
  queue_.Clear();
  CheckLentReturned();
}

char MessageQueueModelChecker::NextByte() {
  // Multiplicative hash of a counter: no short period, so a block boundary
  // off by any amount changes the bytes.
  return static_cast<char>((next_byte_++ * 2654435761u) >> 24);
}

void MessageQueueModelChecker::AppendCopy(std::size_t len) {
  // A reused buffer: under ASan, a fresh allocation per append costs more
  // than everything else the test does.
  scratch_.resize(len);
  for (char& c : scratch_) c = NextByte();
  queue_.Append(absl::string_view(scratch_));
  model_ += scratch_;
  appended_ += len;
  CheckInvariants();
}

void MessageQueueModelChecker::AppendOwned(std::size_t len) {
  std::string owned(len, '\0');
  for (char& c : owned) c = NextByte();
  model_ += owned;
  appended_ += len;
  const char* const buffer = owned.data();
  queue_.Append(std::move(owned));
  CheckInvariants();
  if (len < MessageQueue::kMinAdoptSize) return;
  // Adopted: the newest block must be the caller's own buffer. It is the last
  // iovec when every block fits in one FillIovec.
  const int n = queue_.FillIovec(iov_.data(), IOV_MAX);
  if (static_cast<std::size_t>(n) == pool_.blocks_in_use()) {
    NBIO_CHECK(n > 0);
    NBIO_CHECK(iov_[n - 1].iov_base == buffer);
    NBIO_CHECK(iov_[n - 1].iov_len == len);
  }
}

void MessageQueueModelChecker::AppendLent(std::size_t len) {
  const uint64_t token = lent_.size();
  auto bytes = std::make_unique<char[]>(len == 0 ? 1 : len);
  for (std::size_t i = 0; i < len; ++i) bytes[i] = NextByte();
  model_.append(bytes.get(), len);
  appended_ += len;
  const char* const buffer = bytes.get();
  // Empty: nothing to wait for (end 0), handed back at once.
  lent_.push_back({std::move(bytes), len == 0 ? 0 : appended_});
  queue_.AppendLent(absl::string_view(buffer, len), &ReturnLent, this, token);
  CheckInvariants();
  if (len == 0) return;
  const int n = queue_.FillIovec(iov_.data(), IOV_MAX);
  if (static_cast<std::size_t>(n) == pool_.blocks_in_use()) {
    NBIO_CHECK(n > 0);
    NBIO_CHECK(iov_[n - 1].iov_base == buffer);  // in place
    NBIO_CHECK(iov_[n - 1].iov_len == len);
  }
}

void MessageQueueModelChecker::ReturnLent(void* checker, uint64_t token) {
  auto* self = static_cast<MessageQueueModelChecker*>(checker);
  NBIO_CHECK(token < self->lent_.size());
  Lent& lent = self->lent_[token];
  NBIO_CHECK(lent.bytes != nullptr);       // once
  NBIO_CHECK(lent.end <= self->consumed_);  // not before its last byte
  lent.bytes.reset();
}

void MessageQueueModelChecker::CheckLentReturned() const {
  // Only the unchecked tail can still be out: lent_ is in stream order.
  auto* self = const_cast<MessageQueueModelChecker*>(this);
  while (self->lent_checked_ < lent_.size() &&
         lent_[self->lent_checked_].end <= consumed_) {
    NBIO_CHECK(lent_[self->lent_checked_].bytes == nullptr);
    ++self->lent_checked_;
  }
}

std::size_t MessageQueueModelChecker::Fill(int max_iov) {
  max_iov = std::min(max_iov, static_cast<int>(iov_.size()));
  const int n = queue_.FillIovec(iov_.data(), max_iov);
  // One iovec per block (each queued block holds unsent bytes), capped.
  const std::size_t want =
      std::min({static_cast<std::size_t>(std::max(max_iov, 0)),
                static_cast<std::size_t>(IOV_MAX), pool_.blocks_in_use()});
  NBIO_CHECK(n >= 0 && static_cast<std::size_t>(n) == want);
  std::size_t offset = 0;
  for (int i = 0; i < n; ++i) {
    NBIO_CHECK(iov_[i].iov_len > 0);
    NBIO_CHECK(offset + iov_[i].iov_len <= size());
    NBIO_CHECK(std::memcmp(iov_[i].iov_base, ModelData() + offset,
                           iov_[i].iov_len) == 0);
    offset += iov_[i].iov_len;
  }
  // Exposing every block means exposing every byte.
  if (static_cast<std::size_t>(n) == pool_.blocks_in_use()) {
    NBIO_CHECK(offset == size());
  }
  return offset;
}

void MessageQueueModelChecker::Consume(std::size_t n) {
  NBIO_CHECK(n <= size());
  consumed_ += n;  // before: a lent buffer handed back now checks it
  queue_.Consume(n);
  model_front_ += n;
  if (model_front_ > model_.size() / 2) {
    model_.erase(0, model_front_);
    model_front_ = 0;
  }
  CheckInvariants();
}

void MessageQueueModelChecker::ConsumeIovecs(int k) {
  const int n = queue_.FillIovec(iov_.data(), k);
  std::size_t bytes = 0;
  for (int i = 0; i < n; ++i) bytes += iov_[i].iov_len;
  const std::size_t blocks_before = pool_.blocks_in_use();
  Consume(bytes);
  NBIO_CHECK(pool_.blocks_in_use() == blocks_before - n);
}

void MessageQueueModelChecker::Clear() {
  consumed_ = appended_;
  queue_.Clear();
  model_.clear();
  model_front_ = 0;
  CheckInvariants();
}

void MessageQueueModelChecker::MoveOutAndBack() {
  const std::size_t blocks = pool_.blocks_in_use();
  MessageQueue moved(std::move(queue_));
  NBIO_CHECK(queue_.empty() && queue_.size() == 0);  // NOLINT: moved-from
  NBIO_CHECK(moved.size() == size());
  queue_ = std::move(moved);
  NBIO_CHECK(pool_.blocks_in_use() == blocks);
  CheckInvariants();
}

void MessageQueueModelChecker::CheckInvariants() const {
  NBIO_CHECK(queue_.size() == size());
  CheckLentReturned();
  NBIO_CHECK(queue_.empty() == (size() == 0));
  // An empty queue owns no block; a non-empty one owns at least one.
  NBIO_CHECK((pool_.blocks_in_use() == 0) == (size() == 0));
  // Copied bytes fill blocks, so blocks <= bytes (an adopted block holds at
  // least kMinAdoptSize bytes, a lent one at least one).
  NBIO_CHECK(pool_.blocks_in_use() <= size());
  NBIO_CHECK(pool_.blocks_free() <= pool_.max_free_blocks());
  NBIO_CHECK(pool_.blocks_in_use() + pool_.blocks_free() <=
             pool_.blocks_allocated());
}

}  // namespace nbio
