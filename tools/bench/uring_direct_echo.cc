// uring_direct_echo: one thread echoing on io_uring direct descriptors, past
// RLIMIT_NOFILE.
//
//   bazel-bin/tools/bench/uring_direct_echo --capacity=1000000
//
// The engine-level measurement for c1m.sh (tools/bench/c1m.sh
// --server=uring_direct): connections are accepted straight into the sparse
// file tables of reactor/uring's UringStreamRing, so none takes a process
// descriptor. A table holds at most RLIMIT_NOFILE (soft) slots, so the
// server makes as many rings as --capacity needs, all on the one listening
// socket, and waits on all of them in one epoll_wait over their registered
// eventfds (with DEFER_TASKRUN a ring's own fd does not signal pending work;
// reactor/uring/README.md). nbio's TcpConnection does not sit on this engine
// yet; this is what the kernel and the engine cost, measured alone.
//
// Echo: every byte received is sent back in order, one send in flight per
// connection; bytes that arrive meanwhile wait in a second per-connection
// buffer, and receiving stops while that holds 64 KiB or more. At EOF the
// rest is sent and the connection closed. An idle connection costs its
// ring's slot state and 9 bytes here (no buffer), and its socket in the
// kernel.
//
// SIGINT/SIGTERM: exits 0 (the kernel closes the connections), printing
// how many it held at most. SIGUSR1: prints every ring's counters.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "reactor/uring/stream_ring.h"
#include "tools/bench/echo_baseline.h"

namespace nbio {
namespace bench {
namespace {

constexpr size_t kPauseBytes = 64 * 1024;
// The next ring starts accepting when the current one has fewer free slots
// than this (more than its accept reserve, at most 1,024).
constexpr uint32_t kJoinMargin = 2048;

// One ring's connections: the echo of each slot. An idle connection has no
// buffer: a slot's Pending exists only while it has bytes to send.
class RingEcho : public UringStreamRing::Handler {
 public:
  explicit RingEcho(uint32_t slots) : pending_(slots), flags_(slots) {}
  void set_ring(UringStreamRing* ring) { ring_ = ring; }
  uint32_t open() const { return open_; }
  uint64_t accept_errors() const { return accept_errors_; }

  void OnAccept(uint32_t slot) override {
    ++open_;
    flags_[slot] = 0;
    ring_->StartReceive(slot);
  }
  void OnAcceptError(int error) override {
    ++accept_errors_;
    ++errors_by_errno_[-error];
  }
  const std::map<int, uint64_t>& errors_by_errno() const {
    return errors_by_errno_;
  }

  void OnData(uint32_t slot, const char* data, size_t len) override {
    std::unique_ptr<Pending>& p = pending_[slot];
    if (p == nullptr) p = std::make_unique<Pending>();
    p->waiting.append(data, len);
    SendNext(slot);
    if (p->waiting.size() >= kPauseBytes && !(flags_[slot] & kPaused)) {
      flags_[slot] |= kPaused;
      ring_->StopReceive(slot);
    }
  }

  void OnReceiveEnd(uint32_t slot, int error) override {
    flags_[slot] |= kEnded;
    if (error != 0 || !(flags_[slot] & kSending)) Close(slot);
  }

  void OnSendDone(uint32_t slot, int result) override {
    flags_[slot] &= ~kSending;
    if (result < 0) {
      Close(slot);
      return;
    }
    Pending& p = *pending_[slot];
    p.in_flight.erase(0, static_cast<size_t>(result));
    SendNext(slot);
    if ((flags_[slot] & kPaused) && p.waiting.size() < kPauseBytes / 2) {
      flags_[slot] &= ~kPaused;
      ring_->StartReceive(slot);
    }
    if (!(flags_[slot] & kSending)) {
      pending_[slot].reset();  // all sent: an idle connection keeps nothing
      if (flags_[slot] & kEnded) Close(slot);
    }
  }

  void OnClosed(uint32_t slot) override {
    --open_;
    pending_[slot].reset();
    flags_[slot] = 0;
  }

 private:
  struct Pending {
    std::string in_flight;  // what the send in flight points into
    std::string waiting;    // received meanwhile
    iovec iov;              // read by the kernel until the send completes
  };
  enum : uint8_t { kSending = 1, kPaused = 2, kEnded = 4, kClosing = 8 };

