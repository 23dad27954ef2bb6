// The poller contract (poller.h), checked for every registered backend.
// The loop-level conformance suite is //tests:reactor_conformance_test.
#include "reactor/poller/poller.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "reactor/poller/poller_registry.h"
#include "reactor/testing/loop_test_util.h"

namespace nbio {
namespace {

// A PollerEntry that records what it was told and may run a hook.
struct Recorder : PollerEntry {
  Recorder() : PollerEntry(&Recorder::OnEvents) {}
  static void OnEvents(PollerEntry* e, uint32_t events) {
    Recorder* self = static_cast<Recorder*>(e);
    self->events.push_back(events);
    if (self->hook) self->hook(events);
  }
  std::vector<uint32_t> events;
  std::function<void(uint32_t)> hook;
};

class PollerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    NBIO_SKIP_IF_BACKEND_UNAVAILABLE(GetParam());
    absl::StatusOr<std::unique_ptr<Poller>> p = CreatePoller(GetParam());
    ASSERT_TRUE(p.ok()) << p.status();
    poller_ = std::move(*p);
    ASSERT_EQ(poller_->name(), GetParam());
  }

  int WaitNow() {
    absl::StatusOr<int> n = poller_->Wait(0);
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? *n : -1;
  }

  std::unique_ptr<Poller> poller_;
};

TEST_P(PollerTest, PipeReadableOnlyAfterWrite) {
  TestPipe p;
  Recorder rec;
  ASSERT_TRUE(poller_->Add(&rec, p.r, kReadable).ok());
  EXPECT_EQ(poller_->size(), 1);
  EXPECT_EQ(WaitNow(), 0);
  EXPECT_TRUE(rec.events.empty());
  ASSERT_EQ(write(p.w, "x", 1), 1);
  EXPECT_EQ(WaitNow(), 1);
  ASSERT_EQ(rec.events.size(), 1u);
  EXPECT_EQ(rec.events[0], kReadable);
  poller_->Remove(&rec);
  EXPECT_EQ(poller_->size(), 0);
}

TEST_P(PollerTest, LevelTriggeredUntilDrained) {
  TestPipe p;
  Recorder rec;
  ASSERT_TRUE(poller_->Add(&rec, p.r, kReadable).ok());
  ASSERT_EQ(write(p.w, "xy", 2), 2);
  EXPECT_EQ(WaitNow(), 1);
  EXPECT_EQ(WaitNow(), 1);  // still readable: reported again
  char buf[4];
  ASSERT_EQ(read(p.r, buf, sizeof(buf)), 2);
  EXPECT_EQ(WaitNow(), 0);
  EXPECT_EQ(rec.events.size(), 2u);
  poller_->Remove(&rec);
}

TEST_P(PollerTest, WritableAndInterestChanges) {
  TestSocketPair s;
  Recorder rec;
  ASSERT_TRUE(poller_->Add(&rec, s.a, kReadable).ok());
  EXPECT_EQ(WaitNow(), 0);  // writable, but not asked for
  ASSERT_TRUE(poller_->Modify(&rec, kReadable | kWritable).ok());
  EXPECT_EQ(rec.interest(), kReadable | kWritable);
  EXPECT_EQ(WaitNow(), 1);
  EXPECT_EQ(rec.events.back(), kWritable);
  ASSERT_EQ(write(s.b, "x", 1), 1);
  EXPECT_EQ(WaitNow(), 1);
  EXPECT_EQ(rec.events.back(), kReadable | kWritable);
  ASSERT_TRUE(poller_->Modify(&rec, kReadable).ok());
  ASSERT_TRUE(poller_->Modify(&rec, kReadable).ok());  // unchanged
  EXPECT_EQ(WaitNow(), 1);
  EXPECT_EQ(rec.events.back(), kReadable);
  poller_->Remove(&rec);
}

// An entry with no interest hears nothing, not even a hang-up, so a reader
// paused for backpressure cannot spin; the hang-up arrives when it resumes.
TEST_P(PollerTest, NoInterestMeansNoEventsEvenOnHangup) {
  TestSocketPair s;
  Recorder rec;
  ASSERT_TRUE(poller_->Add(&rec, s.a, 0).ok());
  ASSERT_EQ(write(s.b, "x", 1), 1);
  close(s.b);
  s.b = -1;
  EXPECT_EQ(WaitNow(), 0);
  EXPECT_TRUE(rec.events.empty());
  ASSERT_TRUE(poller_->Modify(&rec, kReadable).ok());
  EXPECT_EQ(WaitNow(), 1);
  ASSERT_EQ(rec.events.size(), 1u);
  EXPECT_TRUE(rec.events[0] & kReadable);
  // Pausing again silences it again.
  ASSERT_TRUE(poller_->Modify(&rec, 0).ok());
  EXPECT_EQ(WaitNow(), 0);
  poller_->Remove(&rec);
}

