#include "reactor/uring/stream_ring.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "queue/base/check.h"
#include "reactor/sys/syscall.h"

namespace nbio {
namespace {

// user_data: [op:8][generation:24][slot:32].
enum Op : uint64_t {
  kIgnore = 0,  // cancels: their completion means nothing to anyone
  kAccept = 1,
  kRecv = 2,
  kSend = 3,
  kShutdown = 4,
  kClose = 5,
  kWatch = 6,  // WatchFd's poll request
  kInstall = 7,  // InstallFd's request
};
// Linux 6.8 (IORING_OP_FIXED_FD_INSTALL), newer than liburing 2.3's
// headers. The request's other fields must be zero; install_fd_flags 0
// asks for O_CLOEXEC.
constexpr uint8_t kOpFixedFdInstall = 54;
// Linux 6.12, newer than liburing 2.3's headers: a buffer ring whose buffers
// are consumed incrementally (IOU_PBUF_RING_INC, in io_uring_buf_reg's
// `pad`, named `flags` since), and the completion flag saying that the
// kernel keeps the rest of the buffer for the next receive
// (IORING_CQE_F_BUF_MORE).
constexpr uint16_t kPbufRingInc = 2;
constexpr uint32_t kCqeBufMore = 1u << 4;
constexpr uint32_t kGenMask = 0xffffff;

// The provided buffer a receive completion used (with IORING_CQE_F_BUFFER).
uint16_t BufferIdOf(uint32_t cqe_flags) {
  return static_cast<uint16_t>(cqe_flags >> IORING_CQE_BUFFER_SHIFT);
}

uint64_t Tag(Op op, uint32_t slot, uint32_t gen) {
  return (static_cast<uint64_t>(op) << 56) |
         (static_cast<uint64_t>(gen & kGenMask) << 32) | slot;
}

// The kernel's limit on completion queue entries (IORING_MAX_CQ_ENTRIES).
constexpr uint32_t kMaxCqEntries = 65536;
// ... and on a provided buffer ring's entries.
constexpr uint32_t kMaxBuffers = 32768;

uint32_t RoundUpPow2(uint32_t n) {
  uint32_t p = 1;
  while (p < n) p <<= 1;
  return p;
}


}  // namespace

absl::StatusOr<std::unique_ptr<UringStreamRing>> UringStreamRing::Create(
    const Options& options, Handler* handler) {
  NBIO_CHECK(handler != nullptr);
  std::unique_ptr<UringStreamRing> ring(new UringStreamRing(handler));
  absl::Status status = ring->Init(options);
  if (!status.ok()) return status;
  return ring;
}

absl::Status UringStreamRing::Init(const Options& options) {
  slot_count_ = options.slots;
  if (slot_count_ == 0) {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
      return ErrnoStatus("getrlimit(RLIMIT_NOFILE)", errno);
    }
    slot_count_ = static_cast<uint32_t>(
        std::min<rlim_t>(rl.rlim_cur, IORING_FILE_INDEX_ALLOC - 1));
  }
  if (options.buffer_count == 0 || options.buffer_count > kMaxBuffers ||
      (options.buffer_count & (options.buffer_count - 1)) != 0 ||
      options.buffer_bytes == 0) {
    return absl::InvalidArgumentError(
        "buffer_count must be a power of two up to 32768, buffer_bytes > 0");
  }
  accept_reserve_ = options.accept_reserve >= 0
                        ? static_cast<uint32_t>(options.accept_reserve)
                        : std::min<uint32_t>(slot_count_ / 16, 1024);
  cq_entries_ = options.cq_entries;
  if (cq_entries_ == 0) {
    // A receive, a send and a close or cancel per slot, and the accept.
    const uint64_t want = uint64_t{3} * slot_count_ + 64;
    cq_entries_ = want >= kMaxCqEntries
                      ? kMaxCqEntries
                      : RoundUpPow2(static_cast<uint32_t>(want));
  }
  // The kernel wants at least as many completion entries as submission
  // entries (EINVAL otherwise, which would read as "flags unsupported").
  cq_entries_ = std::max(cq_entries_, 2 * RoundUpPow2(options.sq_entries));

  // Newest flags first; the kernel answers EINVAL for those it lacks.
  struct Attempt {
    unsigned flags;
    const char* name;
  };
  const Attempt attempts[] = {
      {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
       "SINGLE_ISSUER|DEFER_TASKRUN"},
      {IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
       "COOP_TASKRUN|TASKRUN_FLAG"},
      {0, "plain"},
  };
  int ret = -EINVAL;
  io_uring_params params{};
  for (const Attempt& a : attempts) {
    if (!options.allow_defer_taskrun &&
        (a.flags & IORING_SETUP_DEFER_TASKRUN) != 0) {
      continue;
    }
    params = io_uring_params{};
    const bool disable = options.bind_on_first_use &&
                         (a.flags & IORING_SETUP_SINGLE_ISSUER) != 0;
    params.flags = a.flags | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP |
                   (disable ? IORING_SETUP_R_DISABLED : 0u);
    params.cq_entries = cq_entries_;
    ret = io_uring_queue_init_params(options.sq_entries, &ring_, &params);
    if (ret != -EINVAL) {
      setup_mode_ = a.name;
      single_issuer_ = (a.flags & IORING_SETUP_SINGLE_ISSUER) != 0;
      defer_taskrun_ = (a.flags & IORING_SETUP_DEFER_TASKRUN) != 0;
      disabled_ = disable;
      break;
    }
  }
  if (ret < 0) return IoUringSetupError("io_uring_setup", -ret);
  ring_ready_ = true;
  sq_entries_ = params.sq_entries;
  cq_entries_ = params.cq_entries;
  if ((params.features & IORING_FEAT_NODROP) == 0) {
    // Before 5.5 a full completion queue dropped completions, which would
    // leave slots waiting forever.
    return absl::UnavailableError(
        "io_uring without IORING_FEAT_NODROP (kernel older than 5.5)");
  }

