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

// The most an output block holds on a completion backend. A connection
// with output pending holds a block: larger ones cost memory and cache at
// many connections (64 KiB blocks: a median 11% more CPU per message at
// 100), and chunks that large are lent rather than copied anyway.
constexpr size_t kMaxEngineBlockBytes = 16 * 1024;

// TcpOptions::output_block_size, 0 resolved for the loop's backend.
size_t OutputBlockSize(const TcpOptions& options, StreamEngine* streams) {
  if (options.output_block_size != 0) return options.output_block_size;
  if (streams == nullptr) return BlockPool::kDefaultBlockSize;
  return MessageQueue::BlockSizeFor(
      std::min(streams->receive_chunk_bytes(), kMaxEngineBlockBytes));
}
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

// A slab of sizeof(TcpConnection) aligns its slots for it (see slab.h).
static_assert(alignof(TcpConnection) <= alignof(std::max_align_t) &&
                  sizeof(TcpConnection) % alignof(TcpConnection) == 0,
              "TcpConnection does not fit an aligned slab slot");

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

StreamEngine* TcpConnection::engine() const { return context()->streams_; }

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
  const bool read =
      (flags_ & kReading) && !(flags_ & (kPaused | kPeerClosed));
  if (flags_ & kDirect) {
    // The engine receives while we want data; sends need no interest.
    if (read == ((flags_ & kReceiving) != 0)) return;
    if (read) {
      flags_ |= kReceiving;
      engine()->StartReceive(stream_handle());
    } else {
      flags_ &= ~kReceiving;
      engine()->StopReceive(stream_handle());
    }
    return;
  }
  uint32_t want = 0;
  if (read) want |= kReadable;
  if (!output_.empty()) want |= kWritable;
  if (want == interest()) return;
  absl::Status status = context()->loop_->ModifyEntry(this, want);
  if (!status.ok()) Close(status);
}

void TcpConnection::OnEvents(PollerEntry* entry, uint32_t events) {
  TcpConnection* self = static_cast<TcpConnection*>(entry);
  TcpContext::CallbackScope scope(self->context());
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
      HandleEof();
      return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      // Everything the kernel held has been read and answered.
      if (flags_ & kDraining) FinishDrainRead();
      break;
    }
    FailErrno("recv", errno);
    return;
  }
  if ((flags_ & (kDraining | kPaused | kClosing)) == kDraining) {
    // The batch ended (read budget, or the user stopped reading) before a
    // read found the socket empty. It may well be empty now, and then no
    // read event will come: read on from the loop.
    ctx->ScheduleDrainStep();
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
  if (output_.empty() && !(flags_ & kDirect)) {
    if (!WriteDirect(&bytes)) return false;
    if (bytes.empty()) return true;
  }
  TcpContext* ctx = context();
  uint64_t loan;
  if ((flags_ & kDirect) && bytes.size() >= MessageQueue::kMinAdoptSize &&
      ctx->streams_->Lend(bytes.data(), bytes.size(), &loan)) {
    // Bytes of the receive being delivered (an echo): sent from the
    // engine's buffer, which goes back when they have been sent.
    output_.AppendLent(bytes, &ReturnLoan, ctx->streams_, loan);
  } else {
    output_.Append(bytes);
  }
  ctx->stats_.queued_bytes += bytes.size();
  if (flags_ & kDirect) StartSend();
  AfterQueueChange();
  return true;
}

void TcpConnection::ReturnLoan(void* engine, uint64_t token) {
  static_cast<StreamEngine*>(engine)->ReturnLoan(token);
}

void TcpConnection::StartSend() {
  TcpContext* ctx = context();
  // Every engine write is queued (the kernel sends from the queue), so
  // OnDrained follows each; writes_queued counts those that also waited
  // for an earlier send.
  if (flags_ & kSendInFlight) {
    if (!(flags_ & kQueuedWrite)) ++ctx->stats_.writes_queued;
    flags_ |= kQueuedWrite;
    return;
  }
  flags_ |= kQueuedWrite;
  iovec iov[kMaxIovecs];
  const int count = output_.FillIovec(
      iov, std::min(kMaxIovecs, ctx->streams_->max_send_iovecs()));
  flags_ |= kSendInFlight;
  ctx->streams_->Send(stream_handle(), iov, count);
}

