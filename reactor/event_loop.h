// EventLoop: one thread's reactor. fd watchers, tasks, timers, signals, and
// CPU-bound jobs run in slices.
//
//   absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
//   (*loop)->Post([] { std::puts("next iteration"); });
//   Timer tick(loop->get(), [] { std::puts("tick"); });
//   tick.StartPeriodic(absl::Seconds(1));
//   FdWatcher w(loop->get(), fd, [](uint32_t events) { ... });
//   w.SetInterest(kReadable);
//   (*loop)->Run();   // until Stop() or nothing is left to do
//
// One iteration (libuv's order, plus two priorities around it):
//   1. read the clock (NowNanos() returns that reading until step 4);
//   2. run due timers;
//   3. run the tasks posted before this point (tasks they post run in the next
//      iteration, so a task that re-posts itself cannot starve I/O);
//   4. wait in the poller: not at all when tasks, urgent tasks or CPU jobs are
//      pending, else until the timer wheel's next expiry (rounded up: a timer
//      never fires early), or indefinitely when no timer is scheduled;
//      dispatch ready fds. Time passed in the wait: the first NowNanos()
//      after it reads the clock again, and that reading holds until the
//      next iteration (libuv updates its time after the poll too);
//   5. run CPU job slices, round-robin, until the iteration has used
//      Options::cpu_budget on the loop clock (counted from step 1, or from
//      the end of the poll when the poll blocked) and the slices have run
//      as long as steps 2-4 took, up to one budget; at least one slice, at
//      most Options::max_cpu_slices_per_iteration. So under light I/O the
//      loop polls once per budget (plus one slice); under any load the
//      slices delay the next poll by at most one budget plus one slice, and
//      CPU jobs keep at least half the thread, up to a budget per iteration
//      (not one slice, which for short slices is next to nothing);
//   6. destroy what DeleteLater() was given.
// Urgent tasks (PostUrgent) run at every checkpoint: after the timer batch,
// after each posted task, after the I/O batch and after each CPU slice;
// urgent tasks they post run at the same checkpoint, until none is left (the
// microtask queue of JavaScript engines). So an urgent task always runs
// before the next poll. Future continuations (future.h) are urgent tasks.
//
// Threading: a loop belongs to one thread: the thread that created it until
// Run()/RunOnce() is first called, then the thread running it. Every method is
// for that thread only, except Post() and Stop(), which are safe from any
// thread. A loop may be created on one thread and run on another (one loop per
// reactor thread, all set up by the main thread): Post() and Stop() from the
// creating thread stay safe while the other thread starts running it, because
// only a call made by the thread that is inside Run()/RunOnce() at that moment
// takes the single-threaded path; every other call (from another thread, or
// from the loop's own thread between runs) goes through an intrusive MPSC
// queue and an eventfd (a self-pipe where eventfd is missing), and a burst
// costs one wake-up. Posts keep their order: what was queued through the MPSC
// queue before a run starts is moved to the task queue when it starts, ahead
// of anything posted during the run.
//
// Lifetime: handles (FdWatcher, Timer, CpuJob; TcpContext in net/) are owned
// by the caller, must not outlive the loop, and unregister themselves when
// destroyed (but for Timer::After's timers, which the loop owns, and whose
// Timer::Handle may outlive it). Nothing may be destroyed inside its own
// callback: hand it to DeleteLater() instead (a check fails otherwise).
// Destroying the loop destroys what it owns, unrun, while the loop is still
// whole: first what DeleteLater() was given, Timer::After's timers and the
// signal handlers, then the queued tasks (urgent, normal, cross-thread), again
// and again until nothing is left, so that what those destructors post (a
// broken promise schedules its continuation) is destroyed too, never run. Then
// a check fails, in every build, if a caller-owned handle is still alive on
// the loop (as libuv's uv_loop_close refuses a loop with live handles): the
// message names what is left. An operation whose future the caller still
// holds (Sleep, WaitReadable, RunCpuJob in async/) counts by the Timer,
// FdWatcher or CpuJob inside it; one that only the loop holds (a future
// captured by a queued task or a Timer::After callback) is destroyed before
// the check.
#ifndef NBIO_REACTOR_EVENT_LOOP_H_
#define NBIO_REACTOR_EVENT_LOOP_H_

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "queue/intrusive_list.h"
#include "queue/mpsc_queue.h"
#include "queue/task_queue.h"
#include "reactor/poller/poller.h"
#include "reactor/sys/wakeup.h"
#include "timers/clock.h"
#include "timers/timer_wheel.h"

