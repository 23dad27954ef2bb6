// End-to-end tests of the real echo_server binary: flags, start-up errors,
// echo on every backend, half-close, idle timeout, resets, backpressure and
// the SIGTERM drain. Loopback only, port 0.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "reactor/testing/loop_test_util.h"
#include "tests/server_process.h"

namespace nbio {
namespace testing {
namespace {

std::string Binary() { return RunfilePath("echo/echo_server"); }

std::unique_ptr<ServerProcess> StartServer(std::vector<std::string> flags) {
  std::vector<std::string> argv = {Binary(), "--listen=127.0.0.1:0"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  auto server = std::make_unique<ServerProcess>(std::move(argv));
  EXPECT_TRUE(server->WaitListening()) << server->Stderr();
  return server;
}

// --- start-up ---------------------------------------------------------------

TEST(EchoServerFlagsTest, BadFlagsExit2WithOneLine) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--bogus=1", "unknown flag --bogus"},
      {"--backend=kqueue", "unknown --backend=kqueue"},
      {"--listen=localhost:7007", "not a numeric IPv4 address"},
      {"--listen=127.0.0.1:99999", "not a number from 0 to 65535"},
      {"--reactors=0", "--reactors must be from 1 to 256"},
      {"--high_watermark=lots", "invalid value \"lots\" for --high_watermark"},
      {"--idle_timeout=-5s", "--idle_timeout must be a finite duration"},
      {"--max_connections=-1", "invalid value \"-1\" for --max_connections"},
      {"--drain=later", "--drain must be wait or shutdown, not 'later'"},
  };
  for (const auto& [flag, reason] : cases) {
    ServerProcess server({Binary(), flag});
    EXPECT_EQ(server.WaitExit(absl::Seconds(20)), 2) << flag;
    const std::string err = server.Stderr();
    EXPECT_TRUE(absl::StrContains(err, reason)) << flag << ": " << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_TRUE(absl::StartsWith(err, "echo_server: ")) << err;
  }
}

TEST(EchoServerFlagsTest, HelpListsEveryFlagAndExits0) {
  ServerProcess help({Binary(), "--help"});
  const std::string out = help.ReadStdout();
  EXPECT_EQ(help.WaitExit(absl::Seconds(20)), 0) << help.Stderr();
  EXPECT_TRUE(absl::StartsWith(out, "echo_server: a TCP echo server")) << out;
  for (const char* flag :
       {"--listen", "--backend", "--max_connections", "--idle_timeout",
        "--high_watermark", "--reactors", "--stats_interval", "--drain_timeout",
        "--drain", "--reuse_port"}) {
    EXPECT_TRUE(absl::StrContains(out, flag)) << flag << " missing from:\n"
                                              << out;
  }
}

TEST(EchoServerFlagsTest, PortInUseExits1NamingAddressAndError) {
  auto first = StartServer({});
  const std::string address = first->address().ToString();
  ServerProcess second({Binary(), "--listen=" + address});
  EXPECT_EQ(second.WaitExit(absl::Seconds(20)), 1);
  EXPECT_EQ(second.Stderr(),
            absl::StrCat("echo_server: bind(", address,
                         "): Address already in use [EADDRINUSE]\n"));
  EXPECT_TRUE(first->running());
}

// --- echo on every backend
// ------------------------------------------------------

class EchoServerBackendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { NBIO_SKIP_IF_BACKEND_UNAVAILABLE(GetParam()); }
};

TEST_P(EchoServerBackendTest, ManyConnectionsEchoRandomDataByteForByte) {
  auto server = StartServer({"--backend=" + GetParam()});
  constexpr int kClients = 32;
  std::vector<std::thread> clients;
  std::vector<std::string> failures(kClients);
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      const int fd = server->Connect();
      if (fd < 0) {
        failures[c] = "connect failed";
        return;
      }
      for (int round = 0; round < 10; ++round) {
        const std::string data =
            RandomBytes(1 + (c * 977 + round * 131) % 20000, c * 100 + round);
        if (!WriteAll(fd, data) || ReadN(fd, data.size()) != data) {
          failures[c] = absl::StrCat("round ", round, " mismatch");
          break;
        }
      }
      close(fd);
    });
  }
  for (auto& t : clients) t.join();
  for (int c = 0; c < kClients; ++c)
    EXPECT_EQ(failures[c], "") << "client " << c;
  server->Signal(SIGTERM);
  EXPECT_EQ(server->WaitExit(absl::Seconds(20)), 0) << server->Stderr();
}