bool TcpConnection::Write(std::string&& bytes) {
  if (flags_ & (kClosing | kShutdownPending | kShutDown)) return false;
  if (bytes.empty()) return true;
  if (output_.empty() && !(flags_ & kDirect)) {
    absl::string_view rest(bytes);
    if (!WriteDirect(&rest)) return false;
    if (rest.empty()) return true;
    if (rest.size() != bytes.size()) {
      // Partly written. A large rest keeps the caller's buffer: the queue
      // adopts the whole string and drops the prefix the kernel took (the
      // queue is empty, so that prefix is its front). A small one is copied,
      // so a mostly sent buffer is not held for its last bytes.
      const size_t taken = bytes.size() - rest.size();
      if (rest.size() < MessageQueue::kMinAdoptSize) {
        output_.Append(rest);
      } else {
        output_.Append(std::move(bytes));
        output_.Consume(taken);
      }
      context()->stats_.queued_bytes += rest.size();
      AfterQueueChange();
      return true;
    }
  }
  const size_t size = bytes.size();
  output_.Append(std::move(bytes));  // large buffers are adopted, not copied
  context()->stats_.queued_bytes += size;
  if (flags_ & kDirect) StartSend();
  AfterQueueChange();
  return true;
}

void TcpConnection::HandleWrite() {
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
    ConsumeSent(static_cast<size_t>(n));
    if (static_cast<size_t>(n) < offered) break;  // the socket buffer is full
  }
  AfterQueueChange();
}

void TcpConnection::ConsumeSent(size_t n) {
  TcpContext* ctx = context();
  output_.Consume(n);
  ctx->stats_.bytes_written += n;
  ctx->stats_.queued_bytes -= n;
  if (n > 0) Touch();
}

void TcpConnection::HandleEof() {
  flags_ |= kPeerClosed;
  flags_ &= ~kReceiving;  // an engine's receive has ended by itself
  UpdateInterest();
  context()->handler_->OnPeerClosed(this);
  // EOF: nothing more to read, so a drain is done reading (the default
  // OnPeerClosed has already shut down; one that did not is overruled).
  if (flags_ & kDraining) FinishDrainRead();
  MaybeFinishShutdown();
}

