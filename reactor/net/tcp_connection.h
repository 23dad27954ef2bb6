// TCP streams on the event loop: a connection API with no readiness in it.
//
// The user starts reading and is given bytes; writes bytes and is told when
// queued output has drained; half-closes or closes, and is told once why the
// connection ended (an absl::Status). Readiness, EAGAIN, partial writes and
// interest changes stay inside, so a completion-based backend (io_uring) can
// sit under the same API later.
//
//   class Echo : public ConnectionHandler {
//     void OnAccept(TcpConnection* c) override { c->StartReading(); }
//     void OnData(TcpConnection* c, absl::string_view bytes) override {
//       c->Write(bytes);
//     }
//   };
//
// Writes go out at once when nothing is queued; the rest waits in the
// connection's intrusive MessageQueue and leaves with sendmsg(MSG_NOSIGNAL)
// (writev-shaped, never SIGPIPE) when the socket is writable again.
//
// Backpressure: when queued output reaches the high watermark, reading pauses
// (and each read is sized so that an echo never queues past the mark); it
// resumes below the low watermark (half the high one by default). A peer that
// sends but never reads cannot grow the server's memory past the high mark per
// connection.
//
// Backends: on a readiness backend (epoll, poll, select, io_uring_poll) the
// connection does its own recv/sendmsg when the poller says the fd is ready.
// On a completion backend ("io_uring") a connection accepted by a TcpServer
// is the backend's (EventLoop::streams()): the kernel receives into shared
// buffers and sends the output queue, and the connection has no process
// fd (fd() is -1; WithFd() lends one for a call). The API and the
// handler's calls are the same, and each receive is limited to the room
// under the high watermark as a read is (kernel 6.16+; before, a pause may
// leave up to what the socket held received, kept aside until reading
// resumes). One difference: every Write is queued and sent by the kernel
// at the next iteration, so OnDrained follows every write.
// Connections from Adopt() and Connect() use their fd on every backend.
//
// Memory: an idle connection is one 96-byte object in a slab of its
// context, and no buffer: reads use the context's shared buffer, and the
// output queue owns blocks only while it holds bytes.
//
// Threading: a connection and its context belong to one loop's thread.
// Lifetime: connections are owned by their TcpContext (a TcpServer holds one);
// a TcpConnection* stays valid until OnClosed() has returned, after which the
// object is destroyed (deferred, never inside a callback).
#ifndef NBIO_REACTOR_NET_TCP_CONNECTION_H_
#define NBIO_REACTOR_NET_TCP_CONNECTION_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "queue/intrusive_list.h"
#include "queue/message_queue.h"
#include "queue/slab.h"
#include "reactor/async/cancellation.h"
#include "reactor/async/future.h"
#include "reactor/event_loop.h"
#include "reactor/poller/poller.h"
#include "reactor/poller/stream_engine.h"
#include "reactor/sys/socket_address.h"
#include "timers/timer_wheel.h"

namespace nbio {

class TcpConnection;
class TcpContext;

// What a connection tells its user. One handler usually serves every
// connection of a server. All calls come from the loop's thread, never
// re-entrantly from inside a call the user made on the same connection
// (e.g. a Write() that fails reports OnClosed() later, not inside Write()).
class ConnectionHandler {
 public:
  virtual ~ConnectionHandler() = default;

  // A new connection. Call StartReading() to receive bytes.
  virtual void OnAccept(TcpConnection* conn) = 0;

  // Bytes arrived, in order. `bytes` is valid only during the call (it points
  // into a buffer shared by every connection of the context).
  virtual void OnData(TcpConnection* conn, absl::string_view bytes) = 0;

  // Output that had to be queued has now been written in full.
  virtual void OnDrained(TcpConnection* conn) {}

  // The peer shut down its writing side (read EOF). Reading stops; writing
  // still works. The default half-closes our side once queued output is
  // written (Shutdown()), which ends the connection cleanly.
  virtual void OnPeerClosed(TcpConnection* conn);

