// LoadGenerator: the coordinator and the per-thread raw epoll loops.
//
// Each Worker owns its connections, its epoll fd and its counters; nothing is
// shared between workers but the read-only BytePattern and the phase
// deadlines, which the coordinator publishes once (release) when ramp-up
// ends. Progress counters are relaxed atomics with one writer each.
#include "tools/load_generator.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
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
#include <type_traits>
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
// Hold mode's phases for the progress display, in the order they come.
const char* const kHoldPhases[] = {"ramp-up", "hold", "close"};

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
  std::atomic<uint64_t> established{0};
  std::atomic<uint64_t> verified{0};
  std::atomic<uint64_t> closed{0};
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
  Worker(const LoadOptions& options, const BytePattern& pattern, Shared& shared,
         int index)
      : options_(options),
        pattern_(pattern),
        shared_(shared),
        size_(options.size),
        depth_(static_cast<uint64_t>(options.depth)),
        hold_(options.hold),
        scratch_(kScratchBytes) {
    for (int i = index; i < options.connections; i += options.threads) {
      Conn c;
      c.local_index = static_cast<uint32_t>(i);
      c.global_index = static_cast<uint32_t>(options.index_offset + i);
      c.start = BytePattern::Start(static_cast<uint64_t>(i));
      conns_.push_back(c);
    }
    send_times_.assign(conns_.size() * depth_, 0);
    // This worker's share of the connect rate.
    if (options.connect_rate > 0) {
      connect_interval_ns_ = static_cast<int64_t>(
          kNanosPerSecond * options.threads / options.connect_rate);
    }
    // This worker's share of the connects in flight.
    if (options.max_connecting > 0) {
      max_connecting_ = static_cast<uint64_t>(
          std::max(1, options.max_connecting / options.threads));
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

  void Run(int64_t start);

  WorkerProgress& progress() { return progress_; }
  LoadResult& result() { return result_; }

 private:
  // kClosing: hold mode's close phase, FIN sent, waiting for the server's.
  enum class State : uint8_t { kIdle, kConnecting, kOpen, kClosing, kClosed };

  struct Conn {
    int fd = -1;
    State state = State::kIdle;
    bool echoed = false;        // any byte came back
    bool want_out = false;      // EPOLLOUT in the interest set
    bool corrupt = false;       // a mismatched or extra byte came back
    uint32_t local_index = 0;   // in this process
    uint32_t global_index = 0;  // in the run: picks the byte stream
    uint64_t start = 0;         // stream start in the pattern
    uint64_t issued = 0;        // bytes of the messages begun so far
    uint64_t sent = 0;          // bytes written
    uint64_t received = 0;      // bytes checked against the stream
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
  // Hold mode: shuts every open connection down for writing.
  void StartClosing(int64_t now);
  // Hold mode, close phase: readable or EOF on a connection being closed.
  void OnClosingReadable(Conn& c);
  void Finish();
  void NoteConnectError(int err);
  void UpdateRampDone();

  const LoadOptions& options_;
  const BytePattern& pattern_;
  Shared& shared_;
  const uint64_t size_;
  const uint64_t depth_;
  const bool hold_;

  int epoll_fd_ = -1;
  std::vector<Conn> conns_;
  // send_times_[i * depth + k % depth]: when message k of connection i began.
  std::vector<int64_t> send_times_;
  std::vector<uint8_t> scratch_;

  // Ramp-up.
  int64_t ramp_start_ = 0;
  int64_t connect_interval_ns_ = 0;  // 0: no pacing
  uint64_t max_connecting_ = std::numeric_limits<uint64_t>::max();
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
  // Hold mode: the close phase.
  bool closing_started_ = false;
  int64_t close_start_ = 0;
  uint64_t closing_ = 0;  // connections in State::kClosing
  int64_t last_established_ = 0;
  int64_t last_verified_ = 0;
  int64_t last_closed_ = 0;

  WorkerProgress progress_;
  LoadResult result_;
};

void Worker::Run(int64_t start) {
  ramp_start_ = NowNs();
  std::vector<epoll_event> events(kMaxEvents);
  while (true) {
    const int64_t now = NowNs();
    const int phase = shared_.phase.load(std::memory_order_acquire);
    if (phase == kStop) break;
    if (phase == kRamp) {
      ConnectDue(now);
      UpdateRampDone();
    } else if (!timed_) {
      timed_ = true;
      warmup_end_ = shared_.warmup_end;
      measure_end_ = shared_.measure_end;
      drain_end_ = shared_.drain_end;
      EndRamp();
    }
    if (timed_ && hold_) {
      // measure_end_ is the end of the hold, drain_end_ of the close phase.
      if (!closing_started_ && now >= measure_end_) StartClosing(now);
      if (closing_started_ && (closing_ == 0 || now >= drain_end_)) break;
    } else if (timed_ && (now >= drain_end_ ||
                          (now >= measure_end_ && unfinished_ == 0))) {
      break;
    }

    int timeout_ms = kMaxWaitMs;
    if (phase == kRamp && connect_interval_ns_ > 0 &&
        next_to_connect_ < conns_.size()) {
      const int64_t due = ramp_start_ + static_cast<int64_t>(next_to_connect_) *
                                            connect_interval_ns_;
      const int64_t wait_ms = (due - now + 999999) / 1000000;
      timeout_ms = static_cast<int>(
          std::max<int64_t>(0, std::min<int64_t>(wait_ms, timeout_ms)));
    } else if (phase == kRamp && next_to_connect_ < conns_.size() &&
               connecting_ < max_connecting_) {
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
  auto since_start = [start](int64_t t) {
    return t == 0 ? 0.0 : static_cast<double>(t - start) / kNanosPerSecond;
  };
  result_.last_established_seconds = since_start(last_established_);
  result_.round_trip_all_seconds = since_start(last_verified_);
  if (closing_started_) {
    result_.close_seconds =
        static_cast<double>(std::max(last_closed_, close_start_) -
                            close_start_) /
        kNanosPerSecond;
  }
  progress_.finished.store(true, std::memory_order_release);
}

void Worker::UpdateRampDone() {
  // In hold mode ramp-up also waits for every round trip.
  if (next_to_connect_ == conns_.size() && connecting_ == 0 &&
      (!hold_ || unfinished_ == 0)) {
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
  if (connecting_ >= max_connecting_) return;
  const uint64_t room = max_connecting_ - connecting_;  // no overflow here
  if (due > next_to_connect_ && due - next_to_connect_ > room) {
    due = next_to_connect_ + static_cast<size_t>(room);
  }
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
  const int fd =
      socket(target.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
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
  if (options_.sources > 1 || options_.source_offset > 0) {
    // Pick the port at connect() time, from the 4-tuple, so each source
    // address has its own ~28k ephemeral ports.
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(SourceAddress(
        options_.source_offset +
        static_cast<int>(c.local_index %
                         static_cast<uint32_t>(options_.sources))));
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
  ++result_.established;
  last_established_ = NowNs();
  progress_.open.store(open_, std::memory_order_relaxed);
  Bump(progress_.established);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = IndexOf(c);
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
  c.want_out = false;
  // Hold mode: one message, the round trip that verifies the connection.
  if (Sending(NowNs())) Issue(c, hold_ ? 1 : depth_);
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
  if (c.state == State::kClosing) {
    OnClosingReadable(c);
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
    c.corrupt = true;
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
  if (first == 0 && !c.corrupt) {
    // The connection's first message came back whole and intact.
    ++result_.verified;
    last_verified_ = now;
    Bump(progress_.verified);
  }
  if (Sending(now) && !hold_) Issue(c, done - first);
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
  if (c.state == State::kOpen || c.state == State::kClosing) {
    --open_;
    progress_.open.store(open_, std::memory_order_relaxed);
    unfinished_ -= c.issued - c.received;
  }
  if (c.state == State::kClosing) --closing_;
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

void Worker::StartClosing(int64_t now) {
  closing_started_ = true;
  close_start_ = now;
  for (Conn& c : conns_) {
    if (c.state != State::kOpen) continue;
    // FIN now; the server's FIN (EOF) then closes it in OnClosingReadable.
    if (shutdown(c.fd, SHUT_WR) != 0) {
      IoFailed(c, errno);
      continue;
    }
    c.state = State::kClosing;
    ++closing_;
    SetWantWrite(c, false);
  }
}

void Worker::OnClosingReadable(Conn& c) {
  for (int reads = 0; reads < kReadsPerEvent; ++reads) {
    const ssize_t n = read(c.fd, scratch_.data(), scratch_.size());
    const int err = errno;
    if (n > 0) {
      Consume(c, static_cast<size_t>(n), NowNs());
      continue;
    }
    if (n == 0) {
      // A clean close: both FINs, everything verified up to here.
      if (c.echoed) {
        ++result_.connections_ok;
        result_.lost += c.sent - c.received;
      } else {
        ++result_.unanswered;
        Bump(progress_.failed);
      }
      last_closed_ = NowNs();
      Bump(progress_.closed);
      Close(c);
      return;
    }
    if (err == EINTR) continue;
    if (err == EAGAIN) return;
    // A reset instead of the server's FIN: not a clean close.
    if (err == ECONNRESET || err == EPIPE) {
      ++result_.resets;
    } else {
      ++result_.io_errors;
    }
    Bump(progress_.errors);
    ++result_.unclosed;
    Bump(progress_.failed);
    result_.lost += c.sent - c.received;
    Close(c);
    return;
  }
}

void Worker::Finish() {
  // Connections never established end as at the end of the ramp.
  EndRamp();
  for (Conn& c : conns_) {
    if (c.state == State::kClosing) {
      // No EOF from the server before the close phase ended.
      ++result_.unclosed;
      result_.lost += c.sent - c.received;
      Close(c);
      continue;
    }
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

// --- Worker processes ------------------------------------------------------
//
// A worker process talks to its parent over two pipes: records up its
// progress pipe (kProgress every ~250 ms and when its ramp-up is done, then
// one kResult), and one byte down its control pipe when every process has
// finished ramping up, so the timed phases start together. The records are
// plain bytes: parent and child are the same binary.

// The counters of LoadResult, summed over threads and processes.
#define NBIO_LOAD_RESULT_COUNTERS(X)                                     \
  X(connections_ok)                                                      \
  X(refused) X(timed_out) X(out_of_fds) X(no_ports) X(connect_errors)    \
      X(rejected) X(unanswered) X(closed_by_peer) X(unclosed) X(resets)  \
          X(io_errors) X(messages) X(messages_total) X(bytes_sent)       \
              X(bytes_received) X(established) X(verified) X(mismatches) \
                  X(lost) X(extra)
// The times of LoadResult, of which the run's is the latest.
#define NBIO_LOAD_RESULT_TIMES(X)                                       \
  X(ramp_up_seconds)                                                    \
  X(last_established_seconds) X(round_trip_all_seconds) X(hold_seconds) \
      X(close_seconds)

void Accumulate(LoadResult& total, const LoadResult& r) {
#define NBIO_ADD(field) total.field += r.field;
#define NBIO_MAX(field) total.field = std::max(total.field, r.field);
  NBIO_LOAD_RESULT_COUNTERS(NBIO_ADD)
  NBIO_LOAD_RESULT_TIMES(NBIO_MAX)
#undef NBIO_ADD
#undef NBIO_MAX
  total.cpu_seconds += r.cpu_seconds;
  total.latency_ns.Merge(r.latency_ns);
  if (total.first_connect_error.empty()) {
    total.first_connect_error = r.first_connect_error;
  }
}

enum RecordType : uint32_t { kProgressRecord = 1, kResultRecord = 2 };

struct WireProgress {
  uint32_t type = kProgressRecord;
  uint32_t phase = 0;  // index into kHoldPhases / kTimedPhases
  uint64_t open = 0, failed = 0, messages = 0, errors = 0, data_errors = 0,
           established = 0, verified = 0, closed = 0;
  uint32_t ramp_done = 0;
};

// LoadResult without its string, as bytes.
struct WireResult {
  uint32_t type = kResultRecord;
#define NBIO_FIELD(field) uint64_t field = 0;
  NBIO_LOAD_RESULT_COUNTERS(NBIO_FIELD)
#undef NBIO_FIELD
#define NBIO_FIELD(field) double field = 0;
  NBIO_LOAD_RESULT_TIMES(NBIO_FIELD)
#undef NBIO_FIELD
  double cpu_seconds = 0;
  LatencyHistogram latency_ns;
  char first_connect_error[256] = {};
};
static_assert(std::is_trivially_copyable<WireResult>::value, "sent as bytes");

const char* const kTimedPhases[] = {"ramp-up", "warmup", "measure", "drain",
                                    "stopping"};

uint32_t PhaseIndex(const char* phase, bool hold) {
  const char* const* names = hold ? kHoldPhases : kTimedPhases;
  const int n = hold ? 3 : 5;
  for (int i = 0; i < n; ++i) {
    if (std::strcmp(names[i], phase) == 0) return static_cast<uint32_t>(i);
  }
  return 0;
}

// Writes all of `data` (blocking); false when the parent is gone.
bool WriteAll(int fd, const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const ssize_t n = write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

void SendProgress(int fd, const LoadProgress& p, bool hold, bool ramp_done) {
  WireProgress w;
  w.phase = PhaseIndex(p.phase, hold);
  w.open = p.open;
  w.failed = p.failed;
  w.messages = p.messages;
  w.errors = p.errors;
  w.data_errors = p.data_errors;
  w.established = p.established;
  w.verified = p.verified;
  w.closed = p.closed;
  w.ramp_done = ramp_done ? 1 : 0;
  WriteAll(fd, &w, sizeof(w));
}

void SendResult(int fd, const LoadResult& r) {
  auto w = std::make_unique<WireResult>();
#define NBIO_COPY(field) w->field = r.field;
  NBIO_LOAD_RESULT_COUNTERS(NBIO_COPY)
  NBIO_LOAD_RESULT_TIMES(NBIO_COPY)
#undef NBIO_COPY
  w->cpu_seconds = r.cpu_seconds;
  w->latency_ns = r.latency_ns;
  std::snprintf(w->first_connect_error, sizeof(w->first_connect_error), "%s",
                r.first_connect_error.c_str());
  WriteAll(fd, w.get(), sizeof(*w));
}

LoadResult FromWire(const WireResult& w) {
  LoadResult r;
#define NBIO_COPY(field) r.field = w.field;
  NBIO_LOAD_RESULT_COUNTERS(NBIO_COPY)
  NBIO_LOAD_RESULT_TIMES(NBIO_COPY)
#undef NBIO_COPY
  r.cpu_seconds = w.cpu_seconds;
  r.latency_ns = w.latency_ns;
  r.first_connect_error = w.first_connect_error;
  return r;
}

// One worker process as the parent sees it.
struct Child {
  pid_t pid = -1;
  int progress_fd = -1;        // read end
  int control_fd = -1;         // write end
  std::vector<uint8_t> inbox;  // bytes of a record not yet complete
  WireProgress last;
  bool has_result = false;
  LoadResult result;
  bool eof = false;
};

}  // namespace

uint32_t SourceAddress(int k) {
  return (uint32_t{127} << 24) | (static_cast<uint32_t>(k / 254) << 8) |
         static_cast<uint32_t>(1 + k % 254);
}

uint64_t LoadResult::connections_failed() const {
  return refused + timed_out + out_of_fds + no_ports + connect_errors +
         rejected + unanswered + closed_by_peer + unclosed;
}

double LoadResult::ramp_rate() const {
  return last_established_seconds > 0
             ? static_cast<double>(established) / last_established_seconds
             : 0;
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
  if (o.connections < 1 || o.connections > (1 << 21)) {
    return bad("--connections must be from 1 to ", 1 << 21);
  }
  if (o.size < 1) return bad("--size must be at least 1 byte");
  if (o.depth < 1) return bad("--depth must be at least 1");
  if (static_cast<uint64_t>(o.size) * static_cast<uint64_t>(o.depth) >
      kMaxBytesInFlight) {
    return bad(
        "--size * --depth (bytes in flight per connection) must be at most ",
        kMaxBytesInFlight);
  }
  if (o.duration <= absl::ZeroDuration() || o.duration > absl::Hours(24)) {
    return bad("--duration must be more than 0 and at most 24h");
  }
  if (o.warmup < absl::ZeroDuration() || o.warmup > absl::Hours(1)) {
    return bad("--warmup must be from 0 to 1h");
  }
  if (o.hold_time < absl::ZeroDuration() || o.hold_time > absl::Hours(24)) {
    return bad("--hold_time must be from 0 to 24h");
  }
  if (o.drain_timeout < absl::ZeroDuration() ||
      o.drain_timeout > absl::Minutes(10)) {
    return bad("--drain_timeout must be from 0 to 10m");
  }
  if (!(o.connect_rate >= 0) || !std::isfinite(o.connect_rate)) {
    return bad("--connect_rate must be 0 (no limit) or a positive number");
  }
  if (o.connect_rate > 0 && o.connections / o.connect_rate > 3600) {
    return bad("--connect_rate is too low: ramp-up would take over an hour");
  }
  if (o.max_connecting < 0) {
    return bad("--max_connecting must be 0 (no limit) or positive");
  }
  if (o.processes < 1 || o.processes > kMaxProcesses) {
    return bad("--processes must be from 1 to ", kMaxProcesses);
  }
  if (o.processes > o.connections) {
    return bad("--processes must not exceed --connections");
  }
  // Each process's share, rounded up.
  const int per_process = (o.connections + o.processes - 1) / o.processes;
  if (o.threads < 1 || o.threads > 64)
    return bad("--threads must be from 1 to 64");
  if (o.threads > per_process) {
    return bad("--threads must not exceed --connections / --processes");
  }
  if (o.sources < 1 || o.sources > kMaxSources) {
    return bad("--sources must be from 1 to ", kMaxSources);
  }
  if (o.sources > 1 && o.target.family() != AF_INET) {
    return bad(
        "--sources > 1 binds to 127.0.x.y, so it needs an IPv4 --target");
  }

  // One descriptor per connection, and a few more, in each process.
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return ErrnoStatus("getrlimit(RLIMIT_NOFILE)", errno);
  }
  const rlim_t needed = static_cast<rlim_t>(per_process) + kSpareFds;
  if (limit.rlim_cur < needed) {
    if (limit.rlim_max < needed) {
      const uint64_t most =
          limit.rlim_max > kSpareFds ? limit.rlim_max - kSpareFds : 0;
      return absl::ResourceExhaustedError(absl::StrCat(
          "--connections=", o.connections, " over --processes=", o.processes,
          " needs about ", needed,
          " file descriptors per process, but a process may open at most ",
          limit.rlim_max,
          " (RLIMIT_NOFILE hard limit; 20000 on nbio's machines, and not "
          "raisable there): use at most ",
          most, " connections per echo_load process (--processes=",
          most > 0 ? (o.connections + most - 1) / most : 0, " or more)"));
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
  if (options_.processes > 1) return RunProcesses(on_progress);
  return RunHere(on_progress);
}

absl::StatusOr<LoadResult> LoadGenerator::RunHere(
    absl::FunctionRef<void(const LoadProgress&)> on_progress) {
  const BytePattern pattern;
  Shared shared;
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < options_.threads; ++i) {
    workers.push_back(std::make_unique<Worker>(options_, pattern, shared, i));
    absl::Status status = workers.back()->Init();
    if (!status.ok()) return status;
  }

  const int64_t start = options_.start_ns != 0 ? options_.start_ns : NowNs();
  const double cpu_start = ProcessCpuSeconds();
  const bool hold = options_.hold;
  int64_t ramp_cap = kRampSlackNs;
  if (options_.connect_rate > 0) {
    ramp_cap += static_cast<int64_t>(kNanosPerSecond * options_.connections /
                                     options_.connect_rate);
  }
  const int64_t drain = ToNs(options_.drain_timeout);
  // Hold mode: the last round trips may take up to drain_timeout.
  if (hold) ramp_cap += drain;
  // In hold mode "warmup" is empty and "measure" is the hold.
  const int64_t warmup = hold ? 0 : ToNs(options_.warmup);
  const int64_t duration =
      hold ? ToNs(options_.hold_time) : ToNs(options_.duration);
  const int64_t hard_cap =
      start + ramp_cap + warmup + duration + drain + kHardCapSlackNs;

  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back([&w, start] { w->Run(start); });

  // With a parent (worker process): ramp-up ends when the parent says so,
  // which it does once every process has finished its ramp-up.
  const int control_fd = options_.control_fd;
  bool told_ramp_done = false;

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
      p.established += wp.established.load(std::memory_order_relaxed);
      p.verified += wp.verified.load(std::memory_order_relaxed);
      p.closed += wp.closed.load(std::memory_order_relaxed);
      all_ramped &= wp.ramp_done.load(std::memory_order_acquire);
      all_finished &= wp.finished.load(std::memory_order_acquire);
    }
    if (all_finished) break;

    const int phase = shared.phase.load(std::memory_order_relaxed);
    bool end_ramp = phase == kRamp && (all_ramped || now >= start + ramp_cap);
    if (end_ramp && control_fd >= 0) {
      if (!told_ramp_done) {
        told_ramp_done = true;
        p.phase = "ramp-up";
        SendProgress(options_.progress_fd, p, hold, /*ramp_done=*/true);
      }
      // Wait for the parent's go (EOF too: never hang on a dead parent).
      pollfd pfd{control_fd, POLLIN, 0};
      end_ramp = poll(&pfd, 1, 0) == 1;
    }
    if (end_ramp) {
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
    // Waiting for the other processes' ramp-up moves the cap along.
    const int64_t late =
        ramp_end > start + ramp_cap ? ramp_end - (start + ramp_cap) : 0;
    if (now >= hard_cap + late) {
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
      } else if (hold) {
        p.phase = now < shared.measure_end ? "hold" : "close";
      } else if (now < shared.warmup_end) {
        p.phase = "warmup";
      } else if (now < shared.measure_end) {
        p.phase = "measure";
      } else {
        p.phase = "drain";
      }
      if (options_.progress_fd >= 0) {
        SendProgress(options_.progress_fd, p, hold, told_ramp_done);
      } else {
        on_progress(p);
      }
    }
  }
  for (auto& t : threads) t.join();

  LoadResult total;
  for (auto& w : workers) Accumulate(total, w->result());
  total.cpu_seconds = 0;
  total.window_seconds = hold ? 0 : absl::ToDoubleSeconds(options_.duration);
  total.ramp_up_seconds =
      static_cast<double>((ramp_end != 0 ? ramp_end : NowNs()) - start) /
      kNanosPerSecond;
  if (hold && ramp_end != 0) {
    total.hold_seconds = absl::ToDoubleSeconds(options_.hold_time);
  }
  total.run_seconds = static_cast<double>(NowNs() - start) / kNanosPerSecond;
  total.cpu_seconds = ProcessCpuSeconds() - cpu_start;
  return total;
}

absl::StatusOr<LoadResult> LoadGenerator::RunProcesses(
    absl::FunctionRef<void(const LoadProgress&)> on_progress) {
  const int n = options_.processes;
  const int64_t start = NowNs();
  std::vector<Child> children(static_cast<size_t>(n));
  absl::Status failure;
  int first_connection = 0;
  for (int i = 0; i < n; ++i) {
    // Process i: its share of the connections (the first ones one more),
    // and of the source addresses (a slice of them, or one shared by
    // several processes when there are fewer addresses than processes).
    LoadOptions o = options_;
    o.connections =
        options_.connections / n + (i < options_.connections % n ? 1 : 0);
    o.index_offset = first_connection;
    first_connection += o.connections;
    if (options_.connect_rate > 0) o.connect_rate = options_.connect_rate / n;
    const int s = options_.sources;
    if (s >= n) {
      o.source_offset = static_cast<int>(int64_t{i} * s / n);
      o.sources = static_cast<int>(int64_t{i + 1} * s / n) - o.source_offset;
    } else {
      o.source_offset = i % s;
      o.sources = 1;
    }
    o.processes = 1;
    o.start_ns = start;

    int up[2], down[2];
    if (pipe2(up, O_CLOEXEC) != 0) {
      failure = ErrnoStatus("pipe2", errno);
      break;
    }
    if (pipe2(down, O_CLOEXEC) != 0) {
      failure = ErrnoStatus("pipe2", errno);
      close(up[0]);
      close(up[1]);
      break;
    }
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) {
      failure = ErrnoStatus("fork", errno);
      close(up[0]);
      close(up[1]);
      close(down[0]);
      close(down[1]);
      break;
    }
    if (pid == 0) {
      // The worker process: no threads were started before the fork.
      // It dies with the parent rather than load a server for nobody.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() == 1) _exit(5);
      close(up[0]);
      close(down[1]);
      for (const Child& c : children) {
        if (c.progress_fd >= 0) close(c.progress_fd);
        if (c.control_fd >= 0) close(c.control_fd);
      }
      o.progress_fd = up[1];
      o.control_fd = down[0];
      absl::StatusOr<LoadResult> r =
          LoadGenerator(o).RunHere([](const LoadProgress&) {});
      if (!r.ok()) {
        std::fprintf(stderr, "echo_load: worker process %d: %s\n", i,
                     r.status().ToString().c_str());
        _exit(5);
      }
      SendResult(up[1], *r);
      _exit(0);
    }
    close(up[1]);
    close(down[0]);
    Child& c = children[static_cast<size_t>(i)];
    c.pid = pid;
    c.progress_fd = up[0];
    c.control_fd = down[1];
  }

  // Read every child's records until each has closed its pipe.
  bool released = false;
  int64_t next_progress = start + kNanosPerSecond / 4;
  std::vector<pollfd> fds;
  std::vector<uint8_t> buf(64 * 1024);
  const char* phase = "ramp-up";
  const bool hold = options_.hold;
  while (true) {
    fds.clear();
    for (const Child& c : children) {
      if (c.progress_fd >= 0 && !c.eof)
        fds.push_back({c.progress_fd, POLLIN, 0});
    }
    if (fds.empty()) break;
    if (poll(fds.data(), fds.size(), 50) < 0 && errno != EINTR) {
      failure = ErrnoStatus("poll", errno);
      break;
    }
    for (Child& c : children) {
      if (c.progress_fd < 0 || c.eof) continue;
      pollfd probe{c.progress_fd, POLLIN, 0};
      if (poll(&probe, 1, 0) != 1) continue;
      const ssize_t got = read(c.progress_fd, buf.data(), buf.size());
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        c.eof = true;
        continue;
      }
      c.inbox.insert(c.inbox.end(), buf.begin(), buf.begin() + got);
      // Whole records off the front of the inbox.
      size_t at = 0;
      while (c.inbox.size() - at >= sizeof(uint32_t)) {
        uint32_t type;
        std::memcpy(&type, &c.inbox[at], sizeof(type));
        const size_t size =
            type == kProgressRecord ? sizeof(WireProgress) : sizeof(WireResult);
        if (c.inbox.size() - at < size) break;
        if (type == kProgressRecord) {
          std::memcpy(&c.last, &c.inbox[at], sizeof(WireProgress));
        } else {
          auto w = std::make_unique<WireResult>();
          std::memcpy(w.get(), &c.inbox[at], sizeof(WireResult));
          c.result = FromWire(*w);
          c.has_result = true;
        }
        at += size;
      }
      c.inbox.erase(c.inbox.begin(), c.inbox.begin() + static_cast<long>(at));
    }

    // Every process done with its ramp-up (or gone): let them all go on.
    if (!released) {
      bool all = true;
      for (const Child& c : children) {
        all &= c.last.ramp_done != 0 || c.eof || c.pid < 0;
      }
      if (all) {
        released = true;
        for (Child& c : children) {
          if (c.control_fd >= 0) {
            const char go = 'G';
            WriteAll(c.control_fd, &go, 1);
          }
        }
      }
    }
    const int64_t now = NowNs();
    if (now >= next_progress) {
      next_progress = now + kNanosPerSecond / 4;
      LoadProgress p;
      p.elapsed_seconds = static_cast<double>(now - start) / kNanosPerSecond;
      uint32_t slowest = std::numeric_limits<uint32_t>::max();
      for (const Child& c : children) {
        p.open += c.last.open;
        p.failed += c.last.failed;
        p.messages += c.last.messages;
        p.errors += c.last.errors;
        p.data_errors += c.last.data_errors;
        p.established += c.last.established;
        p.verified += c.last.verified;
        p.closed += c.last.closed;
        if (!c.eof) slowest = std::min(slowest, c.last.phase);
      }
      if (slowest != std::numeric_limits<uint32_t>::max()) {
        phase = hold ? kHoldPhases[std::min<uint32_t>(slowest, 2)]
                     : kTimedPhases[std::min<uint32_t>(slowest, 4)];
      }
      p.phase = phase;
      on_progress(p);
    }
  }

  LoadResult total;
  for (Child& c : children) {
    if (c.progress_fd >= 0) close(c.progress_fd);
    if (c.control_fd >= 0) close(c.control_fd);
    if (c.pid < 0) continue;
    int status = 0;
    while (waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!c.has_result && failure.ok()) {
      failure = absl::InternalError(absl::StrCat(
          "worker process ", c.pid, " ended without a result (",
          WIFEXITED(status) ? absl::StrCat("exit status ", WEXITSTATUS(status))
                            : absl::StrCat("signal ", WTERMSIG(status)),
          ")"));
    }
    if (c.has_result) Accumulate(total, c.result);
  }
  if (!failure.ok()) return failure;
  total.window_seconds =
      options_.hold ? 0 : absl::ToDoubleSeconds(options_.duration);
  total.run_seconds = static_cast<double>(NowNs() - start) / kNanosPerSecond;
  return total;
}

}  // namespace load
}  // namespace nbio
