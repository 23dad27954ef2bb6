// A user of @nbio//timers:timer_wheel alone: the wheel's header example.
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "timers/timer_wheel.h"

namespace {

struct Job : nbio::TimerNode {
  explicit Job(std::vector<int>* log, int id)
      : TimerNode(&Job::OnFire), log(log), id(id) {}
  static void OnFire(nbio::TimerNode* node) {
    Job* job = static_cast<Job*>(node);
    job->log->push_back(job->id);
  }
  std::vector<int>* log;
  int id;
};

TEST(TimerWheelUserTest, FiresInDeadlineOrderAndNeverEarly) {
  const int64_t ms = 1000 * 1000;
  nbio::TimerWheel wheel(0);
  std::vector<int> log;
  Job a(&log, 1), b(&log, 2), c(&log, 3);
  wheel.Schedule(&b, 20 * ms);
  wheel.Schedule(&a, 10 * ms);
  wheel.Schedule(&c, 30 * ms);
  wheel.Cancel(&c);
  ASSERT_TRUE(wheel.NextExpiry().has_value());
  EXPECT_GE(*wheel.NextExpiry(), 10 * ms);
  wheel.Advance(10 * ms - 1);
  EXPECT_TRUE(log.empty());
  wheel.Advance(25 * ms);
  EXPECT_EQ(log, (std::vector<int>{1, 2}));
  wheel.Advance(100 * ms);
  EXPECT_EQ(log.size(), 2u);  // c was cancelled
}

}  // namespace
