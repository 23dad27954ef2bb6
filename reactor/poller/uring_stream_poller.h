// The "io_uring" backend: readiness over IORING_OP_POLL_ADD (UringPoller, so
// FdWatcher, WaitReadable, signals and the loop's wake-up work as on every
// backend) plus a StreamEngine (stream_engine.h) that accepts, receives and
// sends on direct descriptors through UringStreamRings
// (reactor/uring/stream_ring.h).
//
// A TcpServer on this backend hands its listening socket to the engine: the
// kernel accepts straight into a ring's fixed-file table, so a connection
// takes no process file descriptor and one loop holds more connections
// than RLIMIT_NOFILE allows descriptors. A ring holds at most RLIMIT_NOFILE
// (soft) connections, so the engine adds rings as a listener fills them:
// the limit. With one ring (up to 4,096 connections of one server) the
// loop blocks in that ring: one io_uring_enter submits its sends and
// waits for its completions, the loop's timer, and the readiness ring,
// whose fd the stream ring polls. With more, every ring has an eventfd,
// polled by the readiness ring, and the loop blocks there: still one
// io_uring_enter per iteration, for all rings and its timers.
//
// When a listener stops (its server closed), its rings are closed once
// their connections have gone.
//
// A listener's first ring is made in Listen(), so that an error (the
// locked-memory limit, ENOMEM) reaches the caller; the next ones as it
// fills. Rings are SINGLE_ISSUER|DEFER_TASKRUN where the kernel has them
// (COOP_TASKRUN otherwise), bound to the thread that first runs them, since
// a loop may be set up on one thread and run on another. Their completion
// work runs only when the loop enters the ring; a ring whose last entry
// may have left some queued says so (HasPendingWork), and the loop runs it
// again before blocking, since its eventfd will not announce that work.
// When a later ring cannot be created, the listener is told
// (listen_failed) and accepts by itself: ordinary descriptors, readiness,
// nothing refused.
//
// Receive buffers: each ring has its own provided buffer ring
// (kBuffersPerRing of kBufferBytes); a connection holds a buffer only while
// its data is being handed over.
#ifndef NBIO_REACTOR_POLLER_URING_STREAM_POLLER_H_
#define NBIO_REACTOR_POLLER_URING_STREAM_POLLER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "reactor/poller/stream_engine.h"
#include "reactor/poller/uring_poller.h"
#include "reactor/uring/stream_ring.h"

namespace nbio {

class UringStreamPoller final : public UringPoller, public StreamEngine {
 public:
  // Sets up the readiness ring and checks that this kernel can run the
  // stream engine (a small trial ring: multishot accept into a sparse
  // table, a provided buffer ring). Errors say why in operator words.
  static absl::StatusOr<std::unique_ptr<UringStreamPoller>> Create();
  ~UringStreamPoller() override;

  const char* name() const override { return "io_uring"; }
  absl::StatusOr<int> Wait(int64_t timeout_nanos) override;
  StreamEngine* streams() override { return this; }

  // StreamEngine.
  absl::Status Listen(int listen_fd, const Upcalls* upcalls,
                      void* listener) override;
  void StopListening(void* listener, bool deliver) override;
  void StartReceive(Handle h) override;
  void StopReceive(Handle h) override;
  void Bind(Handle h, void* conn) override;
  void Send(Handle h, const iovec* iov, int count) override;
  int max_send_iovecs() const override {
    return UringStreamRing::kMaxSendIovecs;
  }
  size_t receive_chunk_bytes() const override { return kBufferBytes; }
  bool Lend(const char* bytes, size_t len, uint64_t* token) override;
  void ReturnLoan(uint64_t token) override;
  uint64_t buffers_lent() const override;
  void Shutdown(Handle h) override;
  void Close(Handle h) override;
  absl::StatusOr<int> InstallFd(Handle h) override;
  bool ReceiveDrained(Handle h) override;
  void RunPending() override;
  void SettleClosed() override;

  static constexpr uint32_t kFirstRingSlots = 4096;
  static constexpr uint32_t kBuffersPerRing = 64;
  static constexpr uint32_t kBufferBytes = 64 * 1024;

  // For reports and tests.
  struct RingStats {
    uint32_t slots;
    UringStreamRing::Counters counters;
    const char* setup_mode;
  };
  std::vector<RingStats> ring_stats() const;

 private:
  struct Listener;
  struct Ring;
  static constexpr int kSlotBits = 20;  // RLIMIT_NOFILE is at most 2^20
  static constexpr uint32_t kSlotMask = (1u << kSlotBits) - 1;

  UringStreamPoller() = default;
  // The engine cannot accept for `l` any more: tells its owner once (it
  // then accepts by itself).
  static void ListenerFailed(Listener* l, const absl::Status& why);
  // Adds a ring to `l`, bigger than its last.
  absl::Status Grow(Listener* l);
  // Runs the ring's completions; afterwards its interest and growth.
  // (Wait(timeout_nanos) of the ring: 0 runs it without blocking.)
  int RunRing(Ring* ring, int64_t timeout_nanos = 0);
  void AfterRun(Ring* ring);
  // The only ring, if there is exactly one; else nullptr.
  Ring* SoloRing() const;
  // Wait() with one ring: blocks in it (see the file comment).
  absl::StatusOr<int> WaitInRing(Ring* ring, int64_t timeout_nanos);
  Ring& RingOf(Handle h) { return *rings_[h >> kSlotBits]; }
  // Closes the rings of stopped listeners that hold no connection any more
  // (their fds, queues and buffers), and forgets those listeners.
  void RetireIdleRings();

  // Index: handle >> kSlotBits; nullptr once retired (the index is reused).
  std::vector<std::unique_ptr<Ring>> rings_;
  std::vector<uint32_t> free_indices_;
  bool stopped_listeners_ = false;  // some may have rings to retire
  std::vector<std::unique_ptr<Listener>> listeners_;
  uint32_t max_slots_ = 0;  // RLIMIT_NOFILE soft, at most 2^20
  Ring* delivering_ = nullptr;  // whose OnData is running (Lend)
  Ring* solo_ = nullptr;  // the ring the loop blocks in, if one; its eventfd
                          // signals are off meanwhile
};

}  // namespace nbio

#endif  // NBIO_REACTOR_POLLER_URING_STREAM_POLLER_H_
