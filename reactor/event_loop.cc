#include "reactor/event_loop.h"

#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "queue/base/check.h"
#include "reactor/poller/poller_registry.h"
#include "reactor/sys/syscall.h"

namespace nbio {
namespace {

// now + d, saturating at the ends of int64 (absl::InfiniteDuration() means
// "never", which the wheel clamps and keeps re-checking).
int64_t AddDuration(int64_t now, absl::Duration d) {
  const int64_t delta = absl::ToInt64Nanoseconds(d);
  if (delta > 0 && now > std::numeric_limits<int64_t>::max() - delta) {
    return std::numeric_limits<int64_t>::max();
  }
  if (delta < 0 && now < std::numeric_limits<int64_t>::min() - delta) {
    return std::numeric_limits<int64_t>::min();
  }
  return now + delta;
}

// The next deadline of a periodic timer that was due at `deadline`: the first
// deadline + n * period later than `now` (missed periods are skipped),
// saturating at INT64_MAX ("never": the wheel keeps it without firing it).
// A period near INT64_MAX is legal, so every sum is checked: a wrapped
// deadline would land in the past and fire at once, over and over.
int64_t NextPeriodicDeadline(int64_t deadline, int64_t period, int64_t now) {
  constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
  if (deadline > kNever - period) return kNever;
  const int64_t next = deadline + period;
  if (next > now) return next;
  // In uint64_t: now - next may exceed INT64_MAX when next is negative.
  const uint64_t behind =
      static_cast<uint64_t>(now) - static_cast<uint64_t>(next);
  const uint64_t periods = behind / static_cast<uint64_t>(period) + 1;
  const uint64_t room =
      static_cast<uint64_t>(kNever) - static_cast<uint64_t>(next);
  if (periods > room / static_cast<uint64_t>(period)) return kNever;
  return static_cast<int64_t>(static_cast<uint64_t>(next) +
                              periods * static_cast<uint64_t>(period));
}

int64_t MonotonicNanos() { return DefaultClock()->NowNanos(); }

}  // namespace

// ---------------------------------------------------------------------------
// FdWatcher

FdWatcher::FdWatcher(EventLoop* loop, int fd, Callback callback)
    : loop_(loop), fd_(fd), entry_(this), callback_(std::move(callback)) {
  loop_->HandleAttached(EventLoop::HandleKind::kFdWatcher);
}

FdWatcher::~FdWatcher() {
  NBIO_CHECK_MSG(!in_callback_,
                 "FdWatcher destroyed inside its own callback; hand it to "
                 "EventLoop::DeleteLater instead");
  Stop();
  loop_->HandleDetached(EventLoop::HandleKind::kFdWatcher);
}

absl::Status FdWatcher::SetInterest(uint32_t interest) {
  NBIO_DCHECK(loop_->IsInLoopThread());
  NBIO_CHECK((interest & ~(kReadable | kWritable)) == 0);
  absl::Status status =
      entry_.is_registered() ? loop_->poller_->Modify(&entry_, interest)
                             : loop_->poller_->Add(&entry_, fd_, interest);
  Recount();
  return status;
}

void FdWatcher::Stop() {
  loop_->poller_->Remove(&entry_);
  Recount();
}

void FdWatcher::set_keeps_loop_alive(bool keeps_alive) {
  keeps_loop_alive_ = keeps_alive;
  Recount();
}

void FdWatcher::Recount() {
  const bool unref = !keeps_loop_alive_ && entry_.is_registered() &&
                     entry_.interest() != 0;
  if (unref == counted_unref_) return;
  counted_unref_ = unref;
  loop_->unref_io_ += unref ? 1 : -1;
}

void FdWatcher::OnEvents(PollerEntry* entry, uint32_t events) {
  FdWatcher* self = static_cast<Entry*>(entry)->owner;
  self->in_callback_ = true;
  self->callback_(events);
  self->in_callback_ = false;
}

// ---------------------------------------------------------------------------
// Timer

Timer::Timer(EventLoop* loop, Callback callback)
    : TimerNode(&Timer::OnFire), loop_(loop), callback_(std::move(callback)) {
  loop_->HandleAttached(EventLoop::HandleKind::kTimer);
}

Timer::~Timer() {
  NBIO_CHECK_MSG(!in_callback_,
                 "Timer destroyed inside its own callback; hand it to "
                 "EventLoop::DeleteLater instead");
  Cancel();
  if (counted_as_handle_) loop_->HandleDetached(EventLoop::HandleKind::kTimer);
}

Timer::Handle Timer::After(EventLoop* loop, absl::Duration delay,
                           Callback callback) {
  NBIO_DCHECK(loop->IsInLoopThread());
  auto* timer = new Owned(loop, std::move(callback));
  timer->loop_owned_ = true;
  // The loop owns it, and its handle may outlive the loop: not a
  // caller-owned handle for the teardown check.
  loop->HandleDetached(EventLoop::HandleKind::kTimer);
  timer->counted_as_handle_ = false;
  loop->owned_timers_.list.PushBack(*timer);
  timer->Start(delay);
  return Handle(timer);
}

void Timer::StartAt(int64_t deadline_nanos) {
  NBIO_DCHECK(loop_->IsInLoopThread());
  if (!is_scheduled()) loop_->TimerScheduled(*this);
  period_nanos_ = 0;
  loop_->wheel_.Schedule(this, deadline_nanos);
}

void Timer::Start(absl::Duration delay) {
  StartAt(loop_->DeadlineAfter(delay));
}

void Timer::StartPeriodic(absl::Duration period) {
  NBIO_CHECK_MSG(period > absl::ZeroDuration(), "period must be positive");
  StartAt(loop_->DeadlineAfter(period));
  period_nanos_ = absl::ToInt64Nanoseconds(period);
}

void Timer::Cancel() {
  period_nanos_ = 0;
  if (!is_scheduled()) return;
  loop_->wheel_.Cancel(this);
  loop_->TimerUnscheduled(*this);
}

void Timer::set_keeps_loop_alive(bool keeps_alive) {
  if (keeps_alive == keeps_loop_alive_) return;
  if (is_scheduled()) loop_->TimerUnscheduled(*this);
  keeps_loop_alive_ = keeps_alive;
  if (is_scheduled()) loop_->TimerScheduled(*this);
}

void Timer::OnFire(TimerNode* node) {
  Timer* self = static_cast<Timer*>(node);
  EventLoop* loop = self->loop_;
  // The wheel has unlinked it. A periodic timer is re-armed before its
  // callback, which may cancel or restart it; a one-shot one stops counting
  // as scheduled.
  if (self->period_nanos_ > 0) {
    loop->wheel_.Schedule(
        self, NextPeriodicDeadline(self->deadline(), self->period_nanos_,
                                   loop->NowNanos()));
  } else {
    loop->TimerUnscheduled(*self);
  }
  self->in_callback_ = true;
  self->callback_();
  self->in_callback_ = false;
  // After the callback: it may have dropped the handle, which leaves the
  // freeing to this line.
  if (self->loop_owned_) self->ReleaseOwned();
}

void Timer::ReleaseOwned() {
  Owned* self = static_cast<Owned*>(this);
  self->hook.Unlink();
  loop_owned_ = false;
  if (!self->has_handle) delete self;
}

Timer::Handle& Timer::Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    Reset();
    timer_ = std::exchange(other.timer_, nullptr);
  }
  return *this;
}

