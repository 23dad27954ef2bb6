// echo_server: the nbio echo service as a program.
//
//   tools/bazel run //echo:echo_server -- --listen=127.0.0.1:7007
//
// One thread and one event loop by default, as the seed wants; --reactors=N
// runs N shared-nothing loops on N threads behind SO_REUSEPORT. SIGINT or
// SIGTERM drains gracefully (stop accepting, echo what was received, close,
// exit 0 within --drain_timeout); a second signal exits at once.
//
// Exit status: 0 after a drain; 1 when the server cannot start (the message
// names the address and the error, e.g. a port in use); 2 for bad flags;
// 128+signo when a second signal cut the drain short.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
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
#include "queue/base/flags.h"
#include "reactor/event_loop.h"
#include "reactor/poller/poller_registry.h"
#include "reactor/sys/socket_address.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7007",
          "Address to listen on: host:port with a numeric IPv4 host, "
          "[IPv6]:port, or :port for all IPv4 interfaces. Port 0 picks a "
          "free port (printed at start-up).");
ABSL_FLAG(std::string, backend, "",
          "Poller backend: epoll, poll or select. Empty: the best available "
          "(epoll on Linux).");
ABSL_FLAG(uint64_t, max_connections, 100000,
          "Connections beyond this are closed at once and counted (0: no "
          "limit). Bounded in practice by the open-file limit.");
ABSL_FLAG(absl::Duration, idle_timeout, absl::ZeroDuration(),
          "Close connections with no traffic for this long, e.g. 30s "
          "(0: never).");
ABSL_FLAG(nbio::ByteSize, high_watermark, nbio::ByteSize{256 * 1024},
          "Per connection: stop reading while this much echo waits to be "
          "written; resume at half. 0 disables (memory then grows with a "
          "peer that never reads). Bytes, or with a KiB/MiB/GiB suffix.");
ABSL_FLAG(int, reactors, 1,
          "Event loops, one thread each, sharing the port with SO_REUSEPORT.");
ABSL_FLAG(absl::Duration, stats_interval, absl::ZeroDuration(),
          "Print a one-line summary this often, e.g. 10s (0: never).");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(10),
          "On SIGINT/SIGTERM, how long to wait for connections to finish "
          "before closing them.");

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

// One event loop, its echo service and (except for reactor 0, which runs on
// the main thread) its thread.
struct Reactor {
  std::unique_ptr<EventLoop> loop;
  std::unique_ptr<EchoService> service;
  std::unique_ptr<Timer> publish_timer;
  RateLimitedLog refusals;
  std::thread thread;
  std::mutex mu;
  Snapshot snapshot;  // guarded by mu; published by the reactor's own thread

  void Publish() {
    Snapshot s{service->stats(), loop->counters()};
    std::lock_guard<std::mutex> lock(mu);
    snapshot = s;
  }
};

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
  if (n >= (uint64_t{1} << 30)) return absl::StrFormat("%.2fGiB", n / 1073741824.0);
  if (n >= (uint64_t{1} << 20)) return absl::StrFormat("%.2fMiB", n / 1048576.0);
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
  void ReactorDrained();

  std::vector<std::unique_ptr<Reactor>> reactors_;
  std::unique_ptr<Timer> stats_timer_;
  std::unique_ptr<Timer> drain_timer_;
  bool draining_ = false;
  int drained_ = 0;
  absl::Time drain_started_;
};

