// UringStreamRing: one io_uring ring doing stream I/O on direct descriptors.
//
// The completion engine under TcpConnection on the io_uring backend
// (reactor/poller/uring_stream_poller.h). A connection accepted into a
// slot of the ring's sparse fixed-file table never takes a process file
// descriptor, so RLIMIT_NOFILE does not bound how many connections one
// thread holds (it bounds only each ring's table: see README.md).
//
// What the ring does for its owner:
//   - a multishot accept from an ordinary listening fd straight into a free
//     slot (IORING_FILE_INDEX_ALLOC);
//   - one multishot receive per connection drawing from one provided buffer
//     ring shared by all of the ring's connections; the bytes are lent to
//     Handler::OnData for the duration of the call;
//   - one gathered send (IORING_OP_SENDMSG, MSG_NOSIGNAL) in flight per
//     connection, a shutdown, and a close that cancels whatever is still in
//     flight on the slot.
//
// Slots and generations: every request carries (slot, generation) in its
// user_data. A slot is handed back to the kernel (close_direct) only after
// every other completion for it has been seen, and the owner learns that the
// slot's state may be reused from OnClosed; a completion from an older
// generation is dropped, so nothing reaches a connection that has gone.
//
// Threads: not thread-safe. With Options::allow_defer_taskrun, Create()
// must be called on the thread that will call everything else: with IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN
// (used where the kernel has them) the kernel binds the ring to the thread
// that sets it up, refuses submissions from any other (EEXIST), and runs
// completion work only when that thread calls Wait(). Handler callbacks run
// only inside Wait(), never inside the call that caused them.
//
// Allocation: none per operation. Per-slot state, the completion batch and
// the lists of starved and resumed connections are sized in Create().
#ifndef NBIO_REACTOR_URING_STREAM_RING_H_
#define NBIO_REACTOR_URING_STREAM_RING_H_

#include <liburing.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nbio {

class UringStreamRing {
 public:
  // What happens to the ring's connections. Every method runs inside Wait()
  // on the ring's thread and may call the ring (Send, Close, StartReceive,
  // ...). The handler must outlive the ring.
  class Handler {
   public:
    virtual ~Handler() = default;
    // A connection was accepted into `slot`. Receiving starts only when the
    // owner calls StartReceive(slot).
    virtual void OnAccept(uint32_t slot) = 0;
    // An accept failed with `error` (-errno). ENFILE: the table was full
    // (a burst larger than Options::accept_reserve met a nearly full
    // table), the kernel dropped that one connection, and accepting
    // resumes once a slot is closed. Other errors are re-armed once per
    // Wait(), except those that say the listener itself is wrong (EBADF,
    // ENOTSOCK, EINVAL), which stop accepting.
    virtual void OnAcceptError(int error) {}
    // `len` bytes received on `slot`, in order. `data` is the ring's buffer,
    // valid only during the call (unless LendDelivered keeps it); it goes
    // back to the buffer ring after.
    // Never called while the slot's receive is stopped, nor after Close().
    virtual void OnData(uint32_t slot, const char* data, size_t len) = 0;
    // Receiving ended for good: 0 at EOF, -errno on an error (ECONNRESET,
    // ...). Once per connection, after all of its data; not after Close().
    virtual void OnReceiveEnd(uint32_t slot, int error) = 0;
    // The send started by Send(slot, ...) ended: bytes sent (possibly fewer
    // than asked: the caller sends the rest) or -errno (EPIPE,
    // ECONNRESET, ECANCELED after Close is not reported). Once per Send.
    virtual void OnSendDone(uint32_t slot, int result) = 0;
    // Shutdown(slot) ended: 0 or -errno.
    virtual void OnShutdownDone(uint32_t slot, int result) {}
    // The most the slot's receive may take before it ends and is armed
    // again (asked at every arm; 0: no limit). A multishot receive takes
    // everything the socket holds, up to this, before the owner can stop
    // it: an owner that pauses reading at an output watermark returns the
    // room left under it, so that a pause never leaves bytes received and
    // unwanted. (Kernels before 6.16 have no such limit, and rings with
    // incremental buffers do not use it: there a slot with a limit gets
    // single-shot receives of at most the limit, one after the other.)
    virtual uint32_t ReceiveLimit(uint32_t slot) { return 0; }
    // Every completion for the slot's connection has been seen and the
    // kernel has let go of the slot: the owner may reuse what it keeps for
    // it, and the slot may come back from a later accept.
    virtual void OnClosed(uint32_t slot) = 0;
    // The fd given to WatchFd() is readable (result: the poll mask), or the
    // watch failed (-errno).
    virtual void OnFdReadable(int result) {}
  };

