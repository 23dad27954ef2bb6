// A restart under load without a service manager: clients keep connecting
// and echoing while a second echo_server starts on the port of the first
// (both --reuse_port) and the first is sent SIGTERM. No connect may be
// refused, no connection reset, no byte lost.
//
// What makes it possible is the kernel's: when the old server closes its
// listener, the connections still queued on it (handshake done, maybe data
// sent) are reset unless net.ipv4.tcp_migrate_req=1 moves them to another
// listener of the SO_REUSEPORT group. The setting is per network namespace,
// so the test runs in a namespace of its own: a forked child calls
// unshare(CLONE_NEWNET), brings up lo, writes 1 to tcp_migrate_req and runs
// the scenario there (the servers it starts inherit the namespace); it
// reports back through a pipe. Where that is not allowed (no CAP_SYS_ADMIN:
// EPERM), the test is skipped, saying why. Before setting it, a server
// started there must say in its log that it is off.
//
// On every backend, with one and two reactors per server.
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "reactor/testing/loop_test_util.h"
#include "tests/server_process.h"
#include "tools/byte_pattern.h"

namespace nbio {
namespace testing {
namespace {

constexpr absl::Duration kSoon = absl::Seconds(20);

using Param = BackendReactors;

// --- in the child, in its own network namespace

// Sets net.ipv4.tcp_migrate_req=1 in our namespace: "" or "SKIP reason".
std::string EnableMigrateReq() {
  // /proc/sys/net is the namespace of the process that opens it.
  const char* path = "/proc/sys/net/ipv4/tcp_migrate_req";
  const int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::StrCat(
        "SKIP open(", path, "): ", std::strerror(errno),
        errno == ENOENT ? " (Linux < 5.14 has no tcp_migrate_req)" : "");
  }
  const bool wrote = write(fd, "1\n", 2) == 2;
  const int err = errno;
  close(fd);
  if (!wrote)
    return absl::StrCat("SKIP write(", path, "): ", std::strerror(err));
  return "";
}

// Counters of the clients, shared by their threads.
struct Load {
  std::atomic<bool> stop{false};
  std::atomic<bool> in_handover{false};
  std::atomic<uint64_t> next_id{0};
  std::atomic<uint64_t> connects{0};
  std::atomic<uint64_t> handover_connects{0};
  std::atomic<uint64_t> refused{0};  // connect() failed
  std::atomic<uint64_t> broken{0};   // reset, timeout or early EOF
  std::atomic<uint64_t> bytes_sent{0};
  std::atomic<uint64_t> bytes_echoed{0};  // came back, and right
  std::atomic<uint64_t> mismatches{0};
};

// One client: connections one after another, each 1-4 round trips of
// 1 B..32 KiB of its BytePattern stream, then the client ends its side and
// reads to EOF.
void Client(const SocketAddress& to, const load::BytePattern& pattern,
            Load* load, uint32_t seed) {
  uint64_t rng = seed * 2654435761u + 1;
  auto next = [&rng] {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return rng >> 33;
  };
  std::string buf(32 * 1024, '\0');
  while (!load->stop.load()) {
    const uint64_t id = load->next_id.fetch_add(1);
    const bool handover = load->in_handover.load();
    ++load->connects;
    if (handover) ++load->handover_connects;
    const int fd = ConnectBlocking(to);
    if (fd < 0) {
      ++load->refused;
      continue;
    }
    const uint64_t start = load::BytePattern::Start(id);
    uint64_t sent = 0;
    bool ok = true;
    const int rounds = 1 + static_cast<int>(next() % 4);
    for (int r = 0; r < rounds && ok; ++r) {
      const size_t n = 1 + next() % buf.size();
      iovec iov[2];
      const int count = pattern.Slices(start + sent, n, iov);
      for (int i = 0; i < count && ok; ++i) {
        ok = WriteAll(fd, std::string(static_cast<const char*>(iov[i].iov_base),
                                      iov[i].iov_len));
      }
      if (!ok) break;
      load->bytes_sent += n;
      const std::string back = ReadN(fd, n);
      load->mismatches += pattern.CountMismatches(
          start + sent, reinterpret_cast<const uint8_t*>(back.data()),
          back.size());
      if (back.size() != n) ok = false;
      load->bytes_echoed += back.size();
      sent += n;
    }
    if (ok) {
      shutdown(fd, SHUT_WR);
      bool eof = false;
      ok = ReadToEof(fd, &eof).empty() && eof;
    }
    if (!ok) ++load->broken;
    close(fd);
  }
}

uint64_t StatOf(const ServerProcess& server, const std::string& key) {
  std::map<std::string, uint64_t> stats = server.LastStats();
  auto it = stats.find(key);
  return it == stats.end() ? 0 : it->second;
}

// The scenario; returns "OK key=value ...", "SKIP reason" or "FAIL reason".
std::string RestartUnderLoad(const Param& param) {
  std::string setup = EnterOwnNetworkNamespace();
  if (!setup.empty()) return setup;
  // A new namespace starts with tcp_migrate_req=0: a server with
  // --reuse_port must say so at start and when it drains.
  bool warned_when_off = false;
  {
    ServerProcess off({EchoServerBinary(), "--listen=127.0.0.1:0",
                       "--reuse_port", "--backend=" + param.backend});
    if (!off.WaitListening()) return "FAIL server: " + off.Stderr();
    off.Signal(SIGTERM);
    const std::optional<int> status = off.WaitExit(kSoon);
    const std::string err = off.Stderr();
    warned_when_off =
        status == 0 &&
        absl::StrContains(err, "at start: net.ipv4.tcp_migrate_req is 0") &&
        absl::StrContains(err, "draining: net.ipv4.tcp_migrate_req is 0");
  }
  setup = EnableMigrateReq();
  if (!setup.empty()) return setup;
  auto argv = [&](const std::string& listen) {
    return std::vector<std::string>{EchoServerBinary(),
                                    "--listen=" + listen,
                                    "--reuse_port",
                                    "--backend=" + param.backend,
                                    absl::StrCat("--reactors=", param.reactors),
                                    "--drain_timeout=30s",
                                    "--stats_interval=50ms"};
  };
  ServerProcess old_server(argv("127.0.0.1:0"));
  if (!old_server.WaitListening())
    return "FAIL old server: " + old_server.Stderr();
  const SocketAddress address = old_server.address();
  const load::BytePattern pattern;
  Load load;
  constexpr int kClients = 8;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] { Client(address, pattern, &load, c + 1); });
  }
  absl::SleepFor(absl::Milliseconds(300));
  // The hand-over: from the new server's start to the old one's exit.
  load.in_handover = true;
  ServerProcess new_server(argv(address.ToString()));
  const bool new_listening = new_server.WaitListening();
  absl::SleepFor(absl::Milliseconds(200));
  const uint64_t old_accepted = StatOf(old_server, "accepted");
  const absl::Time signalled = absl::Now();
  old_server.Signal(SIGTERM);
  const std::optional<int> old_status = old_server.WaitExit(kSoon);
  const absl::Duration old_drain = absl::Now() - signalled;
  load.in_handover = false;
  absl::SleepFor(absl::Milliseconds(300));
  load.stop = true;
  for (auto& t : clients) t.join();
  const uint64_t new_accepted = StatOf(new_server, "accepted");
  new_server.Signal(SIGTERM);
  const std::optional<int> new_status = new_server.WaitExit(kSoon);
  if (!new_listening) return "FAIL new server: " + new_server.Stderr();
  const std::string old_err = old_server.Stderr();
  return absl::StrCat(
      "OK connects=", load.connects.load(),
      " handover_connects=", load.handover_connects.load(),
      " refused=", load.refused.load(), " broken=", load.broken.load(),
      " bytes_sent=", load.bytes_sent.load(),
      " bytes_lost=", load.bytes_sent.load() - load.bytes_echoed.load(),
      " mismatches=", load.mismatches.load(),
      " old_exit=", old_status.value_or(-1),
      " new_exit=", new_status.value_or(-1),
      " old_drain_ms=", absl::ToInt64Milliseconds(old_drain),
      " old_accepted=", old_accepted, " new_accepted=", new_accepted,
      " migrate_warning=",
      absl::StrContains(old_err, "tcp_migrate_req is") ? 1 : 0,
      " warned_when_off=", warned_when_off ? 1 : 0, " drained=",
      absl::StrContains(old_err, "echo_server: drained in") ? 1 : 0);
}

