#include "reactor/async/cancellation.h"

#include <utility>

#include "queue/base/check.h"

namespace nbio {

// ---------------------------------------------------------------------------
// CancellationRegistration

CancellationRegistration::CancellationRegistration(
    CancellationRegistration&& other) noexcept {
  MoveFrom(other);
}

CancellationRegistration& CancellationRegistration::operator=(
    CancellationRegistration&& other) noexcept {
  if (this != &other) {
    Unregister();
    MoveFrom(other);
  }
  return *this;
}

void CancellationRegistration::MoveFrom(CancellationRegistration& other) {
  callback_ = std::move(other.callback_);
  if (other.state_ == nullptr) return;
  // Same place in the list, so the registration order is kept.
  auto& list = other.state_->callbacks_;
  list.InsertBefore(list.IteratorTo(other), *this);
  other.hook_.Unlink();
  state_ = std::exchange(other.state_, nullptr);  // the reference moves too
}

void CancellationRegistration::Unregister() {
  if (state_ == nullptr) return;
  hook_.Unlink();
  callback_ = nullptr;
  std::exchange(state_, nullptr)->Release();
}

// ---------------------------------------------------------------------------
// State

namespace cancellation_internal {

bool State::Cancel(absl::Status reason) {
  NBIO_CHECK_MSG(!reason.ok(), "cancel with an OK status");
  if (cancelled()) return false;
  reason_ = std::move(reason);
  // The callbacks may drop every other reference (destroy the source, the
  // tokens, their own handles).
  RefPtr<State> keep(this);
  parent_link_.Unregister();
  OnCancel();
  // One at a time from the front, with the node fully detached before its
  // callback runs: a callback may unregister, move or destroy any handle,
  // its own included, and registrations it adds run at once (cancelled()
  // is already true), so they never join this list.
  while (CancellationRegistration* reg = callbacks_.PopFront()) {
    CancellationRegistration::Callback callback = std::move(reg->callback_);
    reg->state_ = nullptr;
    Release();  // the registration's reference; `keep` holds another
    callback(reason_);
  }
  return true;
}

void State::LinkTo(const CancellationToken& parent) {
  // A parent already cancelled runs this at once.
  parent_link_ =
      parent.Register([this](const absl::Status& why) { Cancel(why); });
}

}  // namespace cancellation_internal

// ---------------------------------------------------------------------------
// CancellationToken, CancellationSource

CancellationRegistration CancellationToken::Register(
    CancellationRegistration::Callback callback) const {
  CancellationRegistration reg;
  if (state_ == nullptr) return reg;
  if (state_->cancelled()) {
    // Keep the state alive through the callback, which may drop the token.
    RefPtr<cancellation_internal::State> keep = state_;
    callback(keep->reason());
    return reg;
  }
  state_->AddRef();
  reg.state_ = state_.get();
  reg.callback_ = std::move(callback);
  state_->callbacks_.PushBack(reg);
  return reg;
}

CancellationSource::CancellationSource()
    : state_(new cancellation_internal::State) {}

CancellationSource::CancellationSource(const CancellationToken& parent)
    : CancellationSource() {
  state_->LinkTo(parent);
}

bool CancellationSource::Cancel(absl::Status reason) {
  NBIO_CHECK_MSG(state_ != nullptr, "Cancel on a moved-from source");
  return state_->Cancel(std::move(reason));
}

}  // namespace nbio
