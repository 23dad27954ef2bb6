// StreamEngine: stream I/O done by the backend itself (completion backends).
//
// A readiness backend (epoll, poll, select, io_uring_poll) reports that an fd
// is readable or writable and leaves recv/sendmsg to the owner of the fd:
// TcpConnection does them, with the same code on every readiness backend.
// A completion backend performs the operations: the kernel accepts, receives
// and sends, and tells the owner when each has happened. Poller::streams()
// returns its engine (nullptr on readiness backends), and a TcpServer on such
// a loop lets the engine accept; each connection it accepts is then a
// handle, not an fd (on io_uring: a direct descriptor, which takes no
// process file descriptor, so RLIMIT_NOFILE does not bound a loop's
// connections).
//
// The operations mirror what a stream owner does: accept (Listen), receive
// on and off, send a gathered buffer (one send in flight per handle), shut
// down the write side, close (which cancels what is in flight). Results come
// back through an up-call table the owner gives with Listen(): one static
// table for all its connections, and one pointer (`conn`) per handle, which
// the owner hands back from `accept`.
//
// Up-calls run on the loop's thread from inside the backend's Wait (or
// RunPending), never inside the operation that caused them. After Close(h)
// no up-call for h comes but `released`, which says the kernel has let go of
// everything the handle's operations pointed to (a send's buffers): only
// then may the owner free them.
//
// Threading: the loop's thread only.
#ifndef NBIO_REACTOR_POLLER_STREAM_ENGINE_H_
#define NBIO_REACTOR_POLLER_STREAM_ENGINE_H_

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nbio {

class StreamEngine {
 public:
  using Handle = uint32_t;

  struct Upcalls {
    // A connection arrived on `listener`'s socket as `h`. Returns the
    // owner's pointer for it, or nullptr to refuse it (the engine closes it,
    // and no other up-call for h comes).
    void* (*accept)(void* listener, Handle h);
    // The most h's receive may take before the owner is asked again (the
    // room under its output watermark); 0: no limit.
    uint32_t (*receive_limit)(void* conn);
    // Bytes arrived, in order, valid during the call. `socket_empty`: the
    // kernel said nothing more was queued on the socket when it completed
    // this receive (false when it cannot tell).
    void (*data)(void* conn, const char* bytes, size_t len, bool socket_empty);
    // Receiving ended for good: 0 at EOF, -errno on an error. Once.
    void (*receive_end)(void* conn, int error);
    // The send ended: bytes sent (possibly fewer than offered) or -errno.
    void (*send_done)(void* conn, int result);
    // Shutdown(h) ended: 0 or -errno.
    void (*shutdown_done)(void* conn, int result);
    // After Close(h): the kernel has let go of h and of what its operations
    // pointed to.
    void (*released)(void* conn);
    // Accepting failed for good on `listener` (the socket is unusable), or
    // the engine could not set up what accepting needs; the listener should
    // accept by itself (readiness) or report it.
    void (*listen_failed)(void* listener, const absl::Status& why);
  };

  virtual ~StreamEngine() = default;

  // Accepts on `listen_fd` (listening, non-blocking, owned by the caller and
  // open until StopListening). Connections then arrive through
  // upcalls->accept(listener, h). `upcalls` must outlive the listener.
  virtual absl::Status Listen(int listen_fd, const Upcalls* upcalls,
                              void* listener) = 0;
  // Stops accepting for `listener`. With `deliver`, connections the kernel
  // has already accepted are delivered (accept up-calls) before this
  // returns; without, they are closed. No up-call for the listener after
  // this returns; its connections are unaffected.
  virtual void StopListening(void* listener, bool deliver) = 0;

  // Gives h's owner pointer before the accept up-call returns it, so that
  // operations started inside that up-call (StartReceive) can reach it.
  virtual void Bind(Handle h, void* conn) = 0;

  // Receiving on / off. Data the kernel already took while off is held and
  // delivered after StartReceive.
  virtual void StartReceive(Handle h) = 0;
  virtual void StopReceive(Handle h) = 0;
  // Sends iov[0, count) (the engine copies the iovec array, at most
  // max_send_iovecs() of it, not the bytes: those must stay put until
  // send_done or released). One send in flight per handle.
  virtual void Send(Handle h, const iovec* iov, int count) = 0;
  virtual int max_send_iovecs() const = 0;
  // The most bytes one `data` up-call carries (the engine's receive
  // buffer): an owner that queues every write sizes its output blocks so
  // that one received chunk fits one block (one iovec to send, one block
  // to consume).
  virtual size_t receive_chunk_bytes() const = 0;

  // During a `data` up-call (of any connection of this engine): keeps the
  // receive buffer holding [bytes, bytes + len) for the caller, who sends
  // from it instead of copying, and sets *token. False (the caller copies)
  // when the bytes are not that buffer's, it is lent already, or the engine
  // keeps its buffers for receiving. Every lent buffer must come back by
  // ReturnLoan(token) (any time, on the loop's thread) before the engine is
  // destroyed.
  virtual bool Lend(const char* bytes, size_t len, uint64_t* token) = 0;
  virtual void ReturnLoan(uint64_t token) = 0;
  // Buffers lent and not returned, for tests and reports.
  virtual uint64_t buffers_lent() const = 0;
  // shutdown(SHUT_WR).
  virtual void Shutdown(Handle h) = 0;
  // Cancels what is in flight and closes. `released` follows.
  virtual void Close(Handle h) = 0;
  // A process fd for h's socket, for what only a descriptor can ask
  // (getpeername, FIONREAD); the caller closes it. Synchronous, runs no
  // up-call, so it may be called from inside one. Fails (with the reason)
  // on a kernel that cannot, or at the open-file limit.
  virtual absl::StatusOr<int> InstallFd(Handle h) = 0;
  // Whether everything the kernel held for h has been delivered: a receive
  // is armed, nothing is held back, and the last receive found the socket
  // empty. Meaningful after RunPending().
  virtual bool ReceiveDrained(Handle h) = 0;

  // Submits queued operations and runs every completion already available
  // (up-calls included), without blocking. Not from inside an up-call.
  virtual void RunPending() = 0;
  // Blocks until every closed handle has been released (the kernel lets go
  // quickly once a close is submitted); runs no up-call but `released`
  // (and `accept` is not called: connections accepted meanwhile wait).
  // For owners going away with connections just closed.
  virtual void SettleClosed() = 0;

};

}  // namespace nbio

#endif  // NBIO_REACTOR_POLLER_STREAM_ENGINE_H_