void Timer::Handle::Reset() {
  Owned* timer = std::exchange(timer_, nullptr);
  if (timer == nullptr) return;
  timer->has_handle = false;
  if (!timer->loop_owned_) delete timer;
}

bool Timer::Handle::Cancel() {
  if (timer_ == nullptr || !timer_->is_pending()) return false;
  timer_->Cancel();
  // Not inside its own callback (a one-shot is not pending there), so the
  // loop lets go now; the handle still holds it.
  timer_->ReleaseOwned();
  return true;
}

bool Timer::Handle::is_pending() const {
  return timer_ != nullptr && timer_->is_pending();
}

// ---------------------------------------------------------------------------
// CpuJob

CpuJob::CpuJob(EventLoop* loop, Slice slice)
    : loop_(loop), slice_(std::move(slice)) {
  loop_->HandleAttached(EventLoop::HandleKind::kCpuJob);
}

CpuJob::~CpuJob() {
  NBIO_CHECK_MSG(!in_slice(),
                 "CpuJob destroyed inside its own slice; hand it to "
                 "EventLoop::DeleteLater instead");
  Stop();
  loop_->HandleDetached(EventLoop::HandleKind::kCpuJob);
}

void CpuJob::Start() {
  NBIO_DCHECK(loop_->IsInLoopThread());
  if (in_slice()) {
    after_slice_ = AfterSlice::kRequeue;
  } else if (!hook_.is_linked()) {
    loop_->cpu_jobs_.PushBack(*this);
  }
}