  // Sends what is left of in_flight, else the waiting bytes.
  void SendNext(uint32_t slot) {
    if (flags_[slot] & (kSending | kClosing)) return;
    Pending* p = pending_[slot].get();
    if (p == nullptr) return;
    if (p->in_flight.empty()) p->in_flight.swap(p->waiting);
    if (p->in_flight.empty()) return;
    p->iov.iov_base = p->in_flight.data();
    p->iov.iov_len = p->in_flight.size();
    flags_[slot] |= kSending;
    ring_->Send(slot, &p->iov, 1);
  }

  void Close(uint32_t slot) {
    if (flags_[slot] & kClosing) return;
    flags_[slot] |= kClosing;
    ring_->Close(slot);
  }

  UringStreamRing* ring_ = nullptr;
  std::vector<std::unique_ptr<Pending>> pending_;
  std::vector<uint8_t> flags_;
  uint32_t open_ = 0;
  uint64_t accept_errors_ = 0;
  std::map<int, uint64_t> errors_by_errno_;
};

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "uring_direct_echo: %s\n", what.c_str());
  std::exit(1);
}

}  // namespace
}  // namespace bench
}  // namespace nbio

int main(int argc, char** argv) {
  using nbio::UringStreamRing;
  using nbio::bench::RingEcho;
  // --capacity is ours; the rest is the baselines' command line.
  uint64_t capacity = 0;  // 0: one ring
  bool defer_taskrun = true;
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (absl::StartsWith(arg, "--capacity=")) {
      if (!absl::SimpleAtoi(arg.substr(11), &capacity) || capacity == 0 ||
          capacity > (uint64_t{1} << 32)) {
        std::fprintf(stderr,
                     "uring_direct_echo: --capacity must be a positive "
                     "integer, got \"%s\"\n",
                     argv[i]);
        return 2;
      }
    } else if (arg == "--defer_taskrun=0" || arg == "--defer_taskrun=1") {
      defer_taskrun = arg.back() == '1';
    } else if (arg == "--help" || arg == "-h") {
      std::printf(
          "uring_direct_echo: an echo server on io_uring direct descriptors "
          "(one thread, as many rings as --capacity needs).\n"
          "  --capacity=N        connections to make room for (default: one "
          "ring,\n                      RLIMIT_NOFILE of them)\n"
          "  --defer_taskrun=1   SINGLE_ISSUER|DEFER_TASKRUN where the kernel "
          "has\n                      them (0: COOP_TASKRUN)\n");
      rest.push_back(argv[i]);
    } else {
      rest.push_back(argv[i]);
    }
  }
  const nbio::SocketAddress address = nbio::bench::ParseEchoBaselineArgs(
      static_cast<int>(rest.size()), rest.data(), "uring_direct_echo");

  rlimit nofile{};
  getrlimit(RLIMIT_NOFILE, &nofile);
  const uint32_t per_ring = static_cast<uint32_t>(nofile.rlim_cur);
  const size_t rings_needed =
      capacity == 0 ? 1 : (capacity + per_ring - 1) / per_ring;

  const int listen_fd = nbio::bench::ListenOrDie(address);
  const int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) nbio::bench::Fail(std::string("epoll_create1: ") + strerror(errno));

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGUSR1);  // prints every ring's counters
  sigprocmask(SIG_BLOCK, &stop_signals, nullptr);
  const int sigfd = signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK);
  epoll_event sev{};
  sev.events = EPOLLIN;
  sev.data.u64 = ~uint64_t{0};
  epoll_ctl(epfd, EPOLL_CTL_ADD, sigfd, &sev);

  std::vector<std::unique_ptr<RingEcho>> echoes;
  std::vector<std::unique_ptr<UringStreamRing>> rings;
  for (size_t i = 0; i < rings_needed; ++i) {
    UringStreamRing::Options options;
    options.slots = per_ring;
    options.buffer_count = 64;  // per ring: 256 KiB of receive buffers
    options.buffer_bytes = 4096;
    options.event_fd = true;
    options.allow_defer_taskrun = defer_taskrun;
    auto echo = std::make_unique<RingEcho>(per_ring);
    absl::StatusOr<std::unique_ptr<UringStreamRing>> ring =
        UringStreamRing::Create(options, echo.get());
    // The locked-memory budget (without CAP_IPC_LOCK) is shared with the
    // user's other processes, and a closed ring's share comes back only
    // after the kernel's exit work: wait for it a little.
    for (int tries = 0; tries < 500 && !ring.ok() &&
                        absl::IsResourceExhausted(ring.status());
         ++tries) {
      usleep(10 * 1000);
      ring = UringStreamRing::Create(options, echo.get());
    }
    if (!ring.ok() && (absl::IsUnimplemented(ring.status()) ||
                       absl::IsPermissionDenied(ring.status()) ||
                       absl::IsUnavailable(ring.status()))) {
      nbio::bench::Fail("io_uring unavailable: " + ring.status().ToString());
    }
    if (!ring.ok()) {
      nbio::bench::Fail("ring " + std::to_string(i + 1) + " of " +
                        std::to_string(rings_needed) + ": " +
                        ring.status().ToString());
    }
    echo->set_ring(ring->get());
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, (*ring)->event_fd(), &ev) != 0) {
      nbio::bench::Fail(std::string("epoll_ctl: ") + strerror(errno));
    }
    echoes.push_back(std::move(echo));
    rings.push_back(std::move(*ring));
  }
  // Runs a ring until it has nothing more right now: each Wait submits what
  // the previous one's callbacks queued.
  auto drive = [&](UringStreamRing* ring) {
    for (;;) {
      absl::StatusOr<int> n = ring->Wait(0);
      if (!n.ok()) nbio::bench::Fail(n.status().ToString());
      if (*n == 0) return;
    }
  };
  // One ring accepts at a time, the next one joining when the current one
  // is nearly full (within its accept reserve, where it turns to one
  // single-shot accept at a time): with every ring's multishot accept on
  // the one listener, the rings filled one after the other anyway, and the
  // backlog stalled at each hand-over (measured at 1,000,000).
  size_t listening = 0;
  auto listen_more = [&] {
    while (listening < rings.size() &&
           (listening == 0 ||
            rings[listening - 1]->counters().slots_in_use +
                    std::min(nbio::bench::kJoinMargin, per_ring / 8) >=
                per_ring)) {
      absl::Status status = rings[listening]->Listen(listen_fd);
      if (!status.ok()) nbio::bench::Fail(status.ToString());
      drive(rings[listening].get());
      ++listening;
    }
  };
  for (auto& ring : rings) drive(ring.get());
  listen_more();
  std::fprintf(stderr,
               "uring_direct_echo: %zu rings of %u slots (%s), room for %zu "
               "connections\n",
               rings.size(), per_ring, rings[0]->setup_mode(),
               rings.size() * size_t{per_ring});
  nbio::bench::AnnounceListening(listen_fd);

  uint64_t most_open = 0;
  std::vector<epoll_event> events(rings.size() + 1);
  for (bool stop = false; !stop;) {
    const int n = epoll_wait(epfd, events.data(),
                             static_cast<int>(events.size()), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      nbio::bench::Fail(std::string("epoll_wait: ") + strerror(errno));
    }
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 == ~uint64_t{0}) {
        signalfd_siginfo info;
        while (read(sigfd, &info, sizeof(info)) == sizeof(info)) {
          if (info.ssi_signo != SIGUSR1) {
            stop = true;
            continue;
          }
          for (size_t r = 0; r < rings.size(); ++r) {
            const UringStreamRing::Counters& k = rings[r]->counters();
            if (k.accept_arms == 0 && k.slots_in_use == 0) continue;
            std::fprintf(stderr,
                         "ring %zu: in use %u, receives armed %u, buffers out "
                         "%u, ENOBUFS re-arms %llu, CQ overflows %llu, "
                         "accept arms %llu, open %u\n",
                         r, k.slots_in_use, k.receives_armed, k.buffers_out,
                         static_cast<unsigned long long>(k.enobufs_rearms),
                         static_cast<unsigned long long>(k.cq_overflows),
                         static_cast<unsigned long long>(k.accept_arms),
                         echoes[r]->open());
          }
        }
        continue;
      }
      UringStreamRing* ring = rings[events[i].data.u64].get();
      uint64_t count;
      while (read(ring->event_fd(), &count, sizeof(count)) > 0) {
      }
      drive(ring);
    }
    listen_more();
    uint64_t open = 0;
    for (auto& e : echoes) open += e->open();
    if (open > most_open) most_open = open;
  }
  uint64_t accept_errors = 0;
  std::map<int, uint64_t> by_errno;
  for (auto& e : echoes) {
    accept_errors += e->accept_errors();
    for (const auto& [err, n] : e->errors_by_errno()) by_errno[err] += n;
  }
  std::string errors;
  for (const auto& [err, n] : by_errno) {
    errors += " " + std::to_string(n) + " " + strerrorname_np(err);
  }
  std::fprintf(stderr,
               "uring_direct_echo: stopped; held at most %llu connections in "
               "%zu of %zu rings; %llu accept errors%s%s\n",
               static_cast<unsigned long long>(most_open), listening,
               rings.size(), static_cast<unsigned long long>(accept_errors),
               errors.empty() ? "" : ":", errors.c_str());
  return 0;
}
