// LoadGenerator: the coordinator and the per-thread raw epoll loops.
//
// Each Worker owns its connections, its epoll fd and its counters; nothing is
// shared between workers but the read-only BytePattern and the phase
// deadlines, which the coordinator publishes once (release) when ramp-up
// ends. Progress counters are relaxed atomics with one writer each.
#include "tools/load_generator.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "reactor/sys/syscall.h"
#include "tools/byte_pattern.h"

namespace nbio {
namespace load {
namespace {

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
constexpr int64_t kNanosPerSecond = 1000000000;
// Connects started per loop iteration at most, so that established
// connections keep being served while thousands are being opened.
constexpr size_t kConnectBatch = 256;
// Reads per readiness event at most (level-triggered: the rest comes on the
// next epoll_wait), so one busy connection cannot starve the others.
constexpr int kReadsPerEvent = 4;
constexpr size_t kScratchBytes = 256 * 1024;
constexpr int kMaxEvents = 1024;
// The longest a worker sleeps in epoll_wait, so it notices phase changes.
constexpr int kMaxWaitMs = 10;
// Extra time allowed for ramp-up on top of connections / connect_rate, and
// for closing everything at the end.
constexpr int64_t kRampSlackNs = 5 * kNanosPerSecond;
constexpr int64_t kHardCapSlackNs = 5 * kNanosPerSecond;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t ToNs(absl::Duration d) { return absl::ToInt64Nanoseconds(d); }

// User + system CPU time of this process so far.
double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return seconds(u.ru_utime) + seconds(u.ru_stime);
}

// One writer (the owning worker), any number of relaxed readers.
void Bump(std::atomic<uint64_t>& counter, uint64_t n = 1) {
  counter.store(counter.load(std::memory_order_relaxed) + n,
                std::memory_order_relaxed);
}

enum Phase : int { kRamp, kTimed, kStop };

// What the coordinator tells the workers.
struct Shared {
  std::atomic<int> phase{kRamp};
  // Written once before `phase` becomes kTimed (release); read only after a
  // worker has seen kTimed (acquire).
  int64_t warmup_end = kNever;
  int64_t measure_end = kNever;
  int64_t drain_end = kNever;
};

// What a worker tells the coordinator while it runs.
struct alignas(64) WorkerProgress {
  std::atomic<uint64_t> open{0};
  std::atomic<uint64_t> failed{0};
  std::atomic<uint64_t> messages{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<uint64_t> data_errors{0};
  std::atomic<bool> ramp_done{false};
  std::atomic<bool> finished{false};
};

bool IsLoopback(const SocketAddress& a) {
  if (a.family() == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(a.sockaddr_ptr());
    return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
  }
  const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(a.sockaddr_ptr());
  return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
}

class Worker {
 public:
  Worker(const LoadOptions& options, const BytePattern& pattern,
         Shared& shared, int index)
      : options_(options),
        pattern_(pattern),
        shared_(shared),
        size_(options.size),
        depth_(static_cast<uint64_t>(options.depth)),
        scratch_(kScratchBytes) {
    for (int i = index; i < options.connections; i += options.threads) {
      Conn c;
      c.global_index = static_cast<uint32_t>(i);
      c.start = BytePattern::Start(static_cast<uint64_t>(i));
      conns_.push_back(c);
    }
    send_times_.assign(conns_.size() * depth_, 0);
    // This worker's share of the connect rate.
    if (options.connect_rate > 0) {
      connect_interval_ns_ = static_cast<int64_t>(
          kNanosPerSecond * options.threads / options.connect_rate);
    }
  }

  ~Worker() {
    if (epoll_fd_ >= 0) close(epoll_fd_);
  }

  absl::Status Init() {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) return ErrnoStatus("epoll_create1", errno);
    return absl::OkStatus();
  }

  void Run();

  WorkerProgress& progress() { return progress_; }
  LoadResult& result() { return result_; }

 private:
  enum class State : uint8_t { kIdle, kConnecting, kOpen, kClosed };

  struct Conn {
    int fd = -1;
    State state = State::kIdle;
    bool echoed = false;     // any byte came back
    bool want_out = false;   // EPOLLOUT in the interest set
    uint32_t global_index = 0;
    uint64_t start = 0;      // stream start in the pattern
    uint64_t issued = 0;     // bytes of the messages begun so far
    uint64_t sent = 0;       // bytes written
    uint64_t received = 0;   // bytes checked against the stream
  };