  // The sparse file table. The raw call, not liburing's
  // io_uring_register_files_sparse: on EMFILE that one quietly raises the
  // process's RLIMIT_NOFILE soft limit and retries, a side effect a library
  // must not have. The kernel refuses a table larger than the soft limit.
  io_uring_rsrc_register reg{};
  reg.flags = IORING_RSRC_REGISTER_SPARSE;
  reg.nr = slot_count_;
  if (syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_FILES2,
              &reg, sizeof(reg)) < 0) {
    const int err = errno;
    absl::Status status = ErrnoStatus(
        absl::StrCat("io_uring_register_files_sparse(", slot_count_, ")"), err);
    if (err == EMFILE) {
      rlimit rl{};
      getrlimit(RLIMIT_NOFILE, &rl);
      return absl::Status(
          status.code(),
          absl::StrCat("a ring's file table cannot be larger than "
                       "RLIMIT_NOFILE (soft limit ",
                       rl.rlim_cur, "): ", status.message()));
    }
    if (err == EINVAL) {
      return absl::UnavailableError(absl::StrCat(
          "sparse file tables need Linux 5.19: ", status.message()));
    }
    return status;
  }

  // The provided buffer ring: page-aligned memory, so it is mapped.
  buffer_count_ = options.buffer_count;
  buffer_use_.assign(buffer_count_, BufferUse{});
  buffer_bytes_ = options.buffer_bytes;
  buf_ring_bytes_ = size_t{buffer_count_} * sizeof(io_uring_buf);
  void* ring_mem = mmap(nullptr, buf_ring_bytes_, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ring_mem == MAP_FAILED) return ErrnoStatus("mmap(buffer ring)", errno);
  buf_ring_ = static_cast<io_uring_buf_ring*>(ring_mem);
  io_uring_buf_ring_init(buf_ring_);
  io_uring_buf_reg buf_reg{};
  buf_reg.ring_addr = reinterpret_cast<uint64_t>(ring_mem);
  buf_reg.ring_entries = buffer_count_;
  buf_reg.bgid = 0;
  incremental_ = options.incremental_buffers;
  receive_limits_ = options.kernel_receive_limits;
  buf_reg.pad = incremental_ ? kPbufRingInc : 0;
  ret = io_uring_register_buf_ring(&ring_, &buf_reg, 0);
  if (ret == -EINVAL && incremental_) {
    // Before 6.12: every receive takes a whole buffer.
    incremental_ = false;
    buf_reg.pad = 0;
    ret = io_uring_register_buf_ring(&ring_, &buf_reg, 0);
  }
  if (ret < 0) {
    if (ret == -ENOMEM) {
      return IoUringSetupError("io_uring_register_buf_ring", -ret);
    }
    return ErrnoStatus("io_uring_register_buf_ring", -ret);
  }
  buffers_bytes_ = size_t{buffer_count_} * buffer_bytes_;
  void* data = mmap(nullptr, buffers_bytes_, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) return ErrnoStatus("mmap(buffers)", errno);
  buffers_ = static_cast<char*>(data);
  for (uint32_t i = 0; i < buffer_count_; ++i) {
    io_uring_buf_ring_add(buf_ring_, Buffer(static_cast<uint16_t>(i)),
                          buffer_bytes_, static_cast<uint16_t>(i),
                          io_uring_buf_ring_mask(buffer_count_),
                          static_cast<int>(i));
  }
  io_uring_buf_ring_advance(buf_ring_, static_cast<int>(buffer_count_));

  if (options.event_fd) {
    event_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (event_fd_ < 0) return ErrnoStatus("eventfd", errno);
    ret = io_uring_register_eventfd(&ring_, event_fd_);
    if (ret < 0) return ErrnoStatus("io_uring_register_eventfd", -ret);
  }

  slots_.resize(slot_count_);
  starved_.resize(slot_count_);
  resume_.reserve(slot_count_);
  batch_.reserve(cq_entries_);
  overflow_seen_ = *ring_.cq.koverflow;
  return absl::OkStatus();
}

UringStreamRing::~UringStreamRing() {
  NBIO_CHECK_MSG(counters_.buffers_lent == 0,
                 "UringStreamRing destroyed with buffers lent out: a queued "
                 "send would point into freed memory");
  // Tearing the ring down cancels what is in flight and closes every slot.
  if (ring_ready_) io_uring_queue_exit(&ring_);
  if (event_fd_ >= 0) close(event_fd_);
  if (buffers_ != nullptr) munmap(buffers_, buffers_bytes_);
  if (buf_ring_ != nullptr) munmap(buf_ring_, buf_ring_bytes_);
}

UringStreamRing::Slot& UringStreamRing::SlotOf(uint32_t slot) {
  NBIO_DCHECK(OnOwnerThread());
  NBIO_CHECK_MSG(slot < slot_count_, "slot out of range");
  Slot& s = slots_[slot];
  NBIO_CHECK_MSG((s.flags & kInUse) != 0, "slot not in use");
  return s;
}

io_uring_sqe* UringStreamRing::GetSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) EnableOnThisThread();
  for (int tries = 0; sqe == nullptr && tries < 64; ++tries) {
    // The submission queue is full: hand it to the kernel. EBUSY says the
    // completion side must be reaped first; what is reaped here waits in
    // batch_ and is dispatched by the running (or next) Wait().
    const int ret = io_uring_submit(&ring_);
    if (ret == -EBUSY) {
      io_uring_get_events(&ring_);
      deferred_left_ = defer_taskrun_;
      Reap();
    } else {
      NBIO_CHECK_MSG(ret >= 0 || ret == -EINTR || ret == -EAGAIN,
                     "io_uring_submit failed");
    }
    sqe = io_uring_get_sqe(&ring_);
  }
  NBIO_CHECK_MSG(sqe != nullptr, "io_uring submission queue stuck full");
  return sqe;
}

absl::Status UringStreamRing::Listen(int listen_fd) {
  if (listen_fd_ >= 0)
    return absl::FailedPreconditionError("already listening");
  listen_fd_ = listen_fd;
  ArmAccept();
  return absl::OkStatus();
}