// A peer that goes away is reported through the read path (with the hint
// bits where the backend can tell), and read() says EOF.
TEST_P(PollerTest, PeerCloseIsReadable) {
  TestSocketPair s;
  Recorder rec;
  ASSERT_TRUE(poller_->Add(&rec, s.a, kReadable).ok());
  close(s.b);
  s.b = -1;
  EXPECT_EQ(WaitNow(), 1);
  ASSERT_EQ(rec.events.size(), 1u);
  EXPECT_TRUE(rec.events[0] & kReadable);
  EXPECT_FALSE(rec.events[0] & kWritable);  // not asked for
  char c;
  EXPECT_EQ(read(s.a, &c, 1), 0);
  poller_->Remove(&rec);
}

TEST_P(PollerTest, RemoveOtherEntryDuringDispatchDropsItsEvent) {
  TestPipe p1, p2;
  Recorder a, b;
  ASSERT_TRUE(poller_->Add(&a, p1.r, kReadable).ok());
  ASSERT_TRUE(poller_->Add(&b, p2.r, kReadable).ok());
  ASSERT_EQ(write(p1.w, "x", 1), 1);
  ASSERT_EQ(write(p2.w, "x", 1), 1);
  // Whichever runs first removes the other: exactly one callback runs.
  a.hook = [&](uint32_t) { poller_->Remove(&b); };
  b.hook = [&](uint32_t) { poller_->Remove(&a); };
  EXPECT_EQ(WaitNow(), 1);
  EXPECT_EQ(a.events.size() + b.events.size(), 1u);
  EXPECT_EQ(poller_->size(), 1);
  poller_->Remove(&a);
  poller_->Remove(&b);
  EXPECT_EQ(poller_->size(), 0);
}

// The other entry is removed *and destroyed* by the first callback (a
// connection deleted by its neighbour's callback): its pending event must not
// touch freed memory (ASan builds catch it if it does).
TEST_P(PollerTest, DestroyOtherEntryDuringDispatch) {
  TestPipe p1, p2;
  auto a = std::make_unique<Recorder>();
  auto b = std::make_unique<Recorder>();
  ASSERT_TRUE(poller_->Add(a.get(), p1.r, kReadable).ok());
  ASSERT_TRUE(poller_->Add(b.get(), p2.r, kReadable).ok());
  ASSERT_EQ(write(p1.w, "x", 1), 1);
  ASSERT_EQ(write(p2.w, "x", 1), 1);
  int calls = 0;
  a->hook = [&](uint32_t) {
    ++calls;
    poller_->Remove(b.get());
    b.reset();
  };
  b->hook = [&](uint32_t) {
    ++calls;
    poller_->Remove(a.get());
    a.reset();
  };
  EXPECT_EQ(WaitNow(), 1);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(poller_->size(), 1);
  if (a) poller_->Remove(a.get());
  if (b) poller_->Remove(b.get());
}

TEST_P(PollerTest, RemoveSelfDuringDispatch) {
  TestPipe p;
  Recorder rec;
  ASSERT_TRUE(poller_->Add(&rec, p.r, kReadable).ok());
  ASSERT_EQ(write(p.w, "x", 1), 1);
  rec.hook = [&](uint32_t) { poller_->Remove(&rec); };
  EXPECT_EQ(WaitNow(), 1);
  EXPECT_FALSE(rec.is_registered());
  EXPECT_EQ(WaitNow(), 0);
  EXPECT_EQ(rec.events.size(), 1u);
}

// Whichever callback runs first removes the other entry, closes its fd and
// registers a new entry on a new pipe that reuses the fd number. The old fd
// was readable in this batch; the new one never is: the new entry must not
// hear the old readiness, in this batch or later.
TEST_P(PollerTest, FdReusedWithinBatchGetsNoStaleEvent) {
  std::unique_ptr<TestPipe> pipes[2] = {std::make_unique<TestPipe>(),
                                        std::make_unique<TestPipe>()};
  Recorder recs[2];
  Recorder fresh;
  std::unique_ptr<TestPipe> replacement;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(poller_->Add(&recs[i], pipes[i]->r, kReadable).ok());
    ASSERT_EQ(write(pipes[i]->w, "x", 1), 1);
    recs[i].hook = [&, other = 1 - i](uint32_t) {
      if (replacement != nullptr) return;
      const int old_fd = recs[other].fd();
      poller_->Remove(&recs[other]);
      pipes[other].reset();  // closes old_fd and its write end
      replacement = std::make_unique<TestPipe>();  // lowest free numbers
      ASSERT_EQ(replacement->r, old_fd);
      ASSERT_TRUE(poller_->Add(&fresh, replacement->r, kReadable).ok());
    };
  }
  EXPECT_EQ(WaitNow(), 1);
  ASSERT_NE(replacement, nullptr);
  EXPECT_EQ(recs[0].events.size() + recs[1].events.size(), 1u);
  EXPECT_TRUE(fresh.events.empty());
  WaitNow();
  EXPECT_TRUE(fresh.events.empty());
  poller_->Remove(&fresh);
  poller_->Remove(&recs[0]);
  poller_->Remove(&recs[1]);
}

