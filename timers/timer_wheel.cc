// How the wheel keeps its contract.
//
// Ticks. Times become ticks since origin_nanos_ (a tick boundary), unsigned:
// a deadline rounds up (CeilTick), the current time rounds down. elapsed_ is
// the last tick processed.
//
// Placement. A timer for tick t > elapsed_ goes to the level of the highest
// bit in which t and elapsed_ differ, 6 bits per level, in slot digit L of t
// (levels 0..4). So every timer at a level below the top shares the higher
// digits with elapsed_ and has a strictly greater digit at its own level: the
// occupied slots of a level all lie ahead of elapsed_'s digit, and the
// earliest is the lowest set bit. Moreover every level-L slot is reached
// before any level-(L+1) slot, so NextSlotTick() stops at the first non-empty
// level. Ticks whose top digits (bits 30 and up) differ from elapsed_'s go to
// the top level, which is circular: slot (t >> 30) mod 64 when that is at most
// 63 slots ahead, else the slot 63 ahead (clamped). "Ahead" is the bitmap
// rotated right past elapsed_'s own slot, whose count of trailing zeros is the
// distance, tokio style; for the lower levels the rotation changes nothing.
//
// When elapsed_ reaches the start of an occupied slot (Advance visits exactly
// those ticks), the slot is cascaded: each timer is due (its tick is the
// slot's start) or goes to a finer level, never back into the slot being
// emptied (its digit there is now elapsed_'s). A clamped timer is placed anew:
// closer to its slot, or clamped again. So nothing fires early, and a timer
// moves at most once per level.
//
// Cancel and the bitmaps. A node does not record its slot: 32 bytes hold
// prev, next, deadline and callback, and the deadline is kept in nanoseconds
// because deadline() must return it exactly for drift-free periodic timers.
// None is needed: unlinking the last node of a list leaves it with
// prev == next == the list's sentinel (a ListHead), which records its slot
// and wheel, so whoever unlinks the last node (Cancel, a re-arm, or the
// node's destructor, which knows no wheel) clears the slot's bit at once. The
// bitmaps are therefore exact, never lazily cleared.
//
// In-place re-arm. A timer's slot is a function of its tick and elapsed_ (by
// the invariant above), so Schedule recomputes the old slot from the old
// deadline and, when the new deadline maps to the same slot, only stores the
// deadline. The one exception is harmless: a timer clamped earlier may sit in
// an older clamp slot X than SlotFor() now says, but X is reached before the
// start of the top-level slot its tick now maps to, and so before any new
// deadline that maps there too; at X it is placed again by the new deadline.
//
// Long jumps. A timer beyond the range is placed again once per rotation of
// the top level (63 * 2^30 ticks), so an Advance spanning many rotations
// would step through them one by one. When only top-level timers are left
// and the Advance spans a whole rotation, it instead jumps elapsed_ to just
// before the earliest of them (or to its target) and places them all again:
// O(top-level timers), after which one runs or the Advance is done.
//
// Due timers. Deadlines at or before horizon_ go to pending_, run at the
// start of the next Advance. Advance moves pending_ to batch_ first, then
// visits the slot ticks up to its target in order, moving due timers to
// batch_ and running it each time. A timer scheduled by a callback whose
// tick the Advance would still reach goes to pending_ (horizon_ is the
// target), so it waits for the next call.
#include "timers/timer_wheel.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>

#include "absl/time/time.h"
#include "queue/base/check.h"