void CpuJob::Stop() {
  if (in_slice()) {
    after_slice_ = AfterSlice::kStop;
  } else {
    hook_.Unlink();
  }
}

bool CpuJob::is_pending() const {
  return in_slice() ? after_slice_ != AfterSlice::kStop : hook_.is_linked();
}

bool CpuJob::in_slice() const { return loop_->running_cpu_job_ == this; }

// ---------------------------------------------------------------------------
// EventLoop

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create(Options options) {
  absl::StatusOr<std::unique_ptr<Poller>> poller =
      CreatePoller(options.backend);
  if (!poller.ok()) return poller.status();
  absl::StatusOr<std::unique_ptr<Wakeup>> wakeup = Wakeup::Create(
      options.force_pipe_wakeup ? Wakeup::Kind::kPipe : Wakeup::Kind::kEventFd);
  if (!wakeup.ok()) return wakeup.status();
  Clock* clock = options.clock != nullptr ? options.clock : DefaultClock();
  std::unique_ptr<EventLoop> loop(new EventLoop(
      std::move(options), std::move(*poller), std::move(*wakeup), clock));
  absl::Status status =
      loop->poller_->Add(&loop->wakeup_entry_, loop->wakeup_->fd(), kReadable);
  if (!status.ok()) return status;
  return loop;
}

EventLoop::EventLoop(Options options, std::unique_ptr<Poller> poller,
                     std::unique_ptr<Wakeup> wakeup, Clock* clock)
    : options_(std::move(options)),
      clock_(clock),
      poller_(std::move(poller)),
      wheel_(clock->NowNanos(), TimerWheel::Options{options_.timer_resolution}),
      now_nanos_(clock->NowNanos()),
      owner_thread_(pthread_self()),
      wakeup_(std::move(wakeup)) {
  NBIO_CHECK_MSG(options_.cpu_budget > absl::ZeroDuration(),
                 "cpu_budget must be positive");
  NBIO_CHECK_MSG(options_.max_cpu_slices_per_iteration > 0,
                 "max_cpu_slices_per_iteration must be positive");
  sigemptyset(&signal_mask_);
}

EventLoop::~EventLoop() {
  NBIO_CHECK_MSG(!in_iteration_,
                 "EventLoop destroyed inside a callback of the same loop");
  // The destroying thread is the loop's thread now: what the destructors
  // below post (a broken promise posts its continuation) is queued here.
  owner_thread_.store(pthread_self(), std::memory_order_relaxed);
  DestroyOwnedCallbacks();
  CheckNoLiveHandles();
  poller_->Remove(&wakeup_entry_);
  if (signal_fd_ >= 0) {
    poller_->Remove(&signal_entry_);
    close(signal_fd_);
    pthread_sigmask(SIG_UNBLOCK, &signal_mask_, nullptr);
  }
}

bool EventLoop::IsInLoopThread() const {
  return pthread_equal(pthread_self(),
                       owner_thread_.load(std::memory_order_relaxed));
}

bool EventLoop::RunningOnThisThread() const {
  // running_ is stored (release) after owner_thread_ by the thread that
  // runs the loop. A thread that reads true with acquire then reads that
  // thread's owner_thread_ (or a later one): itself only if it is the one
  // running. A thread that reads false is not running the loop, whatever
  // another thread is about to do. Either way no other thread's run can make
  // this thread take the single-threaded path.
  return running_.load(std::memory_order_acquire) &&
         pthread_equal(pthread_self(),
                       owner_thread_.load(std::memory_order_relaxed));
}

class EventLoop::RunningScope {
 public:
  explicit RunningScope(EventLoop* loop)
      : loop_(loop), outer_(loop->RunningOnThisThread()) {
    if (outer_) return;  // inside Run(): RunOnce() of its own
    loop_->owner_thread_.store(pthread_self(), std::memory_order_relaxed);
    loop_->running_.store(true, std::memory_order_release);
    // Posted through the MPSC queue before this run (by this thread before
    // it ran the loop, or by others): ahead of anything posted from now on.
    loop_->DrainRemoteTasks();
  }
  ~RunningScope() {
    if (!outer_) loop_->running_.store(false, std::memory_order_release);
  }
  RunningScope(const RunningScope&) = delete;
  RunningScope& operator=(const RunningScope&) = delete;

