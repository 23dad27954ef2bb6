// echo_server: the nbio echo service as a program.
//
//   tools/bazel run //echo:echo_server -- --listen=127.0.0.1:7007
//
// One thread and one event loop by default, as the seed wants; --reactors=N
// runs N shared-nothing loops on N threads behind SO_REUSEPORT.
//
// Ending (SIGINT or SIGTERM): stop accepting, taking what the listener had
// queued, then
//   --drain=wait (default): keep serving every connection until its peer
//     ends it (HAProxy's soft stop, nginx's graceful quit); at
//     --drain_timeout cut the rest and log how many and what they held;
//   --drain=shutdown: echo what has arrived, half-close every connection at
//     once, and close once the peers close (or at --drain_timeout).
// Exit 0 once no connection is left. A second signal exits at once.
//
// Listening: --listen, or the sockets a service manager passes (systemd
// socket activation: LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES). With
// --reactors=N each loop serves its own dup of every passed socket: the
// loops race to accept (the losers see EAGAIN, which costs a wake-up and
// nothing else), so connections still spread over the threads, as they do
// behind SO_REUSEPORT, with no descriptor passing between threads.
// --reuse_port lets a new echo_server bind the port of a running one, which
// can then drain while the new one takes the new connections.
//
// Exit status: 0 after a drain; 1 when the server cannot start (the message
// names the address and the error, e.g. a port in use); 2 for bad flags;
// 128+signo when a second signal cut the drain short.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "echo/echo_service.h"
#include "echo/socket_activation.h"
#include "queue/base/flags.h"
#include "reactor/event_loop.h"
#include "reactor/poller/poller_registry.h"
#include "reactor/sys/socket_address.h"
#include "reactor/sys/syscall.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7007",
          "Address to listen on: host:port with a numeric IPv4 host, "
          "[IPv6]:port, or :port for all IPv4 interfaces. Port 0 picks a "
          "free port (printed at start-up).");
ABSL_FLAG(std::string, backend, "",
          "Poller backend: epoll, poll, select, io_uring (the kernel accepts, "
          "receives and sends; connections take no file descriptor) or "
          "io_uring_poll (readiness only). Empty: the best available (epoll "
          "on Linux).");
ABSL_FLAG(uint64_t, max_connections, 100000,
          "Connections beyond this are closed at once and counted (0: no "
          "limit). Bounded in practice by the open-file limit, except on "
          "--backend=io_uring.");
ABSL_FLAG(absl::Duration, idle_timeout, absl::ZeroDuration(),
          "Close connections with no traffic for this long, e.g. 30s "
          "(0: never).");
ABSL_FLAG(nbio::ByteSize, high_watermark, nbio::ByteSize{256 * 1024},
          "Per connection: stop reading while this much echo waits to be "
          "written; resume at half. 0 disables (memory then grows with a "
          "peer that never reads). Bytes, or with a KiB/MiB/GiB suffix.");
ABSL_FLAG(int, reactors, 1,
          "Event loops, one thread each, sharing the port with SO_REUSEPORT "
          "(or, with sockets from a service manager, racing to accept).");
ABSL_FLAG(bool, reuse_port, false,
          "Bind with SO_REUSEPORT even with one reactor, so that a new "
          "echo_server (also started with it) can take over the port while "
          "this one drains. See net.ipv4.tcp_migrate_req.");
ABSL_FLAG(absl::Duration, stats_interval, absl::ZeroDuration(),
          "Print a one-line summary this often, e.g. 10s (0: never).");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(10),
          "On SIGINT/SIGTERM, how long to wait for connections to finish "
          "before cutting them (the log says how many, and what they held).");
ABSL_FLAG(std::string, drain, "wait",
          "On SIGINT/SIGTERM, after it stops accepting: 'wait' keeps serving "
          "every connection until its peer closes it; 'shutdown' echoes what "
          "has arrived and half-closes every connection at once.");

namespace nbio {
namespace {

constexpr const char kUsage[] =
    "a TCP echo server on nbio's event loop.\n"
    "Usage: echo_server [--listen=127.0.0.1:7007] [--backend=epoll] ...\n"
    "Every byte a client sends comes back on the same connection.";

[[noreturn]] void UsageError(absl::string_view message) {
  ExitWithUsageError("echo_server", message);
}

// At most one line per second of a kind, with a count of what was held back.
class RateLimitedLog {
 public:
  void Log(const absl::Status& status) {
    const absl::Time now = absl::Now();
    if (now - last_ < absl::Seconds(1)) {
      ++suppressed_;
      return;
    }
    std::string extra =
        suppressed_ > 0 ? absl::StrCat(" (and ", suppressed_, " more)") : "";
    std::fprintf(stderr, "echo_server: refused a connection: %s%s\n",
                 std::string(status.message()).c_str(), extra.c_str());
    last_ = now;
    suppressed_ = 0;
  }

