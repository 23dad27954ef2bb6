// TcpContext::Connect and TcpConnection::CancelOn: client connects with
// deadlines and cancellation, and deadlines on what a connection waits for.
// ManualClock + RunOnce(kNoWait): nothing sleeps.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "gtest/gtest.h"
#include "reactor/async/cancellation.h"
#include "reactor/async/deadline.h"
#include "reactor/event_loop.h"
#include "reactor/net/tcp_connection.h"
#include "reactor/net/tcp_server.h"
#include "reactor/poller/poller_registry.h"
#include "reactor/testing/loop_test_util.h"
#include "reactor/testing/tcp_test_util.h"
#include "timers/clock.h"

namespace nbio {
namespace {

class TcpClientTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { NBIO_SKIP_IF_BACKEND_UNAVAILABLE(GetParam()); }
  TcpClientTest() : clock_(absl::ToInt64Nanoseconds(absl::Seconds(100))) {
    EventLoop::Options options;
    options.backend = GetParam();
    options.clock = &clock_;
    loop_ = std::move(*EventLoop::Create(options));
    client_handler_.keep_data = true;
    server_handler_.keep_data = true;
    client_ = std::make_unique<TcpContext>(loop_.get(), &client_handler_,
                                           TcpOptions());
  }

  void StartServer() {
    server_handler_.echo = true;
    server_ = std::move(
        *TcpServer::Create(loop_.get(), &server_handler_, TcpServerOptions()));
  }

  // Runs `n` loop iterations.
  void Pump(int n) {
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(loop_->RunOnce(EventLoop::RunMode::kNoWait).ok());
    }
  }

  // Runs the loop until `done` (bounded).
  bool PumpUntil(const std::function<bool()>& done, int max = 10000) {
    for (int i = 0; i < max && !done(); ++i) {
      EXPECT_TRUE(loop_->RunOnce(EventLoop::RunMode::kNoWait).ok());
    }
    return done();
  }

  ManualClock clock_;
  std::unique_ptr<EventLoop> loop_;
  RecordingHandler client_handler_;
  RecordingHandler server_handler_;
  std::unique_ptr<TcpContext> client_;
  std::unique_ptr<TcpServer> server_;
};

TEST_P(TcpClientTest, ConnectResolvesAfterOnAcceptAndEchoes) {
  StartServer();
  bool accepted_first = false;
  auto result = Capture(client_->Connect(server_->address()));
  client_handler_.on_accept = [&](TcpConnection*) {
    accepted_first = !result->has_value();
  };
  ASSERT_TRUE(PumpUntil([&] { return result->has_value(); }));
  ASSERT_TRUE(result->value().ok()) << result->value().status();
  EXPECT_TRUE(accepted_first) << "OnAccept must run before the future resolves";
  TcpConnection* conn = *result->value();
  EXPECT_TRUE(conn->Write("round trip"));
  ASSERT_TRUE(PumpUntil([&] { return client_handler_.data == "round trip"; }));
  EXPECT_EQ(server_handler_.data, "round trip");
  EXPECT_EQ(client_->connection_count(), 1u);
}

TEST_P(TcpClientTest, ConnectRefusedNamesAddressAndErrno) {
  // A port nobody listens on: bind, note the port, close.
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  SocketAddress any = SocketAddress::Loopback4(0);
  ASSERT_EQ(bind(fd, any.sockaddr_ptr(), any.sockaddr_len()), 0);
  SocketAddress closed = *SocketAddress::LocalOf(fd);
  close(fd);
  auto result = Capture(client_->Connect(closed));
  ASSERT_TRUE(PumpUntil([&] { return result->has_value(); }));
  ASSERT_FALSE(result->value().ok());
  EXPECT_EQ(
      result->value().status().message(),
      "connect(" + closed.ToString() + "): Connection refused [ECONNREFUSED]");
  EXPECT_EQ(client_handler_.accepted, 0);
}