 private:
  EventLoop* const loop_;
  const bool outer_;
};

int EventLoop::ActiveIo() const {
  int internal = wakeup_entry_.interest() != 0 ? 1 : 0;
  if (signal_entry_.is_registered() && signal_entry_.interest() != 0)
    ++internal;
  return poller_->active() - internal;
}

void EventLoop::DestroyOwnedCallbacks() {
  // While every member is still alive. The owners first: an object handed to
  // DeleteLater(), a timer's or a signal handler's captures may own a promise
  // whose destructor breaks it, which posts its continuation; were the
  // queues emptied before, that task would be left in them (a leak, and a
  // queue growing while its own destructor runs). Then the tasks: each
  // destroyed task may own a future state whose destructor stops a Timer or
  // an FdWatcher, or breaks a promise (which posts again). Round after round
  // until a round finds nothing: any of these destructors may also hand
  // something to DeleteLater(), start a RunAfter() timer or post.
  for (;;) {
    bool destroyed = false;
    if (!deferred_.empty()) {
      RunDeferredDeletes();
      destroyed = true;
    }
    if (!owned_timers_.list.empty()) {
      owned_timers_.ReleaseAll();
      destroyed = true;
    }
    if (!signal_handlers_.empty()) {
      // The handlers only: the signalfd and the mask go with the loop.
      absl::flat_hash_map<int, absl::AnyInvocable<void(int)>> handlers;
      handlers.swap(signal_handlers_);
      handlers.clear();
      destroyed = true;
    }
    if (DestroyQueuedTasks()) destroyed = true;
    if (!destroyed) return;
  }
}

bool EventLoop::DestroyQueuedTasks() {
  // A task's destructor may post again (urgent, normal or through the MPSC
  // queue): those are destroyed in the next round, never run.
  bool destroyed = false;
  while (!tasks_.empty() || !urgent_tasks_.empty() || !remote_tasks_.empty()) {
    destroyed = true;
    while (!urgent_tasks_.empty()) urgent_tasks_.Pop();
    while (!tasks_.empty()) tasks_.Pop();
    while (RemoteTask* task = remote_tasks_.Pop()) {
      remote_pending_.fetch_sub(1, std::memory_order_relaxed);
      delete task;
    }
  }
  return destroyed;
}

void EventLoop::HandleAttached(HandleKind kind) {
  ++live_handles_[static_cast<int>(kind)];
}

void EventLoop::HandleDetached(HandleKind kind) {
  NBIO_DCHECK(live_handles_[static_cast<int>(kind)] > 0);
  --live_handles_[static_cast<int>(kind)];
}

void EventLoop::CheckNoLiveHandles() const {
  static constexpr const char* kNames[kHandleKinds] = {"FdWatcher", "Timer",
                                                       "CpuJob", "TcpContext"};
  std::string left;
  for (int i = 0; i < kHandleKinds; ++i) {
    if (live_handles_[i] == 0) continue;
    absl::StrAppend(&left, left.empty() ? "" : ", ", live_handles_[i], " ",
                    kNames[i]);
  }
  if (left.empty()) return;
  // A handle that outlives its loop touches freed memory when it is
  // destroyed (or fires): refuse the loop's destruction instead.
  const std::string message = absl::StrCat(
      "EventLoop destroyed with live handles: ", left, "; destroy them first");
  NBIO_CHECK_MSG(left.empty(), message.c_str());
}

bool EventLoop::HasWork() const {
  return !tasks_.empty() || !urgent_tasks_.empty() || !cpu_jobs_.empty() ||
         timers_keeping_alive_ > 0 || ActiveIo() - unref_io_ > 0 ||
         !signal_handlers_.empty() || keep_alive_ > 0 ||
         !remote_tasks_.empty() || !deferred_.empty();
}

absl::Status EventLoop::Run() {
  NBIO_CHECK_MSG(!in_iteration_,
                 "EventLoop::Run() called from inside a callback of the same "
                 "loop");
  RunningScope running(this);
  absl::Status status;
  while (!stop_requested_.load(std::memory_order_acquire) && HasWork()) {
    status = RunOnce(RunMode::kWait);
    if (!status.ok()) break;
  }
  // As in libuv: a Stop() applies to the Run() it interrupts.
  stop_requested_.store(false, std::memory_order_release);
  return status;
}