void UringStreamRing::ArmAccept() {
  accept_pending_ = false;
  if (accept_armed_ || accept_stopped_ || listen_fd_ < 0) return;
  const uint32_t free_slots = slot_count_ - counters_.slots_in_use;
  // Full: FinishClose brings the accept back.
  if (free_slots == 0) return;
  io_uring_sqe* sqe = GetSqe();
  // No SOCK_CLOEXEC: a direct descriptor is no process fd, and the kernel
  // refuses the flag with EINVAL.
  accept_multishot_ = free_slots > accept_reserve_;
  if (accept_multishot_) {
    io_uring_prep_multishot_accept_direct(sqe, listen_fd_, nullptr, nullptr, 0);
  } else {
    io_uring_prep_accept_direct(sqe, listen_fd_, nullptr, nullptr, 0,
                                IORING_FILE_INDEX_ALLOC - 1);
  }
  io_uring_sqe_set_data64(sqe, Tag(kAccept, 0, 0));
  accept_armed_ = true;
  accept_cancelled_ = false;
  ++counters_.accept_arms;
}

void UringStreamRing::CancelAccept() {
  if (accept_cancelled_) return;
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_cancel64(sqe, Tag(kAccept, 0, 0), 0);
  io_uring_sqe_set_data64(sqe, Tag(kIgnore, 0, 0));
  sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
  accept_cancelled_ = true;
}

void UringStreamRing::ArmReceive(uint32_t slot) {
  Slot& s = slots_[slot];
  const uint32_t limit = handler_->ReceiveLimit(slot);
  io_uring_sqe* sqe = GetSqe();
  if (limit > 0 &&
      (limit < buffer_bytes_ || !receive_limits_ || incremental_)) {
    // One receive of at most the room, armed again after it: where the
    // room is under a buffer; where the kernel has no multishot byte limit
    // (before 6.16), since an unlimited multishot receive would take up to
    // 32 buffers a wake-up past the room; and with incremental buffers,
    // kept from a stall later traced to the test that showed it (its peer
    // shrank its receive buffer after connecting; README.md): with the
    // kernel's limit they passed 30 of 30 runs since, not measured more.
    io_uring_prep_recv(sqe, static_cast<int>(slot), nullptr,
                       std::min(limit, buffer_bytes_), 0);
  } else {
    io_uring_prep_recv_multishot(sqe, static_cast<int>(slot), nullptr, 0, 0);
    // The kernel (6.16+) ends a multishot receive once it has taken
    // sqe->optlen bytes, checked after each receive, so the last one may
    // go past it by up to a buffer: that one still fits under the limit.
    // sqe->optlen is the same word as file_index in liburing 2.3's header.
    sqe->file_index = limit > 0 ? limit - buffer_bytes_ + 1 : 0;
  }
  sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
  sqe->buf_group = 0;
  io_uring_sqe_set_data64(sqe, Tag(kRecv, slot, s.gen));
  s.flags |= kRecvArmed;
  s.flags &= ~kRecvCancel;
  ++s.ops;
  ++counters_.receives_armed;
}

void UringStreamRing::CancelReceive(uint32_t slot) {
  Slot& s = slots_[slot];
  if ((s.flags & kRecvArmed) == 0 || (s.flags & kRecvCancel) != 0) return;
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_cancel64(sqe, Tag(kRecv, slot, s.gen), 0);
  io_uring_sqe_set_data64(sqe, Tag(kIgnore, 0, 0));
  sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
  s.flags |= kRecvCancel;
  // At once: until the kernel sees the cancel, a multishot receive goes on
  // taking everything the socket holds (for a paused connection, bytes
  // that must then be kept aside).
  EnableOnThisThread();
  io_uring_submit(&ring_);
}

void UringStreamRing::StartReceive(uint32_t slot) {
  Slot& s = SlotOf(slot);
  NBIO_CHECK_MSG((s.flags & kClosing) == 0, "StartReceive after Close");
  s.flags |= kRecvWanted;
  const bool end_unreported =
      (s.flags & (kRecvEnded | kEndReported)) == kRecvEnded;
  if (((s.flags & kHasSpill) != 0 || end_unreported) &&
      (s.flags & kInResume) == 0) {
    s.flags |= kInResume;
    resume_.push_back(slot);
  }
  // An armed receive whose cancel is on its way is armed again when the
  // cancel's ECANCELED arrives (OnRecvCqe).
  if ((s.flags & (kRecvArmed | kRecvEnded | kStarved)) == 0) ArmReceive(slot);
}

void UringStreamRing::StopReceive(uint32_t slot) {
  Slot& s = SlotOf(slot);
  s.flags &= ~kRecvWanted;
  CancelReceive(slot);
}

void UringStreamRing::Send(uint32_t slot, const iovec* iov, int count) {
  Slot& s = SlotOf(slot);
  NBIO_CHECK_MSG((s.flags & (kClosing | kSendInFlight)) == 0,
                 "Send after Close or with a send in flight");
  NBIO_CHECK(count > 0);
  if (count > kMaxSendIovecs) count = kMaxSendIovecs;
  io_uring_sqe* sqe = GetSqe();
  if (count == 1) {
    // One buffer: a plain SEND, with no header for the kernel to copy in
    // and nothing to keep (the usual echo of a short message).
    io_uring_prep_send(sqe, static_cast<int>(slot), iov[0].iov_base,
                       iov[0].iov_len, MSG_NOSIGNAL);
  } else {
    s.send_msg = AcquireMsg();
    s.flags |= kSendHeader;
    SendHeader& h = Msg(s.send_msg);
    std::memset(&h.msg, 0, sizeof(h.msg));
    std::memcpy(h.iov, iov, sizeof(iovec) * static_cast<size_t>(count));
    h.msg.msg_iov = h.iov;
    h.msg.msg_iovlen = static_cast<size_t>(count);
    io_uring_prep_sendmsg(sqe, static_cast<int>(slot), &h.msg, MSG_NOSIGNAL);
  }
  sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(sqe, Tag(kSend, slot, s.gen));
  s.flags |= kSendInFlight;
  ++s.ops;
}

