// cpu_echo_server: an echo server whose one event loop also runs a CPU-bound
// job, for tools/bench/cpu_job_bench.sh ("CPU-bound work next to I/O").
//
//   cpu_echo_server --listen=127.0.0.1:0 --job_bytes=1GiB --cpu_budget=1ms
//   cpu_echo_server --job_bytes=0          # echo only, no job
//   cpu_echo_server --run_for=2s           # the job unloaded for 2 s, then
//   exit
//
// One thread and one EventLoop (the default backend, epoll on Linux;
// EventLoop::Options::cpu_budget from --cpu_budget) running nbio's
// EchoService, the library //echo:echo_server runs, and, unless
// --job_bytes=0, a CpuJob that hashes --job_bytes bytes in --slice_bytes
// slices (HashJob: a reusable buffer, a fast four-lane hash), pass after pass
// (--job_repeat, the default) or once.
//
// Prints "listening on ADDR" when ready. On SIGTERM or SIGINT, or after
// --run_for, prints one JSON object on one line to stdout and exits 0; 1 when
// the server cannot start; 2 for bad flags. The JSON fields:
//   job_*        the job over its whole life (from start to exit, or to the
//                end of its pass without --job_repeat): bytes_per_pass,
//                bytes_hashed, passes, slices, elapsed_s, mib_per_s
//                (bytes_hashed / 2^20 / elapsed_s), slice_s (wall time
//                inside slices), max_slice_us, digest;
//   window_*     the job while at least --window_connections connections
//                were open (the loaded window; opened and closed at the
//                slice boundary after the count crossed the mark): s, bytes,
//                mib_per_s. 0 when never reached or --window_connections=0;
//   period_*     the loop's iteration period, from the first CPU slice of
//                one iteration to the first of the next, over the loaded
//                window (the job's whole life with --window_connections=0):
//                p50, p99 and max in wall time (wall_*) and in this thread's
//                CPU time (cpu_*), which leaves out the time other processes
//                took the CPU: the loop's own share of the echo latency;
//   echo_*       accepted connections, bytes read and written;
//   loop_*       EventLoop::counters();
//   cpu_user_s, cpu_sys_s, wall_s   the process (getrusage) and its life.
#include <signal.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "echo/echo_service.h"
#include "queue/base/flags.h"
#include "reactor/event_loop.h"
#include "reactor/sys/socket_address.h"
#include "tools/bench/hash_job.h"
#include "tools/latency_histogram.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "Address to listen on (port 0: any free port, printed).");
ABSL_FLAG(nbio::ByteSize, job_bytes, nbio::ByteSize{uint64_t{1} << 30},
          "Bytes the CPU job hashes per pass, e.g. 1GiB; 0: no job.");
ABSL_FLAG(nbio::ByteSize, slice_bytes, nbio::ByteSize{64 * 1024},
          "Bytes hashed per slice (a multiple of 32).");
ABSL_FLAG(bool, job_repeat, true,
          "Start another pass after each one, so the job stays busy until "
          "exit; false: one pass, then the job is done.");
ABSL_FLAG(absl::Duration, cpu_budget, absl::Milliseconds(1),
          "EventLoop::Options::cpu_budget: CPU slices run until the loop "
          "iteration has lasted this long.");
ABSL_FLAG(int, window_connections, 1,
          "Measure the job's loaded throughput while at least this many "
          "connections are open (0: no loaded window).");
ABSL_FLAG(absl::Duration, run_for, absl::ZeroDuration(),
          "Exit by itself after this long, printing the JSON (run with no "
          "clients: the job's unloaded throughput); 0: until SIGTERM/SIGINT.");

namespace nbio {
namespace {

constexpr const char kUsage[] =
    "an echo server whose event loop also runs a CPU-bound "
    "hashing job.\n"
    "Usage: cpu_echo_server [--listen=127.0.0.1:0] [--job_bytes=1GiB] "
    "[--cpu_budget=1ms] [--run_for=0] ...\n"
    "Prints 'listening on ADDR'; on SIGTERM prints one JSON line and exits.";

[[noreturn]] void UsageError(absl::string_view message) {
  ExitWithUsageError("cpu_echo_server", message);
}

double Seconds(int64_t nanos) { return static_cast<double>(nanos) / 1e9; }

double MibPerSecond(uint64_t bytes, int64_t nanos) {
  return nanos > 0 ? static_cast<double>(bytes) / 1048576.0 / Seconds(nanos)
                   : 0.0;
}

int64_t ThreadCpuNanos() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

double TimevalSeconds(const timeval& tv) {
  return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
}

class CpuEchoServer {
 public:
  absl::Status Start();
  int Run();

