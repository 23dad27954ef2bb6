#include "reactor/sys/wakeup.h"

#include <poll.h>

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace nbio {
namespace {

bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

class WakeupTest : public ::testing::TestWithParam<Wakeup::Kind> {};

TEST_P(WakeupTest, SignalsCoalesceUntilDrained) {
  absl::StatusOr<std::unique_ptr<Wakeup>> w = Wakeup::Create(GetParam());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->kind(), GetParam());
  EXPECT_FALSE(Readable((*w)->fd()));
  EXPECT_FALSE((*w)->Drain());
  for (int i = 0; i < 100000; ++i) (*w)->Signal();  // never blocks, even full
  EXPECT_TRUE(Readable((*w)->fd()));
  EXPECT_TRUE((*w)->Drain());
  EXPECT_FALSE(Readable((*w)->fd()));
  EXPECT_FALSE((*w)->Drain());
}

TEST_P(WakeupTest, SignalFromOtherThreads) {
  absl::StatusOr<std::unique_ptr<Wakeup>> w = Wakeup::Create(GetParam());
  ASSERT_TRUE(w.ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) (*w)->Signal();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE((*w)->Drain());
  EXPECT_FALSE(Readable((*w)->fd()));
}

INSTANTIATE_TEST_SUITE_P(Kinds, WakeupTest,
                         ::testing::Values(Wakeup::Kind::kEventFd,
                                           Wakeup::Kind::kPipe),
                         [](const auto& info) {
                           return info.param == Wakeup::Kind::kEventFd
                                      ? "eventfd"
                                      : "pipe";
                         });

}  // namespace
}  // namespace nbio
