#include "reactor/net/tcp_connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <new>

#include "absl/strings/str_cat.h"
#include "queue/base/check.h"
#include "queue/base/container_of.h"
#include "reactor/sys/syscall.h"

namespace nbio {
namespace {

constexpr int64_t kNanosPerMilli = 1000 * 1000;
// Idle stamps are 32-bit milliseconds that wrap every 49 days; differences
// are exact while the timeout stays under half of that.
constexpr int64_t kMaxIdleNanos =
    int64_t{24} * 24 * 3600 * 1000 * kNanosPerMilli;
// One sendmsg() carries at most this many queued blocks.
constexpr int kMaxIovecs = 64;

bool IsPeerGone(int err) {
  return err == ECONNRESET || err == EPIPE || err == ENOTCONN ||
         err == ETIMEDOUT || err == EHOSTUNREACH || err == ENETUNREACH;
}

}  // namespace

// The budget of the README's promise (at most 128 bytes of user-space memory
// per idle connection): the object itself, in a slab slot with no malloc
// header, leaves room for the loop's fixed costs spread over connections.
static_assert(sizeof(TcpConnection) <= 96,
              "TcpConnection outgrew the 128-byte-per-connection budget");

// One bit of SlotChunk::in_use per slot.
constexpr size_t kSlotsPerChunk = 64;

void ConnectionHandler::OnPeerClosed(TcpConnection* conn) { conn->Shutdown(); }

// ---------------------------------------------------------------------------
// TcpConnection

TcpConnection::TcpConnection(TcpContext* context)
    : PollerEntry(&TcpConnection::OnEvents),
      output_(&context->pool_),
      idle_timer_(&TcpConnection::OnIdleTimer) {}

TcpContext* TcpConnection::context() const {
  return internal::ContainerOf(output_.pool(), &TcpContext::pool_);
}

TcpConnection::~TcpConnection() { NBIO_DCHECK(is_closing()); }

void TcpConnection::StartReading() {
  if (flags_ & kClosing) return;
  flags_ |= kReading;
  UpdateInterest();
}

void TcpConnection::StopReading() {
  flags_ &= ~kReading;
  UpdateInterest();
}

void TcpConnection::Touch() {
  // Runs on every read and write: only the idle check reads the stamp.
  const TcpContext* ctx = context();
  if (ctx->idle_timeout_nanos_ == 0) return;
  // Rounded up, so the idle check can never fire early.
  last_activity_ms_ = static_cast<uint32_t>(
      (ctx->loop_->NowNanos() + kNanosPerMilli - 1) / kNanosPerMilli);
}

void TcpConnection::UpdateInterest() {
  if (flags_ & kClosing) return;
  uint32_t want = 0;
  if ((flags_ & kReading) && !(flags_ & (kPaused | kPeerClosed))) {
    want |= kReadable;
  }
  if (!output_.empty()) want |= kWritable;
  if (want == interest()) return;
  absl::Status status = context()->loop_->poller()->Modify(this, want);
  if (!status.ok()) Close(status);
}

void TcpConnection::OnEvents(PollerEntry* entry, uint32_t events) {
  TcpConnection* self = static_cast<TcpConnection*>(entry);
  // Write first: draining the output may lift a backpressure pause.
  if (events & kWritable) self->HandleWrite();
  if ((events & kReadable) && !self->is_closing()) self->HandleRead();
}

void TcpConnection::HandleRead() {
  TcpContext* ctx = context();
  const TcpOptions& opt = ctx->options_;
  for (int i = 0; i < opt.max_reads_per_event; ++i) {
    if ((flags_ & (kReading | kPaused | kPeerClosed | kClosing)) != kReading) {
      break;
    }
    size_t room = opt.read_buffer_size;
    if (opt.high_watermark > 0) {
      // Read no more than the output may still take: an echo then never
      // queues past the high watermark.
      if (output_.size() >= opt.high_watermark) {
        flags_ |= kPaused;
        ++ctx->stats_.read_pauses;
        break;
      }
      room = std::min(room, opt.high_watermark - output_.size());
    }
    const ssize_t n = RetryOnEintr(
        [&] { return recv(fd(), ctx->read_buffer_.get(), room, 0); });
    if (n > 0) {
      ctx->stats_.bytes_read += n;
      Touch();
      ctx->handler_->OnData(this,
                            absl::string_view(ctx->read_buffer_.get(), n));
      // A short read means the socket is (almost surely) empty: let the
      // others have a turn. Draining reads on until EAGAIN proves it.
      if (static_cast<size_t>(n) < room && !(flags_ & kDraining)) break;
      continue;
    }
    if (n == 0) {
      flags_ |= kPeerClosed;
      UpdateInterest();
      ctx->handler_->OnPeerClosed(this);
      MaybeFinishShutdown();
      return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (flags_ & kDraining) {
        // Everything the kernel held has been read and answered.
        flags_ &= ~kDraining;
        Shutdown();
      }
      break;
    }
    FailErrno("recv", errno);
    return;
  }
  UpdateInterest();
}

bool TcpConnection::WriteDirect(absl::string_view* bytes) {
  const ssize_t n = RetryOnEintr(
      [&] { return send(fd(), bytes->data(), bytes->size(), MSG_NOSIGNAL); });
  if (n >= 0) {
    context()->stats_.bytes_written += n;
    if (n > 0) Touch();
    bytes->remove_prefix(n);
    return true;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
  FailErrno("send", errno);
  return false;
}

bool TcpConnection::Write(absl::string_view bytes) {
  if (flags_ & (kClosing | kShutdownPending | kShutDown)) return false;
  if (bytes.empty()) return true;
  if (output_.empty()) {
    if (!WriteDirect(&bytes)) return false;
    if (bytes.empty()) return true;
  }
  output_.Append(bytes);
  context()->stats_.queued_bytes += bytes.size();
  AfterQueueChange();
  return true;
}

bool TcpConnection::Write(std::string&& bytes) {
  if (flags_ & (kClosing | kShutdownPending | kShutDown)) return false;
  if (bytes.empty()) return true;
  if (output_.empty()) {
    absl::string_view rest(bytes);
    if (!WriteDirect(&rest)) return false;
    if (rest.empty()) return true;
    if (rest.size() != bytes.size()) {
      // Partly written: queue the rest (a copy of the tail only).
      output_.Append(rest);
      context()->stats_.queued_bytes += rest.size();
      AfterQueueChange();
      return true;
    }
  }
  const size_t size = bytes.size();
  output_.Append(std::move(bytes));  // large buffers are adopted, not copied
  context()->stats_.queued_bytes += size;
  AfterQueueChange();
  return true;
}

void TcpConnection::HandleWrite() {
  TcpContext* ctx = context();
  while (!output_.empty()) {
    iovec iov[kMaxIovecs];
    const int count = output_.FillIovec(iov, kMaxIovecs);
    size_t offered = 0;
    for (int i = 0; i < count; ++i) offered += iov[i].iov_len;
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = count;
    const ssize_t n =
        RetryOnEintr([&] { return sendmsg(fd(), &msg, MSG_NOSIGNAL); });
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      FailErrno("sendmsg", errno);
      return;
    }
    output_.Consume(n);
    ctx->stats_.bytes_written += n;
    ctx->stats_.queued_bytes -= n;
    if (n > 0) Touch();
    if (static_cast<size_t>(n) < offered) break;  // the socket buffer is full
  }
  AfterQueueChange();
}

void TcpConnection::AfterQueueChange() {
  TcpContext* ctx = context();
  const size_t queued = output_.size();
  if (queued > 0) {
    if (!(flags_ & kQueuedWrite)) {
      flags_ |= kQueuedWrite;
      ++ctx->stats_.writes_queued;
    }
    ctx->stats_.max_queued_bytes =
        std::max(ctx->stats_.max_queued_bytes, queued);
    if (ctx->options_.high_watermark > 0 &&
        queued >= ctx->options_.high_watermark && !(flags_ & kPaused)) {
      flags_ |= kPaused;
      ++ctx->stats_.read_pauses;
    }
  } else if (flags_ & kQueuedWrite) {
    flags_ &= ~kQueuedWrite;
    ctx->handler_->OnDrained(this);
    if (is_closing()) return;
  }
  if ((flags_ & kPaused) && output_.size() <= ctx->low_watermark_) {
    flags_ &= ~kPaused;
    // Reading resumes; level-triggered readiness reports pending input.
  }
  UpdateInterest();
  MaybeFinishShutdown();
}

void TcpConnection::Shutdown() {
  if (flags_ & (kClosing | kShutdownPending | kShutDown)) return;
  flags_ |= kShutdownPending;
  MaybeFinishShutdown();
}

void TcpConnection::MaybeFinishShutdown() {
  if (flags_ & kClosing) return;
  if ((flags_ & kShutdownPending) && output_.empty()) {
    flags_ &= ~kShutdownPending;
    flags_ |= kShutDown;
    if (shutdown(fd(), SHUT_WR) != 0 && errno != ENOTCONN) {
      FailErrno("shutdown", errno);
      return;
    }
  }
  if ((flags_ & kShutDown) && (flags_ & kPeerClosed)) Close();
}

void TcpConnection::FailErrno(const char* call, int err) {
  if (IsPeerGone(err)) ++context()->stats_.resets;
  Close(ErrnoStatus(call, err));
}

void TcpConnection::Close(const absl::Status& reason) {
  if (flags_ & kClosing) return;
  flags_ |= kClosing;
  TcpContext* ctx = context();
  const int fd = this->fd();
  ctx->loop_->poller()->Remove(this);
  close(fd);
  ctx->loop_->timer_wheel()->Cancel(&idle_timer_);
  ctx->stats_.queued_bytes -= output_.size();
  output_.Clear();
  ctx->ScheduleClosed(this, reason);
}

absl::StatusOr<SocketAddress> TcpConnection::PeerAddress() const {
  if (is_closing()) return absl::FailedPreconditionError("connection closed");
  return SocketAddress::PeerOf(fd());
}

void TcpConnection::OnIdleTimer(TimerNode* node) {
  TcpConnection* self =
      internal::ContainerOf(node, &TcpConnection::idle_timer_);
  TcpContext* ctx = self->context();
  const int64_t now = ctx->loop_->NowNanos();
  // Now rounded down, activity rounded up: the idle time is never
  // overestimated, so no connection is closed early. Negative when there
  // was activity within this millisecond.
  const int32_t idle_ms = static_cast<int32_t>(
      static_cast<uint32_t>(now / kNanosPerMilli) - self->last_activity_ms_);
  const int64_t idle_for = int64_t{idle_ms} * kNanosPerMilli;
  if (idle_for >= ctx->idle_timeout_nanos_) {
    ++ctx->stats_.idle_timeouts;
    self->Close(absl::DeadlineExceededError(absl::StrCat(
        "idle timeout: no activity for ",
        absl::FormatDuration(absl::Nanoseconds(ctx->idle_timeout_nanos_)))));
    return;
  }
  // Lazy re-arm: activity only stamped the time; the timer moves now, to
  // the last activity plus the timeout.
  ctx->loop_->timer_wheel()->ScheduleWithin(
      node, now - idle_for + ctx->idle_timeout_nanos_,
      ctx->idle_timeout_nanos_ / 8);
}

void TcpConnection::BeginDrain() {
  if (flags_ & kClosing) return;
  if ((flags_ & kPeerClosed) || !(flags_ & kReading)) {
    Shutdown();
    return;
  }
  flags_ |= kDraining;
  // Read what is there now; HandleRead shuts down at EAGAIN. A connection
  // paused by backpressure gets there once its output drains.
  if (!(flags_ & kPaused)) HandleRead();
}

// ---------------------------------------------------------------------------
// TcpContext

TcpContext::TcpContext(EventLoop* loop, ConnectionHandler* handler,
                       TcpOptions options)
    : loop_(loop),
      handler_(handler),
      options_(std::move(options)),
      low_watermark_(options_.low_watermark != 0 ? options_.low_watermark
                                                 : options_.high_watermark / 2),
      idle_timeout_nanos_(std::min(
          absl::ToInt64Nanoseconds(options_.idle_timeout), kMaxIdleNanos)),
      read_buffer_(new char[options_.read_buffer_size]),
      pool_(options_.output_block_size),
      flush_closed_(loop, [this] { FlushClosed(); }) {
  NBIO_CHECK(options_.read_buffer_size > 0);
  NBIO_CHECK(options_.max_reads_per_event > 0);
  loop_->HandleAttached(EventLoop::HandleKind::kTcpContext);
}

TcpContext::~TcpContext() {
  while (!pending_connects_.empty()) {
    pending_connects_.front().Finish(absl::CancelledError("shutting down"));
  }
  CloseAll(absl::CancelledError("shutting down"));
  FlushClosed();
  loop_->HandleDetached(EventLoop::HandleKind::kTcpContext);
}

void TcpConnection::CancelOn(const CancellationToken& token) {
  TcpContext* ctx = context();
  if (is_closing()) return;
  // Replacing is safe: this is never called from inside the registration's
  // callback (which only calls Close()).
  ctx->cancel_on_.erase(this);
  if (!token.can_be_cancelled()) return;
  if (token.is_cancelled()) {
    Close(token.reason());
    return;
  }
  ctx->cancel_on_.emplace(
      this, token.Register([this](const absl::Status& why) { Close(why); }));
}

void* TcpContext::AllocateSlot() {
  if (free_slots_ == nullptr) {
    // new[] of char is aligned for any fundamental type, and the slot size
    // is a multiple of TcpConnection's alignment.
    static_assert(alignof(TcpConnection) <= alignof(std::max_align_t), "");
    static_assert(sizeof(TcpConnection) % alignof(TcpConnection) == 0, "");
    SlotChunk chunk;
    chunk.slots.reset(new char[kSlotsPerChunk * sizeof(TcpConnection)]);
    char* base = chunk.slots.get();
    auto at = std::upper_bound(
        slot_chunks_.begin(), slot_chunks_.end(), base,
        [](const char* p, const SlotChunk& c) { return p < c.slots.get(); });
    slot_chunks_.insert(at, std::move(chunk));
    for (size_t i = kSlotsPerChunk; i-- > 0;) {
      auto* link =
          reinterpret_cast<FreeSlotLink*>(base + i * sizeof(TcpConnection));
      link->next = free_slots_;
      free_slots_ = link;
    }
  }
  FreeSlotLink* slot = free_slots_;
  free_slots_ = slot->next;
  SlotChunk& chunk = slot_chunks_[ChunkOf(slot)];
  chunk.in_use |= uint64_t{1}
                  << ((reinterpret_cast<char*>(slot) - chunk.slots.get()) /
                      sizeof(TcpConnection));
  return slot;
}

void TcpContext::FreeSlot(void* slot) {
  SlotChunk& chunk = slot_chunks_[ChunkOf(slot)];
  chunk.in_use &=
      ~(uint64_t{1} << ((static_cast<char*>(slot) - chunk.slots.get()) /
                        sizeof(TcpConnection)));
  auto* link = static_cast<FreeSlotLink*>(slot);
  link->next = free_slots_;
  free_slots_ = link;
}

size_t TcpContext::ChunkOf(const void* slot) const {
  const char* p = static_cast<const char*>(slot);
  auto after = std::upper_bound(
      slot_chunks_.begin(), slot_chunks_.end(), p,
      [](const char* q, const SlotChunk& c) { return q < c.slots.get(); });
  NBIO_CHECK(after != slot_chunks_.begin());
  const size_t index = static_cast<size_t>(after - slot_chunks_.begin()) - 1;
  NBIO_CHECK(p < slot_chunks_[index].slots.get() +
                     kSlotsPerChunk * sizeof(TcpConnection));
  return index;
}

template <typename Fn>
void TcpContext::ForEachOpen(Fn fn) {
  // By index, re-reading the chunk list and bits: fn may open connections
  // (a new chunk) or close them (their slots stay until FlushClosed).
  for (size_t c = 0; c < slot_chunks_.size(); ++c) {
    for (size_t i = 0; i < kSlotsPerChunk; ++i) {
      if (!(slot_chunks_[c].in_use & (uint64_t{1} << i))) continue;
      TcpConnection* conn = std::launder(reinterpret_cast<TcpConnection*>(
          slot_chunks_[c].slots.get() + i * sizeof(TcpConnection)));
      if (!conn->is_closing()) fn(conn);
    }
  }
}

void TcpContext::Destroy(TcpConnection* conn) {
  conn->~TcpConnection();
  FreeSlot(conn);
}

absl::Status TcpContext::Adopt(int fd) { return AdoptConnection(fd).status(); }

absl::StatusOr<TcpConnection*> TcpContext::AdoptConnection(int fd) {
  auto* conn = new (AllocateSlot()) TcpConnection(this);
  absl::Status status = loop_->poller()->Add(conn, fd, 0);
  if (!status.ok()) {
    conn->flags_ |= TcpConnection::kClosing;  // never opened
    Destroy(conn);
    close(fd);
    return status;
  }
  if (options_.no_delay) {
    const int one = 1;
    // Fails harmlessly on non-TCP stream sockets (tests use socketpairs).
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  ++stats_.connections_opened;
  ++stats_.connections;
  conn->Touch();
  if (idle_timeout_nanos_ > 0) {
    loop_->timer_wheel()->ScheduleWithin(
        &conn->idle_timer_, loop_->NowNanos() + idle_timeout_nanos_,
        idle_timeout_nanos_ / 8);
  }
  handler_->OnAccept(conn);
  if (draining_ && !conn->is_closing()) conn->BeginDrain();
  return conn;
}

void TcpContext::ScheduleClosed(TcpConnection* conn,
                                const absl::Status& reason) {
  closing_.emplace_back(conn, reason);
  if (!flush_closed_.is_pending()) {
    // OnClosed comes at the start of the next iteration.
    flush_closed_.Start(absl::ZeroDuration());
  }
}

void TcpContext::FlushClosed() {
  // OnClosed may close other connections: take batches until none is left.
  // Both vectors keep their capacity, so steady churn allocates nothing.
  while (!closing_.empty()) {
    closing_batch_.swap(closing_);
    for (auto& [conn, reason] : closing_batch_) {
      if (!cancel_on_.empty()) cancel_on_.erase(conn);
      handler_->OnClosed(conn, reason);
      ++stats_.connections_closed;
      --stats_.connections;
      Destroy(conn);
    }
    closing_batch_.clear();
  }
  MaybeFinishDrain();
}

void TcpContext::CloseAll(const absl::Status& reason) {
  ForEachOpen([&](TcpConnection* conn) { conn->Close(reason); });
}

void TcpContext::Drain(absl::AnyInvocable<void()> done) {
  draining_ = true;
  drain_done_ = std::move(done);
  ForEachOpen([](TcpConnection* conn) { conn->BeginDrain(); });
  MaybeFinishDrain();
}

void TcpContext::MaybeFinishDrain() {
  // Open connections and those whose OnClosed is still to come, in this
  // batch or a later one.
  if (!draining_ || stats_.connections != 0) return;
  draining_ = false;
  absl::AnyInvocable<void()> done = std::move(drain_done_);
  if (done) done();
}

}  // namespace nbio