namespace nbio {

class EventLoop;

// What the loop has done, for stats lines and benchmarks. Read on the loop's
// thread.
struct LoopCounters {
  uint64_t iterations = 0;
  int64_t poll_blocked_nanos = 0;  // wall time spent inside the poller
  uint64_t poll_calls = 0;
  uint64_t events_dispatched = 0;
  uint64_t tasks_run = 0;         // Post()ed tasks run
  uint64_t urgent_tasks_run = 0;  // PostUrgent()ed tasks run
  uint64_t cpu_slices = 0;        // CpuJob slices run
  uint64_t timers_fired = 0;
  uint64_t remote_posts = 0;  // Post() calls through the MPSC queue (from
                              // other threads, or made while the loop was
                              // not running), drained
  uint64_t wakeups_sent = 0;  // Signal()s on the wakeup fd (all threads)
};

// A snapshot of what is waiting: the loop's ready, waiting and sleeping
// queues.
struct LoopLoad {
  size_t tasks_ready = 0;         // Post()ed (from any thread) and
                                  // PostUrgent()ed, not yet run
  size_t urgent_tasks_ready = 0;  // of which PostUrgent()ed
  int fds_waiting = 0;            // fds with interest: FdWatcher, TCP
                                  // connections and listeners,
                                  // WaitReadable/WaitWritable (wait_fd.h)
  size_t timers_sleeping = 0;     // scheduled user timers (Timer, also
                                  // Timer::After and Sleep in sleep.h),
                                  // those that keep the loop alive or not
  size_t cpu_jobs_pending = 0;    // started CpuJobs not yet done
};

// Watches one fd for readiness. Owned by the caller; does not own the fd.
// The callback receives PollEvents bits; see poller.h for what is reported.
class FdWatcher {
 public:
  using Callback = absl::AnyInvocable<void(uint32_t events)>;

  FdWatcher(EventLoop* loop, int fd, Callback callback);
  // Stops watching. Must not run inside this watcher's own callback.
  ~FdWatcher();

  FdWatcher(const FdWatcher&) = delete;
  FdWatcher& operator=(const FdWatcher&) = delete;

  // Starts watching, or changes the interest (kReadable | kWritable). 0 keeps
  // the fd registered but silent. Errors: the backend cannot watch this fd
  // (select: fd >= FD_SETSIZE), or the kernel refused it.
  absl::Status SetInterest(uint32_t interest);
  // Stops watching (the callback is not called again, not even for events
  // already collected in this iteration). Call it before closing the fd.
  void Stop();

  int fd() const { return fd_; }
  uint32_t interest() const { return entry_.interest(); }
  bool is_active() const { return entry_.is_registered(); }

  // Whether this watcher, while it has interest, keeps EventLoop::Run()
  // going (true by default). One that does not (libuv's uv_unref) is still
  // dispatched while other work keeps the loop running, and still counts in
  // LoopLoad::fds_waiting, but Run() returns when only such watchers are
  // left: for a wake-up pipe that should not hold a program open (nbio's
  // Python module watches its signal wake-up fd so). May be changed at any
  // time, also inside its own callback.
  void set_keeps_loop_alive(bool keeps_alive);
  bool keeps_loop_alive() const { return keeps_loop_alive_; }

 private:
  // Brings the loop's count of watchers that have interest but do not keep
  // it alive up to date after a change of interest or of the flag.
  void Recount();
  struct Entry : PollerEntry {
    explicit Entry(FdWatcher* w)
        : PollerEntry(&FdWatcher::OnEvents), owner(w) {}
    FdWatcher* owner;
  };
  static void OnEvents(PollerEntry* entry, uint32_t events);

