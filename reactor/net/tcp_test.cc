// TcpServer / TcpConnection against real loopback sockets, on every backend.
//
// Single-threaded: the test owns non-blocking client sockets and pumps the
// loop with RunOnce(kNoWait) between client steps, so every test is
// deterministic and nothing sleeps (the idle test uses a ManualClock).
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <utility>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>
#include <thread>
#include <atomic>
#include <chrono>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "queue/message_queue.h"
#include "reactor/event_loop.h"
#include "reactor/net/tcp_connection.h"
#include "reactor/net/tcp_server.h"
#include "reactor/poller/poller_registry.h"
#include "reactor/poller/stream_engine.h"
#include "reactor/testing/loop_test_util.h"
#include "reactor/testing/tcp_test_util.h"
#include "timers/clock.h"

namespace nbio {
namespace {

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// Descriptors open in this process now.
int OpenFds() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d) != nullptr) ++n;
    closedir(d);
  }
  return n;
}

class TcpTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { NBIO_SKIP_IF_BACKEND_UNAVAILABLE(GetParam()); }
  void Start(TcpServerOptions options = {}, Clock* clock = nullptr) {
    handler_.echo = true;
    EventLoop::Options loop_options;
    loop_options.backend = GetParam();
    loop_options.clock = clock;
    absl::StatusOr<std::unique_ptr<EventLoop>> loop =
        EventLoop::Create(loop_options);
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = std::move(*loop);
    options.on_refused = [this](const absl::Status& s) {
      refusals_.push_back(s);
    };
    absl::StatusOr<std::unique_ptr<TcpServer>> server =
        TcpServer::Create(loop_.get(), &handler_, std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_NE(server_->address().port(), 0);
  }

  // Runs `n` loop iterations, each followed by `step` (client work).
  void Pump(int n, const std::function<void()>& step = nullptr) {
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(loop_->RunOnce(EventLoop::RunMode::kNoWait).ok());
      if (step) step();
    }
  }

  // Runs the loop and `step` (client work) until `done` or a bound.
  bool PumpUntil(const std::function<bool()>& done,
                 const std::function<void()>& step = nullptr,
                 int max_iterations = 200000) {
    for (int i = 0; i < max_iterations; ++i) {
      if (done()) return true;
      EXPECT_TRUE(loop_->RunOnce(EventLoop::RunMode::kNoWait).ok());
      if (step) step();
    }
    return done();
  }

  RecordingHandler handler_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<TcpServer> server_;
  std::vector<absl::Status> refusals_;
};

// What only a readiness backend does (each connection is a descriptor),
// and what only a stream-engine backend does (the kernel accepts into its
// rings' tables).
class TcpReadinessTest : public TcpTest {};
class TcpEngineTest : public TcpTest {
 protected:
  // A server whose high watermark never pauses reading, so that what a
  // peer that never reads holds is bounded by the engine's lending share
  // alone, and whose handler echoes by hand (on_data); its engine.
  StreamEngine* StartUnpaused() {
    TcpServerOptions options;
    options.tcp.high_watermark = 64 << 20;
    Start(std::move(options));
    handler_.echo = false;
    return loop_->streams();
  }
  // A peer with a 4 KiB receive buffer that sends 16 MiB and never reads.
  void FloodWithoutReading(TestClient& peer, uint32_t seed) {
    const int small = 4096;
    setsockopt(peer.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    peer.Send(RandomBytes(16 << 20, seed));
  }
};

TEST_P(TcpTest, ManyConnectionsEchoRandomDataByteForByte) {
  Start();
  constexpr int kClients = 40;  // below FD_SETSIZE for select
  std::vector<std::unique_ptr<TestClient>> clients;
  std::vector<std::string> sent(kClients);
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<TestClient>(server_->address()));
  }
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == kClients; }));
  std::mt19937 rng(42);
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < kClients; ++i) {
      std::string chunk = RandomBytes(1 + rng() % 3000, rng());
      sent[i] += chunk;
      clients[i]->Send(chunk);
    }
    Pump(3);
  }
  auto all_echoed = [&] {
    for (int i = 0; i < kClients; ++i) {
      if (clients[i]->received().size() < sent[i].size()) return false;
    }
    return true;
  };
  ASSERT_TRUE(PumpUntil(all_echoed, [&] {
    for (auto& c : clients) {
      c->Flush();
      c->Receive();
    }
  }));
  for (int i = 0; i < kClients; ++i) {
    ASSERT_EQ(clients[i]->received(), sent[i]) << "client " << i;
  }
  EXPECT_EQ(server_->context()->stats().bytes_read,
            server_->context()->stats().bytes_written);
  EXPECT_EQ(server_->context()->connection_count(), size_t{kClients});
}

// A peer that sends but never reads: the server's queue stops at the high
// watermark; when the peer starts reading, every byte still arrives intact.
TEST_P(TcpTest, SlowReaderBoundsServerMemory) {
  TcpServerOptions options;
  options.tcp.high_watermark = 64 * 1024;
  Start(std::move(options));
  TestClient client(server_->address());
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == 1; }));
  // More than the kernel's socket buffers on both paths can hold (a few MiB
  // each with autotuning), so the peer ends up blocked.
  const std::string payload = RandomBytes(48 << 20, 7);
  client.Send(payload);
  for (int i = 0; i < 2000; ++i) {  // keep pushing; never read
    ASSERT_TRUE(loop_->RunOnce(EventLoop::RunMode::kNoWait).ok());
    client.Flush();
  }
  const TcpStats& stats = server_->context()->stats();
  EXPECT_FALSE(client.all_sent()) << "the peer was never blocked";
  EXPECT_GT(stats.read_pauses, 0u);
  EXPECT_LE(stats.max_queued_bytes, size_t{64 * 1024});
  EXPECT_LE(stats.queued_bytes, size_t{64 * 1024});
  // Now read: everything arrives, in order.
  ASSERT_TRUE(
      PumpUntil([&] { return client.received().size() >= payload.size(); },
                [&] {
                  client.Flush();
                  client.Receive();
                }));
  EXPECT_TRUE(client.received() == payload);
  EXPECT_LE(server_->context()->stats().max_queued_bytes, size_t{64 * 1024});
}

TEST_P(TcpTest, PeerResetMidStreamEndsOnlyThatConnection) {
  Start();
  TestClient victim(server_->address());
  TestClient bystander(server_->address());
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == 2; }));
  // The server's echo to `victim` stalls, then victim resets.
  handler_.on_data = [&](TcpConnection* conn, absl::string_view bytes) {
    conn->Write(bytes);
  };
  victim.Send(RandomBytes(1 << 20, 3));
  Pump(5);
  victim.Reset();
  ASSERT_TRUE(PumpUntil([&] { return handler_.closed.size() == 1; }));
  EXPECT_FALSE(handler_.closed[0].ok());
  EXPECT_NE(handler_.closed[0].message().find("ECONNRESET"), std::string::npos)
      << handler_.closed[0];
  EXPECT_EQ(server_->context()->stats().resets, 1u);
  // The other connection is fine.
  bystander.Send("still here");
  ASSERT_TRUE(PumpUntil([&] { return bystander.received() == "still here"; },
                        [&] { bystander.Receive(); }));
}

