// A hierarchical timer wheel: tells the event loop how long it may block (the
// poll timeout) and runs the timers that are due.
//
// Timers are intrusive: a TimerNode is embedded in the object it times out
// (a connection, a task), so scheduling and cancelling never allocate.
//
//   struct Connection : nbio::TimerNode {  // its idle timeout
//     Connection() : TimerNode(&Connection::OnIdle) {}
//     static void OnIdle(nbio::TimerNode* node) {
//       static_cast<Connection*>(node)->Close();
//     }
//     void Close();
//   };
//
//   nbio::TimerWheel wheel(clock->NowNanos());
//   wheel.Schedule(conn, clock->NowNanos() + kIdleNanos);
//   for (;;) {
//     std::optional<int64_t> next = wheel.NextExpiry();
//     poller.Wait(next ? *next - clock->NowNanos() : kForever);
//     ...
//     wheel.Advance(clock->NowNanos());
//   }
//
// The design is the Linux kernel's and tokio's: levels of 64 slots with one
// occupancy bitmap word per level, so the next non-empty slot is a count of
// trailing zeros. See TimerWheel below for the contract and timer_wheel.cc
// for how it is kept.
#ifndef NBIO_TIMERS_TIMER_WHEEL_H_
#define NBIO_TIMERS_TIMER_WHEEL_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>

#include "absl/time/time.h"

namespace nbio {

class TimerWheel;

namespace timers_internal {

// The two links every member of one of the wheel's circular lists has. A
// scheduled TimerNode is one; the sentinel heading each list is another.
struct Link {
  Link* prev = nullptr;
  Link* next = nullptr;
};

// The sentinel heading one of the wheel's lists: a slot, or the list of due
// timers. It knows which list it heads, because the node that empties a list
// (and only that node) finds prev == next == the sentinel when it unlinks,
// and must then tell the wheel to clear the slot's occupancy bit. That is how
// a node cancelled by its destructor, which knows no wheel, keeps the bitmaps
// exact.
struct ListHead : Link {
  TimerWheel* wheel = nullptr;
  uint32_t id = 0;  // level * 64 + slot, or kNotASlot
};

// Links `link` (unlinked) at the end of the list headed by `head`.
inline void PushBack(ListHead* head, Link* link) {
  link->next = head;
  link->prev = head->prev;
  head->prev->next = link;
  head->prev = link;
}

// floor(n / d) for a divisor fixed at construction, without a divide
// instruction: a multiply-high, a subtract, an add and two shifts (Granlund and
// Montgomery, "Division by invariant integers using multiplication", 1994,
// figure 4.1). Exact for every 64-bit n and every d >= 1. The wheel divides by
// its resolution on every Schedule and Advance.
class UnsignedDivider {
 public:
  explicit UnsignedDivider(uint64_t d);

  uint64_t Divide(uint64_t n) const {
    const uint64_t t1 = static_cast<uint64_t>(
        (static_cast<unsigned __int128>(multiplier_) * n) >> 64);
    return (t1 + ((n - t1) >> shift1_)) >> shift2_;
  }

 private:
  uint64_t multiplier_;
  int shift1_;
  int shift2_;
};

}  // namespace timers_internal

// A timer, embedded in the object it belongs to; 32 bytes. The callback gets
// the node back and recovers its owner from it: a static_cast when the owner
// derives from TimerNode (one timer per owner), or the member's offset, as
// queue/intrusive_list.h does for its hooks (several).
//
// Ownership: the embedding object owns the node; a wheel never owns a node, it
// only links it. A node cancels itself when destroyed, so an owner may be
// destroyed while its timer is scheduled (also from inside any timer callback,
// its own included). A node is on at most one wheel at a time.
//
// Thread safety: none. A node is touched only by the thread that runs the
// wheel it is scheduled on.
class TimerNode : private timers_internal::Link {
 public:
  using Callback = void (*)(TimerNode* node);