// A listener whose accept queue is full drops SYNs, so a connect to it hangs:
// the deadline ends it, not earlier, and closes the half-open socket.
TEST_P(TcpClientTest, ConnectDeadlineEndsAHangingConnect) {
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  SocketAddress any = SocketAddress::Loopback4(0);
  ASSERT_EQ(bind(listener, any.sockaddr_ptr(), any.sockaddr_len()), 0);
  ASSERT_EQ(listen(listener, 0), 0);
  SocketAddress addr = *SocketAddress::LocalOf(listener);
  // Fill the queue with one connection nobody accepts.
  const int filler =
      socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  connect(filler, addr.sockaddr_ptr(), addr.sockaddr_len());
  pollfd p{filler, POLLOUT, 0};
  ASSERT_EQ(poll(&p, 1, 5000), 1);

  auto result = Capture(
      client_->Connect(addr, DeadlineToken(loop_.get(), absl::Seconds(5))));
  for (int s = 0; s < 4; ++s) {
    clock_.Advance(absl::Seconds(1));
    Pump(20);
    EXPECT_FALSE(result->has_value()) << "ended early, after " << s + 1 << "s";
  }
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(PumpUntil([&] { return result->has_value(); }));
  EXPECT_EQ(result->value().status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(client_handler_.accepted, 0);
  EXPECT_EQ(loop_->Load().fds_waiting, 0) << "the half-open socket was left";
  close(filler);
  close(listener);
}

TEST_P(TcpClientTest, CancelledConnectFailsWithTheReason) {
  StartServer();
  CancellationSource source;
  auto result = Capture(client_->Connect(server_->address(), source.token()));
  source.Cancel(absl::CancelledError("user gave up"));
  ASSERT_TRUE(PumpUntil([&] { return result->has_value(); }));
  EXPECT_EQ(result->value().status(), absl::CancelledError("user gave up"));
  EXPECT_EQ(client_handler_.accepted, 0);
  // A token cancelled before the call: fails without a socket.
  auto again = Capture(client_->Connect(server_->address(), source.token()));
  ASSERT_TRUE(PumpUntil([&] { return again->has_value(); }));
  EXPECT_TRUE(absl::IsCancelled(again->value().status()));
}

TEST_P(TcpClientTest, DestroyingTheContextFailsPendingConnects) {
  StartServer();
  auto result = Capture(client_->Connect(server_->address()));
  client_.reset();
  ASSERT_TRUE(PumpUntil([&] { return result->has_value(); }));
  EXPECT_TRUE(absl::IsCancelled(result->value().status()))
      << result->value().status();
}

// The usual reconnect-on-close, while the context is being destroyed with a
// connection open: the destructor's OnClosed (CANCELLED) calls Connect() on
// the same context. That connect fails with CANCELLED like any pending one;
// it is never adopted into the destroyed context.
TEST_P(TcpClientTest, ReconnectFromOnClosedDuringDestructionFailsCancelled) {
  StartServer();
  auto first = Capture(client_->Connect(server_->address()));
  ASSERT_TRUE(PumpUntil(
      [&] { return first->has_value() && server_handler_.accepted == 1; }));
  ASSERT_TRUE(first->value().ok());
  std::shared_ptr<std::optional<FutureResult<TcpConnection*>>> reconnect;
  client_handler_.on_closed = [&](TcpConnection* conn, const absl::Status&) {
    if (reconnect == nullptr) {
      reconnect = Capture(conn->context()->Connect(server_->address()));
    }
  };
  client_.reset();
  ASSERT_EQ(client_handler_.closed.size(), 1u);
  EXPECT_TRUE(absl::IsCancelled(client_handler_.closed[0]));
  ASSERT_NE(reconnect, nullptr);
  ASSERT_TRUE(PumpUntil([&] { return reconnect->has_value(); }));
  EXPECT_TRUE(absl::IsCancelled(reconnect->value().status()))
      << reconnect->value().status();
  Pump(20);
  EXPECT_EQ(client_handler_.accepted, 1);
  EXPECT_EQ(server_handler_.accepted, 1) << "the reconnect reached the server";
}

// Several connects race under one CancellationSource; the first to connect
// cancels the others from its OnAccept. That connect has completed: it
// resolves with its connection, the others with the reason.
TEST_P(TcpClientTest, CancellingTheTokenInOnAcceptKeepsThatConnection) {
  StartServer();
  CancellationSource race;
  auto a = Capture(client_->Connect(server_->address(), race.token()));
  auto b = Capture(client_->Connect(server_->address(), race.token()));
  TcpConnection* winner = nullptr;
  client_handler_.on_accept = [&](TcpConnection* conn) {
    if (winner != nullptr) return;
    winner = conn;
    race.Cancel(absl::CancelledError("another connect won"));
  };
  ASSERT_TRUE(PumpUntil([&] { return a->has_value() && b->has_value(); }));
  ASSERT_EQ(client_handler_.accepted, 1);
  ASSERT_NE(winner, nullptr);
  const bool a_won = a->value().ok();
  auto& won = a_won ? a : b;
  auto& lost = a_won ? b : a;
  ASSERT_TRUE(won->value().ok()) << won->value().status();
  EXPECT_EQ(*won->value(), winner);
  EXPECT_EQ(lost->value().status(),
            absl::CancelledError("another connect won"));
  EXPECT_TRUE(winner->Write("still connected"));
  ASSERT_TRUE(
      PumpUntil([&] { return client_handler_.data == "still connected"; }));
  EXPECT_EQ(client_->connection_count(), 1u);
}

// A read deadline: the server gives each connection 2 s to send something;
// a quiet one is closed with DEADLINE_EXCEEDED at 2 s, not before, and one
// that spoke (clearing its deadline) stays open.
TEST_P(TcpClientTest, CancelOnDeadlineClosesQuietConnection) {
  StartServer();
  server_handler_.on_accept = [&](TcpConnection* conn) {
    conn->CancelOn(DeadlineToken(loop_.get(), absl::Seconds(2)));
  };
  server_handler_.on_data = [](TcpConnection* conn, absl::string_view bytes) {
    conn->Write(bytes);
    conn->CancelOn({});
  };
  auto quiet = Capture(client_->Connect(server_->address()));
  auto chatty = Capture(client_->Connect(server_->address()));
  ASSERT_TRUE(PumpUntil([&] {
    return quiet->has_value() && chatty->has_value() &&
           server_handler_.accepted == 2;
  }));
  ASSERT_TRUE((*chatty)->value()->Write("hi"));
  ASSERT_TRUE(PumpUntil([&] { return server_handler_.data == "hi"; }));
  clock_.Advance(absl::Milliseconds(1999));
  Pump(20);
  EXPECT_TRUE(server_handler_.closed.empty()) << "closed early";
  clock_.Advance(absl::Milliseconds(1));
  ASSERT_TRUE(PumpUntil([&] { return server_handler_.closed.size() == 1; }));
  EXPECT_EQ(server_handler_.closed[0].code(),
            absl::StatusCode::kDeadlineExceeded);
  // The client sees the quiet connection end (peer closed, then our side).
  ASSERT_TRUE(PumpUntil([&] { return client_handler_.closed.size() == 1; }));
  EXPECT_EQ(client_->connection_count(), 1u);
  clock_.Advance(absl::Seconds(60));
  Pump(20);
  EXPECT_EQ(server_handler_.closed.size(), 1u);
}

TEST_P(TcpClientTest, CancelOnSourceClosesWithItsReason) {
  StartServer();
  CancellationSource shutdown;
  server_handler_.on_accept = [&](TcpConnection* conn) {
    conn->CancelOn(shutdown.token());
  };
  auto result = Capture(client_->Connect(server_->address()));
  ASSERT_TRUE(PumpUntil([&] { return server_handler_.accepted == 1; }));
  shutdown.Cancel(absl::CancelledError("maintenance"));
  ASSERT_TRUE(PumpUntil([&] { return server_handler_.closed.size() == 1; }));
  EXPECT_EQ(server_handler_.closed[0], absl::CancelledError("maintenance"));
  // A token already cancelled closes at once.
  server_handler_.on_accept = [&](TcpConnection* conn) {
    conn->CancelOn(shutdown.token());
  };
  auto second = Capture(client_->Connect(server_->address()));
  ASSERT_TRUE(PumpUntil([&] { return server_handler_.closed.size() == 2; }));
}

INSTANTIATE_TEST_SUITE_P(AllBackends, TcpClientTest,
                         ::testing::ValuesIn(PollerNames()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace nbio