// The client shuts down its write side: everything it sent is echoed, then
// the server closes, and reports an orderly end.
TEST_P(TcpTest, HalfCloseEchoesEverythingThenCloses) {
  Start();
  TestClient client(server_->address());
  const std::string payload = RandomBytes(300000, 11);
  client.Send(payload);
  ASSERT_TRUE(PumpUntil([&] { return client.all_sent(); },
                        [&] {
                          client.Flush();
                          client.Receive();
                        }));
  client.ShutdownWrite();
  ASSERT_TRUE(
      PumpUntil([&] { return client.eof(); }, [&] { client.Receive(); }));
  EXPECT_TRUE(client.received() == payload);
  ASSERT_TRUE(PumpUntil([&] { return handler_.closed.size() == 1; }));
  EXPECT_TRUE(handler_.closed[0].ok()) << handler_.closed[0];
  EXPECT_EQ(server_->context()->connection_count(), 0u);
}

TEST_P(TcpTest, IdleTimeoutClosesQuietConnectionsOnly) {
  ManualClock clock(absl::ToInt64Nanoseconds(absl::Seconds(1000)));
  TcpServerOptions options;
  options.tcp.idle_timeout = absl::Seconds(10);
  Start(std::move(options), &clock);
  TestClient quiet(server_->address());
  TestClient chatty(server_->address());
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == 2; }));
  for (int s = 1; s <= 20; ++s) {
    clock.Advance(absl::Seconds(1));
    chatty.Send("x");
    Pump(5);
    chatty.Receive();
    quiet.Receive();
    if (s < 10) {
      EXPECT_FALSE(quiet.eof()) << "closed early, after " << s << "s";
    }
  }
  ASSERT_TRUE(PumpUntil([&] { return quiet.eof(); }, [&] { quiet.Receive(); }));
  EXPECT_FALSE(chatty.eof());
  // OnClosed comes on the iteration after the close.
  ASSERT_TRUE(PumpUntil([&] { return handler_.closed.size() == 1; }));
  EXPECT_EQ(handler_.closed[0].code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(server_->context()->stats().idle_timeouts, 1u);
}

TEST_P(TcpTest, MaxConnectionsRefusesTheRest) {
  TcpServerOptions options;
  options.max_connections = 2;
  Start(std::move(options));
  TestClient a(server_->address()), b(server_->address()),
      c(server_->address());
  ASSERT_TRUE(
      PumpUntil([&] { return server_->stats().refused_over_limit == 1; }));
  ASSERT_TRUE(PumpUntil([&] { return c.eof() || c.error() != 0; },
                        [&] { c.Receive(); }));
  EXPECT_EQ(handler_.accepted, 2);
  ASSERT_EQ(refusals_.size(), 1u);
  EXPECT_NE(refusals_[0].message().find("max_connections"), std::string::npos);
}

TEST_P(TcpTest, CloseFromOnDataReportsAfterTheCall) {
  Start();
  bool in_on_data = false;
  handler_.on_data = [&](TcpConnection* conn, absl::string_view) {
    in_on_data = true;
    conn->Close(absl::AbortedError("bye"));
    EXPECT_TRUE(handler_.closed.empty()) << "OnClosed ran inside Close()";
    EXPECT_FALSE(conn->Write("late"));
    in_on_data = false;
  };
  TestClient client(server_->address());
  client.Send("hello");
  ASSERT_TRUE(PumpUntil([&] { return handler_.closed.size() == 1; }));
  EXPECT_EQ(handler_.closed[0].code(), absl::StatusCode::kAborted);
  ASSERT_TRUE(PumpUntil([&] { return client.eof() || client.error() != 0; },
                        [&] { client.Receive(); }));
}

// PeerAddress and WithFd answer on every backend (on io_uring through a
// process fd made for the call), from OnAccept and from OnData, as often as
// asked, and refuse a closing connection.
TEST_P(TcpTest, PeerAddressAndWithFdAnswerFromEveryCallback) {
  Start();
  std::vector<std::string> peers;
  auto record = [&](TcpConnection* conn) {
    absl::StatusOr<SocketAddress> peer = conn->PeerAddress();
    ASSERT_TRUE(peer.ok()) << peer.status();
    peers.push_back(peer->ToString());
  };
  int sock_type = 0;
  handler_.on_accept = [&](TcpConnection* conn) { record(conn); };
  handler_.on_data = [&](TcpConnection* conn, absl::string_view bytes) {
    record(conn);
    record(conn);  // the second call
    const absl::Status asked = conn->WithFd([&](int fd) {
      socklen_t len = sizeof(sock_type);
      ASSERT_EQ(getsockopt(fd, SOL_SOCKET, SO_TYPE, &sock_type, &len), 0);
    });
    ASSERT_TRUE(asked.ok()) << asked;
    EXPECT_TRUE(conn->Write(bytes));
    conn->Close(absl::OkStatus());
    EXPECT_TRUE(absl::IsFailedPrecondition(conn->PeerAddress().status()));
    bool called = false;
    EXPECT_TRUE(absl::IsFailedPrecondition(
        conn->WithFd([&](int) { called = true; })));
    EXPECT_FALSE(called);
  };
  const int fds_before = OpenFds();
  TestClient client(server_->address());
  absl::StatusOr<SocketAddress> local = SocketAddress::LocalOf(client.fd());
  ASSERT_TRUE(local.ok()) << local.status();
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == 1; }));
  client.Send("hello");
  ASSERT_TRUE(PumpUntil([&] { return handler_.closed.size() == 1; }));
  ASSERT_EQ(peers.size(), 3u);
  for (const std::string& peer : peers) EXPECT_EQ(peer, local->ToString());
  EXPECT_EQ(sock_type, SOCK_STREAM);
  // The fds made for the calls were closed (the client's own is counted).
  EXPECT_EQ(OpenFds(), fds_before + 1);
}

TEST_P(TcpTest, QueuedWriteReportsDrainedAndLargeBufferIsAdopted) {
  Start();
  const std::string big = RandomBytes(4 << 20, 5);
  handler_.on_accept = [&](TcpConnection* conn) {
    EXPECT_TRUE(conn->Write(std::string(big)));
  };
  TestClient client(server_->address());
  ASSERT_TRUE(PumpUntil([&] { return client.received().size() == big.size(); },
                        [&] { client.Receive(); }));
  EXPECT_TRUE(client.received() == big);
  // (On io_uring the peer may have it all before the loop sees the send's
  // completion.)
  ASSERT_TRUE(PumpUntil([&] { return handler_.drained >= 1; }));
  EXPECT_EQ(handler_.drained, 1);
}