// --- in the test process

class EchoRestartTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    NBIO_SKIP_IF_BACKEND_UNAVAILABLE(GetParam().backend);
  }
};

TEST_P(EchoRestartTest,
       NewServerTakesOverWhileTheOldDrainsNothingRefusedOrLost) {
  int out[2];
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(out[0]);
    const std::string result = RestartUnderLoad(GetParam());
    // write(), not WriteAll(): that one is send() and wants a socket.
    size_t off = 0;
    while (off < result.size()) {
      const ssize_t n = write(out[1], result.data() + off, result.size() - off);
      if (n <= 0) break;
      off += n;
    }
    _exit(0);
  }
  close(out[1]);
  std::string result;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(out[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    result.append(buf, n);
  }
  close(out[0]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the namespace child died: status " << status;
  if (absl::StartsWith(result, "SKIP ")) {
    GTEST_SKIP() << result.substr(5);
  }
  ASSERT_TRUE(absl::StartsWith(result, "OK ")) << result;
  std::map<std::string, uint64_t> v;
  for (absl::string_view field : absl::StrSplit(result.substr(3), ' ')) {
    const size_t eq = field.find('=');
    uint64_t n = 0;
    ASSERT_TRUE(eq != absl::string_view::npos &&
                absl::SimpleAtoi(field.substr(eq + 1), &n))
        << field;
    v[std::string(field.substr(0, eq))] = n;
  }
  EXPECT_EQ(v["refused"], 0u) << result;
  EXPECT_EQ(v["broken"], 0u) << result;
  EXPECT_EQ(v["bytes_lost"], 0u) << result;
  EXPECT_EQ(v["mismatches"], 0u) << result;
  EXPECT_EQ(v["old_exit"], 0u) << result;
  EXPECT_EQ(v["new_exit"], 0u) << result;
  EXPECT_EQ(v["drained"], 1u) << result;
  EXPECT_EQ(v["migrate_warning"], 0u) << "tcp_migrate_req was set: " << result;
  EXPECT_EQ(v["warned_when_off"], 1u)
      << "no warning at start and at the drain while it was 0: " << result;
  // It was a hand-over: both servers served, and clients connected during it.
  EXPECT_GT(v["handover_connects"], 0u) << result;
  EXPECT_GT(v["old_accepted"], 0u) << result;
  EXPECT_GT(v["new_accepted"], 0u) << result;
  std::fprintf(
      stderr,
      "[%s, %d reactor%s] restart under load: %" PRIu64 " connections (%" PRIu64
      " during the hand-over), %" PRIu64 " refused, %" PRIu64
      " broken, %" PRIu64 " of %" PRIu64
      " bytes lost; old server drained in %" PRIu64
      " ms; accepted: old %" PRIu64 " (by the signal), new %" PRIu64 "\n",
      GetParam().backend.c_str(), GetParam().reactors,
      GetParam().reactors == 1 ? "" : "s", v["connects"],
      v["handover_connects"], v["refused"], v["broken"], v["bytes_lost"],
      v["bytes_sent"], v["old_drain_ms"], v["old_accepted"], v["new_accepted"]);
}

INSTANTIATE_TEST_SUITE_P(
    AllBackends, EchoRestartTest,
    ::testing::ValuesIn(EveryBackendWithOneAndTwoReactors()),
    [](const auto& info) { return TestNameSuffix(info.param); });

}  // namespace
}  // namespace testing
}  // namespace nbio