uint32_t UringStreamRing::AcquireMsg() {
  if (free_msgs_.empty()) {
    const uint32_t first = static_cast<uint32_t>(msg_chunks_.size()) * kMsgChunk;
    msg_chunks_.push_back(std::make_unique<SendHeader[]>(kMsgChunk));
    free_msgs_.reserve(msg_chunks_.size() * kMsgChunk);
    for (uint32_t i = kMsgChunk; i > 0; --i) free_msgs_.push_back(first + i - 1);
  }
  const uint32_t i = free_msgs_.back();
  free_msgs_.pop_back();
  return i;
}

void UringStreamRing::Shutdown(uint32_t slot) {
  Slot& s = SlotOf(slot);
  NBIO_CHECK_MSG((s.flags & kClosing) == 0, "Shutdown after Close");
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_shutdown(sqe, static_cast<int>(slot), SHUT_WR);
  sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(sqe, Tag(kShutdown, slot, s.gen));
  ++s.ops;
}

void UringStreamRing::Close(uint32_t slot) {
  Slot& s = SlotOf(slot);
  NBIO_CHECK_MSG((s.flags & kClosing) == 0, "Close called twice");
  s.flags |= kClosing;
  ++counters_.slots_closing;
  s.flags &= ~kRecvWanted;
  DropSpill(static_cast<uint32_t>(&s - slots_.data()));
  if (s.ops > 0) {
    // Every request on this file: the multishot receive, a send waiting for
    // room, a shutdown. Their completions (ECANCELED, or a result if they
    // won the race) come back and MaybeSubmitClose closes after the last.
    // The file cannot be closed first: each request holds its own
    // reference, so closing the slot would not end a receive that never
    // completes.
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_cancel_fd(
        sqe, static_cast<int>(slot),
        IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_FD_FIXED);
    io_uring_sqe_set_data64(sqe, Tag(kIgnore, 0, 0));
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    s.flags |= kRecvCancel;
  }
  MaybeSubmitClose(slot);
}

void UringStreamRing::MaybeSubmitClose(uint32_t slot) {
  Slot& s = slots_[slot];
  if ((s.flags & (kClosing | kCloseSent)) != kClosing || s.ops != 0) return;
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_close_direct(sqe, slot);
  io_uring_sqe_set_data64(sqe, Tag(kClose, slot, s.gen));
  s.flags |= kCloseSent;
}

void UringStreamRing::FinishClose(uint32_t slot) {
  Slot& s = slots_[slot];
  DropSpill(static_cast<uint32_t>(&s - slots_.data()));
  // kStarved stays: the slot is still in starved_, which skips it (or arms
  // the next connection in it, if that one wants data).
  if ((s.flags & kClosing) != 0) --counters_.slots_closing;
  s.flags &= kStarved;
  s.ops = 0;
  s.gen = (s.gen + 1) & kGenMask;
  --counters_.slots_in_use;
  if (!accept_armed_) accept_pending_ = true;  // armed after this batch
  handler_->OnClosed(slot);
}

void UringStreamRing::ReturnBuffer(uint16_t bid) {
  io_uring_buf_ring_add(buf_ring_, Buffer(bid), buffer_bytes_, bid,
                        io_uring_buf_ring_mask(buffer_count_),
                        static_cast<int>(buffers_to_publish_));
  ++buffers_to_publish_;
  --counters_.buffers_out;
}

void UringStreamRing::WatchFd(int fd) {
  NBIO_CHECK_MSG(!watching_fd_, "WatchFd while a watch is armed");
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_poll_add(sqe, fd, POLLIN);
  io_uring_sqe_set_data64(sqe, Tag(kWatch, 0, 0));
  watching_fd_ = true;
}

absl::StatusOr<int> UringStreamRing::InstallFd(uint32_t slot) {
  NBIO_CHECK_MSG(!installing_, "InstallFd is not re-entrant");
  if (!in_use(slot) || (slots_[slot].flags & kClosing) != 0) {
    return absl::FailedPreconditionError("io_uring: the slot is not open");
  }
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_rw(kOpFixedFdInstall, sqe, static_cast<int>(slot), nullptr,
                   0, 0);
  sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(sqe, Tag(kInstall, slot, slots_[slot].gen));
  installing_ = true;
  RunSelected(
      [](const Completion& c) { return (c.user_data >> 56) == kInstall; },
      [this] { return !installing_; }, "io_uring fd install stuck");
  const int32_t res = install_result_;
  if (res >= 0) return res;
  if (res == -EINVAL) {
    return absl::UnimplementedError(
        "io_uring: this kernel cannot install a direct descriptor as a "
        "process fd (IORING_OP_FIXED_FD_INSTALL needs Linux 6.8)");
  }
  return ErrnoStatus("io_uring fixed fd install", -res);
}

void UringStreamRing::SetEventFdSignals(bool on) {
  if (event_fd_ < 0) return;
  io_uring_cq_eventfd_toggle(&ring_, on);
  if (on) {
    const uint64_t one = 1;
    (void)!write(event_fd_, &one, sizeof(one));
  }
}

bool UringStreamRing::LendDelivered(const char* data, size_t len,
                                    uint16_t* bid) {
  if (delivering_bid_ == kNoBuffer || delivered_lent_) return false;
  const char* const buffer = Buffer(delivering_bid_);
  if (data < buffer || len > buffer_bytes_ ||
      data + len > buffer + buffer_bytes_) {
    return false;
  }
  BufferUse& u = buffer_use_[delivering_bid_];
  if (u.loans == 0 && counters_.buffers_lent + 1 > buffer_count_ / 2) {
    return false;
  }
  NBIO_CHECK(u.loans < UINT16_MAX);
  if (u.loans++ == 0) ++counters_.buffers_lent;
  delivered_lent_ = true;
  ++counters_.lends;
  *bid = delivering_bid_;
  return true;
}