// TcpOptions::output_block_size 0 (the default) is resolved per backend: 4
// KiB where a write goes straight to the socket, a receive chunk's worth
// (up to 16 KiB) on an engine, where every write is queued; so a copied
// echo of such a chunk is one block there. A size the user gives is kept
// on every backend.
TEST_P(TcpTest, OutputBlockSizeFollowsTheBackendUnlessGiven) {
  Start();
  StreamEngine* streams = loop_->streams();
  const size_t block = server_->context()->pool().block_size();
  if (streams == nullptr) {
    EXPECT_EQ(block, BlockPool::kDefaultBlockSize);
  } else {
    // A receive chunk's worth, at most 16 KiB (a block per connection with
    // output pending; larger chunks are lent, not copied).
    const size_t chunk_bytes =
        std::min<size_t>(streams->receive_chunk_bytes(), 16 * 1024);
    EXPECT_EQ(block, MessageQueue::BlockSizeFor(chunk_bytes));
    // What one receive of that size delivers fits one block.
    const std::string chunk(chunk_bytes, 'x');
    size_t most_blocks = 0;
    handler_.echo = false;
    handler_.on_data = [&](TcpConnection* conn, absl::string_view bytes) {
      const size_t before = server_->context()->pool().blocks_in_use();
      EXPECT_TRUE(conn->Write(bytes));
      most_blocks = std::max(
          most_blocks, server_->context()->pool().blocks_in_use() - before);
    };
    TestClient client(server_->address());
    client.Send(chunk);
    ASSERT_TRUE(
        PumpUntil([&] { return client.received().size() == chunk.size(); },
                  [&] { client.Receive(); }));
    EXPECT_EQ(most_blocks, 1u);
  }
  server_.reset();
  TcpServerOptions given;
  given.tcp.output_block_size = 1024;
  Start(std::move(given));
  EXPECT_EQ(server_->context()->pool().block_size(), 1024u);
}

// Write(std::string&&) on an empty queue when the kernel takes only a
// prefix: the rest is kept by adopting the string (one pool block holds it),
// not copied into thousands of blocks.
TEST_P(TcpTest, MovedWriteAdoptsWhatTheKernelDidNotTake) {
  Start();
  // More than any loopback send buffer takes at once.
  const std::string big = RandomBytes(16 << 20, 17);
  bool write_ok = false;
  size_t queued = 0;
  size_t blocks_taken = 0;
  bool direct = false;
  handler_.on_accept = [&](TcpConnection* conn) {
    const size_t before = server_->context()->pool().blocks_in_use();
    direct = conn->fd() < 0;
    write_ok = conn->Write(std::string(big));
    queued = conn->queued_bytes();
    blocks_taken = server_->context()->pool().blocks_in_use() - before;
  };
  TestClient client(server_->address());
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == 1; }));
  ASSERT_TRUE(write_ok);
  ASSERT_GT(queued, 0u) << "the kernel took everything: nothing to adopt";
  if (direct) {
    // io_uring: the kernel sends from the queue; the whole buffer is
    // adopted, still without copying.
    EXPECT_EQ(queued, big.size());
  } else {
    ASSERT_LT(queued, big.size())
        << "the kernel took nothing: not a partial write";
  }
  EXPECT_EQ(blocks_taken, 1u)
      << "the remainder (" << queued << " bytes) was copied into pool blocks";
  ASSERT_TRUE(PumpUntil([&] { return client.received().size() == big.size(); },
                        [&] { client.Receive(); }));
  EXPECT_TRUE(client.received() == big);
  // (On io_uring the peer may have it all before the loop sees the send's
  // completion.)
  ASSERT_TRUE(PumpUntil([&] { return handler_.drained >= 1; }));
  EXPECT_EQ(handler_.drained, 1);
}

// Drain: input already received is answered, then each connection is
// half-closed and the done callback runs once the peers have closed.
TEST_P(TcpTest, DrainAnswersWhatArrivedThenCloses) {
  Start();
  std::vector<std::unique_ptr<TestClient>> clients;
  for (int i = 0; i < 5; ++i) {
    clients.push_back(std::make_unique<TestClient>(server_->address()));
  }
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == 5; }));
  // The input is still in the kernel (the loop has not run) when the drain
  // starts.
  std::vector<std::string> sent;
  for (int i = 0; i < 5; ++i) {
    sent.push_back(RandomBytes(20000 + i, i));
    clients[i]->Send(sent[i]);
  }
  bool drained = false;
  server_->Drain([&] { drained = true; });
  EXPECT_FALSE(server_->is_accepting());
  ASSERT_TRUE(PumpUntil(
      [&] {
        for (auto& c : clients) {
          if (!c->eof()) return false;
        }
        return true;
      },
      [&] {
        for (auto& c : clients) {
          c->Flush();
          c->Receive();
        }
      }));
  for (int i = 0; i < 5; ++i)
    EXPECT_TRUE(clients[i]->received() == sent[i]) << i;
  for (auto& c : clients) c->ShutdownWrite();  // peers close their side
  ASSERT_TRUE(PumpUntil([&] { return drained; }));
  EXPECT_EQ(server_->context()->connection_count(), 0u);
}

// A drain of a connection whose reading is paused by backpressure (its
// output is above the high watermark): once the peer has read the output,
// the connection half-closes, though no read event comes.
TEST_P(TcpTest, DrainHalfClosesAConnectionPausedByBackpressure) {
  TcpServerOptions options;
  options.tcp.high_watermark = 64 * 1024;
  Start(std::move(options));
  const std::string big = RandomBytes(16 << 20, 19);
  TcpConnection* conn = nullptr;
  handler_.on_accept = [&](TcpConnection* c) {
    conn = c;
    EXPECT_TRUE(c->Write(absl::string_view(big)));
  };
  TestClient client(server_->address());
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == 1; }));
  Pump(5);
  ASSERT_GE(conn->queued_bytes(), size_t{64 * 1024});
  ASSERT_GT(server_->context()->stats().read_pauses, 0u);
  bool drained = false;
  server_->Drain([&] { drained = true; });
  ASSERT_TRUE(
      PumpUntil([&] { return client.eof(); }, [&] { client.Receive(); }))
      << "the paused connection was never half-closed";
  EXPECT_TRUE(client.received() == big);
  client.ShutdownWrite();
  ASSERT_TRUE(PumpUntil([&] { return drained; }));
  ASSERT_EQ(handler_.closed.size(), 1u);
  EXPECT_TRUE(handler_.closed[0].ok()) << handler_.closed[0];
}

// Bytes in a socket's receive queue (FIONREAD).
int Pending(int fd) {
  int n = -1;
  EXPECT_EQ(ioctl(fd, FIONREAD, &n), 0);
  return n;
}