  EventLoop* const loop_;
  const int fd_;
  Entry entry_;
  Callback callback_;
  bool in_callback_ = false;
  bool keeps_loop_alive_ = true;
  bool counted_unref_ = false;  // in EventLoop::unref_io_
};

// The loop's one timer type: one-shot or periodic, owned by the caller, zero
// allocation to start, re-arm or cancel. Re-usable: Start() again after it
// fired or was cancelled. Loop thread only.
//
// For a one-shot timer nobody needs to keep, Timer::After() below makes a
// Timer the loop owns (fire-and-forget) and returns a handle that can cancel
// it.
class Timer : private TimerNode {
 public:
  using Callback = absl::AnyInvocable<void()>;
  class Handle;

  Timer(EventLoop* loop, Callback callback);
  // Cancels. Must not run inside this timer's own callback.
  ~Timer();

  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Fire-and-forget: runs `callback` once, `delay` from NowNanos() (as
  // Start), on a Timer the loop owns and frees once it has fired or been
  // cancelled, or when the loop is destroyed. The returned handle may be
  // dropped (the timer still fires), or kept to cancel it; it may outlive
  // the timer and the loop. Costs one allocation per call: a Timer member
  // costs none, and is what a periodic or re-armed timer wants.
  static Handle After(EventLoop* loop, absl::Duration delay, Callback callback);

  // Fires once, `delay` from the loop's current time (NowNanos()). Re-arms
  // if pending. A zero or negative delay fires in the next iteration.
  void Start(absl::Duration delay);
  // Fires once at `deadline_nanos` on the loop clock.
  void StartAt(int64_t deadline_nanos);
  // Fires every `period` (> 0), without drift: the n-th firing is due at
  // start + n * period. Periods missed while the loop was busy are skipped,
  // not replayed in a burst. A deadline past the end of int64_t nanoseconds
  // saturates there (never).
  void StartPeriodic(absl::Duration period);
  // Stops it; a no-op when not pending. Safe inside its own callback.
  void Cancel();

  // Whether this timer, while pending, keeps EventLoop::Run() going (true
  // by default). A timer that does not (libuv's uv_unref) still fires on
  // time while other work keeps the loop running, but Run() returns when
  // only such timers are left: for periodic housekeeping (stats, cache
  // expiry) that should not hold a server open. May be changed at any time,
  // pending or not, also inside its own callback; the timer stays pending.
  void set_keeps_loop_alive(bool keeps_alive);
  bool keeps_loop_alive() const { return keeps_loop_alive_; }

  bool is_pending() const { return is_scheduled(); }
  // The deadline it is (or was last) scheduled for, on the loop clock.
  int64_t deadline_nanos() const { return deadline(); }

 private:
  friend class EventLoop;
  struct Owned;
  static void OnFire(TimerNode* node);
  // Timer::After's timer: the loop lets go of it (fired or cancelled).
  void ReleaseOwned();

  EventLoop* const loop_;
  Callback callback_;
  int64_t period_nanos_ = 0;
  bool in_callback_ = false;
  // Made by After() and still held by the loop (on its owned_timers_ list).
  bool loop_owned_ = false;
  bool keeps_loop_alive_ = true;
  // Counted in the loop's live handles (all but Timer::After's timers).
  bool counted_as_handle_ = true;
};

// Timer::After's timer. Owned by the loop while loop_owned_ (on the loop's
// owned_timers_ list), by its handle after that; freed when neither holds it.
struct Timer::Owned : Timer {
  Owned(EventLoop* loop, Callback callback)
      : Timer(loop, std::move(callback)) {}
  ListHook hook;
  bool has_handle = true;
};

// What Timer::After returns: a way to cancel a loop-owned one-shot timer.
// Move-only; a default-constructed or moved-from handle refers to nothing.
// Dropping the handle does not cancel the timer.
class Timer::Handle {
 public:
  Handle() = default;
  Handle(Handle&& other) noexcept
      : timer_(std::exchange(other.timer_, nullptr)) {}
  Handle& operator=(Handle&& other) noexcept;
  ~Handle() { Reset(); }

  // True when the timer was pending and now will never run. False when it
  // already ran (also from inside its own callback), was cancelled, or the
  // handle refers to nothing. Loop thread only.
  bool Cancel();
  bool is_pending() const;