absl::Status EventLoop::RunOnce(RunMode mode) {
  // A nested iteration would leave the outer one holding a popped task it
  // then calls, or an event batch whose watchers the inner one destroyed.
  NBIO_CHECK_MSG(!in_iteration_,
                 "EventLoop::RunOnce() called from inside a callback of the "
                 "same loop");
  RunningScope running(this);
  struct IterationScope {
    explicit IterationScope(bool* flag) : flag(flag) { *flag = true; }
    ~IterationScope() { *flag = false; }
    bool* flag;
  } iteration(&in_iteration_);
  ++counters_.iterations;
  RefreshTime();
  const int64_t iteration_start = now_nanos_;
  RunDueTimers();
  RunUrgentTasks();
  RunTasks();

  const int64_t timeout = mode == RunMode::kNoWait ? 0 : NextPollTimeoutNanos();
  const int64_t started = timeout != 0 ? MonotonicNanos() : 0;
  // The wait may sleep for long: callbacks after it read the time afresh.
  time_stale_ = true;
  absl::StatusOr<int> dispatched = poller_->Wait(timeout);
  if (timeout != 0) counters_.poll_blocked_nanos += MonotonicNanos() - started;
  ++counters_.poll_calls;
  if (!dispatched.ok()) {
    time_stale_ = false;
    return dispatched.status();
  }
  counters_.events_dispatched += *dispatched;
  RunUrgentTasks();

  if (!cpu_jobs_.empty()) RunCpuSlices(iteration_start, timeout != 0);
  RunDeferredDeletes();
  // Only iterations read the clock: between them NowNanos() keeps its last
  // value, as code outside the loop (a destructor, test teardown after a
  // ManualClock is gone) has always seen it.
  time_stale_ = false;
  return absl::OkStatus();
}

int64_t EventLoop::NextPollTimeoutNanos() {
  // No blocking when there is something to run, or nothing at all to wait
  // for (the timers that ran at the top of this iteration may have been the
  // last work: Run() must get to return instead of blocking forever).
  if (!tasks_.empty() || !urgent_tasks_.empty() || !cpu_jobs_.empty() ||
      !deferred_.empty() ||
      remote_pending_.load(std::memory_order_relaxed) > 0 ||
      stop_requested_.load(std::memory_order_relaxed) || !HasWork()) {
    return 0;
  }
  std::optional<int64_t> next = wheel_.NextExpiry();
  if (!next.has_value()) return -1;
  return *next > now_nanos_ ? *next - now_nanos_ : 0;
}

void EventLoop::RunDueTimers() {
  counters_.timers_fired += wheel_.Advance(now_nanos_);
}

void EventLoop::RunTasks() {
  // Only the tasks already queued: what they post waits for the next
  // iteration, after the poller has had its turn.
  for (size_t n = tasks_.size(); n > 0; --n) {
    TaskQueue::Task task = tasks_.Pop();
    task();
    ++counters_.tasks_run;
    RunUrgentTasks();
  }
}

void EventLoop::RunUrgentTasks() {
  // Until none is left, those the urgent tasks post included: a chain of
  // future continuations completes at one checkpoint.
  while (!urgent_tasks_.empty()) {
    TaskQueue::Task task = urgent_tasks_.Pop();
    task();
    ++counters_.urgent_tasks_run;
  }
}

void EventLoop::RefreshTime() const {
  now_nanos_ = clock_->NowNanos();
  time_stale_ = false;
}