namespace nbio {
namespace timers_internal {

UnsignedDivider::UnsignedDivider(uint64_t d) {
  NBIO_CHECK(d >= 1);
  NBIO_CHECK(d <= (uint64_t{1} << 63));
  // l = ceil(log2(d)); m = floor(2^64 * (2^l - d) / d) + 1, which fits in 64
  // bits because 2^l - d < d.
  const int l = d == 1 ? 0 : 64 - __builtin_clzll(d - 1);
  const uint64_t two_to_l_minus_d = (l == 64 ? 0 : (uint64_t{1} << l)) - d;
  multiplier_ =
      static_cast<uint64_t>(
          (static_cast<unsigned __int128>(two_to_l_minus_d) << 64) / d) +
      1;
  shift1_ = std::min(l, 1);
  shift2_ = std::max(l - 1, 0);
}

}  // namespace timers_internal

namespace {

using timers_internal::Link;
using timers_internal::ListHead;
using timers_internal::PushBack;

constexpr int kBitsBelowTop = (TimerWheel::kLevels - 1) * TimerWheel::kSlotBits;

int64_t CheckedResolution(absl::Duration resolution) {
  const int64_t nanos = absl::ToInt64Nanoseconds(resolution);
  NBIO_CHECK_MSG(nanos >= 1, "TimerWheel resolution must be at least 1ns");
  return nanos;
}

int64_t CheckedNow(int64_t now) {
  NBIO_CHECK_MSG(now >= -(int64_t{1} << 62),
                 "TimerWheel time must be >= -2^62");
  return now;
}

// The largest multiple of `res` that is <= `now` (floor division for any
// sign).
int64_t FloorToMultiple(int64_t now, int64_t res) {
  int64_t q = now / res;
  if (now % res != 0 && now < 0) --q;
  return q * res;
}

bool ListEmpty(const ListHead& head) { return head.next == &head; }

void InitHead(ListHead* head, TimerWheel* wheel, uint32_t id) {
  head->prev = head->next = head;
  head->wheel = wheel;
  head->id = id;
}

// Moves every node of `from` to the end of `to`, leaving `from` empty.
void SpliceBack(ListHead* from, ListHead* to) {
  if (ListEmpty(*from)) return;
  Link* first = from->next;
  Link* last = from->prev;
  from->next = from->prev = from;
  first->prev = to->prev;
  to->prev->next = first;
  last->next = to;
  to->prev = last;
}

// Unlinks and returns the first node, without telling anyone the list
// emptied: for the wheel's own moves, which keep the bitmaps themselves.
Link* PopFront(ListHead* head) {
  Link* link = head->next;
  head->next = link->next;
  link->next->prev = head;
  link->prev = link->next = nullptr;
  return link;
}

// Drops every node of the list, leaving them unscheduled.
void Orphan(ListHead* head) {
  while (!ListEmpty(*head)) PopFront(head);
}

}  // namespace

TimerWheel::TimerWheel(int64_t now_nanos) : TimerWheel(now_nanos, Options()) {}

TimerWheel::TimerWheel(int64_t now_nanos, Options options)
    : resolution_(CheckedResolution(options.resolution)),
      divider_(static_cast<uint64_t>(resolution_)),
      origin_nanos_(FloorToMultiple(CheckedNow(now_nanos), resolution_)),
      max_tick_((static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) -
                 static_cast<uint64_t>(origin_nanos_)) /
                static_cast<uint64_t>(resolution_)),
      now_nanos_(now_nanos) {
  for (uint32_t id = 0; id < kNumSlots; ++id) InitHead(&slots_[id], this, id);
  InitHead(&pending_, this, kNotASlot);
  InitHead(&batch_, this, kNotASlot);
}

TimerWheel::~TimerWheel() {
  for (int level = 0; level < kLevels; ++level) {
    for (uint64_t word = occupied_[level]; word != 0; word &= word - 1) {
      Orphan(&slots_[level * kSlotsPerLevel + __builtin_ctzll(word)]);
    }
  }
  Orphan(&pending_);
  Orphan(&batch_);
}

uint64_t TimerWheel::NextSlotTick() const {
  // Every slot of level L is reached before any slot of level L + 1, so the
  // first non-empty level has the answer.
  for (int level = 0; level < kLevels; ++level) {
    const uint64_t word = occupied_[level];
    if (word == 0) continue;
    const int shift = level * kSlotBits;
    const uint64_t current = elapsed_ >> shift;
    // Rotate so that bit 0 is the slot just after elapsed_'s own.
    const int rotate = static_cast<int>((current + 1) & (kSlotsPerLevel - 1));
    const uint64_t ahead =
        rotate == 0 ? word : (word >> rotate) | (word << (64 - rotate));
    return (current + 1 + static_cast<uint64_t>(__builtin_ctzll(ahead)))
           << shift;
  }
  return kNoTick;
}

void TimerWheel::NoteDue(int64_t fire_nanos) {
  if (ListEmpty(pending_) && ListEmpty(batch_)) {
    due_min_nanos_ = fire_nanos;
  } else {
    due_min_nanos_ = std::min(due_min_nanos_, fire_nanos);
  }
}

void TimerWheel::LinkDue(TimerNode* node, ListHead* list, int64_t fire_nanos) {
  NoteDue(fire_nanos);
  PushBack(list, node);
  if (cache_valid_ &&
      (!cached_next_.has_value() || fire_nanos < *cached_next_)) {
    cached_next_ = fire_nanos;
  }
}