// A drain whose pending input takes exactly max_reads_per_event reads (the
// last one short, or all of them full): the batch ends without finding the
// socket empty, and no read event follows; the half-close must come anyway.
TEST_P(TcpTest, DrainHalfClosesWhenInputTakesExactlyTheReadBudget) {
  TcpServerOptions options;
  options.tcp.read_buffer_size = 1000;
  options.tcp.max_reads_per_event = 4;
  Start(std::move(options));
  // Three full reads and a short one; four full reads.
  const std::vector<size_t> sizes = {3500, 4000};
  std::vector<std::unique_ptr<TestClient>> clients;
  std::vector<TcpConnection*> conns;
  handler_.on_accept = [&](TcpConnection* c) { conns.push_back(c); };
  for (size_t i = 0; i < sizes.size(); ++i) {
    clients.push_back(std::make_unique<TestClient>(server_->address()));
    ASSERT_TRUE(PumpUntil([&] { return conns.size() == i + 1; }));
  }
  std::vector<std::string> sent;
  for (size_t i = 0; i < sizes.size(); ++i) {
    sent.push_back(RandomBytes(sizes[i], 23 + i));
    clients[i]->Send(sent[i]);
    ASSERT_TRUE(clients[i]->all_sent());
    // Loopback delivers within send(); the loop has not read it.
    // (An io_uring direct connection has no fd to ask.)
    if (conns[i]->fd() >= 0) {
      ASSERT_EQ(Pending(conns[i]->fd()), static_cast<int>(sizes[i]));
    }
  }
  bool drained = false;
  server_->Drain([&] { drained = true; });
  ASSERT_TRUE(PumpUntil([&] { return clients[0]->eof() && clients[1]->eof(); },
                        [&] {
                          for (auto& c : clients) c->Receive();
                        }))
      << "not half-closed: " << clients[0]->eof() << clients[1]->eof();
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_TRUE(clients[i]->received() == sent[i]) << i;
    clients[i]->ShutdownWrite();
  }
  ASSERT_TRUE(PumpUntil([&] { return drained; }));
}

// Drain() from OnData (a "shutdown" command read from a connection): OnData
// is not re-entered for that connection, `bytes` stays intact for the whole
// call, and the rest of the input is still read, answered and half-closed.
TEST_P(TcpTest, DrainFromOnDataNeverReentersOnData) {
  TcpServerOptions options;
  options.tcp.read_buffer_size = 16;  // the command leaves input unread
  Start(std::move(options));
  int depth = 0;
  bool asked = false;
  bool drained = false;
  std::string seen;
  handler_.on_data = [&](TcpConnection* conn, absl::string_view bytes) {
    ++depth;
    EXPECT_EQ(depth, 1) << "OnData re-entered";
    const std::string copy(bytes);
    seen += copy;
    if (!asked && seen.find("shutdown") != std::string::npos) {
      asked = true;
      server_->Drain([&] { drained = true; });
    }
    EXPECT_EQ(bytes, copy) << "bytes changed under the call";
    // Input read before the half-close is answered.
    EXPECT_TRUE(conn->Write(bytes));
    --depth;
  };
  TestClient client(server_->address());
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == 1; }));
  const std::string sent = "shutdown" + RandomBytes(500, 29);
  client.Send(sent);
  ASSERT_TRUE(client.all_sent());
  ASSERT_TRUE(
      PumpUntil([&] { return client.eof(); }, [&] { client.Receive(); }));
  EXPECT_TRUE(asked);
  EXPECT_EQ(seen, sent);
  EXPECT_TRUE(client.received() == sent);
  client.ShutdownWrite();
  ASSERT_TRUE(PumpUntil([&] { return drained; }));
}

// Drain() twice (SIGTERM delivered twice): each done runs exactly once, when
// the drain completes; a drain with nothing to drain completes at once.
TEST_P(TcpTest, EveryDrainDoneRunsExactlyOnce) {
  Start();
  TestClient client(server_->address());
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == 1; }));
  int first = 0;
  int second = 0;
  server_->Drain([&] { ++first; });
  server_->Drain([&] { ++second; });
  ASSERT_TRUE(
      PumpUntil([&] { return client.eof(); }, [&] { client.Receive(); }));
  EXPECT_EQ(first + second, 0) << "done ran before the connection closed";
  client.ShutdownWrite();
  ASSERT_TRUE(PumpUntil([&] { return first + second == 2; }))
      << "first " << first << ", second " << second;
  Pump(5);
  EXPECT_EQ(first, 1);
  EXPECT_EQ(second, 1);
  int third = 0;
  server_->Drain([&] { ++third; });
  EXPECT_EQ(third, 1);
  Pump(5);
  EXPECT_EQ(first + second + third, 3);
}

// The context finds its open connections by walking its slab (64 slots a
// chunk): a drain and a close-all reach every one of 200 connections across
// four chunks, skipping the slots of connections already closed and freed.
TEST_P(TcpTest, DrainAndCloseAllReachEveryConnectionAcrossSlabChunks) {
  Start();
  constexpr int kClients = 200;  // 400 fds with the server's: below FD_SETSIZE
  std::vector<std::unique_ptr<TestClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<TestClient>(server_->address()));
  }
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == kClients; }));
  // Resets in the first, second and fourth chunks: freed before the drain.
  const std::vector<int> reset = {0, 63, 64, 199};
  for (int i : reset) clients[i]->Reset();
  ASSERT_TRUE(
      PumpUntil([&] { return handler_.closed.size() == reset.size(); }));
  Pump(2);  // OnClosed delivered: their slots are free
  ASSERT_EQ(server_->context()->connection_count(), size_t{kClients} - 4);

  bool drained = false;
  server_->Drain([&] { drained = true; });
  auto is_reset = [&](int i) {
    return std::find(reset.begin(), reset.end(), i) != reset.end();
  };
  ASSERT_TRUE(PumpUntil(
      [&] {
        for (int i = 0; i < kClients; ++i) {
          if (!is_reset(i) && !clients[i]->eof()) return false;
        }
        return true;
      },
      [&] {
        for (auto& c : clients) c->Receive();
      }))
      << "a connection was not drained";
  // Half of the peers close their side: the drain waits for the rest.
  size_t still_open = 0;
  for (int i = 0; i < kClients; ++i) {
    if (is_reset(i)) continue;
    if (i % 2 == 0) {
      clients[i]->ShutdownWrite();
    } else {
      ++still_open;
    }
  }
  ASSERT_TRUE(PumpUntil(
      [&] { return server_->context()->connection_count() == still_open; }));
  EXPECT_FALSE(drained);
  // Destroying the server closes the other half (CloseAll): each gets its
  // OnClosed, and nothing is left.
  server_.reset();
  EXPECT_EQ(handler_.closed.size(), size_t{kClients});
}

// The server closed while its connections have output queued and receives
// armed, the supported way from inside one of its callbacks: handed to the
// loop (DeleteLater), destroyed after the dispatch. Every connection gets
// OnClosed once and nothing after (on io_uring: their send buffers are let
// go before the memory is).
TEST_P(TcpTest, ServerClosedFromOnDataWithWorkInFlight) {
  Start();
  constexpr int kClients = 8;
  std::vector<std::unique_ptr<TestClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<TestClient>(server_->address()));
  }
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == kClients; }));
  const std::string big = RandomBytes(1 << 20, 41);
  int calls_after = 0;
  bool handed_over = false;
  handler_.on_data = [&](TcpConnection* conn, absl::string_view bytes) {
    if (handed_over) {
      ++calls_after;
      return;
    }
    if (bytes.substr(0, 4) == "kill") {
      handed_over = true;
      loop_->DeleteLater(std::move(server_));
      return;
    }
    conn->Write(big);  // output the peers do not read
  };
  for (int i = 1; i < kClients; ++i) clients[i]->Send("fill");
  ASSERT_TRUE(PumpUntil([&] {
    return server_->context()->stats().queued_bytes > 0 ||
           server_->context()->stats().bytes_written >= big.size();
  }));
  for (int i = 1; i < kClients; ++i) clients[i]->Send("more data");
  clients[0]->Send("kill");
  ASSERT_TRUE(PumpUntil([&] { return handler_.closed.size() == kClients; }));
  for (const absl::Status& reason : handler_.closed) {
    EXPECT_EQ(reason.code(), absl::StatusCode::kCancelled) << reason;
  }
  Pump(20);
  EXPECT_EQ(handler_.closed.size(), size_t{kClients});
  // Bytes the loop had already read in the dispatch that handed the server
  // over may still be delivered; none after it was destroyed.
  EXPECT_LE(calls_after, kClients - 1);
  for (auto& c : clients) {
    ASSERT_TRUE(PumpUntil([&] { return c->eof() || c->error() != 0; },
                          [&] { c->Receive(); }));
  }
}