void TcpConnection::AfterQueueChange() {
  TcpContext* ctx = context();
  const size_t queued = output_.size();
  if (queued > 0) {
    // (An engine connection queues every write: StartSend says which ones
    // had to wait.)
    if (!(flags_ & (kQueuedWrite | kDirect))) {
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
    // Reading resumes; level-triggered readiness reports pending input. A
    // drain must also learn when there is none (no event then): it reads
    // on from the loop.
    if (flags_ & kDraining) ctx->ScheduleDrainStep();
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
    if (flags_ & kDirect) {
      // After the peer's FIN the close below sends ours: no shutdown
      // request (the kernel runs one on a worker thread).
      if (!(flags_ & kPeerClosed)) engine()->Shutdown(stream_handle());
    } else if (shutdown(fd(), SHUT_WR) != 0 && errno != ENOTCONN) {
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
  ctx->loop_->CancelNode(&idle_timer_);
  ctx->stats_.queued_bytes -= output_.size();
  if (flags_ & kDirect) {
    // The kernel may still be reading a send's bytes from output_: they
    // are dropped when the engine releases the connection.
    ctx->streams_->Close(stream_handle());
  } else {
    const int fd = this->fd();
    ctx->loop_->RemoveEntry(this);
    close(fd);
    output_.Clear();
  }
  ctx->ScheduleClosed(this, reason);
}

absl::StatusOr<SocketAddress> TcpConnection::PeerAddress() const {
  absl::StatusOr<SocketAddress> peer;
  const absl::Status status =
      WithFd([&peer](int fd) { peer = SocketAddress::PeerOf(fd); });
  if (!status.ok()) return status;
  return peer;
}

absl::Status TcpConnection::WithFd(absl::FunctionRef<void(int fd)> fn) const {
  if (is_closing()) return absl::FailedPreconditionError("connection closed");
  if ((flags_ & kDirect) == 0) {
    fn(fd());
    return absl::OkStatus();
  }
  // A direct descriptor has no process fd: the engine makes one.
  absl::StatusOr<int> fd = engine()->InstallFd(stream_handle());
  if (!fd.ok()) return fd.status();
  fn(*fd);
  close(*fd);
  return absl::OkStatus();
}

void TcpConnection::OnIdleTimer(TimerNode* node) {
  TcpConnection* self =
      internal::ContainerOf(node, &TcpConnection::idle_timer_);
  TcpContext* ctx = self->context();
  TcpContext::CallbackScope scope(ctx);
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
  ctx->loop_->ScheduleNode(node, now - idle_for + ctx->idle_timeout_nanos_,
                           ctx->idle_timeout_nanos_ / 8);
}

void TcpConnection::BeginDrain() {
  // Already draining, or already half-closing: nothing to add.
  if (flags_ & (kClosing | kDraining | kShutdownPending | kShutDown)) return;
  if ((flags_ & kPeerClosed) || !(flags_ & kReading)) {
    // Nothing more will be read: half-close once the output is written.
    Shutdown();
    return;
  }
  // Read what is there now, but from the loop (TcpContext::DrainStep):
  // Drain() may be called from OnData, and reading here would deliver
  // OnData re-entrantly and overwrite the bytes that call is looking at.
  flags_ |= kDraining;
  context()->ScheduleDrainStep();
}

void TcpConnection::DrainRead() {
  if ((flags_ & kPeerClosed) || !(flags_ & kReading)) {
    // The user stopped reading (or the peer closed) during the drain.
    FinishDrainRead();
    return;
  }
  // Paused by backpressure: AfterQueueChange asks for another step when the
  // output is below the low watermark.
  if (flags_ & kPaused) return;
  if (flags_ & kDirect) {
    // The engine receives by itself; DrainStep has just run what it had.
    // Not drained yet: a later receive that finds the socket empty ends
    // the drain's reading (OnEngineData).
    if (engine()->ReceiveDrained(stream_handle())) FinishDrainRead();
    return;
  }
  HandleRead();
}

// ---------------------------------------------------------------------------
// The stream engine's up-calls (completion backends)

uint32_t TcpConnection::OnEngineReceiveLimit(void* c) {
  // As a readiness read is sized: no more than the output may still take,
  // so that an echo never queues past the high watermark.
  auto* self = static_cast<TcpConnection*>(c);
  const size_t high = self->context()->options_.high_watermark;
  if (high == 0) return 0;
  const size_t queued = self->output_.size();
  const size_t room = queued < high ? high - queued : 1;
  return static_cast<uint32_t>(std::min<size_t>(room, UINT32_MAX));
}

void TcpConnection::OnEngineData(void* c, const char* bytes, size_t len,
                                 bool socket_empty) {
  auto* self = static_cast<TcpConnection*>(c);
  if (self->flags_ & kClosing) return;
  TcpContext* ctx = self->context();
  TcpContext::CallbackScope scope(ctx);
  ctx->stats_.bytes_read += len;
  self->Touch();
  ctx->handler_->OnData(self, absl::string_view(bytes, len));
  if ((self->flags_ & (kDraining | kClosing)) == kDraining && socket_empty) {
    self->FinishDrainRead();
  }
  self->UpdateInterest();
}

void TcpConnection::OnEngineReceiveEnd(void* c, int error) {
  auto* self = static_cast<TcpConnection*>(c);
  if (self->flags_ & kClosing) return;
  TcpContext::CallbackScope scope(self->context());
  if (error != 0) {
    self->FailErrno("recv", -error);
    return;
  }
  self->HandleEof();
}

void TcpConnection::OnEngineSendDone(void* c, int result) {
  auto* self = static_cast<TcpConnection*>(c);
  self->flags_ &= ~kSendInFlight;
  if (self->flags_ & kClosing) return;
  TcpContext::CallbackScope scope(self->context());
  if (result < 0) {
    self->FailErrno("sendmsg", -result);
    return;
  }
  self->ConsumeSent(static_cast<size_t>(result));
  if (!self->output_.empty()) self->StartSend();
  self->AfterQueueChange();
}

void TcpConnection::OnEngineShutdownDone(void* c, int result) {
  auto* self = static_cast<TcpConnection*>(c);
  if (self->flags_ & kClosing) return;
  if (result < 0 && result != -ENOTCONN) self->FailErrno("shutdown", -result);
}

void TcpConnection::OnEngineReleased(void* c) {
  auto* self = static_cast<TcpConnection*>(c);
  self->flags_ |= kReleased;
  if (self->flags_ & kClosedReported) {
    TcpContext* ctx = self->context();
    --ctx->awaiting_release_;
    ctx->Destroy(self);
  }
}

void TcpConnection::FinishDrainRead() {
  flags_ &= ~kDraining;
  Shutdown();
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
      pool_(OutputBlockSize(options_, loop->streams())),
      flush_closed_(loop, [this] { FlushClosed(); }),
      drain_step_(loop, [this] { DrainStep(); }),
      streams_(loop->streams()) {
  NBIO_CHECK(options_.read_buffer_size > 0);
  NBIO_CHECK(options_.max_reads_per_event > 0);
  loop_->HandleAttached(EventLoop::HandleKind::kTcpContext);
}

TcpContext::~TcpContext() {
  NBIO_CHECK_MSG(in_callback_ == 0,
                 "TcpContext (or its TcpServer) destroyed inside a callback "
                 "about one of its connections: hand it to "
                 "EventLoop::DeleteLater() instead");
  destroying_ = true;
  while (!pending_connects_.empty()) {
    pending_connects_.front().Finish(absl::CancelledError("shutting down"));
  }
  CloseAll(absl::CancelledError("shutting down"));
  FlushClosed();
  // The kernel may still read what the closed engine connections pointed
  // to (their output, in pool_): wait until it has let go of them.
  if (awaiting_release_ > 0) streams_->SettleClosed();
  NBIO_CHECK_MSG(awaiting_release_ == 0,
                 "io_uring connections not released at context teardown");
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

template <typename Fn>
void TcpContext::ForEachOpen(Fn fn) {
  slots_.ForEachInUse([&](void* slot) {
    auto* conn = std::launder(static_cast<TcpConnection*>(slot));
    // Closing ones keep their slot until FlushClosed.
    if (!conn->is_closing()) fn(conn);
  });
}

void TcpContext::ForEachConnection(absl::FunctionRef<void(TcpConnection*)> fn) {
  ForEachOpen([&](TcpConnection* conn) { fn(conn); });
}

void TcpContext::Destroy(TcpConnection* conn) {
  conn->~TcpConnection();
  slots_.Free(conn);
}

absl::Status TcpContext::Adopt(int fd) { return AdoptConnection(fd).status(); }

void TcpContext::Open(TcpConnection* conn) {
  ++stats_.connections_opened;
  ++stats_.connections;
  conn->Touch();
  if (idle_timeout_nanos_ > 0) {
    loop_->ScheduleNode(&conn->idle_timer_,
                        loop_->NowNanos() + idle_timeout_nanos_,
                        idle_timeout_nanos_ / 8);
  }
  handler_->OnAccept(conn);
  if (draining_ && !conn->is_closing()) conn->BeginDrain();
}

TcpConnection* TcpContext::AdoptHandle(StreamEngine::Handle h) {
  if (destroying_) return nullptr;
  auto* conn = new (slots_.Allocate()) TcpConnection(this);
  conn->flags_ |= TcpConnection::kDirect;
  conn->set_stream_handle(h);
  streams_->Bind(h, conn);
  Open(conn);
  return conn;
}

absl::StatusOr<TcpConnection*> TcpContext::AdoptConnection(int fd) {
  if (destroying_) {
    // From a handler called by the destructor: a connection opened now
    // would outlive the context.
    close(fd);
    return absl::CancelledError("shutting down");
  }
  auto* conn = new (slots_.Allocate()) TcpConnection(this);
  absl::Status status = loop_->AddEntry(conn, fd, 0);
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
  Open(conn);
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
      if ((conn->flags_ & (TcpConnection::kDirect |
                           TcpConnection::kReleased)) ==
          TcpConnection::kDirect) {
        // Destroyed when the engine releases it (OnEngineReleased).
        conn->flags_ |= TcpConnection::kClosedReported;
        ++awaiting_release_;
      } else {
        Destroy(conn);
      }
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
  if (done) drain_done_.push_back(std::move(done));
  ForEachOpen([](TcpConnection* conn) { conn->BeginDrain(); });
  MaybeFinishDrain();
}

void TcpContext::ScheduleDrainStep() {
  if (!drain_step_.is_pending()) drain_step_.Start(absl::ZeroDuration());
}

void TcpContext::DrainStep() {
  // Engine connections: run what the kernel has first, so that "drained"
  // means nothing is left that was there when this step began.
  if (streams_ != nullptr) streams_->RunPending();
  // Each draining connection gets one batch of reads, as a read event would
  // give it; one that still has input asks for the next step.
  ForEachOpen([](TcpConnection* conn) {
    if (conn->flags_ & TcpConnection::kDraining) conn->DrainRead();
  });
}

void TcpContext::MaybeFinishDrain() {
  // Open connections and those whose OnClosed is still to come, in this
  // batch or a later one.
  if (!draining_ || stats_.connections != 0) return;
  draining_ = false;
  // Taken out first: a done may start another drain.
  std::vector<absl::AnyInvocable<void()>> dones = std::move(drain_done_);
  drain_done_.clear();
  for (auto& done : dones) done();
}

}  // namespace nbio
