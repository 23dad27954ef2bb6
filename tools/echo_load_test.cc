// Runs the echo_load binary against correct and deliberately faulty echo
// servers (FaultyEchoServer, on a thread of this test) and checks its exit
// status and the counters in its --json report: every kind of wrong echo
// must be caught and attributed to the right counter, a correct server must
// pass, and usage errors must be one line and exit 2.
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "reactor/sys/socket_address.h"
#include "tools/faulty_echo_server.h"

namespace nbio {
namespace load {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct Outcome {
  int exit_status = -1;
  std::string out;
  std::string err;

  // An integer field of the --json report; fails the test when absent.
  int64_t Field(const std::string& name) const {
    const std::string key = absl::StrCat("\"", name, "\": ");
    const size_t at = out.find(key);
    if (at == std::string::npos) {
      ADD_FAILURE() << "no field " << name << " in:\n" << out << err;
      return -1;
    }
    const size_t end = out.find_first_of(",\n", at);
    double value = 0;
    if (!absl::SimpleAtod(out.substr(at + key.size(), end - at - key.size()),
                          &value)) {
      ADD_FAILURE() << "field " << name << " is not a number";
    }
    return static_cast<int64_t>(value);
  }
};

std::string EchoLoadPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  return absl::StrCat(srcdir ? srcdir : ".", "/",
                      workspace ? workspace : "nbio", "/tools/echo_load");
}

// Runs echo_load with `args`; with nofile > 0 under that RLIMIT_NOFILE.
Outcome RunEchoLoad(const std::vector<std::string>& args, rlim_t nofile = 0) {
  const std::string path = EchoLoadPath();
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(path.c_str()));
  for (const std::string& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << errno;
    return {};
  }
  const pid_t pid = fork();
  if (pid == 0) {
    // Only async-signal-safe calls until exec: this process has threads.
    dup2(out_pipe[1], STDOUT_FILENO);
    dup2(err_pipe[1], STDERR_FILENO);
    if (nofile > 0) {
      rlimit limit{nofile, nofile};
      setrlimit(RLIMIT_NOFILE, &limit);
    }
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  Outcome o;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&o.out, &o.err};
  int open_pipes = 2;
  while (open_pipes > 0) {
    if (poll(fds, 2, -1) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_pipes;
      }
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  o.exit_status =
      WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return o;
}

// Two ping-pong connections of 64-byte messages, briefly.
std::vector<std::string> ShortRun(uint16_t port,
                                  std::vector<std::string> more = {}) {
  std::vector<std::string> args = {
      absl::StrCat("--target=127.0.0.1:", port),
      "--connections=2",
      "--size=64",
      "--depth=1",
      "--warmup=0",
      "--duration=300ms",
      "--drain_timeout=300ms",
      "--json",
  };
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

std::unique_ptr<FaultyEchoServer> StartServer(Fault fault,
                                              uint64_t offset = 0) {
  absl::StatusOr<std::unique_ptr<FaultyEchoServer>> server =
      FaultyEchoServer::Start(fault, offset);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

void ExpectNoDataErrors(const Outcome& o) {
  EXPECT_EQ(o.Field("mismatches"), 0) << o.err;
  EXPECT_EQ(o.Field("lost"), 0) << o.err;
  EXPECT_EQ(o.Field("extra"), 0) << o.err;
}

TEST(EchoLoadTest, CorrectServerPasses) {
  auto server = StartServer(Fault::kNone);
  ASSERT_NE(server, nullptr);
  const Outcome o = RunEchoLoad(ShortRun(server->port()));
  EXPECT_EQ(o.exit_status, 0) << o.out << o.err;
  ExpectNoDataErrors(o);
  EXPECT_EQ(o.Field("connections_ok"), 2);
  EXPECT_EQ(o.Field("connections_failed"), 0);
  EXPECT_GT(o.Field("messages"), 0);
  EXPECT_EQ(o.Field("latency_samples"), o.Field("messages"));
  EXPECT_EQ(o.Field("bytes_received"), o.Field("bytes_sent"));
  EXPECT_EQ(o.Field("exit_status"), 0);
}

TEST(EchoLoadTest, CorrectServerPassesWithDeepLargeMessagesThreadsAndSources) {
  // 16 KiB messages, 4 in flight: the server's writes go out in pieces.
  auto server = StartServer(Fault::kNone);
  ASSERT_NE(server, nullptr);
  const Outcome o = RunEchoLoad(
      ShortRun(server->port(), {"--connections=8", "--size=16384", "--depth=4",
                                "--threads=2", "--sources=3"}));
  EXPECT_EQ(o.exit_status, 0) << o.out << o.err;
  ExpectNoDataErrors(o);
  EXPECT_EQ(o.Field("connections_ok"), 8);
  EXPECT_GT(o.Field("messages"), 0);
}

TEST(EchoLoadTest, HumanReportSaysAllVerified) {
  auto server = StartServer(Fault::kNone);
  ASSERT_NE(server, nullptr);
  std::vector<std::string> args = ShortRun(server->port());
  args.pop_back();  // no --json
  const Outcome o = RunEchoLoad(args);
  EXPECT_EQ(o.exit_status, 0) << o.out << o.err;
  EXPECT_THAT(o.out, HasSubstr("msgs/s"));
  EXPECT_THAT(o.out, HasSubstr("p99.9"));
  EXPECT_THAT(o.out, HasSubstr("2 ok, 0 failed"));
  EXPECT_THAT(o.out,
              HasSubstr("0 mismatched, 0 lost, 0 extra bytes (all verified)"));
  // No progress line: stderr is not a terminal.
  EXPECT_THAT(o.err, Not(HasSubstr("\r")));
}

TEST(EchoLoadTest, ProcessesSplitConnectionsAndSources) {
  // 2 worker processes x 300 connections over 4 source addresses: the
  // parent's report adds up both processes' connections and traffic.
  auto server = StartServer(Fault::kNone);
  ASSERT_NE(server, nullptr);
  const Outcome o = RunEchoLoad(ShortRun(
      server->port(), {"--connections=600", "--processes=2", "--sources=4"}));
  EXPECT_EQ(o.exit_status, 0) << o.out << o.err;
  ExpectNoDataErrors(o);
  EXPECT_EQ(o.Field("processes"), 2);
  EXPECT_EQ(o.Field("connections_ok"), 600);
  EXPECT_EQ(o.Field("established"), 600);
  EXPECT_EQ(o.Field("connections_failed"), 0);
  EXPECT_GT(o.Field("messages"), 0);
  EXPECT_EQ(o.Field("latency_samples"), o.Field("messages"));
  EXPECT_EQ(o.Field("bytes_received"), o.Field("bytes_sent"));
}

TEST(EchoLoadTest, SourcesBeyond127_0_0_254Work) {
  // 300 source addresses: 127.0.0.1 .. 127.0.0.254, then 127.0.1.1 ...
  auto server = StartServer(Fault::kNone);
  ASSERT_NE(server, nullptr);
  const Outcome o = RunEchoLoad(
      ShortRun(server->port(), {"--connections=300", "--sources=300"}));
  EXPECT_EQ(o.exit_status, 0) << o.out << o.err;
  ExpectNoDataErrors(o);
  EXPECT_EQ(o.Field("connections_ok"), 300);
}

// Hold mode, small: 2 processes x 300 connections, 4 sources, paced.
std::vector<std::string> HoldRun(uint16_t port,
                                 std::vector<std::string> more = {}) {
  std::vector<std::string> args = {
      absl::StrCat("--target=127.0.0.1:", port),
      "--hold",
      "--hold_time=300ms",
      "--connections=600",
      "--processes=2",
      "--sources=4",
      "--connect_rate=6000",
      "--max_connecting=64",
      "--drain_timeout=3s",
      "--json",
  };
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

TEST(EchoLoadTest, HoldVerifiesHoldsAndClosesEveryConnection) {
  auto server = StartServer(Fault::kNone);
  ASSERT_NE(server, nullptr);
  const Outcome o = RunEchoLoad(HoldRun(server->port()));
  EXPECT_EQ(o.exit_status, 0) << o.out << o.err;
  ExpectNoDataErrors(o);
  EXPECT_EQ(o.Field("established"), 600);
  EXPECT_EQ(o.Field("verified"), 600);
  EXPECT_EQ(o.Field("connections_ok"), 600);  // closed cleanly, both FINs
  EXPECT_EQ(o.Field("unclosed"), 0);
  EXPECT_EQ(o.Field("connections_failed"), 0);
  // One round trip each, nothing more.
  EXPECT_EQ(o.Field("messages_total"), 600);
  EXPECT_EQ(o.Field("bytes_sent"), 600 * 64);
  EXPECT_EQ(o.Field("bytes_received"), 600 * 64);
  EXPECT_GT(o.Field("ramp_rate_per_s"), 0);
  // Progress lines go to stderr, a log here: whole lines, no \r; the last
  // one has the final counts.
  EXPECT_THAT(o.err, HasSubstr("done     established 600"));
  EXPECT_THAT(o.err, HasSubstr("verified 600"));
  EXPECT_THAT(o.err, Not(HasSubstr("\r")));
}

TEST(EchoLoadTest, HoldCatchesACorruptRoundTrip) {
  // Byte 10 of every connection comes back flipped: no round trip is
  // verified, and each is one mismatch.
  auto server = StartServer(Fault::kCorrupt, 10);
  ASSERT_NE(server, nullptr);
  const Outcome o = RunEchoLoad(HoldRun(server->port()));
  EXPECT_EQ(o.exit_status, 1) << o.out << o.err;
  EXPECT_EQ(o.Field("established"), 600);
  EXPECT_EQ(o.Field("verified"), 0);
  EXPECT_EQ(o.Field("mismatches"), 600);
  EXPECT_THAT(o.err, HasSubstr("FAILED verification"));
}

TEST(EchoLoadTest, HoldHumanReportSaysWhatHappened) {
  auto server = StartServer(Fault::kNone);
  ASSERT_NE(server, nullptr);
  std::vector<std::string> args = HoldRun(server->port(), {"--processes=1"});
  args.erase(std::find(args.begin(), args.end(), "--json"));
  const Outcome o = RunEchoLoad(args);
  EXPECT_EQ(o.exit_status, 0) << o.out << o.err;
  EXPECT_THAT(o.out, HasSubstr("established   600"));
  EXPECT_THAT(o.out, HasSubstr("verified      600 round trips"));
  EXPECT_THAT(o.out, HasSubstr("closed        600 cleanly"));
  EXPECT_THAT(o.out, HasSubstr("(all verified)"));
}

// One deliberate fault per connection (two connections of 64-byte
// ping-pong): each must exit 1 and land in exactly the right counter.
struct FaultCase {
  const char* name;
  Fault fault;
  uint64_t offset;
  int64_t mismatches;
  int64_t lost;
  int64_t extra;
};

class EchoLoadFaultTest : public ::testing::TestWithParam<FaultCase> {};

TEST_P(EchoLoadFaultTest, IsCaughtByTheRightCounter) {
  const FaultCase& f = GetParam();
  auto server = StartServer(f.fault, f.offset);
  ASSERT_NE(server, nullptr);
  const Outcome o = RunEchoLoad(ShortRun(server->port()));
  EXPECT_EQ(o.exit_status, 1) << o.out << o.err;
  EXPECT_EQ(o.Field("mismatches"), f.mismatches);
  EXPECT_EQ(o.Field("lost"), f.lost);
  EXPECT_EQ(o.Field("extra"), f.extra);
  EXPECT_EQ(o.Field("connections_ok"), 2);
  EXPECT_THAT(o.err, HasSubstr("FAILED verification"));
}

INSTANTIATE_TEST_SUITE_P(
    Faults, EchoLoadFaultTest,
    ::testing::Values(
        // The last byte of the second message never comes back: that
        // message waits, and the drain counts the missing byte as lost.
        FaultCase{"DroppedByteIsLost", Fault::kDrop, 127, 0, 2, 0},
        // Neighbours always differ in the stream, so a swap is exactly two.
        FaultCase{"ReorderedBytesAreTwoMismatches", Fault::kReorder, 100, 4, 0,
                  0},
        FaultCase{"CorruptedByteIsOneMismatch", Fault::kCorrupt, 100, 2, 0, 0},
        // A byte too many after the second message arrives when nothing is
        // outstanding: extra, and the stream goes on unshifted.
        FaultCase{"ExtraByteIsExtra", Fault::kExtra, 127, 0, 0, 2}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(EchoLoadTest, ResetMidStreamIsCountedAndLosesTheMessage) {
  // The server resets when the second message arrives, without echoing it.
  auto server = StartServer(Fault::kReset, 100);
  ASSERT_NE(server, nullptr);
  const Outcome o = RunEchoLoad(ShortRun(server->port()));
  EXPECT_EQ(o.exit_status, 1) << o.out << o.err;
  EXPECT_EQ(o.Field("resets"), 2);
  EXPECT_EQ(o.Field("closed_by_peer"), 2);
  EXPECT_EQ(o.Field("lost"), 2 * 64);
  EXPECT_EQ(o.Field("mismatches"), 0);
  EXPECT_EQ(o.Field("connections_ok"), 0);
}

TEST(EchoLoadTest, RejectedConnectionsAreReportedNotLost) {
  // Like a select() server past FD_SETSIZE: accept, then close at once.
  auto server = StartServer(Fault::kReject);
  ASSERT_NE(server, nullptr);
  const Outcome o = RunEchoLoad(ShortRun(server->port()));
  EXPECT_EQ(o.exit_status, 3) << o.out << o.err;
  EXPECT_EQ(o.Field("rejected"), 2);
  EXPECT_EQ(o.Field("connections_ok"), 0);
  EXPECT_EQ(o.Field("connections_failed"), 2);
  ExpectNoDataErrors(o);
  EXPECT_THAT(o.err, HasSubstr("rejected"));
}

TEST(EchoLoadTest, SilentServerLeavesConnectionsUnanswered) {
  auto server = StartServer(Fault::kSilent);
  ASSERT_NE(server, nullptr);
  const Outcome o = RunEchoLoad(ShortRun(server->port()));
  EXPECT_EQ(o.exit_status, 3) << o.out << o.err;
  EXPECT_EQ(o.Field("unanswered"), 2);
  EXPECT_EQ(o.Field("connections_ok"), 0);
  EXPECT_EQ(o.Field("messages"), 0);
  ExpectNoDataErrors(o);
}

TEST(EchoLoadTest, RefusedConnectionsSaySo) {
  // A port with nothing listening: bind it, then close it.
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  const SocketAddress any = SocketAddress::Loopback4(0);
  ASSERT_EQ(bind(fd, any.sockaddr_ptr(), any.sockaddr_len()), 0);
  absl::StatusOr<SocketAddress> local = SocketAddress::LocalOf(fd);
  ASSERT_TRUE(local.ok());
  close(fd);
  const Outcome o = RunEchoLoad(ShortRun(local->port()));
  EXPECT_EQ(o.exit_status, 3) << o.out << o.err;
  EXPECT_EQ(o.Field("refused"), 2);
  EXPECT_EQ(o.Field("connections_ok"), 0);
  EXPECT_THAT(o.err, HasSubstr("no connection to 127.0.0.1:"));
  EXPECT_THAT(o.err, HasSubstr("ECONNREFUSED"));
}

void ExpectUsageError(const std::vector<std::string>& args,
                      const std::string& message, rlim_t nofile = 0) {
  const Outcome o = RunEchoLoad(args, nofile);
  EXPECT_EQ(o.exit_status, 2) << o.out << o.err;
  EXPECT_THAT(o.err, HasSubstr(message));
  // One line.
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
  EXPECT_EQ(o.out, "");
}

TEST(EchoLoadTest, UsageErrorsAreOneLineAndExitTwo) {
  ExpectUsageError({"--no_such_flag=1"}, "unknown flag --no_such_flag");
  ExpectUsageError({"--connections=many"}, "--connections");
  ExpectUsageError({"--connections=0"}, "--connections must be");
  ExpectUsageError({"--duration=forever"}, "--duration");
  ExpectUsageError({"--depth=4", "--size=2000000"}, "bytes in flight");
  ExpectUsageError({"--target=10.1.2.3:7007"}, "not a loopback address");
  ExpectUsageError({"--target=127.0.0.1"}, "--target");
  ExpectUsageError({"--target=[::1]:7007", "--sources=2"}, "IPv4");
  ExpectUsageError({"stray"}, "unexpected argument");
  ExpectUsageError({"--connections"}, "missing value for --connections");
  ExpectUsageError({"--processes=0"}, "--processes must be");
  ExpectUsageError({"--connections=2", "--processes=3"},
                   "--processes must not");
  ExpectUsageError({"--sources=70000"}, "--sources must be");
  ExpectUsageError({"--max_connecting=-1"}, "--max_connecting");
}

TEST(EchoLoadTest, TooFewFileDescriptorsIsAClearUsageError) {
  ExpectUsageError({"--connections=100"}, "RLIMIT_NOFILE", /*nofile=*/64);
  // The limit is per process, and the message says how many processes fit.
  ExpectUsageError({"--connections=100", "--processes=2"}, "--processes=4",
                   /*nofile=*/64);
}

TEST(EchoLoadTest, HelpListsTheFlags) {
  const Outcome o = RunEchoLoad({"--help"});
  for (const char* flag :
       {"--target", "--connections", "--size", "--depth", "--duration",
        "--warmup", "--connect_rate", "--sources", "--threads", "--json",
        "--allow_remote", "--drain_timeout", "--processes", "--hold",
        "--hold_time", "--max_connecting"}) {
    EXPECT_THAT(o.out + o.err, HasSubstr(flag));
  }
}

}  // namespace
}  // namespace load
}  // namespace nbio