// Destroying it inside the callback itself is misuse: a check fails, on
// every backend, instead of the connection in use being freed under it.
TEST_P(TcpTest, ServerDestroyedInsideItsOwnCallbackFailsACheck) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Start();
  TestClient client(server_->address());
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == 1; }));
  handler_.on_data = [&](TcpConnection*, absl::string_view) {
    server_.reset();
  };
  client.Send("x");
  EXPECT_DEATH(
      {
        for (int i = 0; i < 100000; ++i) {
          loop_->RunOnce(EventLoop::RunMode::kNoWait).IgnoreError();
        }
      },
      "destroyed inside a callback about one of its connections");
}

// Servers opened and closed one after another on one long-lived loop leave
// nothing behind: on io_uring each server's rings (an fd and an eventfd
// each, queues and buffers) go once its connections have.
TEST_P(TcpTest, ServersComeAndGoOnOneLoopWithoutLeaking) {
  Start();
  server_.reset();
  Pump(5);
  const int at_rest = OpenFds();
  for (int round = 0; round < 20; ++round) {
    absl::StatusOr<std::unique_ptr<TcpServer>> server =
        TcpServer::Create(loop_.get(), &handler_, TcpServerOptions());
    ASSERT_TRUE(server.ok()) << server.status();
    TestClient client((*server)->address());
    client.Send("round");
    ASSERT_TRUE(PumpUntil([&] { return client.received() == "round"; },
                          [&] { client.Receive(); }))
        << "round " << round;
    server->reset();
    Pump(5);
  }
  Pump(5);
  EXPECT_EQ(OpenFds(), at_rest);
  EXPECT_EQ(loop_->Load().fds_waiting, 0);
}

// As above, but every iteration blocks in the poller (a 5 ms periodic timer
// ends it), as a serving loop's do: on io_uring the one ring is then
// entered mostly by blocking waits, which with DEFER_TASKRUN may leave
// completion work in the kernel, and a closed server's ring must still be
// retired (its ring fd and eventfd closed).
TEST_P(TcpTest, ServersComeAndGoOnALoopThatBlocks) {
  Start();
  server_.reset();
  Pump(5);
  const int at_rest = OpenFds();
  // Always pending, so that no iteration blocks for good.
  Timer tick(loop_.get(), [] {});
  tick.StartPeriodic(absl::Milliseconds(5));
  auto block_once = [&] {
    ASSERT_TRUE(loop_->RunOnce(EventLoop::RunMode::kWait).ok());
  };
  for (int round = 0; round < 5; ++round) {
    absl::StatusOr<std::unique_ptr<TcpServer>> server =
        TcpServer::Create(loop_.get(), &handler_, TcpServerOptions());
    ASSERT_TRUE(server.ok()) << server.status();
    {
      TestClient client((*server)->address());
      client.Send("round");
      for (int i = 0; i < 2000 && client.received() != "round"; ++i) {
        block_once();
        client.Receive();
      }
      ASSERT_EQ(client.received(), "round") << "round " << round;
    }
    for (int i = 0; i < 20; ++i) block_once();
    server->reset();
    for (int i = 0; i < 20; ++i) block_once();
  }
  EXPECT_EQ(OpenFds(), at_rest);
}

// ForEachConnection's contract, edge by edge: every open connection once,
// none that is closing (OnClosed pending); fn may close or write to the one
// it is given; a connection opened during the walk may or may not be seen,
// but the walk neither crashes nor visits a connection twice.
TEST_P(TcpTest, ForEachConnectionVisitsEachOpenOneOnceAndToleratesChanges) {
  Start();
  constexpr int kClients = 100;  // over one slab chunk (64 slots)
  std::vector<std::unique_ptr<TestClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<TestClient>(server_->address()));
  }
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == kClients; }));
  TcpContext* context = server_->context();

  // Close one connection outside the walk: its OnClosed is pending, so the
  // walk must skip it.
  TcpConnection* closed_before = nullptr;
  context->ForEachConnection([&](TcpConnection* c) {
    if (closed_before == nullptr) closed_before = c;
  });
  ASSERT_NE(closed_before, nullptr);
  closed_before->Close();

  // The walk closes every other connection, writes to the rest, and opens
  // a new connection (a socketpair adopted by the context) half-way.
  std::vector<TcpConnection*> seen;
  size_t written = 0;
  int adopted_fd = -1;
  context->ForEachConnection([&](TcpConnection* c) {
    EXPECT_NE(c, closed_before) << "visited a closing connection";
    EXPECT_FALSE(c->is_closing());
    seen.push_back(c);
    if (seen.size() % 2 == 0) {
      c->Close();
    } else {
      EXPECT_TRUE(c->Write("walked"));
      ++written;
    }
    if (seen.size() == kClients / 2) {
      int sv[2];
      ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
      adopted_fd = sv[1];
      EXPECT_TRUE(context->Adopt(sv[0]).ok());
    }
  });
  std::vector<TcpConnection*> unique = seen;
  std::sort(unique.begin(), unique.end());
  EXPECT_EQ(std::unique(unique.begin(), unique.end()), unique.end())
      << "a connection was visited twice";
  // Every open connection but the one closed before, and possibly the one
  // adopted during the walk.
  EXPECT_GE(seen.size(), size_t{kClients} - 1);
  EXPECT_LE(seen.size(), size_t{kClients});
  const size_t closed_in_walk = seen.size() - written;

  // A second walk sees exactly the connections still open: the clients and
  // the adopted one, less those closed.
  size_t second = 0;
  context->ForEachConnection([&](TcpConnection* c) {
    EXPECT_FALSE(c->is_closing());
    ++second;
  });
  EXPECT_EQ(second, size_t{kClients} + 1 - 1 - closed_in_walk);

  // What the walk closed ends (OnClosed once each); what it wrote arrives.
  ASSERT_TRUE(PumpUntil(
      [&] {
        size_t done = 0;
        for (auto& c : clients) {
          if (c->eof() || c->error() != 0 || c->received() == "walked") ++done;
        }
        return done == kClients &&
               handler_.closed.size() == 1 + closed_in_walk;
      },
      [&] {
        for (auto& c : clients) c->Receive();
      }));
  size_t arrived = 0;
  for (auto& c : clients) arrived += c->received() == "walked";
  char buf[16];
  const ssize_t n = recv(adopted_fd, buf, sizeof(buf), MSG_DONTWAIT);
  if (n == 6 && absl::string_view(buf, 6) == "walked") ++arrived;
  EXPECT_EQ(arrived, written) << "a write made during the walk was lost";
  EXPECT_EQ(context->connection_count(), second);
  if (adopted_fd >= 0) close(adopted_fd);
}