 private:
  absl::Time last_ = absl::InfinitePast();
  uint64_t suppressed_ = 0;
};

struct Snapshot {
  EchoService::Stats echo;
  LoopCounters loop;
};

// Adds the counters of `from` to `to` (connections open now included).
void Add(const EchoService::Stats& from, EchoService::Stats* to) {
  to->tcp.connections += from.tcp.connections;
  to->tcp.bytes_read += from.tcp.bytes_read;
  to->tcp.bytes_written += from.tcp.bytes_written;
  to->tcp.idle_timeouts += from.tcp.idle_timeouts;
  to->tcp.read_pauses += from.tcp.read_pauses;
  to->tcp.queued_bytes += from.tcp.queued_bytes;
  to->server.accepted += from.server.accepted;
  to->server.refused_over_limit += from.server.refused_over_limit;
  to->server.refused_no_fds += from.server.refused_no_fds;
  to->server.refused_unwatchable += from.server.refused_unwatchable;
  to->connections_reset += from.connections_reset;
  to->drain_closed += from.drain_closed;
  to->drain_cut += from.drain_cut;
}

// One event loop, its echo services (one per listening socket) and (except
// for reactor 0, which runs on the main thread) its thread.
struct Reactor {
  std::unique_ptr<EventLoop> loop;
  std::vector<std::unique_ptr<EchoService>> services;
  std::unique_ptr<Timer> publish_timer;
  RateLimitedLog refusals;
  std::thread thread;
  std::mutex mu;
  Snapshot snapshot;  // guarded by mu; published by the reactor's own thread
  size_t services_drained = 0;  // the reactor's own thread only
  // Keeps the loop running once its services have drained (nothing else
  // would: no listener, no connection), so that the cut posted to it at the
  // deadline runs, until the main thread ends the whole drain. Made before
  // the thread starts, dropped on the reactor's thread.
  std::optional<EventLoop::KeepAlive> keep_alive;

  void Publish() {
    Snapshot s;
    for (auto& service : services) Add(service->stats(), &s.echo);
    s.loop = loop->counters();
    std::lock_guard<std::mutex> lock(mu);
    snapshot = s;
  }
};

// net.ipv4.tcp_migrate_req of this network namespace: 1 when the kernel
// moves the connections queued on a closing SO_REUSEPORT listener to another
// listener of its group (Linux 5.14+); nullopt when the file is missing.
std::optional<int> TcpMigrateReq() {
  FILE* f = std::fopen("/proc/sys/net/ipv4/tcp_migrate_req", "r");
  if (f == nullptr) return std::nullopt;
  int value = 0;
  const int n = std::fscanf(f, "%d", &value);
  std::fclose(f);
  if (n != 1) return std::nullopt;
  return value;
}

// Says in the log what the kernel will do with connections still queued
// on our listener when it closes, if that loses them. `when`: "at start",
// "draining".
void LogMigrateReq(const char* when) {
  const std::optional<int> migrate = TcpMigrateReq();
  if (migrate.has_value() && *migrate != 0) return;
  std::fprintf(
      stderr,
      "echo_server: %s: net.ipv4.tcp_migrate_req is %s: a connection that "
      "reaches this server's listener after the drain took its queue and "
      "before it closed is reset, not moved to the server that shares the "
      "port (sysctl -w net.ipv4.tcp_migrate_req=1 moves it)\n",
      when, migrate.has_value() ? "0" : "not available (Linux < 5.14)");
}

const char* SignalName(int signo) {
  switch (signo) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    default:
      return "signal";
  }
}

std::string Bytes(uint64_t n) {
  if (n >= (uint64_t{1} << 30))
    return absl::StrFormat("%.2fGiB", n / 1073741824.0);
  if (n >= (uint64_t{1} << 20))
    return absl::StrFormat("%.2fMiB", n / 1048576.0);
  if (n >= 1024) return absl::StrFormat("%.1fKiB", n / 1024.0);
  return absl::StrCat(n, "B");
}

uint64_t ResidentBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long size = 0, resident = 0;
  const int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return n == 2 ? uint64_t{resident} * sysconf(_SC_PAGESIZE) : 0;
}

