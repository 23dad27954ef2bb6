#include "reactor/poller/uring_stream_poller.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "queue/base/check.h"
#include "reactor/sys/syscall.h"

namespace nbio {
namespace {

// The rings past the first few exist for connection counts far beyond what
// is busy at once: they get few, small receive buffers, so a million idle
// connections stay within their memory budget (tools/bench/README.md).
// The first two rings (4,096 + 8,192 slots) hold every benchmark's
// connections; the later ones exist for counts far past what is busy.
constexpr size_t kFullRings = 2;
constexpr uint32_t kSmallBufferCount = 16;
constexpr uint32_t kSmallBufferBytes = 4096;

// The trial ring of Create(): nothing is ever accepted on it.
class NoHandler : public UringStreamRing::Handler {
  void OnAccept(uint32_t) override {}
  void OnData(uint32_t, const char*, size_t) override {}
  void OnReceiveEnd(uint32_t, int) override {}
  void OnSendDone(uint32_t, int) override {}
  void OnClosed(uint32_t) override {}
};

}  // namespace

struct UringStreamPoller::Listener {
  int fd;
  const Upcalls* upcalls;
  void* cookie;
  std::vector<uint32_t> rings;  // indices into rings_, oldest first
  bool stopped = false;
  bool failed = false;  // told listen_failed: accepts by itself now
};

// The engine cannot accept for `l` any more: tells its owner once, which
// then accepts by itself.
void UringStreamPoller::ListenerFailed(Listener* l, const absl::Status& why) {
  if (l->stopped || l->failed) return;
  l->failed = true;
  l->upcalls->listen_failed(l->cookie, why);
}

// One ring, its eventfd (a readiness entry of the poller) and the owner's
// pointer for each of its slots.
struct UringStreamPoller::Ring final : public PollerEntry,
                                       public UringStreamRing::Handler {
  Ring(UringStreamPoller* owner, uint32_t index, Listener* listener)
      : PollerEntry(&Ring::OnEventFd),
        owner(owner),
        index(index),
        listener(listener) {}

  static void OnEventFd(PollerEntry* entry, uint32_t) {
    Ring* self = static_cast<Ring*>(entry);
    // One read takes the whole count; a second would only say EAGAIN (a
    // signal that comes after this read fires the poll again).
    uint64_t count;
    (void)!read(self->ring->event_fd(), &count, sizeof(count));
    self->owner->RunRing(self);
  }

  Handle HandleOf(uint32_t slot) const {
    return (index << kSlotBits) | slot;
  }

  void OnAccept(uint32_t slot) override {
    void* conn = listener->stopped
                     ? nullptr
                     : listener->upcalls->accept(listener->cookie,
                                                 HandleOf(slot));
    if (conn == nullptr) {
      conns[slot] = nullptr;
      ring->Close(slot);
      return;
    }
    conns[slot] = conn;
  }
  void OnAcceptError(int error) override {
    if (error == -EBADF || error == -ENOTSOCK || error == -EINVAL ||
        error == -EOPNOTSUPP) {
      ListenerFailed(listener, ErrnoStatus("io_uring accept", -error));
    }
  }
  void OnData(uint32_t slot, const char* data, size_t len) override {
    Ring* const outer = owner->delivering_;
    owner->delivering_ = this;
    listener->upcalls->data(conns[slot], data, len, ring->data_socket_empty());
    owner->delivering_ = outer;
  }
  void OnReceiveEnd(uint32_t slot, int error) override {
    listener->upcalls->receive_end(conns[slot], error);
  }
  void OnSendDone(uint32_t slot, int result) override {
    listener->upcalls->send_done(conns[slot], result);
  }
  void OnShutdownDone(uint32_t slot, int result) override {
    listener->upcalls->shutdown_done(conns[slot], result);
  }
  uint32_t ReceiveLimit(uint32_t slot) override {
    return conns[slot] != nullptr
               ? listener->upcalls->receive_limit(conns[slot])
               : 0;
  }
  void OnFdReadable(int) override {}  // the readiness ring: run after Wait
  void OnClosed(uint32_t slot) override {
    void* conn = conns[slot];
    conns[slot] = nullptr;
    if (conn != nullptr) listener->upcalls->released(conn);
  }

  UringStreamPoller* const owner;
  const uint32_t index;
  Listener* const listener;  // outlives its rings (RetireIdleRings)
  std::unique_ptr<UringStreamRing> ring;
  std::vector<void*> conns;  // by slot
};

absl::StatusOr<std::unique_ptr<UringStreamPoller>> UringStreamPoller::Create() {
  std::unique_ptr<UringStreamPoller> poller(new UringStreamPoller());
  absl::Status status = poller->Init();
  if (!status.ok()) return status;
  {
    NoHandler none;
    UringStreamRing::Options trial;
    trial.slots = 8;
    trial.sq_entries = 8;
    trial.cq_entries = 16;
    trial.buffer_count = 8;
    trial.buffer_bytes = 4096;
    absl::StatusOr<std::unique_ptr<UringStreamRing>> ring =
        UringStreamRing::Create(trial, &none);
    if (!ring.ok()) return ring.status();
  }
  rlimit nofile{};
  getrlimit(RLIMIT_NOFILE, &nofile);
  poller->max_slots_ = static_cast<uint32_t>(
      std::min<rlim_t>(nofile.rlim_cur, rlim_t{1} << kSlotBits));
  return poller;
}

UringStreamPoller::~UringStreamPoller() {
  for (auto& ring : rings_) {
    if (ring == nullptr) continue;
    if (ring->is_registered()) Remove(ring.get());
    ring->ring.reset();  // cancels what is in flight, closes every slot
  }
}

absl::Status UringStreamPoller::Listen(int listen_fd, const Upcalls* upcalls,
                                       void* listener) {
  auto l = std::make_unique<Listener>();
  l->fd = listen_fd;
  l->upcalls = upcalls;
  l->cookie = listener;
  absl::Status status = Grow(l.get());
  if (!status.ok()) return status;
  listeners_.push_back(std::move(l));
  return absl::OkStatus();
}

void UringStreamPoller::StopListening(void* listener, bool deliver) {
  for (auto& l : listeners_) {
    if (l->cookie != listener || l->stopped) continue;
    for (uint32_t i : l->rings) {
      rings_[i]->ring->StopAccepting(deliver);
      AfterRun(rings_[i].get());
    }
    l->stopped = true;
    stopped_listeners_ = true;  // its rings go once their slots are closed
  }
}

absl::Status UringStreamPoller::Grow(Listener* l) {
  const uint32_t wanted = l->rings.empty()
                             ? kFirstRingSlots
                             : rings_[l->rings.back()]->ring->slots() * 2;
  const uint32_t slots = std::min(wanted, max_slots_);
  UringStreamRing::Options options;
  options.slots = slots;
  const bool full = l->rings.size() < kFullRings;
  options.sq_entries = full ? 1024 : 256;
  // A completion per four slots (the kernel rounds up to a power of two):
  // idle connections complete nothing, and a burst that overflows the
  // queue is kept by the kernel (IORING_FEAT_NODROP) and reaped, never
  // lost. One per slot cost 26 bytes a connection at 1,000,000.
  options.cq_entries = std::max<uint32_t>(4096, slots / 4);
  if (full) {
    options.buffer_count = kBuffersPerRing;
    options.buffer_bytes = kBufferBytes;
  } else {
    options.buffer_count = kSmallBufferCount;
    options.buffer_bytes = kSmallBufferBytes;
  }
  options.event_fd = true;
  // Whole buffers, one per receive: 64 of 64 KiB (the same 4 MiB as 256 of
  // 16 KiB, which the ring defaults to). A bulk receive fills a buffer four
  // times the size, so 16 KiB echoes take 0.61 completions a message
  // instead of 1.56 and cost a median 0.93x of the CPU (0.87-1.04, 8
  // interleaved pairs); 100, 1,000 and 10,000 connections of 64 B stayed
  // level (0.99, 1.00, 1.01-1.02). 128 of 64 KiB measured the same at twice
  // the memory; 128 of 32 KiB gained nothing. Incremental buffers (Linux
  // 6.12), 64 of 64 KiB, were level with these with 16 KiB messages
  // (0.97x of 256 of 16 KiB, these 0.96x, same run) and cost more at
  // 10,000 connections of 64 B (12.6-13.0 us a message against
  // 11.0-11.2). The stall once blamed on them with the kernel's limit was
  // the test's (reactor/uring/README.md).
  options.incremental_buffers = false;
  // Single-shot accepts only, one at a time while a slot is free: a
  // multishot accept takes the whole backlog at once, and what finds the
  // table full is dropped by the kernel (ENFILE) before the next ring can
  // join. A connect burst then waits in the backlog instead.
  options.accept_reserve = static_cast<int32_t>(slots);
  // SINGLE_ISSUER | DEFER_TASKRUN where the kernel has it: completion work
  // runs in batches when the loop enters the ring, not whenever the thread
  // enters the kernel. Measured against COOP_TASKRUN (interleaved pairs,
  // server pinned): 0.94x the CPU per message at 10,000 connections, 0.90x
  // at 1,000, level with 16 KiB messages. Its eventfd is signalled only
  // when that work list goes from empty to not empty, so the ring says when
  // an entry may have left work queued (HasPendingWork) and the loop runs
  // it again before blocking. The ring binds to the thread that first runs
  // it, not to this one: a loop may be set up on one thread and run on
  // another.
  options.bind_on_first_use = true;
  options.allow_defer_taskrun = true;
  const auto index = free_indices_.empty()
                         ? static_cast<uint32_t>(rings_.size())
                         : free_indices_.back();
  auto r = std::make_unique<Ring>(this, index, l);
  absl::StatusOr<std::unique_ptr<UringStreamRing>> ring =
      index < (1u << (32 - kSlotBits))
          ? UringStreamRing::Create(options, r.get())
          : absl::ResourceExhaustedError("io_uring: too many rings");
  absl::Status status = ring.status();
  if (status.ok()) {
    r->ring = std::move(*ring);
    r->conns.assign(r->ring->slots(), nullptr);
    status = r->ring->Listen(l->fd);
  }
  if (status.ok()) status = Add(r.get(), r->ring->event_fd(), kReadable);
  if (!status.ok()) {
    if (r->is_registered()) Remove(r.get());
    return absl::Status(
        status.code(), absl::StrCat("io_uring: cannot add a ring for ", slots,
                                    " more connections: ", status.message()));
  }
  l->rings.push_back(index);
  if (index == rings_.size()) {
    rings_.push_back(std::move(r));
  } else {
    free_indices_.pop_back();
    rings_[index] = std::move(r);
  }
  return absl::OkStatus();
}

void UringStreamPoller::RetireIdleRings() {
  // Here, at the top of Wait(), and not where a listener stops: that may be
  // inside the ring's own dispatch (a server destroyed from a handler).
  bool retired = false;
  for (size_t i = 0; i < rings_.size(); ++i) {
    Ring* r = rings_[i].get();
    if (r == nullptr || !r->listener->stopped) continue;
    // Its buffers lent to connections of other rings hold it too.
    auto held = [r] {
      const UringStreamRing::Counters& k = r->ring->counters();
      return k.slots_in_use > 0 || k.buffers_lent > 0;
    };
    if (held()) continue;
    // Work it may still hold (with DEFER_TASKRUN, any blocking wait may
    // leave some in the kernel) is run now: a loop that only ever blocks in
    // this ring would otherwise keep it for good.
    if (r->ring->HasPendingWork()) RunRing(r);
    if (held() || r->ring->HasPendingWork()) continue;
    Listener* l = r->listener;
    l->rings.erase(std::find(l->rings.begin(), l->rings.end(), r->index));
    if (r->is_registered()) Remove(r);
    if (solo_ == r) solo_ = nullptr;
    rings_[i].reset();
    free_indices_.push_back(static_cast<uint32_t>(i));
    retired = true;
  }
  if (!retired) return;
  listeners_.erase(
      std::remove_if(listeners_.begin(), listeners_.end(),
                     [](const std::unique_ptr<Listener>& l) {
                       return l->stopped && l->rings.empty();
                     }),
      listeners_.end());
}

int UringStreamPoller::RunRing(Ring* r, int64_t timeout_nanos) {
  absl::StatusOr<int> n = r->ring->Wait(timeout_nanos);
  NBIO_CHECK_MSG(n.ok(), "io_uring stream ring: io_uring_enter failed");
  AfterRun(r);
  return *n;
}

void UringStreamPoller::AfterRun(Ring* r) {
  const UringStreamRing::Counters& k = r->ring->counters();
  Listener* l = r->listener;
  const bool accepting = !l->stopped && !l->failed;
  // The eventfd keeps the loop alive while the ring has connections or
  // accepts for a listener.
  const uint32_t want =
      (k.slots_in_use > 0 || accepting) ? uint32_t{kReadable} : 0u;
  if (r->is_registered() && r->interest() != want) {
    Modify(r, want).IgnoreError();
  }
  // The newest ring of a listener nearly full: the next one joins.
  if (accepting && !l->rings.empty() && l->rings.back() == r->index) {
    const uint32_t slots = r->ring->slots();
    const uint32_t join_at = std::max<uint32_t>(1, std::min(2048u, slots / 8));
    if (slots - k.slots_in_use <= join_at) {
      absl::Status status = Grow(l);
      if (!status.ok()) ListenerFailed(l, status);
    }
  }
}

UringStreamPoller::Ring* UringStreamPoller::SoloRing() const {
  Ring* only = nullptr;
  for (const auto& r : rings_) {
    if (r == nullptr) continue;
    if (only != nullptr) return nullptr;
    only = r.get();
  }
  return only;
}

absl::StatusOr<int> UringStreamPoller::WaitInRing(Ring* r,
                                                  int64_t timeout_nanos) {
  // Readiness requests (FdWatchers, the loop's wake-up) reach the kernel
  // before the loop blocks; their completions make the readiness ring's fd
  // readable, which wakes the wait below.
  SubmitPending();
  if (!r->ring->watching_fd()) r->ring->WatchFd(readiness_ring_fd());
  if (HasCompletions()) timeout_nanos = 0;
  // Submits the ring's queued sends and receives, blocks until a
  // completion (of the ring or the watch) or the timeout, and dispatches.
  const int n = RunRing(r, timeout_nanos);
  // The readiness ring without blocking: its completions, if any.
  absl::StatusOr<int> m = UringPoller::Wait(0);
  if (!m.ok()) return m;
  return n + *m;
}

absl::StatusOr<int> UringStreamPoller::Wait(int64_t timeout_nanos) {
  if (stopped_listeners_) {
    stopped_listeners_ = false;
    RetireIdleRings();
    for (const auto& l : listeners_) stopped_listeners_ |= l->stopped;
  }
  Ring* const solo = SoloRing();
  if (solo != solo_) {
    // The eventfd signals only what the loop does not block in.
    if (solo_ != nullptr) solo_->ring->SetEventFdSignals(true);
    if (solo != nullptr) solo->ring->SetEventFdSignals(false);
    solo_ = solo;
  }
  if (solo != nullptr) return WaitInRing(solo, timeout_nanos);
  int ran = 0;
  bool pending = false;
  // Work queued outside a ring's own Wait (a Write from a timer, another
  // ring's up-call) is submitted here, before the loop blocks: the ring's
  // eventfd says nothing about requests it has not seen.
  for (int round = 0; round < 4; ++round) {
    pending = false;
    for (size_t i = 0; i < rings_.size(); ++i) {
      Ring* r = rings_[i].get();
      if (r != nullptr && r->ring->HasPendingWork()) {
        ran += RunRing(r);
        pending = true;
      }
    }
    if (!pending) break;
  }
  // Up-calls ran: they may have started timers the loop has not seen yet.
  absl::StatusOr<int> n =
      UringPoller::Wait(ran > 0 || pending ? 0 : timeout_nanos);
  if (!n.ok()) return n;
  return *n + ran;
}

void UringStreamPoller::StartReceive(Handle h) {
  RingOf(h).ring->StartReceive(h & kSlotMask);
}

void UringStreamPoller::StopReceive(Handle h) {
  RingOf(h).ring->StopReceive(h & kSlotMask);
}

void UringStreamPoller::Bind(Handle h, void* conn) {
  RingOf(h).conns[h & kSlotMask] = conn;
}

void UringStreamPoller::Send(Handle h, const iovec* iov, int count) {
  RingOf(h).ring->Send(h & kSlotMask, iov, count);
}

void UringStreamPoller::Shutdown(Handle h) {
  RingOf(h).ring->Shutdown(h & kSlotMask);
}

void UringStreamPoller::Close(Handle h) {
  RingOf(h).ring->Close(h & kSlotMask);
}

absl::StatusOr<int> UringStreamPoller::InstallFd(Handle h) {
  return RingOf(h).ring->InstallFd(h & kSlotMask);
}

bool UringStreamPoller::ReceiveDrained(Handle h) {
  return RingOf(h).ring->ReceiveDrained(h & kSlotMask);
}

bool UringStreamPoller::Lend(const char* bytes, size_t len, uint64_t* token) {
  uint16_t bid;
  if (delivering_ == nullptr ||
      !delivering_->ring->LendDelivered(bytes, len, &bid)) {
    return false;
  }
  *token = (uint64_t{delivering_->index} << 16) | bid;
  return true;
}

void UringStreamPoller::ReturnLoan(uint64_t token) {
  const auto index = static_cast<uint32_t>(token >> 16);
  NBIO_CHECK_MSG(index < rings_.size() && rings_[index] != nullptr,
                 "ReturnLoan: no such ring");
  rings_[index]->ring->ReturnLent(static_cast<uint16_t>(token));
}

uint64_t UringStreamPoller::buffers_lent() const {
  uint64_t n = 0;
  for (const auto& r : rings_) {
    if (r != nullptr) n += r->ring->counters().buffers_lent;
  }
  return n;
}

void UringStreamPoller::RunPending() {
  for (size_t i = 0; i < rings_.size(); ++i) {
    if (rings_[i] != nullptr) RunRing(rings_[i].get());
  }
}

void UringStreamPoller::SettleClosed() {
  for (auto& r : rings_) {
    if (r != nullptr && r->ring->counters().slots_closing > 0) {
      r->ring->SettleClosed();
      AfterRun(r.get());
    }
  }
}

std::vector<UringStreamPoller::RingStats> UringStreamPoller::ring_stats()
    const {
  std::vector<RingStats> out;
  for (const auto& r : rings_) {
    if (r == nullptr) continue;
    out.push_back({r->ring->slots(), r->ring->counters(),
                   r->ring->setup_mode()});
  }
  return out;
}

}  // namespace nbio