 private:
  friend class Timer;
  explicit Handle(Owned* timer) : timer_(timer) {}
  void Reset();

  Owned* timer_ = nullptr;
};

// What a CPU job's slice returns: run it again later, or it is finished.
enum class CpuSliceResult { kMore, kDone };

// A CPU-bound job the loop runs one slice at a time, round-robin with the
// other pending jobs, inside each iteration's CPU budget (see the iteration
// order above), so that a long computation never keeps the loop from polling
// for more than about one budget plus one slice. A slice should be short
// compared with the budget (tens of microseconds); the loop cannot preempt it.
//
// Owned by the caller: zero allocation to start or stop. Re-usable: Start()
// again after it finished or was stopped. Loop thread only. scheduler.h wraps
// it into a future with cancellation (RunCpuJob).
class CpuJob {
 public:
  using Slice = absl::AnyInvocable<CpuSliceResult()>;

  CpuJob(EventLoop* loop, Slice slice);
  // Stops it. Must not run inside this job's own slice.
  ~CpuJob();

  CpuJob(const CpuJob&) = delete;
  CpuJob& operator=(const CpuJob&) = delete;

  // Queues the job (at the back of the round-robin); a no-op when pending.
  // Inside its own slice: the job runs again, whatever the slice returns.
  void Start();
  // Dequeues it; a no-op when not pending. Inside its own slice: the job is
  // not run again, whatever the slice returns.
  void Stop();
  // Started and neither finished nor stopped.
  bool is_pending() const;
  // Whether this job's slice is running now.
  bool in_slice() const;

 private:
  friend class EventLoop;
  enum class AfterSlice { kByResult, kRequeue, kStop };

  EventLoop* const loop_;
  Slice slice_;
  ListHook hook_;
  AfterSlice after_slice_ = AfterSlice::kByResult;
};

class EventLoop {
 public:
  struct Options {
    // "epoll", "poll", "select", "io_uring" (the kernel does the stream
    // I/O: README.md, "Backends"), "io_uring_poll"; empty: the best
    // available (poller_registry.h).
    std::string backend;
    // nullptr: DefaultClock(). A ManualClock makes timer tests sleep-free.
    Clock* clock = nullptr;
    absl::Duration timer_resolution = absl::Milliseconds(1);
    // Use a self-pipe rather than an eventfd to wake the loop (for tests).
    bool force_pipe_wakeup = false;
    // CPU jobs run until the iteration has lasted this long on the loop
    // clock, and at least as long as the iteration's timers, tasks and I/O
    // took, up to this long (step 5 above); at least one slice per
    // iteration. Must be positive.
    absl::Duration cpu_budget = absl::Milliseconds(1);
    // And at most this many slices per iteration, so that an iteration ends
    // even when slices take no measurable time (a ManualClock nobody moves).
    int max_cpu_slices_per_iteration = 1024;
  };

  static absl::StatusOr<std::unique_ptr<EventLoop>> Create(Options options);
  static absl::StatusOr<std::unique_ptr<EventLoop>> Create() {
    return Create(Options());
  }
  // Destroys what the loop owns, then checks that no caller-owned handle is
  // left (see "Lifetime" above): a check fails, in every build, naming the
  // kinds and counts, e.g. "EventLoop destroyed with live handles: 1
  // FdWatcher, 2 Timer; destroy them first". Not from inside a callback of
  // this loop. Whatever thread destroys the loop becomes its thread; no other
  // thread may still call Post() or Stop().
  ~EventLoop();

  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Runs iterations until Stop() is called or no work is left: no task, no
  // pending Timer that keeps the loop alive (Timer::set_keeps_loop_alive),
  // no fd watcher with interest, no signal handler and no KeepAlive.
  // Returns an error only when the poller fails unrecoverably.
  // Not re-entrant: calling Run() or RunOnce() from inside a callback of the
  // same loop (a task, a timer, an fd watcher, a CPU slice, a signal handler)
  // fails a check in every build, because the outer iteration would resume
  // with queues and event batches the inner one has changed under it.
  absl::Status Run();

