// Test support: a TimerWheel checked step by step against a plain model (a
// std::multimap from firing time to timer), and a driver that feeds it
// operations from a bit source. The randomized test feeds it a seeded PRNG,
// the fuzz target the fuzzer's bytes; both share every check here.
//
// What is checked, on every step:
//   - every timer runs exactly once per scheduling, never before its deadline
//     rounded up to a tick, never lost (all due timers ran by the end of the
//     Advance), overdue ones first and the others in non-decreasing firing
//     time, never in the same Advance that (re)scheduled it, and Advance's
//     count matches;
//   - ScheduleWithin picks a deadline no earlier than asked and no later than
//     max(deadline + tolerance, the deadline rounded up to a tick);
//   - NextExpiry() is nullopt exactly when the model is empty, is never later
//     than the model's earliest firing time, is a multiple of the resolution,
//     is not in the past unless a timer is due, is stable when asked twice,
//     and advancing to it makes progress (something runs, or it moves later);
//   - is_scheduled(), deadline(), empty() and now() agree with the model.
// Callbacks of even-numbered timers also call NextExpiry() mid-Advance.
// Callbacks perform actions (cancel or destroy another timer, re-arm
// themselves in the past / same slot / elsewhere, periodic re-arms, destroy
// their own owner) that the model mirrors.
//
// Not thread-safe; test-only.
#ifndef NBIO_TIMERS_TIMER_WHEEL_MODEL_H_
#define NBIO_TIMERS_TIMER_WHEEL_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "timers/timer_wheel.h"

namespace nbio {
namespace timers_testing {

// Tick offsets where placement changes: at and around each level boundary
// (64^L - 1, 64^L, 64^L + 1), at the end of the range (63 and 64 top-level
// slots of 2^30 ticks) and beyond it, where deadlines are clamped. Shared by
// the driver below and the edge-case tests.
inline constexpr uint64_t kBoundaryTicks[] = {1,
                                              2,
                                              63,
                                              64,
                                              65,
                                              127,
                                              128,
                                              4095,
                                              4096,
                                              4097,
                                              262143,
                                              262144,
                                              262145,
                                              16777215,
                                              16777216,
                                              16777217,
                                              1073741823,
                                              1073741824,
                                              1073741825,
                                              uint64_t{63} << 30,
                                              (uint64_t{64} << 30) - 1,
                                              uint64_t{64} << 30,
                                              (uint64_t{64} << 30) + 1,
                                              uint64_t{65} << 30,
                                              uint64_t{1} << 37,
                                              uint64_t{1} << 40};

// What a timer's callback does when it runs, besides being recorded.
struct Action {
  enum class Kind {
    kNone,
    kCancelOther,   // Cancel(other)
    kRearmSelf,     // Schedule(self, now + delta)
    kRearmOther,    // Schedule(other, now + delta)
    kWithinSelf,    // ScheduleWithin(self, now + delta, tolerance)
    kPeriodic,      // ScheduleNextPeriod(self, period = delta, missed)
    kDestroySelf,   // destroys the callback's own owner
    kDestroyOther,  // destroys other's owner
  };
  Kind kind = Kind::kNone;
  int other = 0;
  int64_t delta = 0;
  int64_t tolerance = 0;
  TimerWheel::MissedPeriods missed = TimerWheel::MissedPeriods::kRunEach;
};

class WheelChecker {
 public:
  WheelChecker(int64_t start_nanos, absl::Duration resolution, int num_timers);
  ~WheelChecker();

  WheelChecker(const WheelChecker&) = delete;
  WheelChecker& operator=(const WheelChecker&) = delete;

  // Each runs the operation on the wheel and the model and checks both.
  void Schedule(int id, int64_t deadline);
  void ScheduleWithin(int id, int64_t deadline, int64_t tolerance);
  void ScheduleNextPeriod(int id, int64_t period,
                          TimerWheel::MissedPeriods missed);
  void Cancel(int id);
  void Destroy(int id);  // destroys the owner (and so the node), recreates it
  void SetAction(int id, const Action& action);
  void Advance(int64_t now);
  // Advances to NextExpiry() (or now(), if that is earlier) and checks that
  // it made progress. A no-op when nothing is scheduled.
  void AdvanceToNextExpiry();
  void CheckNextExpiry();

  bool ok() const { return error_.empty(); }
  // The first failure, with the step at which it happened; empty if none.
  const std::string& error() const { return error_; }

  int num_timers() const { return static_cast<int>(owners_.size()); }
  int64_t now() const { return now_; }
  int64_t resolution() const { return resolution_; }
  // Totals, to show that a run exercised what it meant to.
  uint64_t steps() const { return steps_; }
  uint64_t runs() const { return runs_; }
  uint64_t clamped() const { return far_scheduled_; }

 private:
  struct Owner;
  struct ModelTimer {
    bool scheduled = false;
    bool armed_in_advance = false;  // (re)scheduled by a callback
    __int128 fire = 0;              // deadline rounded up to a tick
    std::multimap<__int128, int>::iterator entry;
  };

  static void OnFire(TimerNode* node);
  void Fired(int id);
  void RunAction(int id);
  Owner& OwnerOf(int id);
  void ModelSchedule(int id, int64_t deadline);
  void ModelUnschedule(int id);
  __int128 FireTime(int64_t deadline) const;
  void CheckNode(int id);
  void Fail(const std::string& what);

  const int64_t resolution_;
  int64_t now_;
  TimerWheel wheel_;
  std::vector<std::unique_ptr<Owner>> owners_;
  std::vector<ModelTimer> model_;
  std::multimap<__int128, int> by_fire_;

  bool in_advance_ = false;
  int64_t advance_now_ = 0;
  int64_t overdue_before_ = 0;  // timers firing at or before: overdue
  __int128 last_fire_ = 0;
  bool ran_on_time_ = false;
  size_t ran_this_advance_ = 0;
  std::vector<int> armed_;

  uint64_t steps_ = 0;
  uint64_t runs_ = 0;
  uint64_t far_scheduled_ = 0;
  std::string error_;
};

// Where the driver's choices come from.
class BitSource {
 public:
  virtual ~BitSource() = default;
  // Whether the source has nothing left (the driver then stops).
  virtual bool Done() const = 0;
  // The next `bits` (1..64) bits.
  virtual uint64_t Bits(int bits) = 0;
};

// Decodes a configuration (resolution, start time, timer count) from
// `source` and builds a checker for it.
std::unique_ptr<WheelChecker> MakeChecker(BitSource& source);

// Performs up to `max_ops` operations decoded from `source` on `checker`,
// checking NextExpiry() after each. Stops early at the first failure or when
// the source is done.
void DriveChecker(BitSource& source, size_t max_ops, WheelChecker& checker);

}  // namespace timers_testing
}  // namespace nbio

#endif  // NBIO_TIMERS_TIMER_WHEEL_MODEL_H_