  // The connection ended. Called exactly once per connection. `reason` is OK
  // for an orderly end (both sides shut down, or Close() with OK), else why:
  // UNAVAILABLE "recv: Connection reset by peer [ECONNRESET]",
  // DEADLINE_EXCEEDED "idle timeout", CANCELLED "server shutting down"...
  // The connection is destroyed after this returns.
  virtual void OnClosed(TcpConnection* conn, const absl::Status& reason) {}
};

// Per-context settings. Sizes in bytes.
struct TcpOptions {
  // Reading pauses when this many bytes are queued for writing (0: never).
  size_t high_watermark = 1 << 20;
  // Reading resumes at or below this (0: half the high watermark).
  size_t low_watermark = 0;
  // Close connections with no read or write progress for this long (0:
  // never). Enforced on the timer wheel with up to 1/8 of it as slack.
  absl::Duration idle_timeout = absl::ZeroDuration();
  // The buffer every read lands in, shared by all connections.
  size_t read_buffer_size = 64 * 1024;
  // Reads per readiness event before other connections get a turn.
  int max_reads_per_event = 4;
  // Output queue block size (BlockPool). 0: 4 KiB on a readiness backend
  // (a write is queued only when the kernel's buffer is full); on a
  // completion backend (io_uring), where every write is queued, a block
  // holds one receive buffer's worth up to 16 KiB, so that a copied echo
  // of a chunk is one block and one iovec (larger chunks are lent).
  size_t output_block_size = 0;
  // TCP_NODELAY on every connection.
  bool no_delay = true;
};

// Counters of a context (all connections it ever had).
struct TcpStats {
  uint64_t connections_opened = 0;
  uint64_t connections_closed = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  uint64_t resets = 0;  // ended by ECONNRESET / EPIPE
  uint64_t idle_timeouts = 0;
  uint64_t read_pauses = 0;     // high watermark reached
  uint64_t writes_queued = 0;   // writes that could not go out at once
  size_t connections = 0;       // open now
  size_t queued_bytes = 0;      // in all output queues now
  size_t max_queued_bytes = 0;  // the most one connection ever queued
};

// One TCP stream. Created by its TcpContext; see the file comment for the
// contract. All methods are for the loop's thread.
class TcpConnection : private PollerEntry {
 public:
  // Starts / stops delivering OnData. Backpressure pauses are separate and
  // automatic.
  void StartReading();
  void StopReading();

  // Queues `bytes` for the peer (written at once when nothing is queued).
  // Returns false, dropping the bytes, when the connection is closing or our
  // side has been shut down. The bytes are copied, except on a completion
  // backend (io_uring) when they are (part of) what OnData is being given
  // and 1 KiB or more: the engine's receive buffer is then kept and sent
  // from (an echo copies nothing), while the engine has buffers to spare.
  bool Write(absl::string_view bytes);
  // Hands over a buffer: what is not written at once is kept without copying
  // its bytes when it is large (MessageQueue::kMinAdoptSize and up), also
  // when the kernel took a prefix; a smaller rest is copied.
  bool Write(std::string&& bytes);
  // A string literal is copied (the overloads above would be ambiguous).
  bool Write(const char* bytes) { return Write(absl::string_view(bytes)); }

  // Half-close: no more writes; once the queued output is written, sends FIN
  // (shutdown(SHUT_WR)). The connection ends (OnClosed with OK) when the peer
  // has closed its side too.
  void Shutdown();

  // Ends the connection now: queued output is dropped and the fd closed.
  // OnClosed(reason) follows on the next iteration (not inside this call).
  // A second Close() is a no-op.
  void Close(const absl::Status& reason = absl::OkStatus());