void UringStreamRing::ReturnLent(uint16_t bid) {
  NBIO_CHECK_MSG(bid < buffer_count_ && buffer_use_[bid].loans > 0,
                 "ReturnLent of a buffer that is not lent");
  if (--buffer_use_[bid].loans == 0) --counters_.buffers_lent;
  MaybeReturnBuffer(bid);
}

uint32_t UringStreamRing::NoteReceived(int32_t res, uint32_t cqe_flags) {
  const auto bid = BufferIdOf(cqe_flags);
  NBIO_CHECK_MSG(bid < buffer_count_, "buffer id out of range");
  BufferUse& u = buffer_use_[bid];
  if (!u.kernel_fills) {
    // The kernel's first receive into this buffer since it was given.
    NBIO_CHECK_MSG(u.offset == 0 && u.pending == 0 && u.loans == 0,
                   "a buffer not given back came back from the kernel");
  }
  // Incremental buffers: this receive goes on where the buffer's last one
  // ended (the kernel posts a buffer's completions in order; they are
  // reaped in that order, but may be dispatched out of it: RunSelected).
  const uint32_t at = u.offset;
  if (res > 0) {
    u.offset += static_cast<uint32_t>(res);
    NBIO_CHECK_MSG(u.offset <= buffer_bytes_, "a receive overran its buffer");
  }
  NBIO_CHECK(u.pending < UINT16_MAX);
  ++u.pending;
  // BUF_MORE: the kernel keeps the rest of the buffer for the next receive;
  // until it is done with it, the buffer is not counted out.
  u.kernel_fills = (cqe_flags & kCqeBufMore) != 0;
  if (!u.kernel_fills) ++counters_.buffers_out;
  return at;
}

const char* UringStreamRing::TakeBuffer(const Completion& c, uint16_t* bid) {
  *bid = BufferIdOf(c.flags);
  return Buffer(*bid) + c.buf_offset;
}

void UringStreamRing::DoneWithReceive(uint16_t bid) {
  --buffer_use_[bid].pending;
  MaybeReturnBuffer(bid);
}

void UringStreamRing::MaybeReturnBuffer(uint16_t bid) {
  BufferUse& u = buffer_use_[bid];
  if (u.kernel_fills || u.pending > 0 || u.loans > 0) return;
  u.offset = 0;
  ReturnBuffer(bid);
}

void UringStreamRing::PublishBuffers() {
  if (buffers_to_publish_ == 0) return;
  io_uring_buf_ring_advance(buf_ring_, static_cast<int>(buffers_to_publish_));
  buffers_to_publish_ = 0;
}

void UringStreamRing::Spill(uint32_t slot, const char* data, uint32_t len) {
  spill_[slot].append(data, len);
  counters_.spilled_bytes += len;
  slots_[slot].flags |= kHasSpill;
}

void UringStreamRing::DropSpill(uint32_t slot) {
  Slot& s = slots_[slot];
  if ((s.flags & kHasSpill) == 0) return;
  s.flags &= ~kHasSpill;
  spill_.erase(slot);
}

void UringStreamRing::DeliverHeld(uint32_t slot) {
  Slot& s = slots_[slot];
  s.flags &= ~kInResume;
  if ((s.flags & kHasSpill) != 0 &&
      (s.flags & (kRecvWanted | kClosing)) == kRecvWanted) {
    auto it = spill_.find(slot);
    std::string bytes = std::move(it->second);
    spill_.erase(it);
    s.flags &= ~kHasSpill;
    const uint32_t gen = s.gen;
    size_t done = 0;
    // In pieces no larger than a receive, as a receive would have given.
    while (done < bytes.size()) {
      if ((s.flags & (kInUse | kRecvWanted | kClosing)) !=
              (kInUse | kRecvWanted) ||
          s.gen != gen) {
        break;
      }
      const size_t n = std::min<size_t>(buffer_bytes_, bytes.size() - done);
      data_socket_empty_ = false;
      const uint16_t outer_bid = delivering_bid_;
      delivering_bid_ = kNoBuffer;  // copied bytes: nothing to lend
      handler_->OnData(slot, bytes.data() + done, n);
      delivering_bid_ = outer_bid;
      done += n;
    }
    if (done < bytes.size() && (s.flags & (kInUse | kClosing)) == kInUse &&
        s.gen == gen) {
      // Stopped again inside OnData: the rest waits, ahead of anything
      // spilled meanwhile.
      std::string& rest = spill_[slot];
      rest.insert(0, bytes, done, std::string::npos);
      s.flags |= kHasSpill;
    }
  }
  if ((s.flags & kHasSpill) == 0 &&
      (s.flags & (kRecvWanted | kClosing | kRecvEnded | kEndReported)) ==
          (kRecvWanted | kRecvEnded)) {
    ReportEnd(slot);
  }
}

void UringStreamRing::ReportEnd(uint32_t slot) {
  Slot& s = slots_[slot];
  s.flags |= kEndReported;
  handler_->OnReceiveEnd(slot, s.end_result);
}

void UringStreamRing::RearmStarved() {
  // Arm no more receives than there are free buffers: the rest would only
  // meet ENOBUFS again. The list is FIFO, so every starved connection gets
  // its turn; with no free buffer nothing is armed (no spin) and the next
  // returned buffer brings the next turn.
  // Receives armed here since the last entry to the kernel have not taken
  // their buffers yet: counted, or a second call would arm them again.
  const uint32_t taken = counters_.buffers_out + rearmed_unsubmitted_;
  uint32_t free_buffers = taken < buffer_count_ ? buffer_count_ - taken : 0;
  while (starved_count_ > 0 && free_buffers > 0) {
    const uint32_t slot = starved_[starved_head_];
    starved_head_ = (starved_head_ + 1) % starved_.size();
    --starved_count_;
    Slot& s = slots_[slot];
    s.flags &= ~kStarved;
    if ((s.flags & (kInUse | kRecvWanted | kClosing | kRecvArmed |
                    kRecvEnded)) == (kInUse | kRecvWanted)) {
      ArmReceive(slot);
      s.flags |= kStarvedRetry;
      ++counters_.enobufs_rearms;
      ++rearmed_unsubmitted_;
      --free_buffers;
    }
  }
}