// select cannot watch fds >= FD_SETSIZE: such connections are refused with a
// reason, never a crash. poll and epoll serve them like any other.
TEST_P(TcpTest, ConnectionsAboveFdSetsize) {
  Start();
  std::vector<int> filler;  // push the next accepted fd above FD_SETSIZE
  while (true) {
    const int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    filler.push_back(fd);
    if (fd >= FD_SETSIZE + 2) break;
  }
  TestClient client(server_->address());
  if (GetParam() == "select") {
    ASSERT_TRUE(
        PumpUntil([&] { return server_->stats().refused_unwatchable == 1; }));
    ASSERT_TRUE(PumpUntil([&] { return client.eof() || client.error() != 0; },
                          [&] { client.Receive(); }));
    ASSERT_FALSE(refusals_.empty());
    EXPECT_NE(refusals_.back().message().find("FD_SETSIZE"), std::string::npos)
        << refusals_.back();
    EXPECT_EQ(handler_.accepted, 0);
  } else {
    client.Send("high fd");
    ASSERT_TRUE(PumpUntil([&] { return client.received() == "high fd"; },
                          [&] { client.Receive(); }));
    EXPECT_EQ(server_->stats().refused_unwatchable, 0u);
  }
  for (int fd : filler) close(fd);
}

// The loop blocks in its poller (no busy pumping): bytes a peer sends while
// it sleeps must wake it and be echoed, on every backend. On io_uring this
// is a stream ring's completion reaching the loop's one blocking wait
// through the ring's eventfd.
TEST_P(TcpTest, BytesSentWhileTheLoopSleepsWakeItAndAreEchoed) {
  Start();
  TestClient client(server_->address());
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == 1; }));
  std::atomic<bool> echoed{false};
  std::atomic<bool> timed_out{false};
  handler_.on_data = [&](TcpConnection* conn, absl::string_view bytes) {
    conn->Write(bytes);
    echoed = true;  // the loop woke for them
    loop_->Stop();
  };
  std::thread peer([&] {
    // Let the loop go to sleep first (it has nothing else to do).
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    client.Send("wake up");
    for (int i = 0; i < 500 && !echoed.load(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!echoed.load()) {
      timed_out = true;
      loop_->Stop();  // wakes the loop: the test fails instead of hanging
    }
  });
  for (int i = 0; i < 100 && !echoed.load() && !timed_out.load(); ++i) {
    ASSERT_TRUE(loop_->RunOnce(EventLoop::RunMode::kWait).ok());
  }
  peer.join();
  EXPECT_FALSE(timed_out.load()) << "the loop slept through the peer's bytes";
  ASSERT_TRUE(PumpUntil([&] { return client.received() == "wake up"; },
                        [&] { client.Receive(); }));
}