  // Closes the connection with the token's reason if `token` is cancelled
  // first: CANCELLED from a CancellationSource, DEADLINE_EXCEEDED from a
  // DeadlineToken (reactor/async/deadline.h). This is how a deadline is put on
  // whatever the connection waits for: the next read, a drain, the whole
  // exchange.
  //
  //   // No request within 5 s: close.
  //   conn->CancelOn(DeadlineToken(loop, absl::Seconds(5), shutdown.token()));
  //   // ...and in OnData, once a request is complete: conn->CancelOn({});
  //
  // A later call replaces the token; an empty token clears it; a token that
  // is already cancelled closes at once. The registration lives in the
  // context (not in every connection) and costs one small allocation per
  // call; for a plain inactivity limit, TcpOptions::idle_timeout is cheaper.
  void CancelOn(const CancellationToken& token);

  // -1 for a connection on a completion backend's handle (see the top).
  int fd() const { return PollerEntry::fd(); }
  size_t queued_bytes() const { return output_.size(); }
  bool is_reading() const { return (flags_ & kReading) != 0; }
  bool is_closing() const { return (flags_ & kClosing) != 0; }
  // The peer's address (getpeername), on every backend.
  absl::StatusOr<SocketAddress> PeerAddress() const;
  // Calls fn with a descriptor of the connection's socket, for what only a
  // descriptor can ask or set (getsockopt, FIONREAD, TCP_NODELAY): fd()
  // itself, or on a completion backend a process fd made for the call and
  // closed after it (IORING_OP_FIXED_FD_INSTALL, Linux 6.8). fn must not
  // close it nor keep it. Fails, without calling fn, on a closing
  // connection, and on io_uring at the open-file limit (RESOURCE_EXHAUSTED)
  // or before 6.8 (UNIMPLEMENTED). May be called from any callback.
  absl::Status WithFd(absl::FunctionRef<void(int fd)> fn) const;
  TcpContext* context() const;

  // A pointer for the user (libuv's handle->data).
  void* user_data() const { return user_data_; }
  void set_user_data(void* data) { user_data_ = data; }

  TcpConnection(const TcpConnection&) = delete;
  TcpConnection& operator=(const TcpConnection&) = delete;

 private:
  friend class TcpContext;
  friend class TcpServer;  // the stream engine's up-call table

  // The stream's state: a read side, a write side and an end, in flags_.
  //
  //   read side:
  //     idle --StartReading()--> reading --recv() == 0--> kPeerClosed
  //          <--StopReading()---   |  ^
  //            output >= high mark |  | output <= low mark
  //                                v  |
  //                              kPaused
  //   write side:
  //     open --Shutdown()--> kShutdownPending --output written--> kShutDown
  //          (output empty: straight to kShutDown; shutdown(SHUT_WR) = FIN)
  //   end:
  //     kPeerClosed and kShutDown --> Close(OK)
  //     Close(), an I/O error, the idle timer, CancelOn, CloseAll, from any
  //     state --> kClosing --next iteration (FlushClosed)--> OnClosed,
  //     then destroyed
  //   drain (TcpContext::Drain) on a reading connection:
  //     kDraining --a read finds the socket empty (EAGAIN), or EOF, or the
  //     user stopped reading--> Shutdown() (write side as above)
  //
  //   flag              set when                  cleared when
  //   kReading          StartReading()            StopReading()
  //   kPaused           output >= high mark       output <= low mark
  //                     (a Write, a read's check) (AfterQueueChange)
  //   kPeerClosed       recv() returned 0         never
  //   kShutdownPending  Shutdown(), output queued output written (kShutDown)
  //   kShutDown         shutdown(SHUT_WR) done    never
  //   kClosing          Close(), see "end"        never (destroyed)
  //   kDraining         BeginDrain: reading, not  read empty / EOF / not
  //                     half-closed, not closed   reading: then Shutdown()
  //   kQueuedWrite      a write had to be queued  the queue emptied
  //
  // What each allows:
  //   reads (OnData)  kReading, and none of kPaused, kPeerClosed, kClosing.
  //                   They come from readiness events and, with kDraining,
  //                   from the context's DrainStep (no event needed; short
  //                   reads do not end a batch). Never from inside a call the
  //                   user made.
  //   Write()         none of kShutdownPending, kShutDown, kClosing.
  //   Shutdown()      a no-op with any of those three.
  //   kPaused         lifting it during a drain asks for a DrainStep.
  //   kPeerClosed     OnPeerClosed has run once; readable interest is off.
  //   kClosing        the fd is closed and out of the poller, output
  //                   dropped; every call is a no-op (Write false) until
  //                   OnClosed.
  //   kQueuedWrite    OnDrained is due when the queue empties.
  enum Flags : uint16_t {
    kReading = 1 << 0,          // the user wants OnData
    kPaused = 1 << 1,           // backpressure: output above the high mark
    kPeerClosed = 1 << 2,       // read EOF
    kShutdownPending = 1 << 3,  // Shutdown() asked; FIN after the output
    kShutDown = 1 << 4,         // shutdown(SHUT_WR) done
    kClosing = 1 << 5,          // Close() called; OnClosed pending
    kDraining = 1 << 6,         // context drain: shut down once read empty
    kQueuedWrite = 1 << 7,      // output was queued: OnDrained when it empties
    // A completion backend's connection (stream engine handle, no fd):
    kDirect = 1 << 8,
    kSendInFlight = 1 << 9,     // the engine is sending from output_
    kReceiving = 1 << 10,       // the engine's receive is on
    kReleased = 1 << 11,        // closed and let go of by the engine
    kClosedReported = 1 << 12,  // OnClosed delivered, release awaited
  };