void TimerWheel::ScheduleDue(TimerNode* node, int64_t deadline_nanos,
                             uint64_t tick) {
  node->Unlink();
  node->deadline_ = deadline_nanos;
  // The firing time, for NextExpiry: the deadline rounded up to a tick.
  int64_t fire = TickToNanos(tick);
  if (deadline_nanos <= origin_nanos_) {
    const uint64_t back = static_cast<uint64_t>(origin_nanos_) -
                          static_cast<uint64_t>(deadline_nanos);
    fire = static_cast<int64_t>(static_cast<uint64_t>(origin_nanos_) -
                                divider_.Divide(back) *
                                    static_cast<uint64_t>(resolution_));
  }
  LinkDue(node, &pending_, fire);
}

void TimerWheel::ScheduleWithin(TimerNode* node, int64_t deadline_nanos,
                                int64_t tolerance_nanos) {
  const uint64_t t = CeilTick(deadline_nanos);
  if (tolerance_nanos <= 0 || t <= horizon_ || t > max_tick_) {
    Schedule(node, deadline_nanos);
    return;
  }
  // Rounding up to a tick already made it late by `slack` (< resolution).
  const uint64_t slack = t * static_cast<uint64_t>(resolution_) -
                         (static_cast<uint64_t>(deadline_nanos) -
                          static_cast<uint64_t>(origin_nanos_));
  if (static_cast<uint64_t>(tolerance_nanos) <= slack) {
    Schedule(node, deadline_nanos);
    return;
  }
  // Whole ticks it may still be late. The coarsest level whose slot
  // boundary after t is within that many ticks: the timer then waits at the
  // start of a slot of that level and never moves finer (a timer whose tick
  // is a multiple of 64^L is placed at level L or above, and is due when
  // its slot is reached).
  const uint64_t spare =
      divider_.Divide(static_cast<uint64_t>(tolerance_nanos) - slack);
  for (int level = kTopLevel; level >= 1; --level) {
    const int shift = level * kSlotBits;
    const uint64_t rounded = ((t + (uint64_t{1} << shift) - 1) >> shift)
                             << shift;
    if (rounded - t <= spare && rounded <= max_tick_) {
      Schedule(node, TickToNanos(rounded));
      return;
    }
  }
  Schedule(node, deadline_nanos);
}

void TimerWheel::ScheduleNextPeriod(TimerNode* node, int64_t period_nanos,
                                    MissedPeriods missed) {
  NBIO_CHECK_MSG(period_nanos >= 0, "a period must not be negative");
  // In 128 bits: last + k * period overflows int64_t near the end of time
  // (saturated there), and last may be far in the past.
  const __int128 last = node->deadline();
  __int128 next = last + period_nanos;
  if (missed == MissedPeriods::kSkip && period_nanos > 0 &&
      next <= now_nanos_) {
    // The first last + k * period after now: k = (now - last) / period + 1.
    next = last + ((now_nanos_ - last) / period_nanos + 1) * period_nanos;
  }
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  Schedule(node, next > kMax ? kMax : static_cast<int64_t>(next));
}

std::optional<int64_t> TimerWheel::ComputeNextExpiry() {
  const uint64_t tick = NextSlotTick();
  std::optional<int64_t> next;
  if (tick != kNoTick) next = TickToNanos(tick);
  if (!ListEmpty(pending_) || !ListEmpty(batch_)) {
    next = next.has_value() ? std::min(*next, due_min_nanos_) : due_min_nanos_;
  }
  cached_next_ = next;
  cache_valid_ = true;
  return next;
}

bool TimerWheel::empty() const {
  for (uint64_t word : occupied_) {
    if (word != 0) return false;
  }
  return ListEmpty(pending_) && ListEmpty(batch_);
}

void TimerWheel::Cascade(uint32_t id) {
  ListHead* const head = &slots_[id];
  ClearOccupied(id);
  // Detach the whole slot first: a node never lands back in it (see the file
  // comment), but working from a private list makes that obviously safe.
  ListHead moving;
  InitHead(&moving, this, kNotASlot);
  SpliceBack(head, &moving);
  while (!ListEmpty(moving)) {
    TimerNode* node = static_cast<TimerNode*>(PopFront(&moving));
    const uint64_t t = CeilTick(node->deadline_);
    if (t <= elapsed_) {
      LinkDue(node, &batch_, TickToNanos(elapsed_));
    } else {
      LinkToSlot(node, SlotFor(t));
    }
  }
}