  struct Options {
    // Sparse fixed-file table entries, i.e. connections the ring can hold.
    // 0: the RLIMIT_NOFILE soft limit, which is also the most the kernel
    // accepts (it refuses a larger table with EMFILE).
    uint32_t slots = 0;
    uint32_t sq_entries = 1024;
    // 0: enough for every slot to have a receive, a send and a close or
    // cancel completion pending at once (3 per slot), up to the kernel's
    // maximum of 65,536. A smaller queue still loses nothing (the kernel
    // keeps overflowed completions, IORING_FEAT_NODROP) but costs
    // allocations in the kernel; a ring's queues count against
    // RLIMIT_MEMLOCK when the process lacks CAP_IPC_LOCK (README.md).
    uint32_t cq_entries = 0;
    // The provided buffer ring shared by all connections: a power of two up
    // to 32,768 buffers.
    uint32_t buffer_count = 256;
    uint32_t buffer_bytes = 16 * 1024;
    // Tries SINGLE_ISSUER | DEFER_TASKRUN first when true.
    bool allow_defer_taskrun = true;
    // With SINGLE_ISSUER, the kernel binds the ring to one thread: Create()'s
    // by default. When true, to the thread that first enters it (Wait(), or
    // anything that submits) instead, for a ring made on one thread and run
    // on another (an event loop set up before its thread runs). The ring is
    // created disabled (IORING_SETUP_R_DISABLED) and enabled then.
    bool bind_on_first_use = false;
    // Buffers consumed incrementally (IOU_PBUF_RING_INC, Linux 6.12): a
    // receive takes from a buffer only the bytes it got, and the next one
    // goes on in the same buffer, so small receives share buffers instead
    // of taking one each. Where the kernel lacks it, or when false, each
    // receive takes a whole buffer. With it a ReceiveLimit is kept with
    // single-shot receives, not the kernel's multishot byte limit: on Linux
    // 6.18 a limited multishot receive re-armed on incremental buffers now
    // and then never completed, the socket full (README.md). Off by
    // default: whole buffers were measured in the backend (README.md).
    bool incremental_buffers = false;
    // Accepting: a multishot accept while more than this many slots are
    // free, then one single-shot accept at a time, armed only while a slot
    // is free, so that connections past a full table wait in the listen
    // backlog instead of being accepted and dropped by the kernel (ENFILE).
    // A multishot accept takes every connection in the backlog before the
    // ring can react, so the reserve should cover a burst. -1: slots / 16,
    // at most 1,024.
    int32_t accept_reserve = -1;
    // Registers an eventfd (event_fd()) for waiting on several rings. It
    // costs a wake-up per completion batch, so it is off unless asked for.
    bool event_fd = false;
    // False: receive limits as on a kernel before 6.16, which has no
    // multishot byte limit (single-shot receives); for tests.
    bool kernel_receive_limits = true;
  };

  struct Counters {
    uint32_t slots_in_use = 0;  // accepted, OnClosed not yet called
    uint32_t receives_armed = 0;
    uint32_t buffers_out = 0;     // filled by the kernel, not returned yet
    uint64_t enobufs_rearms = 0;  // receives ended by ENOBUFS and re-armed
    uint64_t enobufs_again = 0;   // re-armed ones that met ENOBUFS again
    uint64_t cq_overflows = 0;    // waits that found completions overflowed
    uint64_t accept_arms = 0;     // accept requests armed (either kind)
    uint64_t spilled_bytes = 0;   // received while stopped, copied aside
    uint64_t limited_rearms = 0;  // receives that reached their limit
    uint32_t slots_closing = 0;   // Close() called, OnClosed not yet
    uint32_t buffers_lent = 0;    // with loans from LendDelivered out
    uint64_t lends = 0;           // LendDelivered calls that lent
  };