  enum class RunMode {
    kWait,    // block in the poller as long as the timers allow
    kNoWait,  // poll without blocking (tests with a manual clock)
  };
  // One iteration. Not from inside a callback of this loop (see Run()).
  absl::Status RunOnce(RunMode mode = RunMode::kWait);

  // Makes Run() return after the current iteration. Safe from any thread and
  // from callbacks; wakes the loop if it is blocked.
  void Stop();

  // Runs `task` on the loop thread in a later iteration, FIFO. Safe from any
  // thread. From inside the running loop (its callbacks) it allocates nothing
  // for small callables; from another thread, or from the loop's thread while
  // it is not running, it allocates one node and wakes the loop only when the
  // queue was empty. During the loop's destruction the task is destroyed
  // unrun.
  void Post(absl::AnyInvocable<void()> task);

  // Runs `task` on the loop thread before the next poll, at the next urgent
  // checkpoint (see the iteration order above; never inline), FIFO among
  // urgent tasks and ahead of every Post()ed task still waiting. Loop thread
  // only. Allocates nothing for small callables after warm-up. An urgent task
  // that re-posts itself forever keeps the loop from polling: use Post() or a
  // CpuJob for work that yields.
  void PostUrgent(absl::AnyInvocable<void()> task);

  // Calls `handler(signo)` on the loop thread when `signo` arrives (signalfd;
  // no work is done in async-signal context). Blocks the signal in the
  // calling thread, so install handlers before starting other threads (or
  // block the signal in them too). A second call for the same signal replaces
  // the handler. A registered handler keeps Run() going.
  absl::Status OnSignal(int signo, absl::AnyInvocable<void(int signo)> handler);
  // Removes the handler and unblocks the signal.
  void RemoveSignal(int signo);

  // Destroys `object` after the current callback has returned (at the end of
  // this iteration). Loop thread only.
  template <typename T>
  void DeleteLater(std::unique_ptr<T> object) {
    deferred_.push_back(DeferredDelete(
        object.release(), [](void* p) { delete static_cast<T*>(p); }));
  }

  // Keeps Run() going while the returned token lives, though nothing else is
  // pending (e.g. while waiting for posts from another thread).
  class KeepAlive {
   public:
    KeepAlive(KeepAlive&& other) noexcept
        : loop_(std::exchange(other.loop_, nullptr)) {}
    KeepAlive& operator=(KeepAlive&&) = delete;
    ~KeepAlive();

   private:
    friend class EventLoop;
    explicit KeepAlive(EventLoop* loop) : loop_(loop) {}
    EventLoop* loop_;
  };
  KeepAlive KeepAliveToken();

  // The loop's time: the clock reading taken at the start of this
  // iteration, or, once the poll has begun, one taken at the first call
  // after it. So an I/O callback that starts a timer or stamps activity
  // counts from when it runs, not from when the loop went to sleep (which
  // could be minutes earlier). At most two clock reads per iteration;
  // between iterations, the last reading (no clock read).
  int64_t NowNanos() const {
    if (time_stale_) RefreshTime();
    return now_nanos_;
  }
  // NowNanos() + `delay`, saturating at the ends of int64_t: the deadline
  // Timer::Start(delay) would use. For a zero or negative delay, at least
  // one timer tick before NowNanos(): due at the next iteration's timers.
  int64_t DeadlineAfter(absl::Duration delay) const;
  Clock* clock() const { return clock_; }
  const char* backend_name() const { return poller_->name(); }
  bool IsInLoopThread() const;
  LoopCounters counters() const {
    LoopCounters c = counters_;
    c.wakeups_sent = wakeups_sent_.load(std::memory_order_relaxed);
    return c;
  }
  LoopLoad Load() const;

  // The kinds of caller-owned handles whose live instances the loop counts,
  // so that destroying it while one is alive fails a check naming them.
  enum class HandleKind { kFdWatcher, kTimer, kCpuJob, kTcpContext };
  static constexpr int kHandleKinds = 4;
  // The count itself, for handle types defined outside this file: call
  // HandleAttached(kind) once in the handle's constructor and
  // HandleDetached(kind) once in its destructor (FdWatcher, Timer and CpuJob
  // do so themselves; TcpContext does in net/). Loop thread only; O(1).
  void HandleAttached(HandleKind kind);
  void HandleDetached(HandleKind kind);

