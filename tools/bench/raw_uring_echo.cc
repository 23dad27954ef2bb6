// raw_uring_echo: the io_uring floor of the echo benchmark, next to
// raw_epoll_echo. A minimal single-threaded io_uring echo loop:
//
//   - one multishot accept on the listener;
//   - one multishot receive per connection, all drawing from one provided
//     buffer ring (kBuffers buffers of kBufferBytes), registered by hand
//     with io_uring_register_buf_ring on memory mapped here (liburing 2.3
//     has no io_uring_setup_buf_ring);
//   - the echo is sent straight out of the received buffers, one send in
//     flight per connection; what arrives meanwhile waits in a small
//     per-connection queue of (buffer, length), and the next send gathers
//     up to kMaxIov of them (sendmsg); a buffer goes back to the ring only
//     when its bytes are all sent;
//   - like the other baselines it stops reading a connection whose echo is
//     behind: past kBacklogHigh queued it cancels the receive, and arms it
//     again once the queue has drained below half of that. (Higher than the
//     other baselines' 64 KiB buffer: a cancel and a re-arm cost two trips
//     through the rings, and at 64 KiB four 16 KiB messages in flight
//     already reach it.)
//
// Edge cases it handles rather than ignores:
//   ENOBUFS   the ring ran dry: the kernel ends that connection's multishot
//             receive and keeps the bytes in the socket (nothing is lost);
//             the connection waits in a list and its receive is armed again
//             once buffers have come back.
//   EOF, ECONNRESET, send errors: the connection closes once no operation
//             of its own is in flight, so no completion refers to freed
//             memory.
//   CQ overflow: the rings are set up with a CQ 4x the SQ and the kernel
//             must offer IORING_FEAT_NODROP (overflowed completions are kept
//             and flushed on the next enter, which io_uring_submit_and_wait
//             does); a completion the kernel nevertheless dropped
//             (cq.koverflow moved) would leave a connection's state wrong,
//             so that ends the process with a message.
//   EMFILE on accept: accepting pauses until a connection closes (no spin).
//
// Setup flags: SINGLE_ISSUER | DEFER_TASKRUN where the kernel has them (task
// work runs only when this thread enters the kernel to wait), else
// COOP_TASKRUN, else none. When io_uring itself is unavailable (disabled by
// sysctl, seccomp, an old kernel) it prints one line starting
// "raw_uring_echo: io_uring unavailable:" on stderr and exits 1.
#include <liburing.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "tools/bench/echo_baseline.h"

namespace {

constexpr unsigned kSqEntries = 4096;
constexpr unsigned kCqEntries = 4 * kSqEntries;
// The provided-buffer ring shared by every connection: 256 x 32 KiB = 8 MiB.
// The kernel takes buffers in ring order and they come back in about that
// order, so every buffer is used once per lap: a big ring means each receive
// lands in memory long out of cache. With 2,048 buffers (64 MiB) the 16 KiB
// bulk echo cost 24-29 us of server CPU per message, with 256 about 9 (raw
// epoll, whose buffers stay hot, 7.4), and 10,000 ping-pong connections were
// no worse off (their ENOBUFS re-arms cost less than the cache misses).
constexpr unsigned kBuffers = 256;  // a power of two, as the kernel requires
constexpr size_t kBufferBytes = 32 * 1024;
constexpr int kBufferGroup = 0;
// Stop receiving on a connection with this much echo still to send.
constexpr size_t kBacklogHigh = 4 * nbio::bench::kEchoBufferBytes;
constexpr size_t kBacklogLow = kBacklogHigh / 2;
// Queued chunks one send may gather.
constexpr int kMaxIov = 8;

[[noreturn]] void Unavailable(const char* what, int err) {
  std::fprintf(stderr, "raw_uring_echo: io_uring unavailable: %s: %s\n", what,
               std::strerror(err));
  std::exit(1);
}

[[noreturn]] void Fatal(const char* what, int err) {
  std::fprintf(stderr, "raw_uring_echo: %s: %s\n", what, std::strerror(err));
  std::exit(1);
}

// user_data: a Conn pointer (8-byte aligned) with the operation in the low
// bits; kAccept and kIgnore carry no pointer.
enum Op : uint64_t { kIgnore = 0, kAccept = 1, kRecv = 2, kSend = 3 };
constexpr uint64_t kOpMask = 3;

struct Chunk {
  uint16_t bid;     // the provided buffer holding the bytes
  uint32_t offset;  // bytes of it already sent
  uint32_t len;     // bytes received into it
};

struct Conn {
  int fd;
  bool recv_armed = false;  // a multishot receive is live
  bool send_in_flight = false;
  bool cancel_sent = false;          // the live receive is being cancelled
  bool closing = false;              // EOF or error: no more receives
  bool waiting_for_buffers = false;  // in Server::starved_
  size_t backlog = 0;                // bytes received and not yet sent
  // Chunks to send, oldest first; pending[head, head + sending) are in the
  // send in flight (when send_in_flight). Reset to empty whenever it drains.
  std::vector<Chunk> pending;
  size_t head = 0;
  int sending = 0;
  // The gathered send's arguments: the kernel reads them until it ends.
  msghdr msg{};
  iovec iov[kMaxIov];
};

class Server {
 public:
  explicit Server(int listener) : listener_(listener) {}