  explicit TcpConnection(TcpContext* context);
  ~TcpConnection();

  static void OnEvents(PollerEntry* entry, uint32_t events);
  // The stream engine's up-calls (StreamEngine::Upcalls).
  static uint32_t OnEngineReceiveLimit(void* conn);
  static void OnEngineData(void* conn, const char* bytes, size_t len,
                           bool socket_empty);
  static void OnEngineReceiveEnd(void* conn, int error);
  static void OnEngineSendDone(void* conn, int result);
  static void OnEngineShutdownDone(void* conn, int result);
  static void OnEngineReleased(void* conn);
  // MessageQueue::ReleaseFn of a receive buffer the engine lent to output_.
  static void ReturnLoan(void* engine, uint64_t token);
  bool is_direct() const { return (flags_ & kDirect) != 0; }
  StreamEngine* engine() const;
  // Hands the output queue's head to the engine.
  void StartSend();
  static void OnIdleTimer(TimerNode* node);
  void HandleRead();
  void HandleWrite();
  bool WriteDirect(absl::string_view* bytes);
  void AfterQueueChange();
  // `n` bytes of the output went out: drops them and counts them.
  void ConsumeSent(size_t n);
  // The peer's FIN (a read of 0, or an engine receive's end).
  void HandleEof();
  void UpdateInterest();
  void MaybeFinishShutdown();
  // Closes with ErrnoStatus(call, err), counting peer resets.
  void FailErrno(const char* call, int err);
  void Touch();
  // Marks the connection for the context's drain; reads from DrainStep.
  void BeginDrain();
  // One drain step: a batch of reads, or the end of the drain's reading when
  // nothing more will be read.
  void DrainRead();
  // The drain has read all there was: half-close after the output.
  void FinishDrainRead();

  // Fields ordered for size: flags_ and last_activity_ms_ sit in the tail
  // padding of the PollerEntry base (see poller.h).
  uint16_t flags_ = 0;
  uint32_t last_activity_ms_ = 0;  // loop time in ms, wrapping (idle check)
  // Its pool is the context's: context() is found from it, which saves a
  // pointer per connection.
  MessageQueue output_;
  TimerNode idle_timer_;
  void* user_data_ = nullptr;
};

// The state shared by a set of connections: loop, handler, options, the read
// buffer, the output block pool, the list of open connections and counters.
// Owns its connections. Loop thread only.
class TcpContext {
 public:
  TcpContext(EventLoop* loop, ConnectionHandler* handler, TcpOptions options);
  // Fails pending connects and closes every open connection with CANCELLED
  // "shutting down" (each gets OnClosed, inside the destructor). Handlers
  // called then may still call Connect() and Adopt() on this context (a
  // reconnect from OnClosed): those fail with CANCELLED too, and nothing is
  // opened. Not from inside a callback about one of its connections (the
  // connection is still in use there): a check fails; hand the context (or
  // its TcpServer) to EventLoop::DeleteLater() instead.
  ~TcpContext();