bool TimerWheel::OnlyTopLevelOccupied() const {
  for (int level = 0; level < kTopLevel; ++level) {
    if (occupied_[level] != 0) return false;
  }
  return true;
}

void TimerWheel::FastForward(uint64_t target) {
  // Gather the top level, finding its earliest tick.
  ListHead all;
  InitHead(&all, this, kNotASlot);
  uint64_t earliest = kNoTick;
  for (uint64_t word = occupied_[kTopLevel]; word != 0; word &= word - 1) {
    ListHead* head =
        &slots_[kTopLevel * kSlotsPerLevel + __builtin_ctzll(word)];
    for (Link* link = head->next; link != head; link = link->next) {
      earliest = std::min(earliest,
                          CeilTick(static_cast<TimerNode*>(link)->deadline_));
    }
    SpliceBack(head, &all);
  }
  occupied_[kTopLevel] = 0;
  cache_valid_ = false;
  // Nothing lies between elapsed_ and `earliest`: jump to just before it
  // (or to the target, if it is later) and place everything anew from there.
  elapsed_ = std::min(earliest - 1, target);
  while (!ListEmpty(all)) {
    TimerNode* node = static_cast<TimerNode*>(PopFront(&all));
    LinkToSlot(node, SlotFor(CeilTick(node->deadline_)));
  }
}

size_t TimerWheel::RunBatch() {
  size_t ran = 0;
  while (!ListEmpty(batch_)) {
    TimerNode* node = static_cast<TimerNode*>(batch_.next);
    node->Unlink();
    ++ran;
    // The node may be re-armed or destroyed by its callback: not touched
    // after it.
    if (TimerNode::Callback cb = node->callback_) cb(node);
  }
  return ran;
}

size_t TimerWheel::Advance(int64_t now_nanos) {
  NBIO_CHECK_MSG(
      !in_advance_,
      "TimerWheel::Advance must not be called from a timer callback");
  now_nanos_ = std::max(now_nanos_, now_nanos);
  const uint64_t target = divider_.Divide(static_cast<uint64_t>(now_nanos_) -
                                          static_cast<uint64_t>(origin_nanos_));
  in_advance_ = true;
  horizon_ = target;
  cache_valid_ = false;  // and so not kept up to date while advancing

  // Timers that were already due ran first: they are the earliest.
  SpliceBack(&pending_, &batch_);
  size_t ran = RunBatch();

  bool may_jump = true;
  for (;;) {
    const uint64_t tick = NextSlotTick();
    if (tick == kNoTick || tick > target) break;
    // After a jump the earliest timer may still sit at the top level (its
    // tick differs from elapsed_ in a top digit): that slot is then stepped
    // normally, not jumped to again.
    if (may_jump &&
        (target >> kBitsBelowTop) - (tick >> kBitsBelowTop) >= kSlotsPerLevel &&
        OnlyTopLevelOccupied()) {
      FastForward(target);
      may_jump = false;
      continue;
    }
    may_jump = true;
    elapsed_ = tick;
    // Coarse slots starting here move down first (only the top is possible
    // for a clamped timer, any level for the others), then level 0 is due.
    for (int level = kTopLevel; level >= 1; --level) {
      const int shift = level * kSlotBits;
      if ((tick & ((uint64_t{1} << shift) - 1)) != 0) continue;
      const uint32_t id =
          static_cast<uint32_t>(level * kSlotsPerLevel) +
          static_cast<uint32_t>((tick >> shift) & (kSlotsPerLevel - 1));
      if ((occupied_[level] >> (id & (kSlotsPerLevel - 1)) & 1) != 0) {
        Cascade(id);
      }
    }
    const uint32_t id0 = static_cast<uint32_t>(tick & (kSlotsPerLevel - 1));
    if ((occupied_[0] >> id0 & 1) != 0) {
      ClearOccupied(id0);
      NoteDue(TickToNanos(tick));
      SpliceBack(&slots_[id0], &batch_);
    }
    ran += RunBatch();
  }

  elapsed_ = std::max(elapsed_, target);
  horizon_ = elapsed_;
  in_advance_ = false;
  cache_valid_ = false;
  return ran;
}

}  // namespace nbio
