// echo_load: a load generator for any TCP echo server, with every echoed
// byte verified and every round trip recorded. See load_generator.h for what
// a run does and how bytes are counted.
//
//   tools/bazel run //tools:echo_load -- --target=127.0.0.1:7007
//       --connections=1000 --size=64 --duration=10s   (one command line)
//
// Many idle connections (hold mode), one verified round trip on each:
//   echo_load --hold --hold_time=30s --connections=1000000 --processes=52
//       --sources=40 --connect_rate=20000 --max_connecting=256
//
// Exit status:
//   0  every connection served to the end and every byte verified
//   1  mismatched, lost or extra bytes (takes precedence over 3)
//   2  bad flags
//   3  connections failed: none could be made, or some were refused,
//      rejected, left unanswered, timed out or closed by the server
//   4  the run overran its hard time cap (a bug in echo_load)
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "queue/base/flags.h"
#include "reactor/sys/socket_address.h"
#include "tools/load_generator.h"

ABSL_FLAG(std::string, target, "127.0.0.1:7007",
          "The echo server, host:port with a numeric host (IPv4, or IPv6 in "
          "brackets). Loopback only unless --allow_remote.");
ABSL_FLAG(bool, allow_remote, false,
          "Allow a --target outside 127.0.0.0/8 and ::1.");
ABSL_FLAG(int32_t, connections, 100, "Connections to open.");
ABSL_FLAG(int32_t, size, 64, "Bytes per message.");
ABSL_FLAG(int32_t, depth, 1,
          "Messages in flight per connection; 1 = ping-pong.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10),
          "How long to measure, after ramp-up and warmup.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(2),
          "Traffic before measuring starts, after ramp-up.");
ABSL_FLAG(double, connect_rate, 0,
          "Connections opened per second during ramp-up; 0 = as fast as "
          "possible.");
ABSL_FLAG(int32_t, max_connecting, 0,
          "At most this many connects in flight per process; 0 = no limit. "
          "With --connect_rate it keeps SYN bursts within the server's "
          "accept backlog (256 at 20000/s had no SYN drops here).");
ABSL_FLAG(int32_t, sources, 1,
          "Source addresses: with K > 1, bind each connection to one of K "
          "addresses 127.0.0.1 .. 127.0.0.254, 127.0.1.1 .. (skipping .0 and "
          ".255; up to 65024) with IP_BIND_ADDRESS_NO_PORT, past the ~28k "
          "ephemeral ports of one source address. IPv4 targets only.");
ABSL_FLAG(int32_t, threads, 1,
          "Load threads per process, each with its own epoll loop.");
ABSL_FLAG(int32_t, processes, 1,
          "Worker processes (fork()ed), each with its share of --connections "
          "and of the --sources, past one process's RLIMIT_NOFILE (20000 on "
          "nbio's machines). The parent aggregates their progress and "
          "results.");
ABSL_FLAG(bool, hold, false,
          "Hold mode: one verified round trip (--size bytes) on every "
          "connection, then hold them all open and idle for --hold_time, then "
          "close each cleanly (shutdown, wait for the server's EOF, within "
          "--drain_timeout). --duration, --warmup and --depth do not apply.");
ABSL_FLAG(absl::Duration, hold_time, absl::Seconds(10),
          "Hold mode: how long to hold every connection open after the last "
          "round trip.");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(2),
          "At the end, how long to wait for outstanding echoes before "
          "counting them as lost. Hold mode: also how long the last round "
          "trips of the ramp-up, and the close, may take.");
ABSL_FLAG(bool, json, false,
          "Print the result as one JSON object on stdout instead of the "
          "report.");

