#include "timers/timer_wheel_model.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "timers/timer_wheel.h"

namespace nbio {
namespace timers_testing {
namespace {

constexpr int64_t kMaxTime = std::numeric_limits<int64_t>::max();
constexpr int64_t kMinTime = std::numeric_limits<int64_t>::min();

int64_t Clamp(__int128 v) {
  if (v > kMaxTime) return kMaxTime;
  if (v < kMinTime) return kMinTime;
  return static_cast<int64_t>(v);
}

std::string ToString(__int128 v) {
  if (v == 0) return "0";
  const bool negative = v < 0;
  std::string digits;
  while (v != 0) {
    const int d = static_cast<int>(v % 10);
    digits.push_back(static_cast<char>('0' + (d < 0 ? -d : d)));
    v /= 10;
  }
  if (negative) digits.push_back('-');
  std::reverse(digits.begin(), digits.end());
  return digits;
}

}  // namespace

// A timer's owner: the node is its base, so the callback recovers it with a
// static_cast.
struct WheelChecker::Owner : TimerNode {
  Owner(WheelChecker* c, int i)
      : TimerNode(&WheelChecker::OnFire), checker(c), id(i) {}
  WheelChecker* checker;
  int id;
  Action action;
};

WheelChecker::WheelChecker(int64_t start_nanos, absl::Duration resolution,
                           int num_timers)
    : resolution_(absl::ToInt64Nanoseconds(resolution)),
      now_(start_nanos),
      wheel_(start_nanos, TimerWheel::Options{resolution}),
      model_(static_cast<size_t>(num_timers)) {
  for (int id = 0; id < num_timers; ++id) {
    owners_.push_back(std::make_unique<Owner>(this, id));
  }
}

// Owners go first, while the wheel still exists: their nodes unlink.
WheelChecker::~WheelChecker() { owners_.clear(); }

void WheelChecker::Fail(const std::string& what) {
  if (!error_.empty()) return;
  error_ = "step " + std::to_string(steps_) + " (now " + std::to_string(now_) +
           ", resolution " + std::to_string(resolution_) + "ns): " + what;
}

WheelChecker::Owner& WheelChecker::OwnerOf(int id) { return *owners_[id]; }

__int128 WheelChecker::FireTime(int64_t deadline) const {
  // Ceiling to a multiple of the resolution; C++ division truncates, which
  // is the ceiling for negative quotients.
  __int128 q = deadline / resolution_;
  if (deadline % resolution_ != 0 && deadline > 0) ++q;
  return q * resolution_;
}

void WheelChecker::ModelUnschedule(int id) {
  ModelTimer& m = model_[id];
  if (!m.scheduled) return;
  by_fire_.erase(m.entry);
  m.scheduled = false;
}

void WheelChecker::ModelSchedule(int id, int64_t deadline) {
  ModelUnschedule(id);
  ModelTimer& m = model_[id];
  m.scheduled = true;
  m.fire = FireTime(deadline);
  m.entry = by_fire_.emplace(m.fire, id);
  if (m.fire - now_ > (__int128{63} << 30) * resolution_) ++far_scheduled_;
  if (in_advance_ && !m.armed_in_advance) {
    m.armed_in_advance = true;
    armed_.push_back(id);
  }
}

void WheelChecker::CheckNode(int id) {
  const bool scheduled = OwnerOf(id).is_scheduled();
  if (scheduled != model_[id].scheduled) {
    Fail("timer " + std::to_string(id) + " is_scheduled() " +
         std::to_string(scheduled) + ", model says " +
         std::to_string(model_[id].scheduled));
  }
}

void WheelChecker::Schedule(int id, int64_t deadline) {
  ++steps_;
  wheel_.Schedule(&OwnerOf(id), deadline);
  ModelSchedule(id, deadline);
  if (OwnerOf(id).deadline() != deadline) {
    Fail("deadline() " + std::to_string(OwnerOf(id).deadline()) +
         " after Schedule(" + std::to_string(deadline) + ")");
  }
  CheckNode(id);
}

void WheelChecker::ScheduleWithin(int id, int64_t deadline, int64_t tolerance) {
  ++steps_;
  wheel_.ScheduleWithin(&OwnerOf(id), deadline, tolerance);
  const int64_t picked = OwnerOf(id).deadline();
  const __int128 latest = std::max<__int128>(
      FireTime(deadline), __int128{deadline} + std::max<int64_t>(tolerance, 0));
  if (picked < deadline || FireTime(picked) > latest) {
    Fail("ScheduleWithin(" + std::to_string(deadline) + ", tolerance " +
         std::to_string(tolerance) + ") picked " + std::to_string(picked) +
         ", latest allowed " + ToString(latest));
  }
  ModelSchedule(id, picked);
  CheckNode(id);
}

void WheelChecker::ScheduleNextPeriod(int id, int64_t period,
                                      TimerWheel::MissedPeriods missed) {
  ++steps_;
  const int64_t last = OwnerOf(id).deadline();
  __int128 next = __int128{last} + period;
  if (missed == TimerWheel::MissedPeriods::kSkip && period > 0 &&
      next <= wheel_.now()) {
    next = __int128{last} +
           ((__int128{wheel_.now()} - last) / period + 1) * period;
  }
  const int64_t expected = Clamp(next);
  wheel_.ScheduleNextPeriod(&OwnerOf(id), period, missed);
  if (OwnerOf(id).deadline() != expected) {
    Fail("ScheduleNextPeriod(period " + std::to_string(period) + ") from " +
         std::to_string(last) + " gave " +
         std::to_string(OwnerOf(id).deadline()) + ", expected " +
         std::to_string(expected));
  }
  ModelSchedule(id, expected);
  CheckNode(id);
}

void WheelChecker::Cancel(int id) {
  ++steps_;
  wheel_.Cancel(&OwnerOf(id));
  ModelUnschedule(id);
  CheckNode(id);
}

void WheelChecker::Destroy(int id) {
  ++steps_;
  owners_[id].reset();  // the node unlinks itself
  ModelUnschedule(id);
  owners_[id] = std::make_unique<Owner>(this, id);
}

void WheelChecker::SetAction(int id, const Action& action) {
  OwnerOf(id).action = action;
}

void WheelChecker::OnFire(TimerNode* node) {
  Owner* owner = static_cast<Owner*>(node);
  owner->checker->Fired(owner->id);
}

void WheelChecker::Fired(int id) {
  ModelTimer& m = model_[id];
  const std::string who = "timer " + std::to_string(id);
  if (!in_advance_) return Fail(who + " ran outside Advance");
  if (!m.scheduled) return Fail(who + " ran but was not scheduled");
  if (m.armed_in_advance) {
    return Fail(who +
                " was (re)scheduled by a callback and ran in the same "
                "Advance");
  }
  if (m.fire > advance_now_) {
    return Fail(who + " ran early: fires at " + ToString(m.fire) +
                ", Advance(" + std::to_string(advance_now_) + ")");
  }
  if (m.fire <= overdue_before_) {
    // Overdue when the Advance began: these run first, in the order they
    // were scheduled.
    if (ran_on_time_) {
      return Fail(who + " was overdue but ran after a timer that was not");
    }
  } else {
    if (m.fire < last_fire_) {
      return Fail(who + " ran out of order: fires at " + ToString(m.fire) +
                  " after one that fired at " + ToString(last_fire_));
    }
    last_fire_ = m.fire;
    ran_on_time_ = true;
  }
  if (OwnerOf(id).is_scheduled()) {
    return Fail(who + " is_scheduled() inside its callback");
  }
  ModelUnschedule(id);
  ++ran_this_advance_;
  ++runs_;
  // Asking mid-Advance fills the cache from a state Advance then changes;
  // the checks after Advance catch a cache that outlives it.
  if (id % 2 == 0) wheel_.NextExpiry();
  RunAction(id);
}

void WheelChecker::RunAction(int id) {
  const Action action = OwnerOf(id).action;  // a copy: the owner may go
  const int other = action.other % num_timers();
  const int64_t target = Clamp(__int128{advance_now_} + action.delta);
  switch (action.kind) {
    case Action::Kind::kNone:
      break;
    case Action::Kind::kCancelOther:
      Cancel(other);
      break;
    case Action::Kind::kRearmSelf:
      Schedule(id, target);
      break;
    case Action::Kind::kRearmOther:
      Schedule(other, target);
      break;
    case Action::Kind::kWithinSelf:
      ScheduleWithin(id, target, action.tolerance);
      break;
    case Action::Kind::kPeriodic:
      ScheduleNextPeriod(id, std::max<int64_t>(action.delta, 0), action.missed);
      break;
    case Action::Kind::kDestroySelf:
      Destroy(id);
      break;
    case Action::Kind::kDestroyOther:
      Destroy(other);
      break;
  }
}

void WheelChecker::Advance(int64_t now) {
  ++steps_;
  const int64_t effective = std::max(now, now_);
  in_advance_ = true;
  advance_now_ = effective;
  overdue_before_ = now_;
  last_fire_ = overdue_before_;
  ran_on_time_ = false;
  ran_this_advance_ = 0;
  const size_t ran = wheel_.Advance(now);
  in_advance_ = false;
  now_ = effective;
  if (!ok()) return;
  if (ran != ran_this_advance_) {
    return Fail("Advance returned " + std::to_string(ran) + " but " +
                std::to_string(ran_this_advance_) + " callbacks ran");
  }
  if (wheel_.now() != now_) {
    return Fail("now() " + std::to_string(wheel_.now()) + ", expected " +
                std::to_string(now_));
  }
  // Every timer due by now ran, except those (re)scheduled by callbacks.
  for (auto it = by_fire_.begin(); it != by_fire_.end() && it->first <= now_;
       ++it) {
    if (!model_[it->second].armed_in_advance) {
      return Fail("timer " + std::to_string(it->second) + " firing at " +
                  ToString(it->first) + " did not run by Advance(" +
                  std::to_string(now_) + ")");
    }
  }
  for (int id : armed_) model_[id].armed_in_advance = false;
  armed_.clear();
  for (int id = 0; id < num_timers(); ++id) CheckNode(id);
}

void WheelChecker::CheckNextExpiry() {
  if (!ok()) return;
  const std::optional<int64_t> next = wheel_.NextExpiry();
  const std::optional<int64_t> again = wheel_.NextExpiry();
  if (next != again) return Fail("NextExpiry() changed when asked twice");
  if (by_fire_.empty()) {
    if (next.has_value()) {
      return Fail("NextExpiry() " + std::to_string(*next) +
                  " with nothing scheduled");
    }
    if (!wheel_.empty()) return Fail("empty() false with nothing scheduled");
    return;
  }
  const __int128 earliest = by_fire_.begin()->first;
  if (!next.has_value()) {
    return Fail("NextExpiry() nullopt, but a timer fires at " +
                ToString(earliest));
  }
  if (wheel_.empty()) return Fail("empty() true with timers scheduled");
  if (*next > earliest) {
    return Fail("NextExpiry() " + std::to_string(*next) +
                " later than the earliest firing time " + ToString(earliest));
  }
  if (*next != kMaxTime && *next % resolution_ != 0) {
    return Fail("NextExpiry() " + std::to_string(*next) +
                " is not a multiple of the resolution");
  }
  if (*next <= now_ && earliest > now_ && *next != kMaxTime) {
    return Fail("NextExpiry() " + std::to_string(*next) +
                " is not in the future, yet nothing is due");
  }
}

void WheelChecker::AdvanceToNextExpiry() {
  const std::optional<int64_t> next = wheel_.NextExpiry();
  if (!next.has_value()) return;
  // At the end of time nothing can be reached; progress is moot.
  if (*next == kMaxTime && by_fire_.begin()->first > kMaxTime) return;
  const uint64_t runs_before = runs_;
  Advance(std::max(*next, now_));
  if (!ok()) return;
  const std::optional<int64_t> after = wheel_.NextExpiry();
  if (runs_ == runs_before && after.has_value() && *after <= *next) {
    Fail("Advance to NextExpiry() " + std::to_string(*next) +
         " ran nothing and NextExpiry() did not move (" +
         std::to_string(*after) + "): a wake-up loop");
  }
}

// ---------------------------------------------------------------------------
// The driver.

namespace {

// A tick count for an offset from now: mostly near, some at the level
// boundaries, some beyond the wheel's range.
uint64_t DrawTicks(BitSource& s) {
  switch (s.Bits(3)) {
    case 0:
      return s.Bits(2);
    case 1:
      return s.Bits(7);
    case 2:
      return kBoundaryTicks[s.Bits(5) % (sizeof(kBoundaryTicks) /
                                         sizeof(kBoundaryTicks[0]))];
    case 3:
      return s.Bits(13);
    case 4:
      return s.Bits(20);
    case 5:
      return s.Bits(26);
    case 6:
      return s.Bits(32);
    default:
      return s.Bits(3) == 0 ? s.Bits(40) : s.Bits(16);
  }
}

// An offset in nanoseconds: whole ticks, then on or off a tick boundary.
__int128 DrawOffset(BitSource& s, int64_t resolution) {
  __int128 nanos = static_cast<__int128>(DrawTicks(s)) * resolution;
  switch (s.Bits(2)) {
    case 0:
      break;
    case 1:
      nanos +=
          static_cast<int64_t>(s.Bits(40) % static_cast<uint64_t>(resolution));
      break;
    case 2:
      nanos -= 1;
      break;
    default:
      nanos += 1;
      break;
  }
  return nanos;
}

// How far an Advance moves time: mostly a little, sometimes (rarely beyond
// the range, so that a run does not reach the end of time at once) far.
__int128 DrawJump(BitSource& s, const WheelChecker& c) {
  if (s.Bits(3) == 0 && c.now() < (int64_t{1} << 62)) {
    return DrawOffset(s, c.resolution());
  }
  const uint64_t ticks = s.Bits(1) ? s.Bits(3) : s.Bits(10);
  return static_cast<__int128>(ticks) * c.resolution() +
         static_cast<int64_t>(s.Bits(2));
}

// A deadline relative to now: mostly ahead, sometimes behind.
int64_t DrawDeadline(BitSource& s, const WheelChecker& c) {
  const __int128 offset = DrawOffset(s, c.resolution());
  if (s.Bits(3) == 0) return Clamp(__int128{c.now()} - offset);
  return Clamp(__int128{c.now()} + offset);
}

Action DrawAction(BitSource& s, const WheelChecker& c) {
  Action a;
  a.kind = static_cast<Action::Kind>(s.Bits(3));
  a.other = static_cast<int>(s.Bits(8));
  switch (s.Bits(2)) {
    case 0:
      a.delta = 0;  // re-arm at now: due, must wait for the next Advance
      break;
    case 1:
      a.delta = -Clamp(DrawOffset(s, c.resolution()));  // in the past
      break;
    default:
      a.delta = Clamp(DrawOffset(s, c.resolution()));
      break;
  }
  if (a.kind == Action::Kind::kPeriodic && a.delta > 0) {
    a.delta = static_cast<int64_t>(s.Bits(7)) * c.resolution() +
              static_cast<int64_t>(s.Bits(2));
  }
  a.tolerance = Clamp(DrawOffset(s, c.resolution()));
  a.missed = s.Bits(1) ? TimerWheel::MissedPeriods::kSkip
                       : TimerWheel::MissedPeriods::kRunEach;
  return a;
}

}  // namespace

std::unique_ptr<WheelChecker> MakeChecker(BitSource& source) {
  static constexpr int64_t kResolutions[] = {
      1000000, 1000000, 1000000, 1, 1000, 7, 1000003, 1000000000};
  static constexpr int64_t kStarts[] = {0,
                                        1,
                                        999999,
                                        123456789012345,
                                        -5000000001,
                                        int64_t{1} << 61,
                                        -(int64_t{1} << 62),
                                        17};
  const int64_t resolution = kResolutions[source.Bits(3)];
  const int64_t start = kStarts[source.Bits(3)];
  const int timers = 1 + static_cast<int>(source.Bits(6));
  return std::make_unique<WheelChecker>(start, absl::Nanoseconds(resolution),
                                        timers);
}

void DriveChecker(BitSource& s, size_t max_ops, WheelChecker& c) {
  for (size_t op = 0; op < max_ops && c.ok() && !s.Done(); ++op) {
    const int id =
        static_cast<int>(s.Bits(8) % static_cast<uint64_t>(c.num_timers()));
    switch (s.Bits(4)) {
      case 0:
      case 1:
      case 2:
      case 3:
        c.Schedule(id, DrawDeadline(s, c));
        break;
      case 4: {
        const int64_t deadline = DrawDeadline(s, c);
        c.ScheduleWithin(id, deadline, Clamp(DrawOffset(s, c.resolution())));
        break;
      }
      case 5:
      case 6:
        c.Cancel(id);
        break;
      case 7:
        c.SetAction(id, DrawAction(s, c));
        break;
      case 8:
      case 9:
      case 10:
        c.Advance(Clamp(__int128{c.now()} + DrawJump(s, c)));
        break;
      case 11:
        c.AdvanceToNextExpiry();
        break;
      case 12: {
        const int64_t period =
            static_cast<int64_t>(s.Bits(7)) * c.resolution() +
            static_cast<int64_t>(s.Bits(2));
        c.ScheduleNextPeriod(id, period,
                             s.Bits(1) ? TimerWheel::MissedPeriods::kSkip
                                       : TimerWheel::MissedPeriods::kRunEach);
        break;
      }
      case 13:
        c.Destroy(id);
        break;
      case 14:
        // A time before now(): taken as now(); due timers still run.
        c.Advance(Clamp(__int128{c.now()} - static_cast<int64_t>(s.Bits(20))));
        break;
      default:
        for (int n = 1 + static_cast<int>(s.Bits(3)); n > 0 && c.ok(); --n) {
          c.AdvanceToNextExpiry();
          c.CheckNextExpiry();
        }
        break;
    }
    c.CheckNextExpiry();
  }
}

}  // namespace timers_testing
}  // namespace nbio