  TcpContext(const TcpContext&) = delete;
  TcpContext& operator=(const TcpContext&) = delete;

  // Takes `fd` (a connected, non-blocking stream socket) and makes a
  // connection of it, then calls handler->OnAccept(). On error (e.g. the
  // select backend cannot watch fds >= FD_SETSIZE, or CANCELLED while the
  // context is being destroyed) closes `fd` and returns the reason; no
  // handler call is made.
  absl::Status Adopt(int fd);

  // Closes every open connection with `reason` (each gets OnClosed).
  void CloseAll(const absl::Status& reason);

  // Opens a client connection to `to`. When the connect completes the
  // connection is made as for Adopt() (handler->OnAccept runs first), then
  // the future resolves with it (CANCELLED if OnAccept closed it). It fails
  // with the connect error, e.g.
  // UNAVAILABLE "connect(127.0.0.1:9): Connection refused [ECONNREFUSED]",
  // or with the token's reason if `token` is cancelled first (a
  // DeadlineToken is a connect timeout); the half-open socket is closed
  // then. The token covers the connect only: once connected, cancelling it
  // (also from OnAccept, e.g. a source shared by racing connects) leaves the
  // connection open, and the future resolves with it. Pending connects fail
  // with CANCELLED when the context is destroyed, and so does a Connect()
  // called during its destruction (a reconnect from OnClosed). One
  // allocation per connect. Loop thread only.
  Future<TcpConnection*> Connect(const SocketAddress& to,
                                 const CancellationToken& token = {});

  // Asks every open connection to finish: read what the kernel holds now,
  // let the handler answer it, then half-close once the output is written;
  // the connection closes when the peer has closed too. A connection
  // half-closes when a read has found its socket empty (or at EOF), however
  // its reads were batched or paused by backpressure, and once its output is
  // written. The reads run from the loop, never inside Drain(), so Drain()
  // may be called from OnData. A peer that never stops sending keeps its
  // connection reading: put a deadline on the drain with CancelOn() or
  // CloseAll(). `done` runs once no connection is left (at once if there is
  // none). Drain() may be called
  // again while a drain is in progress (a second SIGTERM): every `done`
  // given runs exactly once, in order, when the drain completes.
  void Drain(absl::AnyInvocable<void()> done);

  // Calls fn(conn) for every open connection, not those already closing
  // (their OnClosed is pending). fn may Close() or write to the connection
  // it is given; a connection opened during the walk may or may not be
  // seen. O(connection slots): for rare walks (a report, a shutdown), not
  // per event. Keeping a set of connections in the handler instead would
  // cost memory per connection.
  void ForEachConnection(absl::FunctionRef<void(TcpConnection*)> fn);

  EventLoop* loop() const { return loop_; }
  ConnectionHandler* handler() const { return handler_; }
  const TcpOptions& options() const { return options_; }
  // Open connections, including those whose OnClosed is still pending.
  size_t connection_count() const { return stats_.connections; }
  const TcpStats& stats() const { return stats_; }
  const BlockPool& pool() const { return pool_; }

 private:
  friend class TcpConnection;
  friend class TcpServer;  // AdoptHandle
  // Adopt(), returning the connection.
  absl::StatusOr<TcpConnection*> AdoptConnection(int fd);
  // A connection the stream engine accepted as `h` (TcpServer); nullptr
  // while the context is being destroyed.
  TcpConnection* AdoptHandle(StreamEngine::Handle h);
  // Counts `conn` open, starts its idle timer, calls OnAccept (and joins
  // a drain in progress).
  void Open(TcpConnection* conn);
  // Moves `conn` to closing_ and makes sure FlushClosed() runs soon.
  void ScheduleClosed(TcpConnection* conn, const absl::Status& reason);
  // Delivers OnClosed to every closing connection and destroys it.
  void FlushClosed();
  // Calls fn(conn) for each open (not closing) connection, walking the slab.
  // fn may open and close connections: one opened during the walk may or may
  // not be seen; one closed before the walk reaches it is not.
  template <typename Fn>
  void ForEachOpen(Fn fn);