  explicit TimerNode(Callback cb = nullptr) : callback_(cb) {}
  ~TimerNode() { Unlink(); }

  TimerNode(const TimerNode&) = delete;
  TimerNode& operator=(const TimerNode&) = delete;

  // Whether the node is waiting on a wheel. False again when its callback
  // runs (it is unlinked just before), after Cancel, and after its wheel is
  // destroyed.
  bool is_scheduled() const { return next != nullptr; }

  // The deadline in nanoseconds as last given to TimerWheel::Schedule (kept
  // after the timer fires, for periodic re-arming). After ScheduleWithin, the
  // later deadline the wheel picked within the tolerance. 0 if never
  // scheduled.
  int64_t deadline() const { return deadline_; }

  // The function run when the timer fires; a null callback fires and does
  // nothing. May be changed at any time, also while scheduled.
  Callback callback() const { return callback_; }
  void set_callback(Callback cb) { callback_ = cb; }

 private:
  friend class TimerWheel;

  // Leaves whatever list the node is on, telling the wheel when that empties
  // a slot. A no-op when not scheduled. O(1). Defined below TimerWheel.
  inline void Unlink();

  int64_t deadline_ = 0;
  Callback callback_;
};

static_assert(sizeof(TimerNode) <= 32, "TimerNode must stay within 32 bytes");

// Schedules TimerNodes and runs them when due. Time is whatever int64_t
// nanosecond clock the caller reads (a Clock from clock.h); the wheel never
// reads a clock itself, it is told the time by the constructor and Advance().
//
// Resolution: time is divided into ticks of Options::resolution (1 ms by
// default), aligned to multiples of the resolution since the clock's epoch. A
// deadline is rounded UP to a tick boundary: a timer never fires before its
// deadline, and fires at the first Advance whose time has reached that
// boundary.
//
// Range: six levels of 64 slots. Level L slots are 64^L ticks wide; the top
// level (2^30-tick slots) is circular and holds the 63 slots after the
// current one, so deadlines up to at least 62 * 2^30 ticks ahead are placed
// exactly (2.1 years at 1 ms, 18 hours at 1 us, 66 s at 1 ns). A deadline
// beyond that is clamped into the farthest top-level slot, re-checked when
// that slot is reached, and placed again (or clamped again): it never fires
// early, and costs one re-placement per rotation of the top level.
//
// Complexity: Schedule, Cancel: O(1); ScheduleWithin: O(levels); none
// allocates. NextExpiry: O(levels) from the bitmaps, cached until the wheel
// changes. Advance: O(1) amortised per timer run (each timer moves down at
// most once per level), plus O(levels) per distinct tick that has work; a
// timer beyond the range is also placed again once per top-level rotation,
// and an Advance that jumps over whole rotations with only such timers left
// pays O(their number) instead of a step per rotation.
//
// Ownership: the wheel owns no node; nodes are owned by whatever embeds them.
// A node may be destroyed while scheduled (it unlinks itself). Destroying the
// wheel unlinks every node still scheduled, without running it. The wheel is
// neither copyable nor movable (its nodes point into it).
//
// Thread safety: none. One thread (the loop's) makes every call, and runs the
// callbacks, which may call anything on the wheel except Advance and the
// destructor.
class TimerWheel {
 public:
  struct Options {
    // The tick: deadlines are rounded up to a multiple of it. Must be
    // positive.
    absl::Duration resolution = absl::Milliseconds(1);
  };

  static constexpr int kLevels = 6;
  static constexpr int kSlotBits = 6;
  static constexpr int kSlotsPerLevel = 1 << kSlotBits;

  // `now_nanos` is the current time; it must be at least -2^62 (any real
  // clock reading is), so that tick arithmetic stays within 64 bits.
  explicit TimerWheel(int64_t now_nanos);
  TimerWheel(int64_t now_nanos, Options options);
  ~TimerWheel();

  TimerWheel(const TimerWheel&) = delete;
  TimerWheel& operator=(const TimerWheel&) = delete;