  size_t IndexOf(const Conn& c) const {
    return static_cast<size_t>(&c - conns_.data());
  }
  bool Sending(int64_t now) const { return now < measure_end_; }

  void ConnectDue(int64_t now);
  void StartConnect(Conn& c);
  void ConnectFailed(Conn& c, int err);
  void Established(Conn& c);
  void OnEvent(Conn& c, uint32_t events);
  void OnReadable(Conn& c);
  void Consume(Conn& c, size_t n, int64_t now);
  void Flush(Conn& c);
  void SetWantWrite(Conn& c, bool want);
  // A read or write failed with `err` (not EAGAIN / EINTR): counts it and
  // gives the connection up.
  void IoFailed(Conn& c, int err);
  // The peer closed or reset the connection: counts what it leaves behind
  // (rejected, or closed mid-run with its outstanding bytes lost) and
  // closes it.
  void PeerGone(Conn& c);
  void Close(Conn& c);
  void Issue(Conn& c, uint64_t messages);
  void EndRamp();
  void Finish();
  void NoteConnectError(int err);
  void UpdateRampDone();

  const LoadOptions& options_;
  const BytePattern& pattern_;
  Shared& shared_;
  const uint64_t size_;
  const uint64_t depth_;

  int epoll_fd_ = -1;
  std::vector<Conn> conns_;
  // send_times_[i * depth + k % depth]: when message k of connection i began.
  std::vector<int64_t> send_times_;
  std::vector<uint8_t> scratch_;

  // Ramp-up.
  int64_t ramp_start_ = 0;
  int64_t connect_interval_ns_ = 0;  // 0: no pacing
  size_t next_to_connect_ = 0;
  uint64_t connecting_ = 0;
  bool out_of_fds_ = false;

  // Phases, copied from shared_ once ramp-up is over.
  bool timed_ = false;
  int64_t warmup_end_ = kNever;
  int64_t measure_end_ = kNever;
  int64_t drain_end_ = kNever;

  uint64_t open_ = 0;
  // Bytes issued and not yet echoed, over open connections.
  uint64_t unfinished_ = 0;

  WorkerProgress progress_;
  LoadResult result_;
};

void Worker::Run() {
  ramp_start_ = NowNs();
  std::vector<epoll_event> events(kMaxEvents);
  while (true) {
    const int64_t now = NowNs();
    const int phase = shared_.phase.load(std::memory_order_acquire);
    if (phase == kStop) break;
    if (phase == kRamp) {
      ConnectDue(now);
    } else if (!timed_) {
      timed_ = true;
      warmup_end_ = shared_.warmup_end;
      measure_end_ = shared_.measure_end;
      drain_end_ = shared_.drain_end;
      EndRamp();
    }
    if (timed_ && (now >= drain_end_ || (now >= measure_end_ && unfinished_ == 0))) {
      break;
    }

    int timeout_ms = kMaxWaitMs;
    if (phase == kRamp && connect_interval_ns_ > 0 &&
        next_to_connect_ < conns_.size()) {
      const int64_t due = ramp_start_ + static_cast<int64_t>(next_to_connect_) *
                                            connect_interval_ns_;
      const int64_t wait_ms = (due - now + 999999) / 1000000;
      timeout_ms = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(wait_ms, timeout_ms)));
    } else if (phase == kRamp && next_to_connect_ < conns_.size()) {
      timeout_ms = 0;  // more to connect right away
    }
    const int n = epoll_wait(epoll_fd_, events.data(), kMaxEvents, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Cannot happen with a valid epoll fd and buffer; stop rather than spin.
      std::fprintf(stderr, "echo_load: %s\n",
                   ErrnoStatus("epoll_wait", errno).ToString().c_str());
      ++result_.io_errors;
      break;
    }
    for (int i = 0; i < n; ++i) {
      OnEvent(conns_[events[i].data.u64], events[i].events);
    }
  }
  Finish();
  progress_.finished.store(true, std::memory_order_release);
}

void Worker::UpdateRampDone() {
  if (next_to_connect_ == conns_.size() && connecting_ == 0) {
    progress_.ramp_done.store(true, std::memory_order_release);
  }
}