absl::Status EchoServer::Start() {
  absl::StatusOr<SocketAddress> address =
      SocketAddress::Parse(absl::GetFlag(FLAGS_listen));
  if (!address.ok()) UsageError(address.status().message());
  const int count = absl::GetFlag(FLAGS_reactors);
  for (int i = 0; i < count; ++i) {
    auto reactor = std::make_unique<Reactor>();
    EventLoop::Options loop_options;
    loop_options.backend = absl::GetFlag(FLAGS_backend);
    absl::StatusOr<std::unique_ptr<EventLoop>> loop =
        EventLoop::Create(loop_options);
    if (!loop.ok()) return loop.status();
    reactor->loop = std::move(*loop);

    EchoService::Options options;
    // All reactors after the first bind the port the first one got.
    options.server.address =
        i == 0 ? *address : reactors_[0]->service->address();
    options.server.reuse_port = count > 1;
    options.server.max_connections = absl::GetFlag(FLAGS_max_connections);
    options.server.tcp.idle_timeout = absl::GetFlag(FLAGS_idle_timeout);
    options.server.tcp.high_watermark = absl::GetFlag(FLAGS_high_watermark).bytes;
    Reactor* r = reactor.get();
    options.server.on_refused = [r](const absl::Status& s) { r->refusals.Log(s); };
    absl::StatusOr<std::unique_ptr<EchoService>> service =
        EchoService::Create(r->loop.get(), std::move(options));
    if (!service.ok()) return service.status();
    r->service = std::move(*service);
    reactors_.push_back(std::move(reactor));
  }
  return absl::OkStatus();
}