class EchoServer {
 public:
  absl::Status Start();
  int Run();

 private:
  void OnSignal(int signo);
  void PrintStats();
  // A service has drained; `closed` connections ended during its drain.
  void ServiceDrained(uint64_t closed);
  // A reactor has begun draining, with `open` connections.
  void DrainStarted(uint64_t open);
  void OnDrainTimeout();
  void CutReported(const EchoService::CutReport& report);
  // Stops every loop once all services have drained and every cut report
  // (if the deadline came) is in.
  void MaybeFinishDrain();

  std::vector<std::unique_ptr<Reactor>> reactors_;
  bool wait_for_peers_ = true;  // --drain=wait
  std::unique_ptr<Timer> stats_timer_;
  std::unique_ptr<Timer> drain_timer_;
  // Main thread only, like everything below.
  bool draining_ = false;
  int drain_signal_ = 0;
  size_t started_reports_ = 0;
  uint64_t drain_open_ = 0;
  size_t services_ = 0;  // over all reactors
  size_t drained_ = 0;
  uint64_t drain_closed_ = 0;
  absl::Time drain_started_;
  bool cut_started_ = false;
  size_t cut_reports_ = 0;
  EchoService::CutReport cut_;
};

absl::Status EchoServer::Start() {
  wait_for_peers_ = absl::GetFlag(FLAGS_drain) == "wait";
  const int count = absl::GetFlag(FLAGS_reactors);
  // Before any thread starts: this edits the environment.
  absl::StatusOr<std::vector<ListenFd>> inherited = TakeListenFds();
  if (!inherited.ok()) return inherited.status();
  absl::StatusOr<SocketAddress> address =
      SocketAddress::Parse(absl::GetFlag(FLAGS_listen));
  if (!address.ok()) UsageError(address.status().message());
  const bool reuse_port =
      inherited->empty() && (absl::GetFlag(FLAGS_reuse_port) || count > 1);
  const size_t listeners = inherited->empty() ? 1 : inherited->size();
  for (int i = 0; i < count; ++i) {
    auto reactor = std::make_unique<Reactor>();
    EventLoop::Options loop_options;
    loop_options.backend = absl::GetFlag(FLAGS_backend);
    absl::StatusOr<std::unique_ptr<EventLoop>> loop =
        EventLoop::Create(loop_options);
    if (!loop.ok()) return loop.status();
    reactor->loop = std::move(*loop);
    reactor->keep_alive.emplace(reactor->loop->KeepAliveToken());
    Reactor* r = reactor.get();
    for (size_t j = 0; j < listeners; ++j) {
      EchoService::Options options;
      if (inherited->empty()) {
        // All reactors after the first bind the port the first one got.
        options.server.address =
            i == 0 ? *address : reactors_[0]->services[0]->address();
        options.server.reuse_port = reuse_port;
      } else {
        // Reactor 0 serves the descriptor itself, the others a dup each: the
        // same socket, watched by every loop.
        const int fd = (*inherited)[j].fd;
        options.server.listen_fd = i == 0 ? fd : fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (options.server.listen_fd < 0) {
          return ErrnoStatus(absl::StrCat("fcntl(", fd, ", F_DUPFD_CLOEXEC)"),
                             errno);
        }
      }
      options.server.max_connections = absl::GetFlag(FLAGS_max_connections);
      options.server.tcp.idle_timeout = absl::GetFlag(FLAGS_idle_timeout);
      options.server.tcp.high_watermark =
          absl::GetFlag(FLAGS_high_watermark).bytes;
      options.server.on_refused = [r](const absl::Status& s) {
        r->refusals.Log(s);
      };
      absl::StatusOr<std::unique_ptr<EchoService>> service =
          EchoService::Create(r->loop.get(), std::move(options));
      if (!service.ok()) return service.status();
      r->services.push_back(std::move(*service));
    }
    reactors_.push_back(std::move(reactor));
  }
  services_ = reactors_.size() * listeners;
  if (!inherited->empty()) {
    std::vector<std::string> which;
    for (size_t j = 0; j < inherited->size(); ++j) {
      which.push_back(
          absl::StrCat("fd ", (*inherited)[j].fd, " '", (*inherited)[j].name,
                       "' ", reactors_[0]->services[j]->address().ToString()));
    }
    std::fprintf(stderr,
                 "echo_server: serving %zu socket%s from the service manager "
                 "(LISTEN_FDS; --listen unused): %s\n",
                 inherited->size(), inherited->size() == 1 ? "" : "s",
                 absl::StrJoin(which, ", ").c_str());
  }
  if (absl::GetFlag(FLAGS_reuse_port)) LogMigrateReq("at start");
  return absl::OkStatus();
}