  // Schedules `node` to run at the first Advance at or after `deadline_nanos`
  // (rounded up to a tick), or re-arms it if already scheduled: in place when
  // the new deadline falls in the same slot, else it moves. A deadline in the
  // past, or one due by the time an Advance in progress has reached, runs on
  // the next Advance call. O(1); never allocates.
  void Schedule(TimerNode* node, int64_t deadline_nanos);

  // Like Schedule, for timeouts that may fire late by up to `tolerance_nanos`
  // (never early): the deadline is moved later, to the first slot boundary of
  // the coarsest level that is within the tolerance, so that the timer fires
  // as soon as that slot is reached instead of moving down through the finer
  // levels (cheap idle timeouts: one wake-up, no cascading). It fires no
  // later than the later of deadline + tolerance and the deadline rounded up
  // to a tick. node->deadline() reports the deadline picked. O(levels);
  // never allocates.
  void ScheduleWithin(TimerNode* node, int64_t deadline_nanos,
                      int64_t tolerance_nanos);

  // What ScheduleNextPeriod does when the loop fell so far behind that the
  // next period's deadline has already passed.
  enum class MissedPeriods {
    // Run once per missed period, one per Advance call, until caught up.
    kRunEach,
    // Skip to the first period boundary after now(): the timer runs once.
    kSkip,
  };

  // Re-arms a periodic timer without drift, typically from its own callback:
  // the next deadline is node->deadline() + period_nanos (not now + period),
  // so lateness does not accumulate. `period_nanos` must not be negative; a
  // zero period runs the timer once per Advance call, never more.
  void ScheduleNextPeriod(TimerNode* node, int64_t period_nanos,
                          MissedPeriods missed = MissedPeriods::kRunEach);

  // Unschedules `node`; a no-op when it is not scheduled. `node` must not be
  // scheduled on another wheel. O(1); never allocates.
  void Cancel(TimerNode* node) { node->Unlink(); }

  // The time at which the next Advance may have work: never later than the
  // earliest timer's firing time (its deadline rounded up to a tick), but
  // possibly earlier, at the start of the coarser slot the timer still sits
  // in (Advance at that time moves it down; it makes progress, so waking up
  // at NextExpiry() never loops). A multiple of the resolution, or INT64_MAX
  // when that time is beyond int64_t nanoseconds. nullopt when nothing is
  // scheduled. O(levels) from the bitmaps; cached until a list empties or
  // Advance runs (scheduling lowers the cached value in place).
  std::optional<int64_t> NextExpiry();

  // Moves the wheel to `now_nanos` and runs every timer whose rounded-up
  // deadline is <= now_nanos, each exactly once; returns how many ran. A time
  // earlier than now() is taken as now(). Timers already overdue when it
  // starts (scheduled in the past) run first, in the order they were
  // scheduled; the others in deadline order (those of one tick in no
  // particular order). A callback may schedule, re-arm or cancel any timer,
  // including one due in this same batch (which then does not run), and may
  // destroy any node's owner. A timer (re)scheduled from inside a callback
  // never runs within the same Advance call, even if already due: it runs on
  // the next one, so a zero-period periodic timer cannot spin the loop. Must
  // not be called from a callback.
  size_t Advance(int64_t now_nanos);

  // The latest time given to the constructor or Advance.
  int64_t now() const { return now_nanos_; }

  // Whether no timer is scheduled. O(levels).
  bool empty() const;

  int64_t resolution_nanos() const { return resolution_; }

 private:
  friend class TimerNode;

  static constexpr int kTopLevel = kLevels - 1;
  static constexpr uint32_t kNumSlots = kLevels * kSlotsPerLevel;
  static constexpr uint32_t kNotASlot = kNumSlots;
  static constexpr uint64_t kNoTick = ~uint64_t{0};