void UringStreamRing::EnableOnThisThread() {
  if (!disabled_) return;
  // The raw call: liburing 2.3 has no io_uring_enable_rings.
  const long ret = syscall(__NR_io_uring_register, ring_.ring_fd,
                           IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
  NBIO_CHECK_MSG(ret == 0, "io_uring: enabling a ring failed");
  disabled_ = false;
  owner_ = std::this_thread::get_id();
}

unsigned UringStreamRing::Reap() {
  unsigned head;
  unsigned seen = 0;
  io_uring_cqe* cqe;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    const uint32_t at = (cqe->flags & IORING_CQE_F_BUFFER) != 0
                            ? NoteReceived(cqe->res, cqe->flags)
                            : 0;
    batch_.push_back({cqe->user_data, cqe->res, cqe->flags, at});
    ++seen;
  }
  io_uring_cq_advance(&ring_, seen);
  return seen;
}

absl::StatusOr<int> UringStreamRing::Wait(int64_t timeout_nanos) {
  // SINGLE_ISSUER: the kernel would answer EEXIST from another thread.
  NBIO_DCHECK(OnOwnerThread());
  // From a handler, the batch being dispatched would be overwritten.
  NBIO_CHECK_MSG(!in_wait_, "UringStreamRing::Wait from inside a handler");
  in_wait_ = true;
  struct Leave {
    bool* in_wait;
    ~Leave() { *in_wait = false; }
  } leave{&in_wait_};
  EnableOnThisThread();
  if (accept_pending_) ArmAccept();
  // Buffers given back since the last Wait (lent ones) reach the kernel,
  // and the receives they were short for are armed, before it waits.
  PublishBuffers();
  RearmStarved();
  // Held data, or completions a RunSelected (StopAccepting, SettleClosed,
  // InstallFd) reaped outside a Wait and left for it: deliver, not sleep.
  // Blocking on them lost a wake-up: the one-shot watch of the owner's
  // readiness ring fired, sat in batch_, and the loop slept with no watch
  // armed (a cross-thread Post then never woke it: echo_server with two
  // reactors hung at exit about 1 time in 15).
  if (!resume_.empty() || batch_pos_ < batch_.size()) timeout_nanos = 0;
  int ret;
  if (timeout_nanos == 0 && !defer_taskrun_) {
    // Not DEFER_TASKRUN: completion work runs on any entry to the kernel,
    // and TASKRUN_FLAG says when some is waiting. io_uring_submit enters
    // only when there are requests to submit, that flag, or an overflow to
    // flush; a wait with a zero timeout (below) arms a timer in the kernel
    // at every call, measured at a fifth of the server's CPU with 16 KiB
    // echoes on 10 connections.
    ret = io_uring_submit(&ring_);
  } else if (timeout_nanos == 0) {
    // Submits and, with DEFER_TASKRUN, runs the deferred completion work
    // (a plain submit would not). All of it: asked for no completion, the
    // kernel runs at most 20 items of deferred work per enter (6.x,
    // IO_LOCAL_TW_DEFAULT_MAX) and keeps the rest without signalling the
    // ring's eventfd again, so an owner that waits on that eventfd would
    // sleep on work already queued (measured: 3,255 connections left
    // unanswered at 750,000 in uring_direct_echo). Asking for as many
    // completions as the queue holds, with a zero timeout, makes it run the
    // deferred work up to that many and then return (-ETIME) at once.
    __kernel_timespec zero{};
    io_uring_cqe* cqe = nullptr;
    ret = io_uring_submit_and_wait_timeout(&ring_, &cqe, cq_entries_, &zero,
                                           nullptr);
  } else {
    __kernel_timespec ts{};
    __kernel_timespec* tsp = nullptr;
    if (timeout_nanos > 0) {
      ts.tv_sec = timeout_nanos / 1'000'000'000;
      ts.tv_nsec = timeout_nanos % 1'000'000'000;
      tsp = &ts;
    }
    io_uring_cqe* cqe = nullptr;
    ret = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, tsp, nullptr);
  }
  // A wait for one completion runs at most 20 items of deferred work (or
  // as many as it needs for that completion) and keeps the rest.
  bool drained = timeout_nanos == 0;
  // ETIME: the timeout; EINTR: a signal; EBUSY: completions overflowed and
  // must be reaped first (done below); EAGAIN: the kernel was short of
  // memory for a request, which is retried at the next Wait().
  if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY &&
      ret != -EAGAIN) {
    return ErrnoStatus("io_uring_enter", -ret);
  }

  int dispatched = 0;
  // Bounded: an overflow is flushed by one more enter, and a queue that
  // overflows again is left for the next Wait().
  for (int round = 0; round < 4; ++round) {
    // Copy the completions out before dispatching: callbacks queue new
    // requests, and may submit them when the submission queue fills.
    const unsigned reaped = Reap();
    if (round == 0) {
      // What RearmStarved armed went in with the enter above, and the
      // buffers those receives took are in buffers_out now.
      rearmed_unsubmitted_ = 0;
      // A full queue: the kernel stopped running deferred work when the
      // completions it asked for were there, and may hold more.
      if (reaped >= cq_entries_) drained = false;
    }
    while (true) {
      if (!resume_.empty()) {
        // Held data first: it is older than anything in batch_.
        for (size_t i = 0; i < resume_.size(); ++i) DeliverHeld(resume_[i]);
        resume_.clear();
        continue;
      }
      if (batch_pos_ == batch_.size()) break;
      const Completion c = batch_[batch_pos_++];
      // A failed cancel's completion is nobody's business: not counted.
      if ((c.user_data >> 56) == kIgnore) continue;
      Dispatch(c);
      ++dispatched;
    }
    batch_.clear();
    batch_pos_ = 0;
    PublishBuffers();
    RearmStarved();
    if (accept_pending_) ArmAccept();
    NBIO_CHECK_MSG(*ring_.cq.koverflow == overflow_seen_,
                   "the kernel dropped io_uring completions");
    if ((IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_CQ_OVERFLOW) == 0) {
      break;
    }
    // The kernel holds completions that did not fit (IORING_FEAT_NODROP);
    // this enter moves them into the queue just emptied.
    ++counters_.cq_overflows;
    io_uring_get_events(&ring_);
    drained = false;
  }
  deferred_left_ = defer_taskrun_ && !drained;
  return dispatched;
}