  // Sets up the ring, the file table and the buffer ring; call it on the
  // thread that will run the ring. Errors name the cause in operator words
  // (no io_uring in the kernel, disabled by sysctl or seccomp, locked-memory
  // limit, file table larger than RLIMIT_NOFILE).
  static absl::StatusOr<std::unique_ptr<UringStreamRing>> Create(
      const Options& options, Handler* handler);
  ~UringStreamRing();

  UringStreamRing(const UringStreamRing&) = delete;
  UringStreamRing& operator=(const UringStreamRing&) = delete;

  // Starts the multishot accept on `listen_fd` (listening, owned by the
  // caller, open while the ring uses it). One listener per ring.
  absl::Status Listen(int listen_fd);

  // Arms the slot's multishot receive (again). Data held back while it was
  // stopped is delivered first, at the next Wait().
  void StartReceive(uint32_t slot);
  // Cancels the slot's multishot receive: no OnData until StartReceive.
  // Bytes the kernel had already received (before the cancel took effect)
  // are copied aside, their buffers given back, and delivered after
  // StartReceive; the rest stays in the socket.
  void StopReceive(uint32_t slot);

  // Starts a gathered send of iov[0, count). One send per slot in flight:
  // call again only after OnSendDone. The iovec array is copied (at most
  // kMaxSendIovecs of it; OnSendDone then reports what was sent); the bytes
  // it points to must stay valid until OnSendDone (or OnClosed after a
  // Close).
  static constexpr int kMaxSendIovecs = 32;
  void Send(uint32_t slot, const iovec* iov, int count);
  // shutdown(SHUT_WR) on the slot's socket; OnShutdownDone tells the result.
  void Shutdown(uint32_t slot);
  // Cancels everything in flight on the slot, then closes it. No callback
  // for the slot after this but OnClosed.
  void Close(uint32_t slot);

  // A process fd for the slot's socket (IORING_OP_FIXED_FD_INSTALL, O_CLOEXEC),
  // for what only a descriptor can ask (getpeername, FIONREAD); the caller
  // closes it. Synchronous: the kernel installs the fd as it sees the
  // request, and no handler callback runs meanwhile, so it may be called
  // from inside one. Errors: FAILED_PRECONDITION for a slot not open or
  // closing, UNIMPLEMENTED before Linux 6.8, RESOURCE_EXHAUSTED when the
  // process is at its open-file limit (EMFILE).
  absl::StatusOr<int> InstallFd(uint32_t slot);

  // Stops accepting: cancels the accept and waits (briefly: the kernel
  // cancels at once) for its last completion. Connections it had already
  // accepted are delivered (OnAccept) before this returns when `deliver`,
  // else closed without a callback but OnClosed. The listening fd may be
  // closed afterwards. Other completions are left for the next Wait().
  void StopAccepting(bool deliver);

  // Blocks until every closed slot has been released (OnClosed), running
  // only the completions of closing slots; the rest waits for the next
  // Wait(). For an owner that must free what a closed slot's send pointed
  // to before it goes away.
  void SettleClosed();

  // Whether Wait(0) has work to do without any new completion: requests
  // queued but not submitted, an accept to re-arm, held data to deliver,
  // buffers to hand back, completions reaped by StopAccepting, SettleClosed
  // or InstallFd and not dispatched yet, or (DEFER_TASKRUN) completion work
  // the kernel may still hold from the last entry, which event_fd() will
  // not announce. An owner that waits on event_fd() must call Wait(0) first
  // when this is true, or the queued work waits for an unrelated wake-up.
  bool HasPendingWork() const;