  // Called by the node whose unlinking emptied the list `head`: a slot's
  // bit goes; a due list's minimum is forgotten.
  static void ListEmptied(timers_internal::ListHead* head) {
    TimerWheel* wheel = head->wheel;
    if (head->id < kNumSlots) {
      wheel->ClearOccupied(head->id);
    } else {
      wheel->cache_valid_ = false;
    }
  }
  // Slot `id` is empty now. NextExpiry()'s cached answer may have been
  // that slot: it goes too (also mid-Advance, where a callback may have
  // asked for it).
  void ClearOccupied(uint32_t id) {
    occupied_[id >> kSlotBits] &= ~(uint64_t{1} << (id & (kSlotsPerLevel - 1)));
    cache_valid_ = false;
  }

  // Ticks since origin_nanos_ of the first tick boundary at or after
  // `deadline` (0 for a deadline at or before the origin).
  inline uint64_t CeilTick(int64_t deadline) const;
  // The time of tick boundary `tick`, saturated at INT64_MAX.
  inline int64_t TickToNanos(uint64_t tick) const;
  // The slot (level * 64 + slot) for tick `t` > elapsed_.
  inline uint32_t SlotFor(uint64_t t) const;
  // The tick at which slot `id` is next reached from elapsed_.
  inline uint64_t SlotStartTick(uint32_t id) const;
  // The earliest SlotStartTick of any occupied slot, or kNoTick.
  uint64_t NextSlotTick() const;
  // NextExpiry() when the cache is stale: computes and caches it.
  std::optional<int64_t> ComputeNextExpiry();

  inline void LinkToSlot(TimerNode* node, uint32_t id);
  // Schedule for a tick <= horizon_: the timer goes to pending_.
  void ScheduleDue(TimerNode* node, int64_t deadline_nanos, uint64_t tick);
  // Lowers due_min_nanos_ for a timer about to join pending_ or batch_.
  void NoteDue(int64_t fire_nanos);
  // Appends to `list`, one of the due lists, keeping due_min_nanos_.
  void LinkDue(TimerNode* node, timers_internal::ListHead* list,
               int64_t fire_nanos);
  // Moves every node of slot `id` to where it belongs now that elapsed_ has
  // reached the slot's start: the batch if due, else a finer slot (or, for a
  // clamped deadline, the farthest top-level slot again).
  void Cascade(uint32_t id);
  bool OnlyTopLevelOccupied() const;
  // With only top-level timers left and `target` a whole top-level rotation
  // or more ahead: moves elapsed_ to just before the earliest of them (at
  // most to `target`) and places them all again.
  void FastForward(uint64_t target);
  // Runs the batch until it is empty; returns how many ran.
  size_t RunBatch();

  const int64_t resolution_;
  const timers_internal::UnsignedDivider divider_;
  // Tick 0: the tick boundary at or before the construction time.
  const int64_t origin_nanos_;
  // The largest tick that TickToNanos can represent.
  const uint64_t max_tick_;

  int64_t now_nanos_;
  // Every timer whose tick is <= elapsed_ has been run or moved to the batch.
  uint64_t elapsed_ = 0;
  // Schedule sends ticks <= horizon_ to pending_: elapsed_ outside Advance,
  // the target tick inside it (so nothing scheduled by a callback runs in
  // the same Advance).
  uint64_t horizon_ = 0;
  bool in_advance_ = false;

  // NextExpiry()'s answer while cache_valid_. Linking into a newly occupied
  // slot or a due list lowers it in place; emptying a list or advancing
  // invalidates it.
  bool cache_valid_ = true;
  std::optional<int64_t> cached_next_;
  // A lower bound of the firing times of the timers in pending_ and batch_,
  // meaningful while either is non-empty.
  int64_t due_min_nanos_ = 0;