void EventLoop::RunCpuSlices(int64_t iteration_start, bool blocked) {
  // The slices run until the iteration has lasted the budget, counted from
  // its top, so that timers, tasks and I/O eat into it: under light I/O the
  // loop polls once per budget. But however long the rest of the iteration
  // took, they run as long again, up to one budget: under heavy I/O the jobs
  // keep half the thread, up to a budget per iteration, where counting from
  // the top alone left them one slice per iteration (a 10 us slice after
  // 1 ms of I/O: 1%). After a poll that blocked, the iteration counts from
  // now (the jobs were started during this dispatch, and the time asleep
  // was nobody's work).
  const int64_t cpu_start = clock_->NowNanos();
  const int64_t others = blocked ? 0 : cpu_start - iteration_start;
  const int64_t budget = absl::ToInt64Nanoseconds(options_.cpu_budget);
  const int64_t end =
      cpu_start + std::max(budget - others, std::min(others, budget));
  for (int slices = 0;
       !cpu_jobs_.empty() && slices < options_.max_cpu_slices_per_iteration;
       ++slices) {
    CpuJob* job = cpu_jobs_.PopFront();
    job->after_slice_ = CpuJob::AfterSlice::kByResult;
    running_cpu_job_ = job;
    const CpuSliceResult result = job->slice_();
    running_cpu_job_ = nullptr;
    ++counters_.cpu_slices;
    if (job->after_slice_ == CpuJob::AfterSlice::kRequeue ||
        (job->after_slice_ == CpuJob::AfterSlice::kByResult &&
         result == CpuSliceResult::kMore)) {
      cpu_jobs_.PushBack(*job);
    }
    RunUrgentTasks();
    // Checked after the slice: every iteration runs at least one.
    if (clock_->NowNanos() >= end) break;
  }
}

void EventLoop::RunDeferredDeletes() {
  // A destructor may DeleteLater() more: loop until none is left.
  while (!deferred_.empty()) {
    std::vector<DeferredDelete> batch;
    batch.swap(deferred_);
    batch.clear();
  }
}

void EventLoop::Stop() {
  stop_requested_.store(true, std::memory_order_release);
  // From a callback no wake-up is needed: the loop checks the flag before
  // its next poll. From anywhere else the loop may be in the poll, or about
  // to enter it on another thread.
  if (!RunningOnThisThread()) {
    wakeups_sent_.fetch_add(1, std::memory_order_relaxed);
    wakeup_->Signal();
  }
}

void EventLoop::Post(absl::AnyInvocable<void()> task) {
  // Only the thread inside Run()/RunOnce() may touch tasks_. The thread
  // that created the loop is not enough: another thread may be starting to
  // run it right now (see the threading note in the header).
  if (RunningOnThisThread()) {
    tasks_.Push(std::move(task));
    return;
  }
  auto* remote = new RemoteTask{MpscNode(), std::move(task)};
  remote_pending_.fetch_add(1, std::memory_order_relaxed);
  // Only the post that finds the queue empty wakes the loop: the loop drains
  // the whole queue on every wake-up, so later posts of a burst ride along.
  if (remote_tasks_.Push(remote)) {
    wakeups_sent_.fetch_add(1, std::memory_order_relaxed);
    wakeup_->Signal();
  }
}

void EventLoop::PostUrgent(absl::AnyInvocable<void()> task) {
  NBIO_DCHECK(IsInLoopThread());
  urgent_tasks_.Push(std::move(task));
}

void EventLoop::OnWakeupFd(PollerEntry* entry, uint32_t /*events*/) {
  EventLoop* loop = static_cast<WakeupEntry*>(entry)->loop;
  // Drain the fd first: a post that lands after this point signals again.
  loop->wakeup_->Drain();
  loop->DrainRemoteTasks();
}

void EventLoop::DrainRemoteTasks() {
  while (RemoteTask* remote = remote_tasks_.Pop()) {
    remote_pending_.fetch_sub(1, std::memory_order_relaxed);
    tasks_.Push(std::move(remote->fn));
    delete remote;
    ++counters_.remote_posts;
  }
}

void EventLoop::OwnedTimers::ReleaseAll() {
  // A timer whose handle is still out stays for the handle to free:
  // cancelled, with its callback (and what the callback owns) destroyed, it
  // never touches the loop again. The callbacks' destructors may start new
  // Timer::After timers: the destructor's rounds come back here.
  while (Timer::Owned* timer = list.PopFront()) {
    timer->Cancel();
    timer->loop_owned_ = false;
    if (timer->has_handle) {
      Timer::Callback callback = std::move(timer->callback_);
      timer->callback_ = nullptr;
    } else {
      delete timer;
    }
  }
}

EventLoop::OwnedTimers::~OwnedTimers() {
  // ~EventLoop has released them all already; this is the last member.
  ReleaseAll();
}