// One entry per fd, whatever the kernel would take: epoll refused a second
// entry only while the first had interest, poll took both.
TEST_P(PollerTest, SecondEntryForAnFdIsAlreadyExists) {
  TestPipe p;
  Recorder first, second;
  for (uint32_t first_interest : {0u, uint32_t{kReadable}}) {
    ASSERT_TRUE(poller_->Add(&first, p.r, first_interest).ok());
    for (uint32_t interest : {0u, uint32_t{kReadable}}) {
      absl::Status s = poller_->Add(&second, p.r, interest);
      EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
      EXPECT_FALSE(second.is_registered());
    }
    EXPECT_EQ(poller_->size(), 1);
    // The first entry is untouched: it still hears its fd.
    ASSERT_TRUE(poller_->Modify(&first, kReadable).ok());
    ASSERT_EQ(write(p.w, "x", 1), 1);
    EXPECT_EQ(WaitNow(), 1);
    EXPECT_EQ(first.events.size(), 1u);
    EXPECT_TRUE(second.events.empty());
    char c;
    ASSERT_EQ(read(p.r, &c, 1), 1);
    first.events.clear();
    poller_->Remove(&first);
  }
  // Once the fd is free, another entry may take it.
  ASSERT_TRUE(poller_->Add(&second, p.r, kReadable).ok());
  poller_->Remove(&second);
  EXPECT_EQ(poller_->size(), 0);
}

TEST_P(PollerTest, ManyPipesAllReported) {
  constexpr int kPipes = 200;  // below FD_SETSIZE for select
  std::vector<std::unique_ptr<TestPipe>> pipes;
  std::vector<std::unique_ptr<Recorder>> recs;
  for (int i = 0; i < kPipes; ++i) {
    pipes.push_back(std::make_unique<TestPipe>());
    recs.push_back(std::make_unique<Recorder>());
    ASSERT_TRUE(poller_->Add(recs[i].get(), pipes[i]->r, kReadable).ok());
  }
  for (int i = 0; i < kPipes; i += 2) {
    ASSERT_EQ(write(pipes[i]->w, "x", 1), 1);
  }
  EXPECT_EQ(WaitNow(), kPipes / 2);
  for (int i = 0; i < kPipes; ++i) {
    EXPECT_EQ(recs[i]->events.size(), i % 2 == 0 ? 1u : 0u) << i;
    poller_->Remove(recs[i].get());
  }
}

TEST_P(PollerTest, TimeoutWaitsWithoutEvents) {
  // 1 ms: a real but tiny wait; asserts nothing about its length.
  absl::StatusOr<int> n = poller_->Wait(1000 * 1000);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0);
}

TEST_P(PollerTest, FdAboveFdSetsize) {
  TestPipe p;
  const int high = fcntl(p.r, F_DUPFD_CLOEXEC, FD_SETSIZE + 10);
  ASSERT_GE(high, FD_SETSIZE) << "cannot open fd above FD_SETSIZE";
  Recorder rec;
  absl::Status s = poller_->Add(&rec, high, kReadable);
  if (GetParam() == "select") {
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(s.message().find("FD_SETSIZE"), std::string::npos) << s;
    EXPECT_FALSE(rec.is_registered());
    EXPECT_EQ(poller_->size(), 0);
  } else {
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_EQ(write(p.w, "x", 1), 1);
    EXPECT_EQ(WaitNow(), 1);
    EXPECT_EQ(rec.events.size(), 1u);
    poller_->Remove(&rec);
  }
  close(high);
}

// The tests' split of the backends (loop_test_util.h) is the pollers' own.
TEST(PollerRegistryTest, StreamEngineBackendsAreThoseWithAnEngine) {
  const std::vector<std::string> engines = StreamEngineBackends();
  for (const std::string& name : PollerNames()) {
    const bool listed =
        std::find(engines.begin(), engines.end(), name) != engines.end();
    const std::vector<std::string> readiness = ReadinessBackends();
    EXPECT_NE(listed, std::find(readiness.begin(), readiness.end(), name) !=
                          readiness.end())
        << name << " must be in exactly one list";
    absl::StatusOr<std::unique_ptr<Poller>> p = CreatePoller(name);
    if (!p.ok()) continue;  // io_uring refused here: no_io_uring_test
    EXPECT_EQ((*p)->streams() != nullptr, listed) << name;
  }
}

TEST(PollerRegistryTest, KnowsEveryBackendAndRejectsOthers) {
  EXPECT_EQ(PollerNames(),
            (std::vector<std::string>{"epoll", "poll", "select", "io_uring",
                                      "io_uring_poll"}));
  EXPECT_EQ(DefaultPollerName(), "epoll");
  absl::StatusOr<std::unique_ptr<Poller>> p = CreatePoller("kqueue");
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("epoll, poll, select, io_uring"),
            std::string::npos)
      << p.status();
}

INSTANTIATE_TEST_SUITE_P(AllBackends, PollerTest,
                         ::testing::ValuesIn(PollerNames()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace nbio