// --reactors=N: N loops on N threads behind SO_REUSEPORT, stats gathered
// across threads, and a drain that crosses threads (TSan checks all of it in
// the tsan config, where the binary is built with it too).
TEST(EchoServerTest, SeveralReactorsShareThePortAndDrain) {
  auto server = StartServer({"--reactors=3", "--stats_interval=20ms"});
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int c = 0; c < 24; ++c) {
    clients.emplace_back([&, c] {
      const int fd = server->Connect();
      if (fd < 0) return;
      const std::string data = RandomBytes(5000 + c, c);
      if (WriteAll(fd, data) && ReadN(fd, data.size()) == data) ++ok;
      close(fd);
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 24);
  // The clients may all be done inside the first 20 ms: wait for a stats
  // line that has counted all 24 accepts (across the three loops).
  EXPECT_TRUE(WaitFor(absl::Seconds(20), [&] {
    return server->LastStats()["accepted"] >= 24;
  })) << server->Stderr();
  server->Signal(SIGTERM);
  EXPECT_EQ(server->WaitExit(absl::Seconds(20)), 0) << server->Stderr();
  const std::string err = server->Stderr();
  EXPECT_TRUE(absl::StrContains(err, "3 reactors")) << err;
  EXPECT_TRUE(absl::StrContains(err, "stats: connections=")) << err;
}

INSTANTIATE_TEST_SUITE_P(AllBackends, EchoServerBackendTest,
                         ::testing::Values("epoll", "poll", "select",
                                           "io_uring"),
                         [](const auto& info) { return info.param; });

// --- connection behaviours
// ------------------------------------------------------

TEST(EchoServerTest, HalfCloseEchoesEverythingThenCloses) {
  auto server = StartServer({});
  const int fd = server->Connect();
  ASSERT_GE(fd, 0);
  const std::string data = RandomBytes(1 << 20, 1);
  std::thread writer([&] {
    WriteAll(fd, data);
    shutdown(fd, SHUT_WR);
  });
  bool eof = false;
  const std::string got = ReadToEof(fd, &eof);
  writer.join();
  EXPECT_TRUE(eof);
  EXPECT_TRUE(got == data) << got.size() << " of " << data.size() << " bytes";
  close(fd);
}

TEST(EchoServerTest, IdleTimeoutClosesQuietConnection) {
  auto server = StartServer({"--idle_timeout=300ms"});
  const int fd = server->Connect();
  ASSERT_GE(fd, 0);
  // The server's last activity (echoing "ping") comes after this point, so
  // the close must come at least the timeout after it.
  const absl::Time sent_at = absl::Now();
  ASSERT_TRUE(WriteAll(fd, "ping"));
  EXPECT_EQ(ReadN(fd, 4), "ping");
  bool eof = false;
  ReadToEof(fd, &eof);  // blocks until the server closes (10 s socket limit)
  EXPECT_TRUE(eof);
  EXPECT_GE(absl::Now() - sent_at, absl::Milliseconds(300));  // not early
  close(fd);
}

TEST(EchoServerTest, PeerResetMidStreamLeavesOthersServed) {
  auto server = StartServer({});
  const int other = server->Connect();
  ASSERT_GE(other, 0);
  for (int i = 0; i < 20; ++i) {
    const int fd = server->Connect();
    ASSERT_GE(fd, 0);
    WriteAll(fd, RandomBytes(256 * 1024, i));  // echo still in flight...
    linger l{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);  // ...when the peer resets
  }
  ASSERT_TRUE(WriteAll(other, "still here"));
  EXPECT_EQ(ReadN(other, 10), "still here");
  EXPECT_TRUE(server->running());
  close(other);
}

// A peer that sends but never reads: the server stops reading from it at
// the high watermark, so the server's memory does not grow with what the
// peer pushes.
TEST(EchoServerTest, SlowReaderDoesNotGrowServerMemory) {
  auto server = StartServer({"--high_watermark=64KiB"});
  const uint64_t rss_before = server->ResidentBytes();
  const int fd = server->Connect();
  ASSERT_GE(fd, 0);
  // Push until the kernel's buffers on both paths are full and send blocks
  // (the socket's 10 s send timeout then ends the loop).
  const std::string chunk = RandomBytes(1 << 20, 9);
  size_t pushed = 0;
  while (pushed < (512u << 20) && WriteAll(fd, chunk)) pushed += chunk.size();
  EXPECT_LT(pushed, 512u << 20) << "the server never pushed back";
  const uint64_t rss_after = server->ResidentBytes();
  EXPECT_LT(rss_after - std::min(rss_after, rss_before), uint64_t{4} << 20)
      << "pushed " << pushed << " bytes; RSS " << rss_before << " -> "
      << rss_after;
  close(fd);
}

// --- SIGTERM drain
// ---------------------------------------------------------------

TEST(EchoServerTest, SigtermDrainLosesNoByte) {
  auto server = StartServer({});
  constexpr int kClients = 8;
  std::vector<int> fds;
  std::vector<std::string> sent;
  for (int i = 0; i < kClients; ++i) {
    fds.push_back(server->Connect());
    ASSERT_GE(fds.back(), 0);
    sent.push_back(RandomBytes(100000 + i, 50 + i));
    // Sent before the signal, not read back yet.
    ASSERT_TRUE(WriteAll(fds.back(), sent.back()));
  }
  server->Signal(SIGTERM);
  // The default drain (--drain=wait) serves each connection until its peer
  // ends it: the peer ends its side, then reads the echo to EOF.
  for (int i = 0; i < kClients; ++i) {
    ASSERT_EQ(shutdown(fds[i], SHUT_WR), 0);
    bool eof = false;
    const std::string got = ReadToEof(fds[i], &eof);
    EXPECT_TRUE(eof) << i;
    EXPECT_TRUE(got == sent[i])
        << i << ": " << got.size() << " of " << sent[i].size();
    close(fds[i]);  // the peer closes its side: the drain can finish
  }
  EXPECT_EQ(server->WaitExit(absl::Seconds(20)), 0) << server->Stderr();
  EXPECT_TRUE(absl::StrContains(server->Stderr(), "SIGTERM: draining"))
      << server->Stderr();
  // New connections are refused once draining started.
  EXPECT_LT(server->Connect(), 0);
}

TEST(EchoServerTest, SecondSignalExitsAtOnce) {
  auto server = StartServer({"--drain_timeout=60s"});
  const int fd = server->Connect();  // never closes: the drain would wait
  ASSERT_GE(fd, 0);
  server->Signal(SIGTERM);
  // Wait for the drain to start; the connection is still served.
  EXPECT_TRUE(WaitFor(absl::Seconds(20), [&] {
    return absl::StrContains(server->Stderr(), "SIGTERM: draining");
  })) << server->Stderr();
  EXPECT_TRUE(WriteAll(fd, "still served") && ReadN(fd, 12) == "still served");
  server->Signal(SIGINT);
  EXPECT_EQ(server->WaitExit(absl::Seconds(10)), 128 + SIGINT);
  EXPECT_TRUE(absl::StrContains(server->Stderr(), "SIGINT again: exiting now"))
      << server->Stderr();
  close(fd);
}

TEST(EchoServerTest, DrainTimeoutClosesStragglersAndExits0) {
  auto server = StartServer({"--drain_timeout=200ms"});
  const int fd = server->Connect();  // never closes its side
  ASSERT_GE(fd, 0);
  server->Signal(SIGTERM);
  EXPECT_EQ(server->WaitExit(absl::Seconds(20)), 0) << server->Stderr();
  EXPECT_TRUE(absl::StrContains(server->Stderr(), "drain timeout"))
      << server->Stderr();
  close(fd);
}

// select cannot watch fds >= FD_SETSIZE: connections beyond it are refused
// with a logged reason; the server neither crashes nor stops serving.
TEST(EchoServerTest, SelectRefusesBeyondFdSetsizeWithReason) {
  auto server = StartServer({"--backend=select"});
  std::vector<int> fds;
  for (int i = 0; i < FD_SETSIZE + 20; ++i) {
    const int fd = server->Connect();
    ASSERT_GE(fd, 0) << i;
    fds.push_back(fd);
  }
  // The first connections are served; the last ones were closed at once.
  ASSERT_TRUE(WriteAll(fds.front(), "low"));
  EXPECT_EQ(ReadN(fds.front(), 3), "low");
  bool eof = false;
  ReadToEof(fds.back(), &eof);
  EXPECT_TRUE(eof);
  EXPECT_TRUE(absl::StrContains(server->Stderr(), "FD_SETSIZE"))
      << server->Stderr();
  EXPECT_TRUE(server->running());
  for (int fd : fds) close(fd);
}

}  // namespace
}  // namespace testing
}  // namespace nbio