  uint64_t occupied_[kLevels] = {};
  timers_internal::ListHead slots_[kNumSlots];
  // Due timers waiting for the next Advance.
  timers_internal::ListHead pending_;
  // Due timers being run by the current Advance.
  timers_internal::ListHead batch_;
};

inline uint64_t TimerWheel::CeilTick(int64_t deadline) const {
  if (deadline <= origin_nanos_) return 0;
  const uint64_t delta =
      static_cast<uint64_t>(deadline) - static_cast<uint64_t>(origin_nanos_);
  return divider_.Divide(delta - 1) + 1;
}

inline int64_t TimerWheel::TickToNanos(uint64_t tick) const {
  if (tick > max_tick_) return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(static_cast<uint64_t>(origin_nanos_) +
                              tick * static_cast<uint64_t>(resolution_));
}

inline uint32_t TimerWheel::SlotFor(uint64_t t) const {
  constexpr int kBitsBelowTop = kTopLevel * kSlotBits;
  constexpr uint64_t kSlotMask = kSlotsPerLevel - 1;
  const uint64_t diff = t ^ elapsed_;
  if (diff >> kBitsBelowTop == 0) {
    // The level of the highest differing bit; `| kSlotMask` makes a
    // difference in the lowest digit count as level 0.
    const int level = (63 - __builtin_clzll(diff | kSlotMask)) / kSlotBits;
    return static_cast<uint32_t>(level * kSlotsPerLevel) +
           static_cast<uint32_t>((t >> (level * kSlotBits)) & kSlotMask);
  }
  // Top level: at most 63 slots ahead of elapsed_'s own top-level slot.
  uint64_t distance = (t >> kBitsBelowTop) - (elapsed_ >> kBitsBelowTop);
  if (distance > kSlotMask) distance = kSlotMask;
  return static_cast<uint32_t>(kTopLevel * kSlotsPerLevel) +
         static_cast<uint32_t>(((elapsed_ >> kBitsBelowTop) + distance) &
                               kSlotMask);
}

inline uint64_t TimerWheel::SlotStartTick(uint32_t id) const {
  const int shift = static_cast<int>(id / kSlotsPerLevel) * kSlotBits;
  const uint64_t distance =  // 1..63
      (id - (elapsed_ >> shift)) & (kSlotsPerLevel - 1);
  return ((elapsed_ >> shift) + distance) << shift;
}

inline void TimerWheel::LinkToSlot(TimerNode* node, uint32_t id) {
  timers_internal::PushBack(&slots_[id], node);
  uint64_t& word = occupied_[id >> kSlotBits];
  const uint64_t bit = uint64_t{1} << (id & (kSlotsPerLevel - 1));
  if ((word & bit) == 0) {
    word |= bit;
    if (cache_valid_) {
      const int64_t at = TickToNanos(SlotStartTick(id));
      if (!cached_next_.has_value() || at < *cached_next_) cached_next_ = at;
    }
  }
}

inline void TimerWheel::Schedule(TimerNode* node, int64_t deadline_nanos) {
  const uint64_t t = CeilTick(deadline_nanos);
  if (t <= horizon_) {
    ScheduleDue(node, deadline_nanos, t);
    return;
  }
  const uint32_t id = SlotFor(t);
  if (node->is_scheduled()) {
    // Ticks above horizon_ mean a slot, not a due list (horizon_ only grows).
    const uint64_t old = CeilTick(node->deadline_);
    if (old > horizon_ && SlotFor(old) == id) {
      node->deadline_ = deadline_nanos;  // same slot: nothing to move
      return;
    }
    node->Unlink();
  }
  node->deadline_ = deadline_nanos;
  LinkToSlot(node, id);
}

inline std::optional<int64_t> TimerWheel::NextExpiry() {
  if (cache_valid_) return cached_next_;
  return ComputeNextExpiry();
}

inline void TimerNode::Unlink() {
  if (next == nullptr) return;
  Link* const p = prev;
  Link* const n = next;
  p->next = n;
  n->prev = p;
  prev = nullptr;
  next = nullptr;
  // Only the sentinel of a list that held just this node is both neighbours.
  if (p == n) {
    TimerWheel::ListEmptied(static_cast<timers_internal::ListHead*>(p));
  }
}

}  // namespace nbio

#endif  // NBIO_TIMERS_TIMER_WHEEL_H_