  void Init();
  [[noreturn]] void Run();

 private:
  io_uring_sqe* Sqe();
  void ArmAccept();
  void ArmRecv(Conn* c);
  void StartSend(Conn* c);
  void Cancel(Conn* c);
  void ReturnBuffer(uint16_t bid);
  void DropPending(Conn* c);
  void MaybeClose(Conn* c);

  void OnAccept(const io_uring_cqe* cqe);
  void OnRecv(Conn* c, const io_uring_cqe* cqe);
  void OnSend(Conn* c, int res);
  void RearmStarved();

  uint8_t* Buffer(uint16_t bid) {
    return buffers_ + size_t{bid} * kBufferBytes;
  }

  const int listener_;
  io_uring ring_{};
  io_uring_buf_ring* buf_ring_ = nullptr;
  uint8_t* buffers_ = nullptr;
  unsigned buffers_to_publish_ = 0;  // added to the ring, not yet advanced
  unsigned buffers_out_ = 0;         // held by connections
  bool accept_armed_ = false;
  bool accept_paused_ = false;  // EMFILE / ENFILE: wait for a close
  unsigned dropped_seen_ = 0;
  std::vector<Conn*> starved_;  // receives ended by ENOBUFS
};

void Server::Init() {
  // Newest flags first; the kernel answers EINVAL for those it lacks.
  const unsigned attempts[] = {
      IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER |
          IORING_SETUP_DEFER_TASKRUN,
      IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN,
      IORING_SETUP_CQSIZE,
  };
  const char* const names[] = {"SINGLE_ISSUER|DEFER_TASKRUN", "COOP_TASKRUN",
                               "no task-run flags"};
  int ret = -EINVAL;
  io_uring_params params{};
  int chosen = 0;
  for (unsigned flags : attempts) {
    params = io_uring_params{};
    params.flags = flags;
    params.cq_entries = kCqEntries;
    ret = io_uring_queue_init_params(kSqEntries, &ring_, &params);
    if (ret != -EINVAL) break;
    ++chosen;
  }
  if (ret < 0) Unavailable("io_uring_setup", -ret);
  // On stderr, so the benchmark's server log says which mode was measured.
  std::fprintf(stderr,
               "raw_uring_echo: io_uring with %s, %u SQ / %u CQ entries\n",
               names[chosen], params.sq_entries, params.cq_entries);
  if (!(params.features & IORING_FEAT_NODROP)) {
    Unavailable("io_uring_setup", ENOTSUP);  // pre-5.5: completions may drop
  }

  // The ring of buffer descriptors must be page-aligned memory: map it.
  const size_t ring_bytes = kBuffers * sizeof(io_uring_buf);
  void* ring_mem = mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ring_mem == MAP_FAILED) Fatal("mmap (buffer ring)", errno);
  buf_ring_ = static_cast<io_uring_buf_ring*>(ring_mem);
  io_uring_buf_ring_init(buf_ring_);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(ring_mem);
  reg.ring_entries = kBuffers;
  reg.bgid = kBufferGroup;
  ret = io_uring_register_buf_ring(&ring_, &reg, 0);
  if (ret < 0) Unavailable("io_uring_register_buf_ring", -ret);  // pre-5.19

  void* data = mmap(nullptr, kBuffers * kBufferBytes, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) Fatal("mmap (buffers)", errno);
  buffers_ = static_cast<uint8_t*>(data);
  for (unsigned i = 0; i < kBuffers; ++i) {
    io_uring_buf_ring_add(buf_ring_, Buffer(static_cast<uint16_t>(i)),
                          kBufferBytes, static_cast<uint16_t>(i),
                          io_uring_buf_ring_mask(kBuffers),
                          static_cast<int>(i));
  }
  io_uring_buf_ring_advance(buf_ring_, kBuffers);
  ArmAccept();
}