  // Whether everything the kernel held for `slot` has been delivered: its
  // receive is armed and not being cancelled, no data is held back, and
  // the last receive completion said the socket was empty
  // (IORING_CQE_F_SOCK_NONEMPTY unset). Valid right after Wait(0).
  bool ReceiveDrained(uint32_t slot) const;
  // During OnData: whether the kernel said the socket was empty after the
  // receive being delivered (false for held data: not known).
  bool data_socket_empty() const { return data_socket_empty_; }

  // During OnData: keeps the buffer being delivered out of the buffer ring
  // so that the owner can send from it instead of copying (an echo), until
  // ReturnLent(*bid). Lends only when [data, data + len) lies in that
  // buffer, this delivery has not lent already, and at most half of the
  // ring's buffers would be lent: receiving never waits on an owner's slow
  // peer. An incremental buffer may hold several connections' receives and
  // so several loans; it goes back once all have returned and the kernel
  // has filled it. False (nothing kept) otherwise, and for data that was
  // held back (copied aside, no buffer). The ring must outlive its lent
  // buffers (a check).
  bool LendDelivered(const char* data, size_t len, uint16_t* bid);
  // Returns one loan of the buffer; the buffer goes back to the buffer ring
  // (at the next Wait(), which HasPendingWork then asks for) with its last.
  // Any time on the ring's thread, also from inside a handler callback. A
  // buffer with no loan out fails a check.
  void ReturnLent(uint16_t bid);

  // Submits what is queued, waits up to `timeout_nanos` (< 0: no limit;
  // 0: do not block) for a completion, and dispatches every completion
  // available. Returns how many completions were handled (0 on timeout or
  // signal). Does not block while held data waits to be delivered. Not
  // from inside a handler callback (a check fails).
  absl::StatusOr<int> Wait(int64_t timeout_nanos);

  // For an owner that blocks in this ring's Wait() while something else
  // must wake it too (its readiness ring's fd): a one-shot poll request for
  // POLLIN on `fd`, whose completion is Handler::OnFdReadable. One at a
  // time; watching_fd() until it completes.
  void WatchFd(int fd);
  bool watching_fd() const { return watching_fd_; }
  // With Options::event_fd: whether completions signal the eventfd
  // (IORING_CQ_EVENTFD_DISABLED, no system call). Off while the owner
  // blocks in this ring itself; turned on again, the eventfd is signalled
  // once, so a waiter on it looks at the ring.
  void SetEventFdSignals(bool on);

  // The ring's fd. With DEFER_TASKRUN it does NOT become readable when
  // work is pending (that work runs only inside Wait), neither for epoll
  // nor for a POLL_ADD on another ring (measured on 6.18, README.md); to
  // wait on several rings at once, wait on their event_fd()s, which the
  // kernel signals whenever a completion is posted or deferred work is
  // queued.
  int ring_fd() const { return ring_.ring_fd; }
  // With Options::event_fd, an eventfd registered with the ring
  // (io_uring_register_eventfd): readable when the ring has something for
  // Wait(); read it before calling Wait(). -1 otherwise.
  int event_fd() const { return event_fd_; }

  const char* setup_mode() const { return setup_mode_; }
  bool incremental_buffers() const { return incremental_; }
  uint32_t slots() const { return slot_count_; }
  uint32_t cq_entries() const { return cq_entries_; }
  uint32_t sq_entries() const { return sq_entries_; }
  bool in_use(uint32_t slot) const {
    return slot < slot_count_ && (slots_[slot].flags & kInUse) != 0;
  }
  const Counters& counters() const { return counters_; }