// A loop that serves a listener blocks in one call for everything it
// waits on: on io_uring, with one ring, that is the stream ring itself,
// which must still wake for a Post from another thread, a timer and an fd
// watcher (the readiness ring). Each wakes the sleeping loop; a watchdog
// turns a lost wake-up into a failure instead of a hang.
TEST_P(TcpTest, ALoopServingAListenerWakesForPostsTimersAndWatchers) {
  Start();
  TestClient client(server_->address());
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == 1; }));
  std::atomic<int> stage{0};  // 1 post, 2 timer, 3 watcher: seen
  std::atomic<bool> timed_out{false};
  TestPipe pipe;
  FdWatcher watcher(loop_.get(), pipe.r, [&](uint32_t) {
    char c;
    (void)!read(pipe.r, &c, 1);
    stage = 3;
    loop_->Stop();
  });
  ASSERT_TRUE(watcher.SetInterest(kReadable).ok());
  Timer timer(loop_.get(), [&] {
    stage = 2;
    loop_->Stop();
  });
  std::thread other([&] {
    // The loop has nothing to do: it goes to sleep first.
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    loop_->Post([&] {
      stage = 1;
      loop_->Stop();
    });
    for (int i = 0; i < 1000 && stage.load() < 2; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    (void)!write(pipe.w, "x", 1);
    for (int i = 0; i < 1000 && stage.load() < 3; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (stage.load() < 3) {
      // The test fails instead of hanging: Stop() and a byte from the peer,
      // which wakes the loop whatever else is lost.
      timed_out = true;
      loop_->Stop();
      (void)!send(client.fd(), "!", 1, MSG_NOSIGNAL);
    }
  });
  const uint64_t polls_before = loop_->counters().poll_calls;
  // Each Run() returns at its Stop(); after the rescue nothing more is run.
  auto run = [&] {
    if (!timed_out.load()) {
      EXPECT_TRUE(loop_->Run().ok());
    }
  };
  run();
  EXPECT_EQ(stage.load(), 1) << "a Post from another thread did not wake it";
  timer.Start(absl::Milliseconds(20));
  run();
  EXPECT_EQ(stage.load(), 2) << "the timer did not wake it";
  run();
  EXPECT_EQ(stage.load(), 3) << "the fd watcher did not wake it";
  other.join();
  ASSERT_FALSE(timed_out.load());
  // About two polls per wake-up; a spinning loop makes thousands.
  EXPECT_LT(loop_->counters().poll_calls - polls_before, 100u)
      << "the loop spun";
  // And the connection is still served.
  client.Send("still here");
  ASSERT_TRUE(PumpUntil([&] { return client.received() == "still here"; },
                        [&] { client.Receive(); }));
}

// On a completion backend an echo is sent from the receive buffer it
// arrived in (Write of OnData's bytes): no copy, every byte back in order,
// and the buffer returned once sent. A peer that never reads holds lent
// buffers only up to the engine's share (half of a ring's), so the others
// are still served, and its reset returns what it held.
TEST_P(TcpEngineTest, EchoesAreSentFromTheReceiveBufferWhichComesBack) {
  StreamEngine* streams = StartUnpaused();
  ASSERT_NE(streams, nullptr);
  int lent_in_on_data = 0;
  handler_.on_data = [&](TcpConnection* conn, absl::string_view bytes) {
    const uint64_t before = streams->buffers_lent();
    EXPECT_TRUE(conn->Write(bytes));
    // Small writes are copied; a lent buffer stays out while its send is in
    // flight, which cannot end inside this call.
    if (streams->buffers_lent() == before + 1) ++lent_in_on_data;
  };
  const std::string data = RandomBytes(1 << 20, 11);
  {
    TestClient client(server_->address());
    size_t offered = 0;
    ASSERT_TRUE(PumpUntil(
        [&] { return client.received().size() == data.size(); }, [&] {
          if (offered < data.size() && client.all_sent()) {
            const size_t n = std::min<size_t>(64 * 1024, data.size() - offered);
            client.Send(absl::string_view(data).substr(offered, n));
            offered += n;
          }
          client.Flush();
          client.Receive();
        }));
    EXPECT_TRUE(client.received() == data);
    EXPECT_GT(lent_in_on_data, 0);
    ASSERT_TRUE(PumpUntil([&] { return streams->buffers_lent() == 0; }));
  }
  // A peer that sends and never reads.
  TestClient stuck(server_->address());
  FloodWithoutReading(stuck, 12);
  uint64_t most_lent = 0;
  Pump(3000, [&] {
    stuck.Flush();
    most_lent = std::max(most_lent, streams->buffers_lent());
  });
  // Half of the first ring's buffers (4 MiB of them, 64 of 64 KiB)
  // reached: the rest of its echo was copied.
  EXPECT_EQ(most_lent, (4u << 20) / streams->receive_chunk_bytes() / 2);
  TestClient other(server_->address());
  const std::string hello = RandomBytes(64 * 1024, 13);
  other.Send(hello);
  ASSERT_TRUE(PumpUntil([&] { return other.received().size() == hello.size(); },
                        [&] {
                          other.Flush();
                          other.Receive();
                        }));
  EXPECT_TRUE(other.received() == hello);
  stuck.Reset();
  ASSERT_TRUE(PumpUntil([&] {
    return handler_.closed.size() >= 2 && streams->buffers_lent() == 0;
  }));
}

// Lent receive buffers while the server goes away: destroyed from outside
// the loop's callbacks, and handed to DeleteLater from inside the OnData
// that lent one. Every buffer comes back (the rings would fail a check at
// the loop's end otherwise) and the loop serves a new server after.
TEST_P(TcpEngineTest, ServerDestroyedWithBuffersLentGetsThemAllBack) {
  for (const bool from_callback : {false, true}) {
    SCOPED_TRACE(from_callback ? "DeleteLater from OnData" : "destroyed");
    StreamEngine* streams = StartUnpaused();
    ASSERT_NE(streams, nullptr);
    uint64_t echoed = 0;
    uint64_t most_lent = 0;
    handler_.on_data = [&](TcpConnection* conn, absl::string_view bytes) {
      EXPECT_TRUE(conn->Write(bytes));
      // Here too: one iteration may echo all of it and delete the server.
      most_lent = std::max(most_lent, streams->buffers_lent());
      echoed += bytes.size();
      if (from_callback && echoed >= (4u << 20) && server_ != nullptr) {
        loop_->DeleteLater(std::move(server_));
      }
    };
    TestClient stuck(server_->address());
    FloodWithoutReading(stuck, 14);
    ASSERT_TRUE(PumpUntil(
        [&] { return server_ == nullptr || echoed >= (8u << 20); }, [&] {
          stuck.Flush();
          most_lent = std::max(most_lent, streams->buffers_lent());
        }));
    EXPECT_GT(most_lent, 0u);
    if (!from_callback) {
      EXPECT_GT(streams->buffers_lent(), 0u);
      server_.reset();
    }
    Pump(20);
    EXPECT_EQ(streams->buffers_lent(), 0u);
    EXPECT_EQ(server_, nullptr);
  }
  // The loop still serves (an echo, by the handler's own).
  handler_.on_data = nullptr;
  Start();
  TestClient client(server_->address());
  const std::string hello = RandomBytes(32 * 1024, 15);
  client.Send(hello);
  ASSERT_TRUE(
      PumpUntil([&] { return client.received().size() == hello.size(); }, [&] {
        client.Flush();
        client.Receive();
      }));
  EXPECT_TRUE(client.received() == hello);
}

// On a completion backend, connections a server accepts take no process
// descriptor: with RLIMIT_NOFILE far below the count, every one of them is
// accepted and echoes. (stream_ring_test and //tests:uring_nofile_test do
// this at 2,000 connections in a child process.)
TEST_P(TcpEngineTest, EngineConnectionsAreNotBoundByTheDescriptorLimit) {
  Start();
  ASSERT_NE(loop_->streams(), nullptr);
  constexpr int kClients = 200;
  std::vector<int> clients;
  for (int i = 0; i < kClients; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(connect(fd, server_->address().sockaddr_ptr(),
                      server_->address().sockaddr_len()),
              0);
    clients.push_back(fd);
  }
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == kClients; }));
  rlimit old_limit;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old_limit), 0);
  // Lower the limit under the count of descriptors open now: no new fd
  // could be made, yet the server's connections need none.
  rlimit low = old_limit;
  low.rlim_cur = 64;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  // What needs a process fd says so, and costs the connection nothing.
  TcpConnection* one = nullptr;
  server_->context()->ForEachConnection(
      [&](TcpConnection* conn) { one = conn; });
  ASSERT_NE(one, nullptr);
  absl::StatusOr<SocketAddress> peer = one->PeerAddress();
  EXPECT_TRUE(absl::IsResourceExhausted(peer.status())) << peer.status();
  for (int i = 0; i < kClients; ++i) {
    ASSERT_EQ(send(clients[i], "ping", 4, MSG_NOSIGNAL), 4);
  }
  int answered = 0;
  ASSERT_TRUE(PumpUntil([&] {
    for (int fd : clients) {
      char buf[8];
      if (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) == 4) ++answered;
    }
    return answered == kClients;
  }));
  EXPECT_EQ(server_->context()->connection_count(), size_t{kClients});
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old_limit), 0);
  peer = one->PeerAddress();
  ASSERT_TRUE(peer.ok()) << peer.status();
  bool is_a_client = false;
  for (int fd : clients) {
    absl::StatusOr<SocketAddress> local = SocketAddress::LocalOf(fd);
    is_a_client |= local.ok() && *local == *peer;
  }
  EXPECT_TRUE(is_a_client) << peer->ToString();
  for (int fd : clients) close(fd);
  ASSERT_TRUE(
      PumpUntil([&] { return server_->context()->connection_count() == 0; }));
}