void Worker::ConnectDue(int64_t now) {
  size_t due = conns_.size();
  if (connect_interval_ns_ > 0) {
    due = std::min<size_t>(
        conns_.size(),
        static_cast<size_t>((now - ramp_start_) / connect_interval_ns_) + 1);
  }
  due = std::min(due, next_to_connect_ + kConnectBatch);
  while (next_to_connect_ < due && !out_of_fds_) {
    StartConnect(conns_[next_to_connect_++]);
  }
  if (out_of_fds_) {
    // Out of descriptors: the rest is not attempted (see LoadResult).
    result_.out_of_fds += conns_.size() - next_to_connect_;
    Bump(progress_.failed, conns_.size() - next_to_connect_);
    for (; next_to_connect_ < conns_.size(); ++next_to_connect_) {
      conns_[next_to_connect_].state = State::kClosed;
    }
  }
  UpdateRampDone();
}

void Worker::NoteConnectError(int err) {
  if (result_.first_connect_error.empty()) {
    result_.first_connect_error = std::string(
        ErrnoStatus(absl::StrCat("connect(", options_.target.ToString(), ")"),
                    err)
            .message());
  }
}

void Worker::StartConnect(Conn& c) {
  const SocketAddress& target = options_.target;
  const int fd = socket(target.family(),
                        SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    const int err = errno;
    if (err == EMFILE || err == ENFILE) out_of_fds_ = true;
    c.state = State::kClosed;
    ConnectFailed(c, err);
    return;
  }
  c.fd = fd;
  const int one = 1;
  // Ping-pong latency must not wait for Nagle.
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (options_.sources > 1) {
    // Pick the port at connect() time, from the 4-tuple, so each source
    // address has its own ~28k ephemeral ports.
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr =
        htonl(INADDR_LOOPBACK + c.global_index % static_cast<uint32_t>(options_.sources));
    if (bind(fd, reinterpret_cast<const sockaddr*>(&src), sizeof(src)) != 0) {
      ConnectFailed(c, errno);
      return;
    }
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.u64 = IndexOf(c);
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    ConnectFailed(c, errno);
    return;
  }
  c.state = State::kConnecting;
  ++connecting_;
  if (connect(fd, target.sockaddr_ptr(), target.sockaddr_len()) == 0) {
    Established(c);
    return;
  }
  // EINTR on a non-blocking connect: the attempt goes on asynchronously.
  if (errno != EINPROGRESS && errno != EINTR) ConnectFailed(c, errno);
}

void Worker::ConnectFailed(Conn& c, int err) {
  switch (err) {
    case ECONNREFUSED:
      ++result_.refused;
      break;
    case ETIMEDOUT:
      ++result_.timed_out;
      break;
    case EMFILE:
    case ENFILE:
      ++result_.out_of_fds;
      break;
    case EADDRNOTAVAIL:
      ++result_.no_ports;
      break;
    default:
      ++result_.connect_errors;
      break;
  }
  NoteConnectError(err);
  if (c.state == State::kConnecting) --connecting_;
  if (c.fd >= 0) close(c.fd);
  c.fd = -1;
  c.state = State::kClosed;
  Bump(progress_.failed);
}

void Worker::Established(Conn& c) {
  --connecting_;
  c.state = State::kOpen;
  ++open_;
  progress_.open.store(open_, std::memory_order_relaxed);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = IndexOf(c);
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
  c.want_out = false;
  if (Sending(NowNs())) Issue(c, depth_);
  Flush(c);
}

void Worker::Issue(Conn& c, uint64_t messages) {
  c.issued += messages * size_;
  unfinished_ += messages * size_;
}

void Worker::OnEvent(Conn& c, uint32_t events) {
  if (c.state == State::kConnecting) {
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) {
      ConnectFailed(c, err);
    } else if (events & EPOLLOUT) {
      Established(c);
    }
    UpdateRampDone();
    return;
  }
  // Events for a connection closed earlier in this batch are stale.
  if (c.state != State::kOpen) return;
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) OnReadable(c);
  if (c.state == State::kOpen && (events & EPOLLOUT)) Flush(c);
}