io_uring_sqe* Server::Sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe != nullptr) return sqe;
  // The SQ is full: hand it to the kernel and take a fresh one.
  const int ret = io_uring_submit(&ring_);
  if (ret < 0 && ret != -EBUSY && ret != -EAGAIN && ret != -EINTR) {
    Fatal("io_uring_submit", -ret);
  }
  sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) Fatal("io_uring_get_sqe", EBUSY);
  return sqe;
}

void Server::ArmAccept() {
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_multishot_accept(sqe, listener_, nullptr, nullptr,
                                 SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, kAccept);
  accept_armed_ = true;
}

void Server::ArmRecv(Conn* c) {
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_recv_multishot(sqe, c->fd, nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kBufferGroup;
  io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(c) | kRecv);
  c->recv_armed = true;
  c->cancel_sent = false;
}

void Server::Cancel(Conn* c) {
  if (!c->recv_armed || c->cancel_sent) return;
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_cancel64(sqe, reinterpret_cast<uint64_t>(c) | kRecv, 0);
  io_uring_sqe_set_data64(sqe, kIgnore);
  c->cancel_sent = true;
}

void Server::StartSend(Conn* c) {
  if (c->send_in_flight || c->head == c->pending.size()) return;
  const int n =
      static_cast<int>(std::min<size_t>(kMaxIov, c->pending.size() - c->head));
  io_uring_sqe* sqe = Sqe();
  if (n == 1) {
    const Chunk& k = c->pending[c->head];
    io_uring_prep_send(sqe, c->fd, Buffer(k.bid) + k.offset, k.len - k.offset,
                       MSG_NOSIGNAL);
  } else {
    for (int i = 0; i < n; ++i) {
      const Chunk& k = c->pending[c->head + static_cast<size_t>(i)];
      c->iov[i].iov_base = Buffer(k.bid) + k.offset;
      c->iov[i].iov_len = k.len - k.offset;
    }
    c->msg = msghdr{};
    c->msg.msg_iov = c->iov;
    c->msg.msg_iovlen = static_cast<size_t>(n);
    io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
  }
  io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(c) | kSend);
  c->send_in_flight = true;
  c->sending = n;
}

void Server::ReturnBuffer(uint16_t bid) {
  io_uring_buf_ring_add(buf_ring_, Buffer(bid), kBufferBytes, bid,
                        io_uring_buf_ring_mask(kBuffers),
                        static_cast<int>(buffers_to_publish_));
  ++buffers_to_publish_;
  --buffers_out_;
}

void Server::DropPending(Conn* c) {
  // The chunks in flight (if any) are still the kernel's until the send ends.
  const size_t keep =
      c->head + (c->send_in_flight ? static_cast<size_t>(c->sending) : 0);
  for (size_t i = keep; i < c->pending.size(); ++i) {
    ReturnBuffer(c->pending[i].bid);
  }
  c->pending.resize(keep);
}

void Server::MaybeClose(Conn* c) {
  if (!c->closing || c->recv_armed || c->send_in_flight) return;
  DropPending(c);
  // No operation of this connection is in flight: no completion can name it.
  close(c->fd);
  if (c->waiting_for_buffers) {
    for (Conn*& s : starved_) {
      if (s == c) s = nullptr;
    }
  }
  delete c;
  if (accept_paused_) {
    accept_paused_ = false;
    ArmAccept();
  }
}

void Server::OnAccept(const io_uring_cqe* cqe) {
  if (!(cqe->flags & IORING_CQE_F_MORE)) accept_armed_ = false;
  if (cqe->res >= 0) {
    nbio::bench::SetNoDelay(cqe->res);
    Conn* c = new Conn;
    c->fd = cqe->res;
    ArmRecv(c);
  } else if (cqe->res == -EINVAL && !accept_armed_) {
    Unavailable("multishot accept", EINVAL);  // pre-5.19
  } else if (cqe->res == -EMFILE || cqe->res == -ENFILE) {
    accept_paused_ = true;  // re-armed by the next close
    return;
  }
  if (!accept_armed_ && !accept_paused_) ArmAccept();
}