namespace nbio {
namespace load {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitDataErrors = 1;
constexpr int kExitConnectionsFailed = 3;
// Bad flags exit 2, through ExitWithUsageError (queue/base/flags.h).

constexpr const char kUsage[] =
    "Load generator for TCP echo servers: many connections, every echoed "
    "byte verified, round trips in a histogram.\n"
    "  echo_load --target=127.0.0.1:7007 --connections=1000 --size=64 "
    "--duration=10s [--json]\n"
    "  echo_load --hold --hold_time=30s --connections=100000 --processes=6 "
    "--sources=4 --connect_rate=20000 --max_connecting=256\n"
    "Exit status: 0 ok, 1 mismatched/lost/extra bytes, 2 bad flags, 3 "
    "connections failed, 4 internal time cap overrun.";

[[noreturn]] void UsageError(absl::string_view message) {
  ExitWithUsageError("echo_load", message);
}

LoadOptions OptionsFromFlags() {
  LoadOptions o;
  absl::StatusOr<SocketAddress> target =
      SocketAddress::Parse(absl::GetFlag(FLAGS_target));
  if (!target.ok())
    UsageError(absl::StrCat("--target: ", target.status().message()));
  o.target = *target;
  o.allow_remote = absl::GetFlag(FLAGS_allow_remote);
  o.connections = absl::GetFlag(FLAGS_connections);
  if (absl::GetFlag(FLAGS_size) < 1)
    UsageError("--size must be at least 1 byte");
  o.size = static_cast<size_t>(absl::GetFlag(FLAGS_size));
  o.depth = absl::GetFlag(FLAGS_depth);
  o.duration = absl::GetFlag(FLAGS_duration);
  o.warmup = absl::GetFlag(FLAGS_warmup);
  o.connect_rate = absl::GetFlag(FLAGS_connect_rate);
  o.max_connecting = absl::GetFlag(FLAGS_max_connecting);
  o.sources = absl::GetFlag(FLAGS_sources);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.processes = absl::GetFlag(FLAGS_processes);
  o.hold = absl::GetFlag(FLAGS_hold);
  o.hold_time = absl::GetFlag(FLAGS_hold_time);
  if (o.hold) o.depth = 1;
  o.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  absl::Status status = ValidateOptions(o);
  if (!status.ok()) UsageError(status.message());
  return o;
}

// "123,456" for counts in the report.
std::string Grouped(uint64_t n) {
  std::string digits = absl::StrCat(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

// "850ns", "45.1us", "2.30ms", "1.20s".
std::string Latency(uint64_t ns) {
  if (ns < 1000) return absl::StrCat(ns, "ns");
  if (ns < 1000000) return absl::StrFormat("%.1fus", ns / 1e3);
  if (ns < 1000000000) return absl::StrFormat("%.2fms", ns / 1e6);
  return absl::StrFormat("%.2fs", ns / 1e9);
}

void ShowProgress(const LoadProgress& p, uint64_t* last_messages,
                  double* last_elapsed) {
  const double dt = p.elapsed_seconds - *last_elapsed;
  const double rate =
      dt > 0 ? static_cast<double>(p.messages - *last_messages) / dt : 0;
  *last_messages = p.messages;
  *last_elapsed = p.elapsed_seconds;
  // \r and erase-to-end-of-line: one line, rewritten in place.
  std::fprintf(stderr,
               "\r[%6.1fs] %-8s %s msgs/s | conns %s open, %s failed | "
               "errors %s | data errors %s\033[K",
               p.elapsed_seconds, p.phase,
               Grouped(static_cast<uint64_t>(rate)).c_str(),
               Grouped(p.open).c_str(), Grouped(p.failed).c_str(),
               Grouped(p.errors).c_str(), Grouped(p.data_errors).c_str());
  std::fflush(stderr);
}

// Hold mode's progress: counts and their rate since the last line. On a
// terminal one line rewritten in place; otherwise (a log) one line a second
// and one at each change of phase.
struct HoldProgress {
  const char* phase = "";
  double elapsed = 0;
  uint64_t established = 0;
  uint64_t verified = 0;
  uint64_t closed = 0;
};

void ShowHoldProgress(const LoadProgress& p, bool tty, HoldProgress* last) {
  const double dt = p.elapsed_seconds - last->elapsed;
  if (!tty && dt < 1.0 && std::strcmp(p.phase, last->phase) == 0) return;
  auto rate = [dt](uint64_t now, uint64_t before) {
    return Grouped(dt > 0 ? static_cast<uint64_t>((now - before) / dt) : 0);
  };
  std::fprintf(
      stderr,
      "%s[%6.1fs] %-8s established %s (+%s/s), verified %s (+%s/s), "
      "open %s, closed %s (+%s/s), failed %s, errors %s%s",
      tty ? "\r" : "", p.elapsed_seconds, p.phase,
      Grouped(p.established).c_str(),
      rate(p.established, last->established).c_str(),
      Grouped(p.verified).c_str(), rate(p.verified, last->verified).c_str(),
      Grouped(p.open).c_str(), Grouped(p.closed).c_str(),
      rate(p.closed, last->closed).c_str(), Grouped(p.failed).c_str(),
      Grouped(p.errors + p.data_errors).c_str(), tty ? "\033[K" : "\n");
  std::fflush(stderr);
  *last = {p.phase, p.elapsed_seconds, p.established, p.verified, p.closed};
}

double MsgsPerSecond(const LoadResult& r) {
  return r.window_seconds > 0 ? r.messages / r.window_seconds : 0;
}
double MegabytesPerSecond(const LoadResult& r, const LoadOptions& o) {
  return MsgsPerSecond(r) * static_cast<double>(o.size) / 1e6;
}

// Why connections failed, in words, one line each; empty when none did.
std::vector<std::string> ConnectionHints(const LoadResult& r,
                                         const LoadOptions& o) {
  const struct {
    uint64_t count;
    std::string why;
  } causes[] = {
      {r.refused, absl::StrCat("refused (ECONNREFUSED): is a server listening "
                               "on ",
                               o.target.ToString(), "?")},
      {r.out_of_fds,
       "not opened: out of file descriptors (EMFILE/ENFILE). This process "
       "may hold RLIMIT_NOFILE descriptors (20000, a hard limit, on nbio's "
       "machines); lower --connections"},
      {r.no_ports,
       "not opened: no ephemeral port left (EADDRNOTAVAIL); spread the "
       "connections over more source addresses with --sources"},
      {r.timed_out,
       "not established before the ramp-up cap (the server's accept backlog "
       "full, or not accepting)"},
      {r.connect_errors,
       absl::StrCat("failed to connect: ", r.first_connect_error)},
      {r.rejected,
       "rejected: the server closed or reset them before echoing a byte "
       "(e.g. a select() server past FD_SETSIZE)"},
      {r.unanswered,
       "unanswered: open to the end without a single byte echoed"},
      {r.closed_by_peer, "closed or reset by the server mid-run"},
  };
  std::vector<std::string> hints;
  for (const auto& cause : causes) {
    if (cause.count > 0) {
      hints.push_back(absl::StrCat(Grouped(cause.count), " ", cause.why));
    }
  }
  return hints;
}

// The lines both reports end with: why connections failed, I/O errors, and
// what verification found.
void PrintReportTail(const LoadResult& r, const LoadOptions& o) {
  for (const std::string& hint : ConnectionHints(r, o)) {
    std::printf("                  %s\n", hint.c_str());
  }
  std::printf("  errors        %s resets, %s other I/O errors\n",
              Grouped(r.resets).c_str(), Grouped(r.io_errors).c_str());
  std::printf("  verification  %s mismatched, %s lost, %s extra bytes%s\n",
              Grouped(r.mismatches).c_str(), Grouped(r.lost).c_str(),
              Grouped(r.extra).c_str(),
              r.mismatches + r.lost + r.extra == 0 && r.bytes_received > 0
                  ? " (all verified)"
                  : "");
}

void PrintHoldReport(const LoadResult& r, const LoadOptions& o) {
  std::printf(
      "echo_load --hold: %s, %d connections (%d processes, %d source "
      "addresses), one %zu-byte round trip each, held %s\n",
      o.target.ToString().c_str(), o.connections, o.processes, o.sources,
      o.size, absl::FormatDuration(o.hold_time).c_str());
  std::printf("  established   %s (ramp %.2fs, %s/s)\n",
              Grouped(r.established).c_str(), r.last_established_seconds,
              Grouped(static_cast<uint64_t>(r.ramp_rate())).c_str());
  std::printf("  verified      %s round trips, all done %.2fs after start\n",
              Grouped(r.verified).c_str(), r.round_trip_all_seconds);
  std::printf("  closed        %s cleanly in %.2fs after the hold\n",
              Grouped(r.connections_ok).c_str(), r.close_seconds);
  std::printf(
      "  connections   %s ok, %s failed (run %.2fs, echo_load CPU %.2fs)\n",
      Grouped(r.connections_ok).c_str(),
      Grouped(r.connections_failed()).c_str(), r.run_seconds, r.cpu_seconds);
  PrintReportTail(r, o);
}

void PrintReport(const LoadResult& r, const LoadOptions& o) {
  if (o.hold) {
    PrintHoldReport(r, o);
    return;
  }
  std::printf(
      "echo_load: %s, %d connections, %zu-byte messages, depth %d, %s "
      "measured after %s warmup\n",
      o.target.ToString().c_str(), o.connections, o.size, o.depth,
      absl::FormatDuration(o.duration).c_str(),
      absl::FormatDuration(o.warmup).c_str());
  std::printf("  throughput    %s msgs/s, %.2f MB/s echoed\n",
              Grouped(static_cast<uint64_t>(MsgsPerSecond(r))).c_str(),
              MegabytesPerSecond(r, o));
  const LatencyHistogram& h = r.latency_ns;
  if (h.count() == 0) {
    std::printf(
        "  round trip    no message completed in the measured window\n");
  } else {
    std::printf(
        "  round trip    p50 %s  p99 %s  p99.9 %s  max %s  (%s samples)\n",
        Latency(h.ValueAtPercentile(50)).c_str(),
        Latency(h.ValueAtPercentile(99)).c_str(),
        Latency(h.ValueAtPercentile(99.9)).c_str(), Latency(h.max()).c_str(),
        Grouped(h.count()).c_str());
  }
  std::printf(
      "  connections   %s ok, %s failed (ramp-up %.2fs, run %.2fs, "
      "echo_load CPU %.2fs)\n",
      Grouped(r.connections_ok).c_str(),
      Grouped(r.connections_failed()).c_str(), r.ramp_up_seconds, r.run_seconds,
      r.cpu_seconds);
  PrintReportTail(r, o);
}

void PrintJson(const LoadResult& r, const LoadOptions& o, int exit_status) {
  const LatencyHistogram& h = r.latency_ns;
  auto us = [](uint64_t ns) { return static_cast<double>(ns) / 1e3; };
  // Flat, one "key": value per line, numbers printed as they are: easy for
  // jq and for sed or awk alike. Order: the load, timing, throughput,
  // latency, connections, verification.
  const std::pair<const char*, std::string> fields[] = {
      {"target", absl::StrCat("\"", o.target.ToString(), "\"")},
      {"connections", absl::StrCat(o.connections)},
      {"size", absl::StrCat(o.size)},
      {"depth", absl::StrCat(o.depth)},
      {"threads", absl::StrCat(o.threads)},
      {"processes", absl::StrCat(o.processes)},
      {"sources", absl::StrCat(o.sources)},
      {"hold", o.hold ? "true" : "false"},
      {"warmup_s", absl::StrFormat("%.3f", absl::ToDoubleSeconds(o.warmup))},
      {"duration_s", absl::StrFormat("%.3f", r.window_seconds)},
      {"ramp_up_s", absl::StrFormat("%.3f", r.ramp_up_seconds)},
      {"run_s", absl::StrFormat("%.3f", r.run_seconds)},
      {"established", absl::StrCat(r.established)},
      {"verified", absl::StrCat(r.verified)},
      {"last_established_s",
       absl::StrFormat("%.3f", r.last_established_seconds)},
      {"ramp_rate_per_s", absl::StrFormat("%.1f", r.ramp_rate())},
      {"round_trip_all_s", absl::StrFormat("%.3f", r.round_trip_all_seconds)},
      {"hold_s", absl::StrFormat("%.3f", r.hold_seconds)},
      {"close_s", absl::StrFormat("%.3f", r.close_seconds)},
      {"load_cpu_s", absl::StrFormat("%.3f", r.cpu_seconds)},
      {"messages", absl::StrCat(r.messages)},
      {"messages_total", absl::StrCat(r.messages_total)},
      {"msgs_per_sec", absl::StrFormat("%.1f", MsgsPerSecond(r))},
      {"mb_per_sec", absl::StrFormat("%.3f", MegabytesPerSecond(r, o))},
      {"bytes_sent", absl::StrCat(r.bytes_sent)},
      {"bytes_received", absl::StrCat(r.bytes_received)},
      {"latency_samples", absl::StrCat(h.count())},
      {"p50_us", absl::StrFormat("%.3f", us(h.ValueAtPercentile(50)))},
      {"p99_us", absl::StrFormat("%.3f", us(h.ValueAtPercentile(99)))},
      {"p999_us", absl::StrFormat("%.3f", us(h.ValueAtPercentile(99.9)))},
      {"max_us", absl::StrFormat("%.3f", us(h.max()))},
      {"mean_us", absl::StrFormat("%.3f", h.mean() / 1e3)},
      {"connections_ok", absl::StrCat(r.connections_ok)},
      {"connections_failed", absl::StrCat(r.connections_failed())},
      {"refused", absl::StrCat(r.refused)},
      {"timed_out", absl::StrCat(r.timed_out)},
      {"out_of_fds", absl::StrCat(r.out_of_fds)},
      {"no_ports", absl::StrCat(r.no_ports)},
      {"connect_errors", absl::StrCat(r.connect_errors)},
      {"rejected", absl::StrCat(r.rejected)},
      {"unanswered", absl::StrCat(r.unanswered)},
      {"closed_by_peer", absl::StrCat(r.closed_by_peer)},
      {"unclosed", absl::StrCat(r.unclosed)},
      {"resets", absl::StrCat(r.resets)},
      {"io_errors", absl::StrCat(r.io_errors)},
      {"mismatches", absl::StrCat(r.mismatches)},
      {"lost", absl::StrCat(r.lost)},
      {"extra", absl::StrCat(r.extra)},
      {"exit_status", absl::StrCat(exit_status)},
  };
  std::string json = "{\n";
  for (const auto& [key, value] : fields) {
    absl::StrAppend(&json, json.size() > 2 ? ",\n" : "", "  \"", key,
                    "\": ", value);
  }
  json += "\n}\n";
  std::fputs(json.c_str(), stdout);
}

int Main(int argc, char** argv) {
  ParseCommandLineOrExit(argc, argv, "echo_load", kUsage);
  const LoadOptions options = OptionsFromFlags();
  const bool json = absl::GetFlag(FLAGS_json);

  const bool tty = isatty(STDERR_FILENO) == 1;
  uint64_t last_messages = 0;
  double last_elapsed = 0;
  HoldProgress last_hold;
  absl::StatusOr<LoadResult> result =
      LoadGenerator(options).Run([&](const LoadProgress& p) {
        if (options.hold) {
          ShowHoldProgress(p, tty, &last_hold);
        } else if (tty) {
          ShowProgress(p, &last_messages, &last_elapsed);
        }
      });
  if (tty) std::fprintf(stderr, "\r\033[K");
  if (result.ok() && options.hold) {
    // A last progress line from the final counts: the periodic ones come
    // from samples and may miss a short phase.
    const LoadResult& r = *result;
    LoadProgress done;
    done.elapsed_seconds = r.run_seconds;
    done.phase = "done";
    done.established = r.established;
    done.verified = r.verified;
    done.closed = r.connections_ok;
    done.failed = r.connections_failed();
    done.errors = r.resets + r.io_errors;
    done.data_errors = r.mismatches + r.extra;
    ShowHoldProgress(done, /*tty=*/false, &last_hold);
  }
  if (!result.ok()) {
    std::fprintf(stderr, "echo_load: %s\n", result.status().ToString().c_str());
    return kExitConnectionsFailed;
  }
  const LoadResult& r = *result;
  int status = kExitOk;
  if (r.mismatches + r.lost + r.extra > 0) {
    status = kExitDataErrors;
  } else if (r.connections_failed() > 0 || r.connections_ok == 0) {
    status = kExitConnectionsFailed;
  }
  if (json) {
    PrintJson(r, options, status);
  } else {
    PrintReport(r, options);
  }
  // Connection trouble on stderr too, so it shows next to --json.
  if (json) {
    for (const std::string& hint : ConnectionHints(r, options)) {
      std::fprintf(stderr, "echo_load: %s\n", hint.c_str());
    }
  }
  if (r.connections_ok + r.closed_by_peer == 0) {
    std::fprintf(stderr, "echo_load: no connection to %s could be used%s%s\n",
                 options.target.ToString().c_str(),
                 r.first_connect_error.empty() ? "" : ": ",
                 r.first_connect_error.c_str());
  }
  if (status == kExitDataErrors) {
    std::fprintf(stderr,
                 "echo_load: FAILED verification: %s mismatched, %s lost, %s "
                 "extra bytes\n",
                 Grouped(r.mismatches).c_str(), Grouped(r.lost).c_str(),
                 Grouped(r.extra).c_str());
  }
  return status;
}

}  // namespace
}  // namespace load
}  // namespace nbio

int main(int argc, char** argv) { return nbio::load::Main(argc, argv); }