int EchoServer::Run() {
  Reactor& main = *reactors_[0];
  // Handlers first: OnSignal blocks the signals in this thread, and the
  // reactor threads started below inherit that mask, so only the main loop's
  // signalfd sees them.
  for (int signo : {SIGINT, SIGTERM}) {
    absl::Status s =
        main.loop->OnSignal(signo, [this](int sig) { OnSignal(sig); });
    if (!s.ok()) {
      std::fprintf(stderr, "echo_server: %s\n",
                   std::string(s.message()).c_str());
      return 1;
    }
  }
  const absl::Duration interval = absl::GetFlag(FLAGS_stats_interval);
  for (auto& reactor : reactors_) {
    Reactor* r = reactor.get();
    if (interval > absl::ZeroDuration()) {
      r->publish_timer =
          std::make_unique<Timer>(r->loop.get(), [r] { r->Publish(); });
      r->publish_timer->StartPeriodic(interval);
    }
  }
  if (interval > absl::ZeroDuration()) {
    // Slightly after the reactors publish, so the line is fresh.
    stats_timer_ =
        std::make_unique<Timer>(main.loop.get(), [this] { PrintStats(); });
    stats_timer_->StartPeriodic(interval);
  }
  for (auto& service : main.services) {
    std::printf("listening on %s\n", service->address().ToString().c_str());
  }
  std::fflush(stdout);
  std::fprintf(stderr, "echo_server: %s backend, %zu reactor%s, pid %d\n",
               main.loop->backend_name(), reactors_.size(),
               reactors_.size() == 1 ? "" : "s", static_cast<int>(getpid()));
  for (size_t i = 1; i < reactors_.size(); ++i) {
    Reactor* r = reactors_[i].get();
    r->thread = std::thread([r] {
      absl::Status s = r->loop->Run();
      if (!s.ok()) {
        std::fprintf(stderr, "echo_server: reactor failed: %s\n",
                     std::string(s.message()).c_str());
        std::_Exit(1);
      }
    });
  }
  absl::Status status = main.loop->Run();
  for (size_t i = 1; i < reactors_.size(); ++i) reactors_[i]->thread.join();
  if (!status.ok()) {
    std::fprintf(stderr, "echo_server: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  // Destroy everything on this thread now that every loop has stopped: the
  // main loop's timers first, since a loop refuses to be destroyed while a
  // handle on it is alive.
  drain_timer_.reset();
  stats_timer_.reset();
  reactors_.clear();
  std::fprintf(stderr, "echo_server: stopped\n");
  return 0;
}

void EchoServer::OnSignal(int signo) {
  if (draining_) {
    std::fprintf(stderr, "echo_server: %s again: exiting now\n",
                 SignalName(signo));
    std::fflush(stdout);
    std::_Exit(128 + signo);
  }
  draining_ = true;
  drain_signal_ = signo;
  drain_started_ = absl::Now();
  // The "draining" line comes once every reactor has stopped accepting and
  // begun its drain (DrainStarted), so that it is true when it is read.
  if (absl::GetFlag(FLAGS_reuse_port)) LogMigrateReq("draining");
  EventLoop* main_loop = reactors_[0]->loop.get();
  for (auto& reactor : reactors_) {
    Reactor* r = reactor.get();
    r->loop->Post([this, r, main_loop] {
      for (auto& service : r->services) {
        EchoService* service_ptr = service.get();
        auto done = [this, r, main_loop, service_ptr] {
          // Every loop keeps running until all have drained, so that a cut
          // posted to it at the deadline always runs.
          if (++r->services_drained == r->services.size() && r->publish_timer) {
            r->Publish();  // the final counts, for the stats lines to come
            r->publish_timer->Cancel();
          }
          const uint64_t closed = service_ptr->stats().drain_closed;
          main_loop->Post([this, closed] { ServiceDrained(closed); });
        };
        if (wait_for_peers_) {
          service->DrainWaitingForPeers(std::move(done));
        } else {
          service->Drain(std::move(done));
        }
      }
      uint64_t open = 0;
      for (auto& service : r->services) open += service->open_connections();
      main_loop->Post([this, open] { DrainStarted(open); });
    });
  }
  drain_timer_ =
      std::make_unique<Timer>(main_loop, [this] { OnDrainTimeout(); });
  drain_timer_->Start(absl::GetFlag(FLAGS_drain_timeout));
}

void EchoServer::DrainStarted(uint64_t open) {
  drain_open_ += open;
  if (++started_reports_ < reactors_.size()) return;
  const std::string timeout =
      absl::FormatDuration(absl::GetFlag(FLAGS_drain_timeout));
  if (wait_for_peers_) {
    std::fprintf(stderr,
                 "echo_server: %s: draining %" PRIu64
                 " connections (stopped accepting; serving each until its "
                 "peer closes it) for up to %s, then cutting the rest; send "
                 "it again to exit now\n",
                 SignalName(drain_signal_), drain_open_, timeout.c_str());
  } else {
    std::fprintf(stderr,
                 "echo_server: %s: draining %" PRIu64
                 " connections (stopped accepting; echo what arrived, "
                 "half-close, close) for up to %s; send it again to exit "
                 "now\n",
                 SignalName(drain_signal_), drain_open_, timeout.c_str());
  }
  MaybeFinishDrain();
}

void EchoServer::OnDrainTimeout() {
  cut_started_ = true;
  EventLoop* main_loop = reactors_[0]->loop.get();
  for (auto& reactor : reactors_) {
    Reactor* r = reactor.get();
    r->loop->Post([this, r, main_loop] {
      EchoService::CutReport report;
      for (auto& service : r->services) {
        const EchoService::CutReport one = service->CutRemaining();
        report.connections += one.connections;
        report.queued_bytes += one.queued_bytes;
        report.unread_bytes += one.unread_bytes;
      }
      // MaybeFinishDrain() waits for this report from every reactor, even
      // one whose services finished before the deadline.
      main_loop->Post([this, report] { CutReported(report); });
    });
  }
}

void EchoServer::CutReported(const EchoService::CutReport& report) {
  cut_.connections += report.connections;
  cut_.queued_bytes += report.queued_bytes;
  cut_.unread_bytes += report.unread_bytes;
  if (++cut_reports_ == reactors_.size()) {
    std::fprintf(
        stderr,
        "echo_server: drain timeout after %s: cut %" PRIu64
        " connections holding %" PRIu64 " bytes (%" PRIu64
        " queued to send, %" PRIu64 " received and unread)\n",
        absl::FormatDuration(absl::GetFlag(FLAGS_drain_timeout)).c_str(),
        cut_.connections, cut_.queued_bytes + cut_.unread_bytes,
        cut_.queued_bytes, cut_.unread_bytes);
  }
  MaybeFinishDrain();
}

void EchoServer::ServiceDrained(uint64_t closed) {
  drain_closed_ += closed;
  ++drained_;
  MaybeFinishDrain();
}

void EchoServer::MaybeFinishDrain() {
  // A reactor with nothing left may finish before another reactor's cut
  // report arrives: wait for every report, so the log line counts them all.
  if (drained_ < services_ || started_reports_ < reactors_.size()) return;
  if (cut_started_ && cut_reports_ < reactors_.size()) return;
  std::fprintf(stderr,
               "echo_server: drained in %.1fms: %" PRIu64
               " connections ended during the drain, %" PRIu64
               " of them cut at the deadline\n",
               absl::ToDoubleMilliseconds(absl::Now() - drain_started_),
               drain_closed_, cut_.connections);
  if (drain_timer_) drain_timer_->Cancel();
  if (stats_timer_) stats_timer_->Cancel();
  for (int signo : {SIGINT, SIGTERM}) reactors_[0]->loop->RemoveSignal(signo);
  for (auto& reactor : reactors_) {
    Reactor* r = reactor.get();
    r->loop->Post([r] {
      r->keep_alive.reset();
      r->loop->Stop();
    });
  }
}

void EchoServer::PrintStats() {
  reactors_[0]->Publish();
  Snapshot total;
  for (auto& r : reactors_) {
    std::lock_guard<std::mutex> lock(r->mu);
    const Snapshot& s = r->snapshot;
    Add(s.echo, &total.echo);
    total.loop.iterations += s.loop.iterations;
    total.loop.poll_blocked_nanos += s.loop.poll_blocked_nanos;
    total.loop.events_dispatched += s.loop.events_dispatched;
    total.loop.tasks_run += s.loop.tasks_run;
    total.loop.timers_fired += s.loop.timers_fired;
  }
  const uint64_t refused = total.echo.server.refused_over_limit +
                           total.echo.server.refused_no_fds +
                           total.echo.server.refused_unwatchable;
  // While draining: how long so far, how many connections have ended since
  // it began and how many were cut (connections= is what is left).
  std::string drain;
  if (draining_) {
    drain =
        absl::StrFormat(" drain=%s drain_ms=%d drain_closed=%d drain_cut=%d",
                        wait_for_peers_ ? "wait" : "shutdown",
                        absl::ToInt64Milliseconds(absl::Now() - drain_started_),
                        total.echo.drain_closed, total.echo.drain_cut);
  }
  std::fprintf(stderr,
               "stats: connections=%zu accepted=%" PRIu64 " refused=%" PRIu64
               " resets=%" PRIu64 " idle_closed=%" PRIu64
               " in=%s out=%s"
               " queued=%s read_pauses=%" PRIu64 " iterations=%" PRIu64
               " events=%" PRIu64 " blocked=%s tasks=%" PRIu64
               " timers=%" PRIu64 " rss=%s%s\n",
               total.echo.tcp.connections, total.echo.server.accepted, refused,
               total.echo.connections_reset, total.echo.tcp.idle_timeouts,
               Bytes(total.echo.tcp.bytes_read).c_str(),
               Bytes(total.echo.tcp.bytes_written).c_str(),
               Bytes(total.echo.tcp.queued_bytes).c_str(),
               total.echo.tcp.read_pauses, total.loop.iterations,
               total.loop.events_dispatched,
               absl::FormatDuration(
                   absl::Trunc(absl::Nanoseconds(total.loop.poll_blocked_nanos),
                               absl::Milliseconds(1)))
                   .c_str(),
               total.loop.tasks_run, total.loop.timers_fired,
               Bytes(ResidentBytes()).c_str(), drain.c_str());
}

void CheckFlagValues() {
  const std::string backend = absl::GetFlag(FLAGS_backend);
  if (!backend.empty()) {
    std::vector<std::string> names = PollerNames();
    if (std::find(names.begin(), names.end(), backend) == names.end()) {
      UsageError(
          absl::StrCat("unknown --backend=", backend,
                       "; expected one of: ", absl::StrJoin(names, ", ")));
    }
  }
  const std::string drain = absl::GetFlag(FLAGS_drain);
  if (drain != "wait" && drain != "shutdown") {
    UsageError(
        absl::StrCat("--drain must be wait or shutdown, not '", drain, "'"));
  }
  const int reactors = absl::GetFlag(FLAGS_reactors);
  if (reactors < 1 || reactors > 256) {
    UsageError(
        absl::StrCat("--reactors must be from 1 to 256, not ", reactors));
  }
  for (auto [name, value] :
       {std::pair<const char*, absl::Duration>{
            "idle_timeout", absl::GetFlag(FLAGS_idle_timeout)},
        {"stats_interval", absl::GetFlag(FLAGS_stats_interval)},
        {"drain_timeout", absl::GetFlag(FLAGS_drain_timeout)}}) {
    if (value < absl::ZeroDuration() || value == absl::InfiniteDuration()) {
      UsageError(absl::StrCat("--", name, " must be a finite duration >= 0"));
    }
  }
  if (absl::GetFlag(FLAGS_idle_timeout) > absl::Hours(24 * 24)) {
    UsageError("--idle_timeout must be at most 24 days (576h)");
  }
  absl::StatusOr<SocketAddress> address =
      SocketAddress::Parse(absl::GetFlag(FLAGS_listen));
  if (!address.ok()) UsageError(address.status().message());
}

}  // namespace
}  // namespace nbio

int main(int argc, char** argv) {
  nbio::ParseCommandLineOrExit(argc, argv, "echo_server", nbio::kUsage);
  nbio::CheckFlagValues();
  // Sockets use MSG_NOSIGNAL already; this keeps any other write (a closed
  // stdout pipe) from killing the server either.
  signal(SIGPIPE, SIG_IGN);

  nbio::EchoServer server;
  absl::Status status = server.Start();
  if (!status.ok()) {
    std::fprintf(stderr, "echo_server: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  return server.Run();
}