 private:
  enum SlotFlags : uint16_t {
    kInUse = 1 << 0,
    kRecvWanted = 1 << 1,    // the owner wants data (StartReceive)
    kRecvArmed = 1 << 2,     // a multishot receive is in the kernel
    kRecvCancel = 1 << 3,    // ... and its cancel has been queued
    kRecvEnded = 1 << 4,     // EOF or error seen
    kEndReported = 1 << 5,   // OnReceiveEnd called
    kStarved = 1 << 6,       // in starved_: ENOBUFS, waiting for buffers
    kInResume = 1 << 7,      // in resume_: held data to deliver
    kSendInFlight = 1 << 8,  // a Send awaits its completion
    kClosing = 1 << 9,       // Close() called
    kCloseSent = 1 << 10,    // close_direct queued
    kSockNonEmpty = 1 << 11,  // the last receive said more was queued
    kHasSpill = 1 << 12,      // received while stopped: bytes in spill_
    kSendHeader = 1 << 13,    // the send in flight has a header in msgs_
    kStarvedRetry = 1 << 14,  // armed by RearmStarved, no data since
  };
  static constexpr uint16_t kNoBuffer = 0xffff;

  struct Slot {
    uint32_t send_msg = 0;  // the send in flight's header, in msgs_
    uint32_t gen = 0;
    uint16_t flags = 0;
    uint8_t ops = 0;  // requests of this generation in flight
    int32_t end_result = 0;  // EOF / error, once kRecvEnded
  };

  // 1,000,000 connections take 50 rings of these: kept small.
  static_assert(sizeof(Slot) <= 16, "a ring's per-slot state grew");

  struct Completion {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
    uint32_t buf_offset;  // where a receive's bytes start in its buffer
  };

  UringStreamRing(Handler* handler) : handler_(handler) {}
  absl::Status Init(const Options& options);

  io_uring_sqe* GetSqe();
  void ArmAccept();
  // Queues the cancel of the armed accept (once).
  void CancelAccept();
  void ArmReceive(uint32_t slot);
  void CancelReceive(uint32_t slot);
  void MaybeSubmitClose(uint32_t slot);
  void FinishClose(uint32_t slot);
  void ReturnBuffer(uint16_t bid);
  void PublishBuffers();
  // Copies a receive that arrived while the slot was stopped into spill_ and
  // gives its buffer back at once: a paused connection whose peer never
  // reads must not keep the ring's shared buffers from everyone else.
  void Spill(uint32_t slot, const char* data, uint32_t len);
  // At reaping, in the kernel's order: a receive completion's place in its
  // buffer (returned), which it holds until dispatched.
  uint32_t NoteReceived(int32_t res, uint32_t cqe_flags);
  // A receive completion's bytes and their buffer (*bid).
  const char* TakeBuffer(const Completion& c, uint16_t* bid);
  // After the completion's bytes were handled: its hold on the buffer ends.
  void DoneWithReceive(uint16_t bid);
  // Gives the buffer back once neither the kernel, a completion not yet
  // dispatched, nor a loan holds it.
  void MaybeReturnBuffer(uint16_t bid);
  void DropSpill(uint32_t slot);
  void DeliverHeld(uint32_t slot);
  void RearmStarved();
  // Copies the completion queue into batch_; returns how many it took.
  unsigned Reap();
  // Enables a ring created disabled, binding it to the calling thread.
  void EnableOnThisThread();
  // Whether this thread may enter the ring (SINGLE_ISSUER binds it).
  bool OnOwnerThread() const {
    return !single_issuer_ || disabled_ ||
           std::this_thread::get_id() == owner_;
  }
  void Dispatch(const Completion& c);
  void OnAcceptCqe(const Completion& c);
  void OnRecvCqe(uint32_t slot, const Completion& c);
  void ReportEnd(uint32_t slot);
  char* Buffer(uint16_t bid) { return buffers_ + size_t{bid} * buffer_bytes_; }
  Slot& SlotOf(uint32_t slot);