int EchoServer::Run() {
  Reactor& main = *reactors_[0];
  // Handlers first: OnSignal blocks the signals in this thread, and the
  // reactor threads started below inherit that mask, so only the main loop's
  // signalfd sees them.
  for (int signo : {SIGINT, SIGTERM}) {
    absl::Status s = main.loop->OnSignal(signo, [this](int sig) { OnSignal(sig); });
    if (!s.ok()) {
      std::fprintf(stderr, "echo_server: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  }
  const absl::Duration interval = absl::GetFlag(FLAGS_stats_interval);
  for (auto& reactor : reactors_) {
    Reactor* r = reactor.get();
    if (interval > absl::ZeroDuration()) {
      r->publish_timer = std::make_unique<Timer>(r->loop.get(), [r] { r->Publish(); });
      r->publish_timer->StartPeriodic(interval);
    }
  }
  if (interval > absl::ZeroDuration()) {
    // Slightly after the reactors publish, so the line is fresh.
    stats_timer_ = std::make_unique<Timer>(main.loop.get(), [this] { PrintStats(); });
    stats_timer_->StartPeriodic(interval);
  }
  std::printf("listening on %s\n", main.service->address().ToString().c_str());
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
    std::fprintf(stderr, "echo_server: %s\n", std::string(status.message()).c_str());
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
    std::fprintf(stderr, "echo_server: %s again: exiting now\n", SignalName(signo));
    std::fflush(stdout);
    std::_Exit(128 + signo);
  }
  draining_ = true;
  drain_started_ = absl::Now();
  std::fprintf(stderr,
               "echo_server: %s: draining (stop accepting, echo what arrived, "
               "close) for up to %s; send it again to exit now\n",
               SignalName(signo),
               absl::FormatDuration(absl::GetFlag(FLAGS_drain_timeout)).c_str());
  EventLoop* main_loop = reactors_[0]->loop.get();
  for (auto& reactor : reactors_) {
    Reactor* r = reactor.get();
    r->loop->Post([this, r, main_loop] {
      r->service->Drain([this, r, main_loop] {
        if (r->publish_timer) r->publish_timer->Cancel();
        main_loop->Post([this] { ReactorDrained(); });
        if (r != reactors_[0].get()) r->loop->Stop();
      });
    });
  }
  drain_timer_ = std::make_unique<Timer>(main_loop, [this] {
    std::fprintf(stderr, "echo_server: drain timeout: closing the rest\n");
    for (auto& reactor : reactors_) {
      Reactor* r = reactor.get();
      r->loop->Post([r] { r->service->CloseAll(); });
    }
  });
  drain_timer_->Start(absl::GetFlag(FLAGS_drain_timeout));
}

void EchoServer::ReactorDrained() {
  if (++drained_ < static_cast<int>(reactors_.size())) return;
  std::fprintf(stderr, "echo_server: drained in %.1fms\n",
               absl::ToDoubleMilliseconds(absl::Now() - drain_started_));
  if (drain_timer_) drain_timer_->Cancel();
  if (stats_timer_) stats_timer_->Cancel();
  for (int signo : {SIGINT, SIGTERM}) reactors_[0]->loop->RemoveSignal(signo);
  reactors_[0]->loop->Stop();
}

void EchoServer::PrintStats() {
  reactors_[0]->Publish();
  Snapshot total;
  for (auto& r : reactors_) {
    std::lock_guard<std::mutex> lock(r->mu);
    const Snapshot& s = r->snapshot;
    total.echo.tcp.connections += s.echo.tcp.connections;
    total.echo.tcp.bytes_read += s.echo.tcp.bytes_read;
    total.echo.tcp.bytes_written += s.echo.tcp.bytes_written;
    total.echo.tcp.idle_timeouts += s.echo.tcp.idle_timeouts;
    total.echo.tcp.read_pauses += s.echo.tcp.read_pauses;
    total.echo.server.accepted += s.echo.server.accepted;
    total.echo.server.refused_over_limit += s.echo.server.refused_over_limit;
    total.echo.server.refused_no_fds += s.echo.server.refused_no_fds;
    total.echo.server.refused_unwatchable += s.echo.server.refused_unwatchable;
    total.echo.connections_reset += s.echo.connections_reset;
    total.loop.iterations += s.loop.iterations;
    total.loop.poll_blocked_nanos += s.loop.poll_blocked_nanos;
    total.loop.events_dispatched += s.loop.events_dispatched;
    total.loop.tasks_run += s.loop.tasks_run;
    total.loop.timers_fired += s.loop.timers_fired;
  }
  const uint64_t refused = total.echo.server.refused_over_limit +
                           total.echo.server.refused_no_fds +
                           total.echo.server.refused_unwatchable;
  std::fprintf(stderr,
               "stats: connections=%zu accepted=%" PRIu64 " refused=%" PRIu64
               " resets=%" PRIu64 " idle_closed=%" PRIu64 " in=%s out=%s"
               " read_pauses=%" PRIu64 " iterations=%" PRIu64
               " events=%" PRIu64 " blocked=%s tasks=%" PRIu64
               " timers=%" PRIu64 " rss=%s\n",
               total.echo.tcp.connections, total.echo.server.accepted, refused,
               total.echo.connections_reset, total.echo.tcp.idle_timeouts,
               Bytes(total.echo.tcp.bytes_read).c_str(),
               Bytes(total.echo.tcp.bytes_written).c_str(),
               total.echo.tcp.read_pauses, total.loop.iterations,
               total.loop.events_dispatched,
               absl::FormatDuration(absl::Trunc(
                   absl::Nanoseconds(total.loop.poll_blocked_nanos),
                   absl::Milliseconds(1))).c_str(),
               total.loop.tasks_run, total.loop.timers_fired,
               Bytes(ResidentBytes()).c_str());
}

void CheckFlagValues() {
  const std::string backend = absl::GetFlag(FLAGS_backend);
  if (!backend.empty()) {
    std::vector<std::string> names = PollerNames();
    if (std::find(names.begin(), names.end(), backend) == names.end()) {
      UsageError(absl::StrCat("unknown --backend=", backend,
                              "; expected one of: ", absl::StrJoin(names, ", ")));
    }
  }
  const int reactors = absl::GetFlag(FLAGS_reactors);
  if (reactors < 1 || reactors > 256) {
    UsageError(absl::StrCat("--reactors must be from 1 to 256, not ", reactors));
  }
  for (auto [name, value] :
       {std::pair<const char*, absl::Duration>{"idle_timeout", absl::GetFlag(FLAGS_idle_timeout)},
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
    std::fprintf(stderr, "echo_server: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return server.Run();
}