 private:
  CpuSliceResult JobSlice();
  // At the first slice of each iteration, records the period since the
  // first slice of the previous one.
  void RecordPeriod(int64_t now);
  // Opens or closes the loaded window at `now`: open while the job runs and
  // at least window_connections_ connections are open.
  void UpdateWindow(int64_t now, bool job_running);
  void Finish(const char* why);
  std::string Json(int64_t now) const;

  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<EchoService> service_;
  std::unique_ptr<bench::HashJob> hash_;
  std::unique_ptr<CpuJob> job_;
  size_t window_connections_ = 0;
  bool finished_ = false;

  int64_t started_ns_ = 0;  // the process, once the loop exists
  int64_t job_started_ns_ = 0;
  int64_t job_ended_ns_ = -1;  // -1: still running
  int64_t in_slices_ns_ = 0;
  int64_t max_slice_ns_ = 0;

  bool in_window_ = false;
  int64_t window_opened_ns_ = 0;
  uint64_t window_opened_bytes_ = 0;
  int64_t window_ns_ = 0;  // closed windows, summed
  uint64_t window_bytes_ = 0;

  uint64_t period_iteration_ = 0;  // the loop iteration of the last slice
  int64_t period_start_wall_ = 0;
  int64_t period_start_cpu_ = 0;
  load::LatencyHistogram period_wall_;  // nanoseconds
  load::LatencyHistogram period_cpu_;
};

absl::Status CpuEchoServer::Start() {
  absl::StatusOr<SocketAddress> address =
      SocketAddress::Parse(absl::GetFlag(FLAGS_listen));
  if (!address.ok())
    UsageError(absl::StrCat("--listen: ", address.status().message()));
  EventLoop::Options loop_options;
  loop_options.cpu_budget = absl::GetFlag(FLAGS_cpu_budget);
  absl::StatusOr<std::unique_ptr<EventLoop>> loop =
      EventLoop::Create(loop_options);
  if (!loop.ok()) return loop.status();
  loop_ = std::move(*loop);
  started_ns_ = loop_->clock()->NowNanos();

  EchoService::Options options;
  options.server.address = *address;
  absl::StatusOr<std::unique_ptr<EchoService>> service =
      EchoService::Create(loop_.get(), std::move(options));
  if (!service.ok()) return service.status();
  service_ = std::move(*service);

  window_connections_ =
      static_cast<size_t>(absl::GetFlag(FLAGS_window_connections));
  const uint64_t job_bytes = absl::GetFlag(FLAGS_job_bytes).bytes;
  if (job_bytes > 0) {
    bench::HashJob::Options job_options;
    job_options.bytes_per_pass = job_bytes;
    job_options.slice_bytes = absl::GetFlag(FLAGS_slice_bytes).bytes;
    job_options.repeat = absl::GetFlag(FLAGS_job_repeat);
    hash_ = std::make_unique<bench::HashJob>(job_options);
    job_ = std::make_unique<CpuJob>(loop_.get(), [this] { return JobSlice(); });
  }
  return absl::OkStatus();
}

int CpuEchoServer::Run() {
  for (int signo : {SIGINT, SIGTERM}) {
    absl::Status s = loop_->OnSignal(signo, [this, signo](int) {
      Finish(signo == SIGTERM ? "SIGTERM" : "SIGINT");
    });
    if (!s.ok()) {
      std::fprintf(stderr, "cpu_echo_server: %s\n",
                   std::string(s.message()).c_str());
      return 1;
    }
  }
  const absl::Duration run_for = absl::GetFlag(FLAGS_run_for);
  if (run_for > absl::ZeroDuration()) {
    Timer::After(loop_.get(), run_for, [this] { Finish("--run_for elapsed"); });
  }
  if (job_ != nullptr) {
    job_started_ns_ = loop_->clock()->NowNanos();
    job_->Start();
  }
  std::printf("listening on %s\n", service_->address().ToString().c_str());
  std::fflush(stdout);
  std::fprintf(
      stderr, "cpu_echo_server: %s backend, cpu_budget %s, job %s, pid %d\n",
      loop_->backend_name(),
      absl::FormatDuration(absl::GetFlag(FLAGS_cpu_budget)).c_str(),
      job_ == nullptr
          ? "none"
          : absl::StrCat(AbslUnparseFlag(absl::GetFlag(FLAGS_job_bytes)),
                         absl::GetFlag(FLAGS_job_repeat) ? " per pass, repeated"
                                                         : " once",
                         ", ",
                         AbslUnparseFlag(absl::GetFlag(FLAGS_slice_bytes)),
                         " slices")
                .c_str(),
      static_cast<int>(getpid()));
  absl::Status status = loop_->Run();
  if (!status.ok()) {
    std::fprintf(stderr, "cpu_echo_server: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  job_.reset();
  service_.reset();
  return 0;
}

CpuSliceResult CpuEchoServer::JobSlice() {
  Clock* clock = loop_->clock();
  const int64_t before = clock->NowNanos();
  UpdateWindow(before, /*job_running=*/true);
  RecordPeriod(before);
  const CpuSliceResult result = hash_->Slice();
  const int64_t after = clock->NowNanos();
  in_slices_ns_ += after - before;
  max_slice_ns_ = std::max(max_slice_ns_, after - before);
  if (result == CpuSliceResult::kDone) {
    job_ended_ns_ = after;
    UpdateWindow(after, /*job_running=*/false);
  }
  return result;
}

void CpuEchoServer::RecordPeriod(int64_t now) {
  const uint64_t iteration = loop_->counters().iterations;
  if (iteration == period_iteration_) return;  // not the first slice
  // One thread-CPU clock read per iteration (a system call), none per slice.
  const int64_t cpu = ThreadCpuNanos();
  const bool measured = window_connections_ == 0 || in_window_;
  if (measured && period_iteration_ != 0 &&
      iteration == period_iteration_ + 1) {
    period_wall_.Record(static_cast<uint64_t>(now - period_start_wall_));
    period_cpu_.Record(static_cast<uint64_t>(cpu - period_start_cpu_));
  }
  period_iteration_ = iteration;
  period_start_wall_ = now;
  period_start_cpu_ = cpu;
}

void CpuEchoServer::UpdateWindow(int64_t now, bool job_running) {
  const bool loaded = job_running && window_connections_ > 0 &&
                      service_->stats().tcp.connections >= window_connections_;
  if (loaded == in_window_) return;
  if (loaded) {
    window_opened_ns_ = now;
    window_opened_bytes_ = hash_->bytes_hashed();
  } else {
    window_ns_ += now - window_opened_ns_;
    window_bytes_ += hash_->bytes_hashed() - window_opened_bytes_;
  }
  in_window_ = loaded;
}

void CpuEchoServer::Finish(const char* why) {
  if (finished_) return;
  finished_ = true;
  const int64_t now = loop_->clock()->NowNanos();
  if (job_ != nullptr && job_ended_ns_ < 0) {
    job_->Stop();
    job_ended_ns_ = now;
    UpdateWindow(now, /*job_running=*/false);
  }
  std::printf("%s\n", Json(now).c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "cpu_echo_server: %s: stopped\n", why);
  service_->CutRemaining();  // ends every connection (CANCELLED)
  for (int signo : {SIGINT, SIGTERM}) loop_->RemoveSignal(signo);
  loop_->Stop();
}

std::string CpuEchoServer::Json(int64_t now) const {
  const int64_t job_ns = job_ != nullptr ? job_ended_ns_ - job_started_ns_ : 0;
  const uint64_t bytes = hash_ != nullptr ? hash_->bytes_hashed() : 0;
  const EchoService::Stats echo = service_->stats();
  const LoopCounters loop = loop_->counters();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto Micros = [](uint64_t nanos) {
    return absl::StrFormat("%.1f", nanos / 1e3);
  };
  const std::pair<const char*, std::string> fields[] = {
      {"backend", absl::StrCat("\"", loop_->backend_name(), "\"")},
      {"cpu_budget_us",
       absl::StrFormat("%.3f", absl::ToDoubleMicroseconds(
                                   absl::GetFlag(FLAGS_cpu_budget)))},
      {"job_bytes_per_pass",
       absl::StrCat(hash_ != nullptr ? hash_->options().bytes_per_pass : 0)},
      {"slice_bytes",
       absl::StrCat(hash_ != nullptr ? hash_->options().slice_bytes : 0)},
      {"job_bytes_hashed", absl::StrCat(bytes)},
      {"job_passes", absl::StrCat(hash_ != nullptr ? hash_->passes_done() : 0)},
      {"job_slices", absl::StrCat(hash_ != nullptr ? hash_->slices() : 0)},
      {"job_elapsed_s", absl::StrFormat("%.6f", Seconds(job_ns))},
      {"job_mib_per_s", absl::StrFormat("%.1f", MibPerSecond(bytes, job_ns))},
      {"job_slice_s", absl::StrFormat("%.6f", Seconds(in_slices_ns_))},
      {"job_max_slice_us", absl::StrFormat("%.1f", max_slice_ns_ / 1e3)},
      {"job_digest",
       absl::StrFormat("\"%016x\"", hash_ != nullptr ? hash_->digest() : 0)},
      {"window_connections", absl::StrCat(window_connections_)},
      {"window_s", absl::StrFormat("%.6f", Seconds(window_ns_))},
      {"window_bytes", absl::StrCat(window_bytes_)},
      {"window_mib_per_s",
       absl::StrFormat("%.1f", MibPerSecond(window_bytes_, window_ns_))},
      {"period_count", absl::StrCat(period_wall_.count())},
      {"period_wall_p50_us", Micros(period_wall_.ValueAtPercentile(50))},
      {"period_wall_p99_us", Micros(period_wall_.ValueAtPercentile(99))},
      {"period_wall_max_us", Micros(period_wall_.max())},
      {"period_cpu_p50_us", Micros(period_cpu_.ValueAtPercentile(50))},
      {"period_cpu_p99_us", Micros(period_cpu_.ValueAtPercentile(99))},
      {"period_cpu_max_us", Micros(period_cpu_.max())},
      {"echo_accepted", absl::StrCat(echo.server.accepted)},
      {"echo_bytes_read", absl::StrCat(echo.tcp.bytes_read)},
      {"echo_bytes_written", absl::StrCat(echo.tcp.bytes_written)},
      {"loop_iterations", absl::StrCat(loop.iterations)},
      {"loop_poll_calls", absl::StrCat(loop.poll_calls)},
      {"loop_poll_blocked_s",
       absl::StrFormat("%.6f", Seconds(loop.poll_blocked_nanos))},
      {"loop_events", absl::StrCat(loop.events_dispatched)},
      {"loop_tasks_run", absl::StrCat(loop.tasks_run)},
      {"loop_urgent_tasks_run", absl::StrCat(loop.urgent_tasks_run)},
      {"loop_cpu_slices", absl::StrCat(loop.cpu_slices)},
      {"loop_timers_fired", absl::StrCat(loop.timers_fired)},
      {"cpu_user_s", absl::StrFormat("%.3f", TimevalSeconds(usage.ru_utime))},
      {"cpu_sys_s", absl::StrFormat("%.3f", TimevalSeconds(usage.ru_stime))},
      {"wall_s", absl::StrFormat("%.3f", Seconds(now - started_ns_))},
  };
  std::string json = "{";
  for (const auto& [key, value] : fields) {
    absl::StrAppend(&json, json.size() > 1 ? ", " : "", "\"", key,
                    "\": ", value);
  }
  return json + "}";
}

void CheckFlagValues() {
  const absl::Duration budget = absl::GetFlag(FLAGS_cpu_budget);
  if (budget <= absl::ZeroDuration() || budget == absl::InfiniteDuration()) {
    UsageError("--cpu_budget must be a positive, finite duration");
  }
  const absl::Duration run_for = absl::GetFlag(FLAGS_run_for);
  if (run_for < absl::ZeroDuration() || run_for == absl::InfiniteDuration()) {
    UsageError("--run_for must be a finite duration >= 0");
  }
  if (absl::GetFlag(FLAGS_window_connections) < 0) {
    UsageError("--window_connections must be >= 0");
  }
  if (absl::GetFlag(FLAGS_job_bytes).bytes > 0) {
    bench::HashJob::Options job;
    job.bytes_per_pass = absl::GetFlag(FLAGS_job_bytes).bytes;
    job.slice_bytes = absl::GetFlag(FLAGS_slice_bytes).bytes;
    absl::Status s = bench::HashJob::Validate(job);
    if (!s.ok())
      UsageError(absl::StrCat("--job_bytes/--slice_bytes: ", s.message()));
  }
  // --listen is checked by CpuEchoServer::Start().
}

}  // namespace
}  // namespace nbio

int main(int argc, char** argv) {
  nbio::ParseCommandLineOrExit(argc, argv, "cpu_echo_server", nbio::kUsage);
  nbio::CheckFlagValues();
  signal(SIGPIPE, SIG_IGN);
  nbio::CpuEchoServer server;
  absl::Status status = server.Start();
  if (!status.ok()) {
    std::fprintf(stderr, "cpu_echo_server: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  return server.Run();
}