  Handler* const handler_;
  // The thread the kernel binds the ring to (SINGLE_ISSUER): Create()'s,
  // or with Options::bind_on_first_use the first to enter it.
  std::thread::id owner_ = std::this_thread::get_id();
  bool single_issuer_ = false;  // the kernel binds the ring to owner_
  bool defer_taskrun_ = false;  // completion work runs only in Wait()
  bool disabled_ = false;       // IORING_SETUP_R_DISABLED, not enabled yet
  // DEFER_TASKRUN: the last entry may have left completion work queued in
  // the kernel, which the eventfd will not announce again (it signals only
  // when that work list goes from empty to not empty). Only a Wait(0) that
  // ran it all clears it.
  bool deferred_left_ = false;
  io_uring ring_{};
  bool ring_ready_ = false;
  const char* setup_mode_ = "";
  uint32_t slot_count_ = 0;
  uint32_t sq_entries_ = 0;
  uint32_t cq_entries_ = 0;
  int event_fd_ = -1;
  int listen_fd_ = -1;
  uint32_t accept_reserve_ = 0;
  bool accept_armed_ = false;
  bool accept_multishot_ = false;  // the armed accept is the multishot one
  bool accept_cancelled_ = false;  // ... and its cancel has been queued
  bool accept_pending_ = false;    // re-arm at the next Wait (no spin)
  bool accept_stopped_ = false;    // the listener is unusable

  // Provided buffers.
  io_uring_buf_ring* buf_ring_ = nullptr;
  size_t buf_ring_bytes_ = 0;
  char* buffers_ = nullptr;
  size_t buffers_bytes_ = 0;
  uint32_t buffer_count_ = 0;
  uint32_t rearmed_unsubmitted_ = 0;  // RearmStarved's, before the next enter
  uint32_t buffer_bytes_ = 0;
  uint32_t buffers_to_publish_ = 0;
  // Bytes received for stopped slots (a receive in flight when it was
  // stopped): at most what the kernel took before the cancel, then
  // delivered first after StartReceive. Off the hot path.
  absl::flat_hash_map<uint32_t, std::string> spill_;

  std::vector<Slot> slots_;
  // The headers and iovec arrays of the sends in flight (the kernel reads
  // them until the completion), in chunks that never move: an idle slot
  // costs 4 bytes for its index instead of a whole header. Grows only at a
  // new high-water mark of sends in flight.
  struct SendHeader {
    msghdr msg;
    iovec iov[kMaxSendIovecs];
  };
  static constexpr uint32_t kMsgChunk = 64;
  std::vector<std::unique_ptr<SendHeader[]>> msg_chunks_;
  std::vector<uint32_t> free_msgs_;
  uint32_t AcquireMsg();
  SendHeader& Msg(uint32_t i) {
    return msg_chunks_[i / kMsgChunk][i % kMsgChunk];
  }
  // Reaps and runs, at once, the completions in batch_ that `pick` selects
  // (others stay for Wait), until `done` or a generous deadline.
  template <typename Pick, typename Done>
  void RunSelected(Pick pick, Done done, const char* what);
  bool data_socket_empty_ = false;
  bool watching_fd_ = false;             // WatchFd's request is armed
  bool in_wait_ = false;                 // Wait() is running (not re-entrant)
  bool installing_ = false;              // InstallFd awaits its completion
  int32_t install_result_ = 0;           // ... which it finds here
  uint16_t delivering_bid_ = kNoBuffer;  // the buffer OnData is given
  bool delivered_lent_ = false;          // ... and LendDelivered kept it
  // By buffer id: how far the kernel has filled it (incremental buffers),
  // whether it may fill more, its completions reaped and not yet
  // dispatched, and LendDelivered's loans from it.
  struct BufferUse {
    uint32_t offset = 0;
    uint16_t pending = 0;
    uint16_t loans = 0;
    bool kernel_fills = false;
  };
  std::vector<BufferUse> buffer_use_;
  bool incremental_ = false;  // IOU_PBUF_RING_INC accepted
  bool receive_limits_ = true;  // the kernel takes a multishot byte limit
  bool discard_accepts_ = false;  // StopAccepting(false) in progress
  // Starved receives (ENOBUFS), FIFO: a circular array of slots.
  std::vector<uint32_t> starved_;
  size_t starved_head_ = 0;
  size_t starved_count_ = 0;
  std::vector<uint32_t> resume_;  // slots with held data to deliver
  std::vector<Completion> batch_;
  size_t batch_pos_ = 0;
  unsigned overflow_seen_ = 0;
  Counters counters_;
};

}  // namespace nbio

#endif  // NBIO_REACTOR_URING_STREAM_RING_H_