  // The poll timeout the next iteration would use, in nanoseconds: -1 when
  // it would wait for I/O alone (no timer on the wheel), 0 when it would not
  // wait (work is ready, or none is left to wait for).
  int64_t NextPollTimeoutNanos();

  // --- Embedded entries and timer nodes -----------------------------------
  // For the parts of nbio that embed a PollerEntry or a TimerNode in their
  // own objects (TcpConnection, DeadlineToken) instead of holding an
  // FdWatcher or a Timer: no allocation and no callback object per fd or
  // timer, the cost of a direct call on the poller or the wheel. The loop
  // does not own what it is given; the owner removes the entry before
  // closing the fd, and a node unlinks itself when destroyed. Loop thread
  // only.

  // Poller::Add / Modify / Remove on the loop's poller (poller.h has the
  // contract: one entry per fd, ALREADY_EXISTS otherwise). An entry with
  // interest keeps Run() going and counts in LoopLoad::fds_waiting, as an
  // FdWatcher does.
  absl::Status AddEntry(PollerEntry* entry, int fd, uint32_t interest) {
    return poller_->Add(entry, fd, interest);
  }
  absl::Status ModifyEntry(PollerEntry* entry, uint32_t interest) {
    return poller_->Modify(entry, interest);
  }
  void RemoveEntry(PollerEntry* entry) { poller_->Remove(entry); }
  // The backend's stream engine (poller/stream_engine.h) when it performs
  // stream I/O itself ("io_uring"), else nullptr. TcpServer and
  // TcpConnection use it; loop thread only.
  StreamEngine* streams() const { return poller_->streams(); }

  // Schedules `node` (or re-arms it) at `deadline_nanos` on the loop clock;
  // its callback runs with the iteration's other due timers. With
  // `tolerance_nanos` > 0 it may fire up to that much later, never earlier,
  // which makes idle timeouts cheaper (TimerWheel::ScheduleWithin). A node
  // never keeps Run() going and is not counted in LoopLoad::timers_sleeping:
  // it times out something that does (a connection's fd); what should keep
  // the loop alive is a Timer. O(1) (O(levels) with a tolerance).
  void ScheduleNode(TimerNode* node, int64_t deadline_nanos,
                    int64_t tolerance_nanos = 0) {
    if (tolerance_nanos > 0) {
      wheel_.ScheduleWithin(node, deadline_nanos, tolerance_nanos);
    } else {
      wheel_.Schedule(node, deadline_nanos);
    }
  }
  // Unschedules `node`; a no-op when it is not scheduled. O(1).
  void CancelNode(TimerNode* node) { wheel_.Cancel(node); }

 private:
  friend class FdWatcher;
  friend class Timer;
  friend class CpuJob;
  struct RemoteTask {
    MpscNode node;
    absl::AnyInvocable<void()> fn;
  };
  struct SignalEntry : PollerEntry {
    explicit SignalEntry(EventLoop* l)
        : PollerEntry(&EventLoop::OnSignalFd), loop(l) {}
    EventLoop* loop;
  };
  struct WakeupEntry : PollerEntry {
    explicit WakeupEntry(EventLoop* l)
        : PollerEntry(&EventLoop::OnWakeupFd), loop(l) {}
    EventLoop* loop;
  };
  using DeferredDelete = std::unique_ptr<void, void (*)(void*)>;

  EventLoop(Options options, std::unique_ptr<Poller> poller,
            std::unique_ptr<Wakeup> wakeup, Clock* clock);