void Server::OnRecv(Conn* c, const io_uring_cqe* cqe) {
  const bool more = (cqe->flags & IORING_CQE_F_MORE) != 0;
  if (!more) c->recv_armed = false;
  if (cqe->res > 0) {
    // A buffer with data comes with every positive result.
    const auto bid =
        static_cast<uint16_t>(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    ++buffers_out_;
    if (c->closing) {
      ReturnBuffer(bid);  // reset or send failed: nobody to echo to
    } else {
      c->pending.push_back(Chunk{bid, 0, static_cast<uint32_t>(cqe->res)});
      c->backlog += static_cast<size_t>(cqe->res);
      StartSend(c);
      if (c->backlog >= kBacklogHigh) Cancel(c);
    }
  } else if (cqe->res == 0) {
    c->closing = true;  // EOF: close once the echo is out
  } else if (cqe->res == -ENOBUFS) {
    // The ring ran dry; the bytes wait in the socket. Receive again once
    // buffers have come back (RearmStarved).
    if (!c->closing && !c->waiting_for_buffers) {
      c->waiting_for_buffers = true;
      starved_.push_back(c);
    }
  } else if (cqe->res == -ECANCELED) {
    // Our own backpressure cancel: armed again below or in OnSend.
  } else if (cqe->res == -EINVAL && c->pending.empty()) {
    Unavailable("multishot receive", EINVAL);  // pre-6.0
  } else {
    c->closing = true;  // ECONNRESET and other errors
    DropPending(c);
  }
  if (!c->recv_armed) {
    if (c->closing && c->head == c->pending.size()) {
      MaybeClose(c);
    } else if (!c->closing && !c->waiting_for_buffers &&
               c->backlog <= kBacklogLow) {
      // Our backpressure cancel landed after the echo had drained, or the
      // multishot ended for another reason (e.g. CQ pressure): go on. With
      // more backlog than that, OnSend arms it once the backlog drains.
      ArmRecv(c);
    }
  }
}

void Server::OnSend(Conn* c, int res) {
  c->send_in_flight = false;
  if (res < 0) {
    c->closing = true;
    DropPending(c);  // head chunk too: send_in_flight is now false
    Cancel(c);
    MaybeClose(c);
    return;
  }
  // The bytes sent fill the gathered chunks in order; a partial send
  // leaves the rest (of one chunk, then whole ones) for the next.
  c->backlog -= static_cast<size_t>(res);
  uint32_t left = static_cast<uint32_t>(res);
  while (left > 0) {
    Chunk& k = c->pending[c->head];
    const uint32_t take = std::min(left, k.len - k.offset);
    k.offset += take;
    left -= take;
    if (k.offset < k.len) break;
    ReturnBuffer(k.bid);
    ++c->head;
  }
  if (c->head == c->pending.size()) {
    c->pending.clear();
    c->head = 0;
  }
  if (c->closing && c->head == c->pending.size()) {
    // EOF with everything echoed, or a reset: done.
    MaybeClose(c);
    return;
  }
  StartSend(c);
  if (!c->closing && !c->recv_armed && !c->waiting_for_buffers &&
      c->backlog <= kBacklogLow) {
    ArmRecv(c);
  }
}

void Server::RearmStarved() {
  if (starved_.empty() || buffers_out_ >= kBuffers) return;
  // Give each starved connection a chance while there are free buffers;
  // one that still finds none comes back to the list.
  std::vector<Conn*> starved;
  starved.swap(starved_);
  for (Conn* c : starved) {
    if (c == nullptr) continue;
    c->waiting_for_buffers = false;
    if (!c->closing && !c->recv_armed && c->backlog < kBacklogHigh) ArmRecv(c);
  }
}

void Server::Run() {
  while (true) {
    const int ret = io_uring_submit_and_wait(&ring_, 1);
    if (ret < 0 && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN &&
        ret != -ETIME) {
      Fatal("io_uring_submit_and_wait", -ret);
    }
    unsigned head;
    unsigned seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      const uint64_t data = io_uring_cqe_get_data64(cqe);
      Conn* c = reinterpret_cast<Conn*>(data & ~kOpMask);
      switch (data & kOpMask) {
        case kAccept:
          OnAccept(cqe);
          break;
        case kRecv:
          OnRecv(c, cqe);
          break;
        case kSend:
          OnSend(c, cqe->res);
          break;
        default:
          break;  // a cancel's own completion
      }
    }
    io_uring_cq_advance(&ring_, seen);
    if (buffers_to_publish_ > 0) {
      io_uring_buf_ring_advance(buf_ring_,
                                static_cast<int>(buffers_to_publish_));
      buffers_to_publish_ = 0;
      RearmStarved();
    }
    // With IORING_FEAT_NODROP an overflow is held by the kernel and flushed
    // by the next enter; only an allocation failure there drops one.
    const unsigned dropped = *ring_.cq.koverflow;
    if (dropped != dropped_seen_) {
      std::fprintf(stderr,
                   "raw_uring_echo: the kernel dropped %u completions (CQ "
                   "overflow); connection state is lost, exiting\n",
                   dropped - dropped_seen_);
      std::exit(1);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const nbio::SocketAddress address =
      nbio::bench::ParseEchoBaselineArgs(argc, argv, "raw_uring_echo");
  const int listener = nbio::bench::ListenOrDie(address);
  Server server(listener);
  server.Init();
  nbio::bench::AnnounceListening(listener);
  server.Run();
}