void Worker::OnReadable(Conn& c) {
  for (int reads = 0; reads < kReadsPerEvent; ++reads) {
    const ssize_t n = read(c.fd, scratch_.data(), scratch_.size());
    const int err = errno;
    if (n > 0) {
      Consume(c, static_cast<size_t>(n), NowNs());
      if (static_cast<size_t>(n) < scratch_.size()) break;
      continue;
    }
    if (n == 0) {
      PeerGone(c);
      return;
    }
    if (err == EINTR) continue;
    if (err == EAGAIN) break;
    IoFailed(c, err);
    return;
  }
  if (c.issued > c.sent) Flush(c);
}

void Worker::Consume(Conn& c, size_t n, int64_t now) {
  result_.bytes_received += n;
  c.echoed = true;
  // Only what was sent can come back; anything beyond it is extra and is
  // dropped without moving the stream position.
  const uint64_t expected = std::min<uint64_t>(n, c.sent - c.received);
  const uint64_t mismatches =
      pattern_.CountMismatches(c.start + c.received, scratch_.data(), expected);
  const uint64_t extra = n - expected;
  if (mismatches + extra > 0) {
    result_.mismatches += mismatches;
    result_.extra += extra;
    Bump(progress_.data_errors, mismatches + extra);
  }
  // Messages whose last byte is in [received, received + expected).
  const uint64_t first = c.received / size_;
  c.received += expected;
  unfinished_ -= expected;
  const uint64_t done = c.received / size_;
  if (done == first) return;
  const bool measured = now >= warmup_end_ && now < measure_end_;
  const int64_t* times = &send_times_[IndexOf(c) * depth_];
  for (uint64_t k = first; k < done; ++k) {
    if (measured) {
      result_.latency_ns.Record(static_cast<uint64_t>(now - times[k % depth_]));
    }
  }
  if (measured) result_.messages += done - first;
  result_.messages_total += done - first;
  Bump(progress_.messages, done - first);
  if (Sending(now)) Issue(c, done - first);
}

void Worker::Flush(Conn& c) {
  while (c.sent < c.issued) {
    iovec iov[2];
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(
        pattern_.Slices(c.start + c.sent, c.issued - c.sent, iov));
    const int64_t now = NowNs();
    const ssize_t n = sendmsg(c.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      // Stamp the messages whose first byte went out in this write.
      const uint64_t from = c.sent;
      const uint64_t to = c.sent + static_cast<uint64_t>(n);
      int64_t* times = &send_times_[IndexOf(c) * depth_];
      for (uint64_t k = (from + size_ - 1) / size_; k * size_ < to; ++k) {
        times[k % depth_] = now;
      }
      c.sent = to;
      result_.bytes_sent += static_cast<uint64_t>(n);
      continue;
    }
    const int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN) {
      SetWantWrite(c, true);
      return;
    }
    IoFailed(c, err);
    return;
  }
  SetWantWrite(c, false);
}

void Worker::SetWantWrite(Conn& c, bool want) {
  if (c.want_out == want) return;
  c.want_out = want;
  epoll_event ev{};
  ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
  ev.data.u64 = IndexOf(c);
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
}

void Worker::IoFailed(Conn& c, int err) {
  // A reset shows as ECONNRESET on read, and as EPIPE or ECONNRESET on write.
  if (err == ECONNRESET || err == EPIPE) {
    ++result_.resets;
  } else {
    ++result_.io_errors;
  }
  Bump(progress_.errors);
  PeerGone(c);
}

void Worker::PeerGone(Conn& c) {
  if (c.echoed) {
    ++result_.closed_by_peer;
    result_.lost += c.sent - c.received;
  } else {
    ++result_.rejected;
  }
  Bump(progress_.failed);
  Close(c);
}

void Worker::Close(Conn& c) {
  if (c.state == State::kOpen) {
    --open_;
    progress_.open.store(open_, std::memory_order_relaxed);
    unfinished_ -= c.issued - c.received;
  }
  close(c.fd);  // also leaves the epoll set
  c.fd = -1;
  c.state = State::kClosed;
}

void Worker::EndRamp() {
  // The ramp cap was reached (or ramp-up ended without us): whatever is not
  // established now never will be, within the time this run allows.
  for (size_t i = 0; i < conns_.size(); ++i) {
    Conn& c = conns_[i];
    if (c.state == State::kConnecting) {
      ConnectFailed(c, ETIMEDOUT);
    } else if (c.state == State::kIdle) {
      c.state = State::kClosed;
      ++result_.timed_out;
      Bump(progress_.failed);
    }
  }
  next_to_connect_ = conns_.size();
}