absl::Status EventLoop::OnSignal(int signo,
                                 absl::AnyInvocable<void(int)> handler) {
  NBIO_DCHECK(IsInLoopThread());
  sigset_t one;
  sigemptyset(&one);
  if (signo == SIGKILL || signo == SIGSTOP || sigaddset(&one, signo) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot handle signal ", signo));
  }
  const bool added = !sigismember(&signal_mask_, signo);
  if (added) {
    sigaddset(&signal_mask_, signo);
    pthread_sigmask(SIG_BLOCK, &one, nullptr);
    absl::Status status = UpdateSignalFd();
    if (!status.ok()) {
      sigdelset(&signal_mask_, signo);
      pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
      return status;
    }
  }
  signal_handlers_[signo] = std::move(handler);
  return absl::OkStatus();
}

void EventLoop::RemoveSignal(int signo) {
  NBIO_DCHECK(IsInLoopThread());
  if (signal_handlers_.erase(signo) == 0) return;
  sigdelset(&signal_mask_, signo);
  // Best effort: with the fd shrinking, only a failed signalfd() could fail,
  // and then the old mask keeps working.
  UpdateSignalFd().IgnoreError();
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, signo);
  pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
}

absl::Status EventLoop::UpdateSignalFd() {
  if (signal_handlers_.empty() && sigisemptyset(&signal_mask_)) {
    if (signal_fd_ >= 0) {
      poller_->Remove(&signal_entry_);
      close(signal_fd_);
      signal_fd_ = -1;
    }
    return absl::OkStatus();
  }
  if (signal_fd_ >= 0) {
    if (signalfd(signal_fd_, &signal_mask_, 0) < 0) {
      return ErrnoStatus("signalfd", errno);
    }
    return absl::OkStatus();
  }
  const int fd = signalfd(-1, &signal_mask_, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) return ErrnoStatus("signalfd", errno);
  absl::Status status = poller_->Add(&signal_entry_, fd, kReadable);
  if (!status.ok()) {
    close(fd);
    return status;
  }
  signal_fd_ = fd;
  return absl::OkStatus();
}

void EventLoop::OnSignalFd(PollerEntry* entry, uint32_t /*events*/) {
  EventLoop* loop = static_cast<SignalEntry*>(entry)->loop;
  signalfd_siginfo info;
  while (loop->signal_fd_ >= 0 && RetryOnEintr([&] {
                                    return read(loop->signal_fd_, &info,
                                                sizeof(info));
                                  }) == static_cast<ssize_t>(sizeof(info))) {
    const int signo = static_cast<int>(info.ssi_signo);
    auto it = loop->signal_handlers_.find(signo);
    if (it == loop->signal_handlers_.end()) continue;
    // Run a moved-out copy: the handler may remove or replace itself.
    absl::AnyInvocable<void(int)> handler = std::move(it->second);
    handler(signo);
    it = loop->signal_handlers_.find(signo);
    if (it != loop->signal_handlers_.end() && !it->second) {
      it->second = std::move(handler);
    }
  }
}

EventLoop::KeepAlive EventLoop::KeepAliveToken() {
  ++keep_alive_;
  return KeepAlive(this);
}

EventLoop::KeepAlive::~KeepAlive() {
  if (loop_ != nullptr) --loop_->keep_alive_;
}

int64_t EventLoop::DeadlineAfter(absl::Duration delay) const {
  const int64_t now = NowNanos();
  if (delay > absl::ZeroDuration()) return AddDuration(now, delay);
  // Due now. The wheel rounds deadlines up to a tick, so `now` itself could
  // wait up to a tick past the next iteration's Advance; a tick earlier is
  // due at that Advance whatever the clock reads then.
  const absl::Duration tick = absl::Nanoseconds(wheel_.resolution_nanos());
  return std::min(AddDuration(now, delay), AddDuration(now, -tick));
}

LoopLoad EventLoop::Load() const {
  LoopLoad load;
  load.tasks_ready = tasks_.size() + urgent_tasks_.size() +
                     remote_pending_.load(std::memory_order_relaxed);
  load.urgent_tasks_ready = urgent_tasks_.size();
  // O(jobs): the list keeps no count (a job may unlink itself).
  load.cpu_jobs_pending =
      cpu_jobs_.size() +
      (running_cpu_job_ != nullptr && running_cpu_job_->is_pending() ? 1 : 0);
  load.fds_waiting = ActiveIo();
  load.timers_sleeping = timers_scheduled_;
  return load;
}

}  // namespace nbio