void UringStreamRing::Dispatch(const Completion& c) {
  const Op op = static_cast<Op>(c.user_data >> 56);
  if (op == kIgnore) return;
  if (op == kAccept) {
    OnAcceptCqe(c);
    return;
  }
  if (op == kWatch) {
    watching_fd_ = false;
    handler_->OnFdReadable(c.res);
    return;
  }
  if (op == kInstall) {
    installing_ = false;
    install_result_ = c.res;
    return;
  }
  const uint32_t slot = static_cast<uint32_t>(c.user_data);
  const uint32_t gen = static_cast<uint32_t>(c.user_data >> 32) & kGenMask;
  if (slot >= slot_count_) return;
  Slot& s = slots_[slot];
  if ((s.flags & kInUse) == 0 || s.gen != gen) {
    // From a connection that has gone. Only a close can outlive its slot's
    // state (see OnAcceptCqe); nothing else holds a buffer either, but be
    // safe: a buffer must never leak.
    if ((c.flags & IORING_CQE_F_BUFFER) != 0) {
      DoneWithReceive(BufferIdOf(c.flags));
    }
    return;
  }
  switch (op) {
    case kRecv:
      OnRecvCqe(slot, c);
      break;
    case kSend:
      if ((s.flags & kSendHeader) != 0) {
        free_msgs_.push_back(s.send_msg);  // capacity reserved: no allocation
      }
      s.flags &= ~(kSendInFlight | kSendHeader);
      --s.ops;
      if ((s.flags & kClosing) != 0) {
        MaybeSubmitClose(slot);
      } else {
        handler_->OnSendDone(slot, c.res);
      }
      break;
    case kShutdown:
      --s.ops;
      if ((s.flags & kClosing) != 0) {
        MaybeSubmitClose(slot);
      } else {
        handler_->OnShutdownDone(slot, c.res);
      }
      break;
    case kClose:
      FinishClose(slot);
      break;
    default:
      break;
  }
}

void UringStreamRing::OnAcceptCqe(const Completion& c) {
  const bool more = (c.flags & IORING_CQE_F_MORE) != 0;
  if (!more) accept_armed_ = false;
  if (c.res >= 0) {
    const uint32_t slot = static_cast<uint32_t>(c.res);
    NBIO_CHECK_MSG(slot < slot_count_, "accept into a slot out of range");
    Slot& s = slots_[slot];
    if ((s.flags & kInUse) != 0) {
      // The kernel freed the slot (our close_direct ran) and reused it
      // before we saw that close's completion: the old connection is done.
      NBIO_CHECK_MSG((s.flags & kCloseSent) != 0,
                     "accept into a slot that is still open");
      FinishClose(slot);
    }
    s.flags = static_cast<uint16_t>(kInUse | (s.flags & kStarved));
    s.ops = 0;
    s.end_result = 0;
    ++counters_.slots_in_use;
    if (discard_accepts_) {
      // StopAccepting(false): nobody is told of this one.
      Close(slot);
      return;
    }
    if (accept_armed_ && accept_multishot_ && !accept_cancelled_ &&
        slot_count_ - counters_.slots_in_use <= accept_reserve_) {
      // Nearly full: the multishot accept would take the whole backlog and
      // the kernel drop what finds no slot. Single-shot accepts from here
      // (armed again when this one's last completion arrives).
      CancelAccept();
    }
    handler_->OnAccept(slot);
  } else if (c.res == -ECANCELED) {
    // Our own cancel (nearly full), or the ring going away.
  } else if (c.res == -EBADF || c.res == -ENOTSOCK || c.res == -EINVAL ||
             c.res == -EOPNOTSUPP) {
    accept_stopped_ = true;
    handler_->OnAcceptError(c.res);
  } else {
    // ENFILE (table full: that connection was dropped by the kernel; the
    // accept comes back with the next free slot, see ArmAccept),
    // ECONNABORTED, ENOMEM, ...
    handler_->OnAcceptError(c.res);
  }
  if (!accept_armed_) {
    // Armed again after this batch, so a failing accept costs one attempt
    // per Wait() instead of a spin; not while the table is full.
    accept_pending_ = true;
  }
}