// Descriptor exhaustion: pending connects are refused cleanly, existing
// connections keep working, the loop does not spin, and accepting resumes
// once descriptors are free.
TEST_P(TcpReadinessTest, FdExhaustionRefusesBacksOffAndRecovers) {
  TcpServerOptions options;
  options.accept_backoff = absl::Milliseconds(20);
  Start(std::move(options));
  ASSERT_EQ(loop_->streams(), nullptr);
  TestClient existing(server_->address());
  ASSERT_TRUE(PumpUntil([&] { return handler_.accepted == 1; }));

  rlimit old_limit;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old_limit), 0);
  // Fill every descriptor up to a low limit.
  std::vector<int> filler;
  int fd;
  while ((fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0 && fd < 300) {
    filler.push_back(fd);
  }
  if (fd >= 0) close(fd);
  rlimit low = old_limit;
  low.rlim_cur = 300;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  // Each client needs one fd: free a few for them (not for the server).
  for (int i = 0; i < 3; ++i) {
    close(filler.back());
    filler.pop_back();
  }
  std::vector<std::unique_ptr<TestClient>> refused;
  for (int i = 0; i < 3; ++i) {
    refused.push_back(std::make_unique<TestClient>(server_->address()));
  }
  ASSERT_TRUE(
      PumpUntil([&] { return server_->stats().fd_exhaustion_events >= 1; }));
  // Refused cleanly: each pending peer sees its connection closed.
  ASSERT_TRUE(PumpUntil(
      [&] {
        for (auto& c : refused) {
          if (!c->eof() && c->error() == 0) return false;
        }
        return true;
      },
      [&] {
        for (auto& c : refused) c->Receive();
      }));
  EXPECT_EQ(server_->stats().refused_no_fds, 3u);
  // No spin while backing off: the listener is out of the poller (only the
  // existing connection waits for input) and the next poll would block
  // until the backoff timer, not return at once.
  EXPECT_EQ(loop_->Load().fds_waiting, 1);
  EXPECT_GT(loop_->NextPollTimeoutNanos(), 0);
  // The existing connection still echoes.
  existing.Send("ping");
  ASSERT_TRUE(PumpUntil([&] { return existing.received() == "ping"; },
                        [&] { existing.Receive(); }));
  // Free descriptors: accepting resumes after the backoff.
  refused.clear();
  for (int f : filler) close(f);
  filler.clear();
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old_limit), 0);
  TestClient later(server_->address());
  const int accepted_before = handler_.accepted;
  for (int i = 0; i < 100 && handler_.accepted == accepted_before; ++i) {
    ASSERT_TRUE(loop_->RunOnce().ok());  // blocks until the backoff ends
  }
  EXPECT_EQ(handler_.accepted, accepted_before + 1);
  later.Send("pong");
  ASSERT_TRUE(PumpUntil([&] { return later.received() == "pong"; },
                        [&] { later.Receive(); }));
}

// A drain must not reset what the kernel already accepted for us: the
// connections queued on the listener are taken and served, then it closes.
TEST_P(TcpTest, StopAcceptingKeepQueuedServesWhatWasQueued) {
  Start();
  std::vector<std::unique_ptr<TestClient>> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(std::make_unique<TestClient>(server_->address()));
    clients.back()->Send(absl::StrCat("queued ", i));
  }
  // The loop has not run: all three wait in the listener's queue.
  EXPECT_EQ(handler_.accepted, 0);
  EXPECT_EQ(server_->StopAcceptingKeepQueued(), 3u);
  EXPECT_EQ(handler_.accepted, 3);
  EXPECT_FALSE(server_->is_accepting());
  // A second call, and the plain stop after it, change nothing.
  EXPECT_EQ(server_->StopAcceptingKeepQueued(), 0u);
  server_->StopAccepting();
  EXPECT_EQ(handler_.accepted, 3);
  for (int i = 0; i < 3; ++i) {
    TestClient* c = clients[i].get();
    const std::string want = absl::StrCat("queued ", i);
    ASSERT_TRUE(
        PumpUntil([&] { return c->received() == want; }, [&] { c->Receive(); }))
        << i << ": " << c->received();
  }
  // The listener is gone: a new connect is refused.
  TestClient late(server_->address());
  ASSERT_TRUE(PumpUntil([&] { return !late.Receive(); }));
  EXPECT_EQ(late.error(), ECONNREFUSED);
}

// A listening socket made elsewhere (systemd socket activation): served
// as is, made non-blocking and close-on-exec.
TEST(TcpServerTest, ServesAListeningSocketItIsGiven) {
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  const int fd = socket(AF_INET, SOCK_STREAM, 0);  // blocking, inheritable
  ASSERT_GE(fd, 0);
  const SocketAddress any = SocketAddress::Loopback4(0);
  ASSERT_EQ(bind(fd, any.sockaddr_ptr(), any.sockaddr_len()), 0);
  ASSERT_EQ(listen(fd, 16), 0);
  absl::StatusOr<SocketAddress> bound = SocketAddress::LocalOf(fd);
  ASSERT_TRUE(bound.ok());
  RecordingHandler handler;
  handler.echo = true;
  TcpServerOptions options;
  options.listen_fd = fd;
  absl::StatusOr<std::unique_ptr<TcpServer>> server =
      TcpServer::Create(loop->get(), &handler, std::move(options));
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->address().ToString(), bound->ToString());
  EXPECT_TRUE(fcntl(fd, F_GETFL) & O_NONBLOCK);
  EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  TestClient client(*bound);
  client.Send("hello");
  for (int i = 0; i < 100000 && client.received() != "hello"; ++i) {
    ASSERT_TRUE((*loop)->RunOnce(EventLoop::RunMode::kNoWait).ok());
    client.Receive();
  }
  EXPECT_EQ(client.received(), "hello");
  EXPECT_EQ(handler.accepted, 1);
}

TEST(TcpServerTest, RefusesAGivenSocketThatIsNotListeningAndClosesIt) {
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  RecordingHandler handler;
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  TcpServerOptions options;
  options.listen_fd = fd;
  absl::StatusOr<std::unique_ptr<TcpServer>> server =
      TcpServer::Create(loop->get(), &handler, std::move(options));
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().message(),
            absl::StrCat("inherited fd ", fd, " is not listening"));
  // Owned from Create() on: closed on failure too.
  EXPECT_EQ(fcntl(fd, F_GETFD), -1);
  EXPECT_EQ(errno, EBADF);
}

TEST(TcpServerTest, PortInUseNamesAddressAndError) {
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  RecordingHandler handler;
  absl::StatusOr<std::unique_ptr<TcpServer>> first =
      TcpServer::Create(loop->get(), &handler, TcpServerOptions());
  ASSERT_TRUE(first.ok()) << first.status();
  TcpServerOptions again;
  again.address = (*first)->address();
  absl::StatusOr<std::unique_ptr<TcpServer>> second =
      TcpServer::Create(loop->get(), &handler, std::move(again));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().message(),
            absl::StrCat("bind(", (*first)->address().ToString(),
                         "): Address already in use [EADDRINUSE]"));
}

INSTANTIATE_TEST_SUITE_P(AllBackends, TcpTest,
                         ::testing::ValuesIn(PollerNames()),
                         [](const auto& info) { return info.param; });
INSTANTIATE_TEST_SUITE_P(ReadinessBackends, TcpReadinessTest,
                         ::testing::ValuesIn(ReadinessBackends()),
                         [](const auto& info) { return info.param; });
INSTANTIATE_TEST_SUITE_P(StreamEngineBackends, TcpEngineTest,
                         ::testing::ValuesIn(StreamEngineBackends()),
                         [](const auto& info) { return info.param; });

// A TcpContext counts as a live handle of its loop (TcpContext calls
// EventLoop::HandleAttached): destroying the loop first is refused, in every
// build, rather than leaving the context to touch a freed loop when it goes.
TEST(TcpContextDeathTest, DestroyingItsLoopFirstIsRefused) {
  struct Ignore : ConnectionHandler {
    void OnAccept(TcpConnection*) override {}
    void OnData(TcpConnection*, absl::string_view) override {}
  } handler;
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  auto context =
      std::make_unique<TcpContext>(loop->get(), &handler, TcpOptions());
  // The context's own timers are live Timers too (how many is its business).
  EXPECT_DEATH(loop->reset(),
               "EventLoop destroyed with live handles: [0-9]+ Timer, 1 "
               "TcpContext; destroy them first");
  context.reset();  // the right order
  loop->reset();
}

}  // namespace
}  // namespace nbio
