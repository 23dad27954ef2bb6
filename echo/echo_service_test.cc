// EchoService's two drains and the cut, on a real loop (every backend) and
// loopback sockets. Single-threaded: the test pumps the loop with
// RunOnce(kNoWait) between client steps, so nothing sleeps.
#include "echo/echo_service.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "reactor/event_loop.h"
#include "reactor/poller/poller_registry.h"
#include "reactor/testing/loop_test_util.h"
#include "reactor/testing/tcp_test_util.h"

namespace nbio {
namespace {

class EchoServiceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    NBIO_SKIP_IF_BACKEND_UNAVAILABLE(GetParam());
    EventLoop::Options options;
    options.backend = GetParam();
    absl::StatusOr<std::unique_ptr<EventLoop>> loop =
        EventLoop::Create(options);
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = std::move(*loop);
    absl::StatusOr<std::unique_ptr<EchoService>> service =
        EchoService::Create(loop_.get(), EchoService::Options());
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = std::move(*service);
  }

  // Runs the loop and `step` until `done`, within a bound.
  bool PumpUntil(const std::function<bool()>& done,
                 const std::function<void()>& step = nullptr) {
    for (int i = 0; i < 100000; ++i) {
      if (done()) return true;
      EXPECT_TRUE(loop_->RunOnce(EventLoop::RunMode::kNoWait).ok());
      if (step) step();
    }
    return done();
  }

  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<EchoService> service_;
};

TEST_P(EchoServiceTest, WaitingDrainServesUntilThePeerCloses) {
  TestClient client(service_->address());
  client.Send("before");
  ASSERT_TRUE(client.all_sent());
  ASSERT_TRUE(PumpUntil([&] { return client.received() == "before"; },
                        [&] { client.Receive(); }));
  bool done = false;
  service_->DrainWaitingForPeers([&] { done = true; });
  // Still served: the peer has not ended, so neither does the connection.
  client.Send("during");
  ASSERT_TRUE(client.all_sent());
  ASSERT_TRUE(PumpUntil([&] { return client.received() == "beforeduring"; },
                        [&] { client.Receive(); }));
  EXPECT_FALSE(client.eof());
  EXPECT_FALSE(done);
  EXPECT_EQ(service_->open_connections(), 1u);
  // No longer accepting.
  TestClient late(service_->address());
  ASSERT_TRUE(PumpUntil([&] { return !late.Receive(); }));
  EXPECT_EQ(late.error(), ECONNREFUSED);
  // The peer sends its last bytes and ends: echoed, then EOF, then done.
  client.Send("after");
  ASSERT_TRUE(client.all_sent());
  client.ShutdownWrite();
  ASSERT_TRUE(PumpUntil([&] { return done && client.eof(); },
                        [&] { client.Receive(); }));
  EXPECT_EQ(client.received(), "beforeduringafter");
  EXPECT_EQ(service_->open_connections(), 0u);
  EXPECT_EQ(service_->stats().drain_closed, 1u);
  EXPECT_EQ(service_->stats().drain_cut, 0u);
}

TEST_P(EchoServiceTest, WaitingDrainWithNoConnectionIsDoneAtOnce) {
  bool done = false;
  service_->DrainWaitingForPeers([&] { done = true; });
  EXPECT_TRUE(done);
}

TEST_P(EchoServiceTest,
       CutCountsTheConnectionsAndWhatTheyHeldThenEndsTheDrain) {
  TestClient a(service_->address());
  TestClient b(service_->address());
  ASSERT_TRUE(PumpUntil([&] { return service_->open_connections() == 2; }));
  bool done = false;
  service_->DrainWaitingForPeers([&] { done = true; });
  // Arrives in the server's kernel buffer; the loop does not run to read it.
  b.Send(std::string(1000, 'x'));
  ASSERT_TRUE(b.all_sent());
  const EchoService::CutReport cut = service_->CutRemaining();
  EXPECT_EQ(cut.connections, 2u);
  // Every byte b sent is counted once: still in the socket (unread), or,
  // on io_uring, already taken into a ring buffer, then echoed (queued).
  EXPECT_EQ(cut.queued_bytes + cut.unread_bytes, 1000u);
  const bool direct = loop_->streams() != nullptr;
  if (!direct) {
    EXPECT_EQ(cut.unread_bytes, 1000u);
  }
  ASSERT_TRUE(PumpUntil([&] { return done; }));
  EXPECT_EQ(service_->stats().drain_cut, 2u);
  EXPECT_EQ(service_->stats().drain_closed, 2u);
  // Both peers see the end: EOF for a, a reset for b (its bytes unread).
  ASSERT_TRUE(PumpUntil([&] { return !a.Receive() && !b.Receive(); }));
  EXPECT_TRUE(a.eof());
  if (!direct) {
    EXPECT_EQ(b.error(), ECONNRESET);
  } else {
    EXPECT_TRUE(b.eof() || b.error() == ECONNRESET) << b.error();
  }
}

TEST_P(EchoServiceTest, ShutdownDrainHalfClosesAtOnce) {
  TestClient client(service_->address());
  client.Send("hello");
  ASSERT_TRUE(client.all_sent());
  ASSERT_TRUE(PumpUntil([&] { return client.received() == "hello"; },
                        [&] { client.Receive(); }));
  bool done = false;
  service_->Drain([&] { done = true; });
  // EOF comes without the peer ending first.
  ASSERT_TRUE(
      PumpUntil([&] { return client.eof(); }, [&] { client.Receive(); }));
  EXPECT_FALSE(done);
  client.ShutdownWrite();
  ASSERT_TRUE(PumpUntil([&] { return done; }));
}

INSTANTIATE_TEST_SUITE_P(AllBackends, EchoServiceTest,
                         ::testing::ValuesIn(PollerNames()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace nbio