  bool HasWork() const;
  // Registered entries with interest, not counting the loop's own (the
  // wake-up fd, the signalfd).
  int ActiveIo() const;
  void RunDueTimers();
  void RunTasks();
  void RunUrgentTasks();
  // Runs CPU slices as step 5 says. `iteration_start`: the clock at step 1;
  // `blocked`: the poll of this iteration may have blocked.
  void RunCpuSlices(int64_t iteration_start, bool blocked);
  // Reads the clock into now_nanos_ (NowNanos() after the poll began).
  void RefreshTime() const;
  // Whether the calling thread is the one inside Run()/RunOnce() now: the
  // only case in which Post() may push to tasks_ directly.
  bool RunningOnThisThread() const;
  // Marks the loop running on the calling thread for a Run() or a RunOnce()
  // (nothing when a Run() on this thread already did), and moves what
  // reached the MPSC queue meanwhile to the task queue, in order.
  class RunningScope;
  // Destroys, unrun, everything the loop owns that can own tasks or their
  // producers, and then the tasks, until nothing is left (see the file
  // comment). For the destructor.
  void DestroyOwnedCallbacks();
  // One pass over the task queues; true when it destroyed anything.
  bool DestroyQueuedTasks();
  // The destructor's check: fails naming the live handles, if any.
  void CheckNoLiveHandles() const;
  void DrainRemoteTasks();
  void RunDeferredDeletes();
  static void OnWakeupFd(PollerEntry* entry, uint32_t events);
  static void OnSignalFd(PollerEntry* entry, uint32_t events);
  absl::Status UpdateSignalFd();

  // Timers: counts of scheduled Timers, all and those that keep the loop
  // alive.
  void TimerScheduled(const Timer& timer) {
    ++timers_scheduled_;
    if (timer.keeps_loop_alive_) ++timers_keeping_alive_;
  }
  void TimerUnscheduled(const Timer& timer) {
    --timers_scheduled_;
    if (timer.keeps_loop_alive_) --timers_keeping_alive_;
  }
  // Frees the Timer::After timers still pending, whose handles may outlive
  // the loop: the last member, so it runs first, with the loop whole.
  struct OwnedTimers {
    ~OwnedTimers();
    // Cancels every timer, freeing those without a handle; those with one
    // lose their callback and wait for the handle to free them.
    void ReleaseAll();
    IntrusiveList<Timer::Owned, &Timer::Owned::hook> list;
  };

  Options options_;
  Clock* const clock_;
  std::unique_ptr<Poller> poller_;
  TimerWheel wheel_;
  // Written by NowNanos() too (a cache of the clock, loop thread only).
  mutable int64_t now_nanos_;
  // The clock has not been read since the poll began.
  mutable bool time_stale_ = false;

  std::atomic<pthread_t> owner_thread_;
  // Run() or RunOnce() is on the stack of owner_thread_. Written by that
  // thread only (after owner_thread_, with release), read by Post() and
  // Stop() from any thread: see RunningOnThisThread().
  std::atomic<bool> running_{false};
  // Inside an iteration: a callback of this loop may be on the stack.
  bool in_iteration_ = false;
  std::atomic<bool> stop_requested_{false};

  TaskQueue tasks_;
  TaskQueue urgent_tasks_;
  IntrusiveList<CpuJob, &CpuJob::hook_> cpu_jobs_;
  CpuJob* running_cpu_job_ = nullptr;
  MpscQueue<RemoteTask, &RemoteTask::node> remote_tasks_;
  // Tasks in remote_tasks_ (counted before the push, uncounted after the
  // pop): for Load() and NextPollTimeoutNanos() on a loop that is not
  // running, which must not pop the queue.
  std::atomic<size_t> remote_pending_{0};
  std::unique_ptr<Wakeup> wakeup_;
  WakeupEntry wakeup_entry_{this};
  std::atomic<uint64_t> wakeups_sent_{0};

  size_t timers_scheduled_ = 0;
  size_t timers_keeping_alive_ = 0;

  int signal_fd_ = -1;
  sigset_t signal_mask_;
  SignalEntry signal_entry_{this};
  absl::flat_hash_map<int, absl::AnyInvocable<void(int)>> signal_handlers_;

  int keep_alive_ = 0;
  // FdWatchers with interest that do not keep Run() going.
  int unref_io_ = 0;
  std::vector<DeferredDelete> deferred_;
  // Live caller-owned handles, by HandleKind.
  uint32_t live_handles_[kHandleKinds] = {};
  LoopCounters counters_;
  OwnedTimers owned_timers_;  // last: see OwnedTimers
};

}  // namespace nbio

#endif  // NBIO_REACTOR_EVENT_LOOP_H_