void UringStreamRing::OnRecvCqe(uint32_t slot, const Completion& c) {
  Slot& s = slots_[slot];
  const bool more = (c.flags & IORING_CQE_F_MORE) != 0;
  if (!more) {
    s.flags &= ~(kRecvArmed | kRecvCancel);
    --s.ops;
    --counters_.receives_armed;
  }
  if (c.res > 0) {
    s.flags &= ~kStarvedRetry;
    if ((c.flags & IORING_CQE_F_SOCK_NONEMPTY) != 0) {
      s.flags |= kSockNonEmpty;
    } else {
      s.flags &= ~kSockNonEmpty;
    }
  }
  if ((c.flags & IORING_CQE_F_BUFFER) != 0) {
    uint16_t bid;
    const char* data = TakeBuffer(c, &bid);
    if (c.res <= 0 || (s.flags & kClosing) != 0) {
      DoneWithReceive(bid);
    } else if ((s.flags & (kRecvWanted | kInResume)) == kRecvWanted &&
               (s.flags & kHasSpill) == 0) {
      const uint32_t gen = s.gen;
      data_socket_empty_ = (c.flags & IORING_CQE_F_SOCK_NONEMPTY) == 0;
      const uint16_t outer_bid = delivering_bid_;
      const bool outer_lent = delivered_lent_;
      delivering_bid_ = bid;
      delivered_lent_ = false;
      handler_->OnData(slot, data, static_cast<size_t>(c.res));
      DoneWithReceive(bid);
      delivering_bid_ = outer_bid;
      delivered_lent_ = outer_lent;
      // The handler may have closed the slot, and its close may even have
      // finished; then this completion's follow-up is not ours to do.
      if ((s.flags & kInUse) == 0 || s.gen != gen) return;
    } else {
      // Stopped (or older data waits to be delivered): copy the bytes
      // aside until StartReceive; the buffer goes back now.
      Spill(slot, data, static_cast<uint32_t>(c.res));
      DoneWithReceive(bid);
    }
  }
  if (more) return;
  if ((s.flags & kClosing) != 0) {
    MaybeSubmitClose(slot);
    return;
  }
  if (c.res == -ENOBUFS) {
    // The buffer ring ran dry; the bytes wait in the socket. Armed again
    // by RearmStarved once buffers have come back.
    if ((s.flags & kStarved) == 0) {
      s.flags |= kStarved;
      if ((s.flags & kStarvedRetry) != 0) {
        ++counters_.enobufs_again;
        // Starved again right after its turn (the receives still armed took
        // the buffers first): it keeps its place at the front, or a
        // connection could wait behind every other starved one at every
        // turn (seen as a 0.5 s p99 at 10,000 connections).
        starved_head_ = (starved_head_ + starved_.size() - 1) % starved_.size();
        starved_[starved_head_] = slot;
      } else {
        starved_[(starved_head_ + starved_count_) % starved_.size()] = slot;
      }
      ++starved_count_;
    }
  } else if (c.res == -EINVAL && receive_limits_) {
    // A kernel before 6.16 refuses the limit: go on without.
    receive_limits_ = false;
    if ((s.flags & (kRecvWanted | kRecvArmed | kStarved)) == kRecvWanted) {
      ArmReceive(slot);
    }
  } else if (c.res > 0 || c.res == -ECANCELED) {
    if (c.res > 0) ++counters_.limited_rearms;
    // Our StopReceive's cancel, or the kernel ended the multishot (e.g. a
    // full completion queue): go on if the owner wants data.
    if ((s.flags & (kRecvWanted | kRecvArmed | kStarved)) == kRecvWanted) {
      ArmReceive(slot);
    }
  } else {
    // EOF (0) or an error: reported once, after any held data.
    s.flags |= kRecvEnded;
    s.end_result = c.res;
    if ((s.flags & (kRecvWanted | kInResume)) == kRecvWanted &&
        (s.flags & kHasSpill) == 0) {
      ReportEnd(slot);
    }
  }
}

bool UringStreamRing::HasPendingWork() const {
  if (io_uring_sq_ready(&ring_) > 0 || accept_pending_ || !resume_.empty() ||
      deferred_left_ ||
      buffers_to_publish_ > 0 || batch_pos_ < batch_.size()) {
    return true;
  }
  return starved_count_ > 0 && counters_.buffers_out < buffer_count_;
}

bool UringStreamRing::ReceiveDrained(uint32_t slot) const {
  if (slot >= slot_count_) return false;
  const Slot& s = slots_[slot];
  return (s.flags & (kInUse | kRecvArmed | kRecvCancel | kStarved |
                     kInResume | kSockNonEmpty | kClosing)) ==
             (kInUse | kRecvArmed) &&
         (s.flags & kHasSpill) == 0;
}

template <typename Pick, typename Done>
void UringStreamRing::RunSelected(Pick pick, Done done, const char* what) {
  NBIO_DCHECK(OnOwnerThread());
  // The kernel cancels and closes at once; the deadline only turns a bug
  // into a clear failure instead of a hang.
  constexpr int kRounds = 3000;  // of 10 ms
  for (int round = 0; !done(); ++round) {
    NBIO_CHECK_MSG(round < kRounds, what);
    __kernel_timespec ts{};
    ts.tv_nsec = 10 * 1000 * 1000;
    io_uring_cqe* cqe = nullptr;
    EnableOnThisThread();
    io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    deferred_left_ = defer_taskrun_;
    Reap();
    // batch_ may be in the middle of a Wait()'s dispatch (this runs from a
    // handler): only entries not yet dispatched are looked at, by index,
    // and those run here are marked so that Wait skips them.
    for (size_t i = batch_pos_; i < batch_.size(); ++i) {
      if ((batch_[i].user_data >> 56) == kIgnore || !pick(batch_[i])) continue;
      const Completion c = batch_[i];
      batch_[i].user_data = Tag(kIgnore, 0, 0);
      Dispatch(c);
    }
    PublishBuffers();
  }
}

void UringStreamRing::StopAccepting(bool deliver) {
  if (listen_fd_ < 0) return;
  listen_fd_ = -1;  // ArmAccept arms nothing from now on
  accept_pending_ = false;
  if (!accept_armed_) return;
  CancelAccept();
  discard_accepts_ = !deliver;
  // Accept completions an earlier Wait reaped and has not dispatched yet
  // come before the last one, so they are run here too.
  RunSelected(
      [](const Completion& c) { return (c.user_data >> 56) == kAccept; },
      [this] { return !accept_armed_; }, "io_uring accept cancel stuck");
  discard_accepts_ = false;
  accept_pending_ = false;
}

void UringStreamRing::SettleClosed() {
  RunSelected(
      [this](const Completion& c) {
        const Op op = static_cast<Op>(c.user_data >> 56);
        if (op == kAccept) return false;
        const uint32_t slot = static_cast<uint32_t>(c.user_data);
        const uint32_t gen =
            static_cast<uint32_t>(c.user_data >> 32) & kGenMask;
        if (slot >= slot_count_) return false;
        const Slot& s = slots_[slot];
        return (s.flags & (kInUse | kClosing)) == (kInUse | kClosing) &&
               s.gen == gen;
      },
      [this] { return counters_.slots_closing == 0; },
      "io_uring close stuck");
}

}  // namespace nbio