void Worker::Finish() {
  // Connections never established end as at the end of the ramp.
  EndRamp();
  for (Conn& c : conns_) {
    if (c.state != State::kOpen) continue;
    if (!c.echoed) {
      ++result_.unanswered;
    } else {
      ++result_.connections_ok;
      result_.lost += c.sent - c.received;
    }
    Close(c);
  }
}

}  // namespace

uint64_t LoadResult::connections_failed() const {
  return refused + timed_out + out_of_fds + no_ports + connect_errors +
         rejected + unanswered + closed_by_peer;
}

absl::Status ValidateOptions(const LoadOptions& o) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(parts...));
  };
  if (o.target.port() == 0) return bad("--target needs a port other than 0");
  if (!o.allow_remote && !IsLoopback(o.target)) {
    return bad("--target ", o.target.ToString(),
               " is not a loopback address (127.0.0.0/8 or ::1); pass "
               "--allow_remote to load a remote server on purpose");
  }
  if (o.connections < 1 || o.connections > (1 << 20)) {
    return bad("--connections must be from 1 to ", 1 << 20);
  }
  if (o.size < 1) return bad("--size must be at least 1 byte");
  if (o.depth < 1) return bad("--depth must be at least 1");
  if (static_cast<uint64_t>(o.size) * static_cast<uint64_t>(o.depth) >
      kMaxBytesInFlight) {
    return bad("--size * --depth (bytes in flight per connection) must be at most ",
               kMaxBytesInFlight);
  }
  if (o.duration <= absl::ZeroDuration() || o.duration > absl::Hours(24)) {
    return bad("--duration must be more than 0 and at most 24h");
  }
  if (o.warmup < absl::ZeroDuration() || o.warmup > absl::Hours(1)) {
    return bad("--warmup must be from 0 to 1h");
  }
  if (o.drain_timeout < absl::ZeroDuration() ||
      o.drain_timeout > absl::Minutes(1)) {
    return bad("--drain_timeout must be from 0 to 1m");
  }
  if (!(o.connect_rate >= 0) || !std::isfinite(o.connect_rate)) {
    return bad("--connect_rate must be 0 (no limit) or a positive number");
  }
  if (o.connect_rate > 0 && o.connections / o.connect_rate > 3600) {
    return bad("--connect_rate is too low: ramp-up would take over an hour");
  }
  if (o.threads < 1 || o.threads > 64) return bad("--threads must be from 1 to 64");
  if (o.threads > o.connections) {
    return bad("--threads must not exceed --connections");
  }
  if (o.sources < 1 || o.sources > kMaxSources) {
    return bad("--sources must be from 1 to ", kMaxSources);
  }
  if (o.sources > 1 && o.target.family() != AF_INET) {
    return bad("--sources > 1 binds to 127.0.0.x, so it needs an IPv4 --target");
  }

  // One descriptor per connection, and a few more.
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return ErrnoStatus("getrlimit(RLIMIT_NOFILE)", errno);
  }
  const rlim_t needed = static_cast<rlim_t>(o.connections) + kSpareFds;
  if (limit.rlim_cur < needed) {
    if (limit.rlim_max < needed) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "--connections=", o.connections, " needs about ", needed,
          " file descriptors, but this process may open at most ",
          limit.rlim_max,
          " (RLIMIT_NOFILE hard limit; 20000 on nbio's machines, and not "
          "raisable there): use at most ",
          limit.rlim_max > kSpareFds ? limit.rlim_max - kSpareFds : 0,
          " connections per echo_load process"));
    }
    limit.rlim_cur = needed;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      return ErrnoStatus("setrlimit(RLIMIT_NOFILE)", errno);
    }
  }
  return absl::OkStatus();
}

LoadGenerator::LoadGenerator(const LoadOptions& options) : options_(options) {}