  // A client connect in progress: watches the socket for writability, then
  // reads SO_ERROR. Owned by the context until it finishes, then handed to
  // the loop's DeleteLater (it usually finishes inside its own callback).
  struct PendingConnect {
    PendingConnect(TcpContext* context, int fd, std::string where);
    void OnWritable();
    void Finish(absl::StatusOr<TcpConnection*> result);

    TcpContext* const context;
    int fd;
    const std::string where;  // "connect(127.0.0.1:7007)", for errors
    Promise<TcpConnection*> promise;
    FdWatcher watcher;
    CancellationRegistration on_cancel;
    ListHook hook;
  };
  // Runs the destructor and recycles the slot.
  void Destroy(TcpConnection* conn);
  void MaybeFinishDrain();
  // Makes sure DrainStep() runs at the next iteration.
  void ScheduleDrainStep();
  // Gives every draining connection a batch of reads (DrainRead).
  void DrainStep();

  EventLoop* const loop_;
  ConnectionHandler* const handler_;
  const TcpOptions options_;
  const size_t low_watermark_;
  const int64_t idle_timeout_nanos_;
  std::unique_ptr<char[]> read_buffer_;
  BlockPool pool_;
  // Closed, OnClosed not yet delivered, with the reason (kept here rather
  // than in every connection: 8 bytes each would break the memory budget).
  std::vector<std::pair<TcpConnection*, absl::Status>> closing_;
  std::vector<std::pair<TcpConnection*, absl::Status>> closing_batch_;
  // Already due when started: runs FlushClosed() at the next iteration's
  // timer phase. An embedded timer, so a destroyed context cancels it.
  Timer flush_closed_;
  // Already due when started: runs DrainStep(). A drain reads from here, not
  // inside Drain() (which may be called from OnData) and not only on read
  // events (none comes when the socket is already empty).
  Timer drain_step_;
  // The `done` of every Drain() call of the drain in progress.
  std::vector<absl::AnyInvocable<void()>> drain_done_;
  bool draining_ = false;
  // The loop's stream engine, or nullptr (readiness backend).
  StreamEngine* const streams_;
  // Callbacks about this context's connections under way (the loop's
  // dispatch into a connection, an accept): the destructor checks it.
  int in_callback_ = 0;
  struct CallbackScope {
    explicit CallbackScope(TcpContext* c) : ctx(c) { ++ctx->in_callback_; }
    ~CallbackScope() { --ctx->in_callback_; }
    CallbackScope(const CallbackScope&) = delete;
    CallbackScope& operator=(const CallbackScope&) = delete;
    TcpContext* const ctx;
  };
  // Engine connections whose OnClosed has run, waiting for the engine to
  // let go of them before they are destroyed.
  size_t awaiting_release_ = 0;
  // Set for the whole destructor: Connect() and Adopt() refuse then.
  bool destroying_ = false;
  // Connection memory: slots of sizeof(TcpConnection) in a slab (queue/slab.h),
  // so an accept allocates nothing after warm-up and a connection costs its
  // size, with no malloc header. Chunks are kept until the context goes
  // (memory stays at the high-water mark). Open connections are found by
  // walking the slots in use (CloseAll, Drain: rare), which saves a list hook
  // (16 bytes) per connection.
  Slab slots_{sizeof(TcpConnection)};
  // TcpConnection::CancelOn registrations. Dropped when the connection is
  // destroyed (FlushClosed), never inside the registration's own callback.
  absl::flat_hash_map<TcpConnection*, CancellationRegistration> cancel_on_;
  IntrusiveList<PendingConnect, &PendingConnect::hook> pending_connects_;
  TcpStats stats_;
};

}  // namespace nbio

#endif  // NBIO_REACTOR_NET_TCP_CONNECTION_H_