absl::StatusOr<LoadResult> LoadGenerator::Run(
    absl::FunctionRef<void(const LoadProgress&)> on_progress) {
  const BytePattern pattern;
  Shared shared;
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < options_.threads; ++i) {
    workers.push_back(std::make_unique<Worker>(options_, pattern, shared, i));
    absl::Status status = workers.back()->Init();
    if (!status.ok()) return status;
  }

  const int64_t start = NowNs();
  const double cpu_start = ProcessCpuSeconds();
  int64_t ramp_cap = kRampSlackNs;
  if (options_.connect_rate > 0) {
    ramp_cap += static_cast<int64_t>(kNanosPerSecond * options_.connections /
                                     options_.connect_rate);
  }
  const int64_t warmup = ToNs(options_.warmup);
  const int64_t duration = ToNs(options_.duration);
  const int64_t drain = ToNs(options_.drain_timeout);
  const int64_t hard_cap =
      start + ramp_cap + warmup + duration + drain + kHardCapSlackNs;

  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back([&w] { w->Run(); });

  int64_t next_progress = start + kNanosPerSecond / 4;
  int64_t ramp_end = 0;
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const int64_t now = NowNs();
    LoadProgress p;
    bool all_ramped = true;
    bool all_finished = true;
    for (auto& w : workers) {
      WorkerProgress& wp = w->progress();
      p.open += wp.open.load(std::memory_order_relaxed);
      p.failed += wp.failed.load(std::memory_order_relaxed);
      p.messages += wp.messages.load(std::memory_order_relaxed);
      p.errors += wp.errors.load(std::memory_order_relaxed);
      p.data_errors += wp.data_errors.load(std::memory_order_relaxed);
      all_ramped &= wp.ramp_done.load(std::memory_order_acquire);
      all_finished &= wp.finished.load(std::memory_order_acquire);
    }
    if (all_finished) break;

    const int phase = shared.phase.load(std::memory_order_relaxed);
    if (phase == kRamp && (all_ramped || now >= start + ramp_cap)) {
      ramp_end = now;
      if (all_ramped && p.open == 0) {
        // No connection to load: nothing to wait for.
        shared.phase.store(kStop, std::memory_order_release);
      } else {
        shared.warmup_end = now + warmup;
        shared.measure_end = shared.warmup_end + duration;
        shared.drain_end = shared.measure_end + drain;
        shared.phase.store(kTimed, std::memory_order_release);
      }
    }
    if (now >= hard_cap) {
      // Workers bound every wait, so this is a bug: never hang a benchmark.
      std::fprintf(stderr,
                   "\necho_load: internal error: the run overran its hard "
                   "time cap; exiting\n");
      std::fflush(stderr);
      std::_Exit(4);
    }
    if (now >= next_progress) {
      next_progress = now + kNanosPerSecond / 4;
      p.elapsed_seconds = static_cast<double>(now - start) / kNanosPerSecond;
      const int current = shared.phase.load(std::memory_order_relaxed);
      if (current == kRamp) {
        p.phase = "ramp-up";
      } else if (current == kStop) {
        p.phase = "stopping";
      } else if (now < shared.warmup_end) {
        p.phase = "warmup";
      } else if (now < shared.measure_end) {
        p.phase = "measure";
      } else {
        p.phase = "drain";
      }
      on_progress(p);
    }
  }
  for (auto& t : threads) t.join();

  LoadResult total;
  for (auto& w : workers) {
    const LoadResult& r = w->result();
    total.connections_ok += r.connections_ok;
    total.refused += r.refused;
    total.timed_out += r.timed_out;
    total.out_of_fds += r.out_of_fds;
    total.no_ports += r.no_ports;
    total.connect_errors += r.connect_errors;
    total.rejected += r.rejected;
    total.unanswered += r.unanswered;
    total.closed_by_peer += r.closed_by_peer;
    total.resets += r.resets;
    total.io_errors += r.io_errors;
    total.messages += r.messages;
    total.messages_total += r.messages_total;
    total.bytes_sent += r.bytes_sent;
    total.bytes_received += r.bytes_received;
    total.latency_ns.Merge(r.latency_ns);
    total.mismatches += r.mismatches;
    total.lost += r.lost;
    total.extra += r.extra;
    if (total.first_connect_error.empty()) {
      total.first_connect_error = r.first_connect_error;
    }
  }
  total.window_seconds = absl::ToDoubleSeconds(options_.duration);
  total.ramp_up_seconds =
      static_cast<double>((ramp_end != 0 ? ramp_end : NowNs()) - start) /
      kNanosPerSecond;
  total.run_seconds = static_cast<double>(NowNs() - start) / kNanosPerSecond;
  total.cpu_seconds = ProcessCpuSeconds() - cpu_start;
  return total;
}

}  // namespace load
}  // namespace nbio
