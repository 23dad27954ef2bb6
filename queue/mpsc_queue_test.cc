#include "queue/mpsc_queue.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace nbio {
namespace {

struct Item {
  int producer = 0;
  int seq = 0;
  MpscNode node;  // not first: exercises the offset in ContainerOf
};

using Queue = MpscQueue<Item, &Item::node>;

TEST(MpscQueueTest, EmptyQueue) {
  Queue q;
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.Pop(), nullptr);
  EXPECT_EQ(q.Pop(), nullptr);
}

TEST(MpscQueueTest, OneElement) {
  Queue q;
  Item a;
  EXPECT_TRUE(q.Push(&a));
  EXPECT_FALSE(q.empty());
  EXPECT_EQ(q.Pop(), &a);
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.Pop(), nullptr);
  // The item can be pushed again once popped.
  EXPECT_TRUE(q.Push(&a));
  EXPECT_EQ(q.Pop(), &a);
}

TEST(MpscQueueTest, FifoAcrossBatches) {
  Queue q;
  Item items[6];
  q.Push(&items[0]);
  q.Push(&items[1]);
  q.Push(&items[2]);
  EXPECT_EQ(q.Pop(), &items[0]);  // takes the batch {0, 1, 2}
  q.Push(&items[3]);              // lands behind the batch
  q.Push(&items[4]);
  EXPECT_EQ(q.Pop(), &items[1]);
  EXPECT_EQ(q.Pop(), &items[2]);
  q.Push(&items[5]);
  EXPECT_EQ(q.Pop(), &items[3]);
  EXPECT_EQ(q.Pop(), &items[4]);
  EXPECT_EQ(q.Pop(), &items[5]);
  EXPECT_EQ(q.Pop(), nullptr);
}

TEST(MpscQueueTest, BurstOfPushesReportsEmptyOnce) {
  Queue q;
  Item items[4];
  EXPECT_TRUE(q.Push(&items[0]));
  EXPECT_FALSE(q.Push(&items[1]));
  EXPECT_FALSE(q.Push(&items[2]));
  EXPECT_EQ(q.Pop(), &items[0]);
  EXPECT_EQ(q.Pop(), &items[1]);
  EXPECT_EQ(q.Pop(), &items[2]);
  EXPECT_EQ(q.Pop(), nullptr);  // the consumer has seen it empty: armed
  EXPECT_TRUE(q.Push(&items[3]));
}

TEST(MpscQueueTest, NoWakeUpWhileConsumerHasNotSeenEmpty) {
  Queue q;
  Item a, b, c;
  EXPECT_TRUE(q.Push(&a));
  EXPECT_EQ(q.Pop(), &a);
  // The queue is empty, but the consumer has not looked yet: it will call
  // Pop() again before sleeping, so this push needs no wake-up.
  EXPECT_FALSE(q.Push(&b));
  EXPECT_EQ(q.Pop(), &b);
  // empty() arms like a nullptr from Pop(): a consumer may sleep after it.
  EXPECT_TRUE(q.empty());
  EXPECT_TRUE(q.Push(&c));
  EXPECT_FALSE(q.empty());
  EXPECT_EQ(q.Pop(), &c);
}

// Random single-threaded operations, every result compared with a std::deque
// of the queued items and a model of the wake-up flag: Push returns true iff
// the consumer's last look (Pop, empty) found the queue empty and nothing was
// pushed since.
TEST(MpscQueueTest, MatchesDequeModel) {
  constexpr int kItems = 256;
  constexpr int kOps = 3'000'000;
  std::vector<Item> items(kItems);
  std::vector<bool> queued(kItems, false);
  for (int i = 0; i < kItems; ++i) items[i].seq = i;
  Queue q;
  std::deque<int> model;
  bool armed = true;  // a new queue has never been looked at: wake on push
  std::mt19937 rng(7331);

  for (int op = 0; op < kOps; ++op) {
    const uint32_t r = rng();
    switch (r % 3) {
      case 0: {
        const int i = static_cast<int>((r >> 8) % kItems);
        if (queued[i]) break;
        ASSERT_EQ(q.Push(&items[i]), armed) << "op " << op;
        armed = false;
        queued[i] = true;
        model.push_back(i);
        break;
      }
      case 1: {
        Item* got = q.Pop();
        if (model.empty()) {
          ASSERT_EQ(got, nullptr) << "op " << op;
          armed = true;
        } else {
          ASSERT_NE(got, nullptr) << "op " << op;
          ASSERT_EQ(got->seq, model.front()) << "op " << op;
          queued[model.front()] = false;
          model.pop_front();
        }
        break;
      }
      case 2:
        ASSERT_EQ(q.empty(), model.empty()) << "op " << op;
        if (model.empty()) armed = true;
        break;
    }
  }
}

// Several producers, one consumer popping as fast as it can: every item
// arrives exactly once, and each producer's items in its push order.
TEST(MpscQueueTest, ManyProducersDeliverEachItemOnceInProducerOrder) {
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 200'000;
  // One flat array: Item is not copyable, so no vector of vectors.
  std::vector<Item> items(kProducers * kPerProducer);
  auto at = [&](int p, int s) -> Item& { return items[p * kPerProducer + s]; };
  Queue q;
  std::atomic<bool> go{false};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      for (int s = 0; s < kPerProducer; ++s) {
        at(p, s).producer = p;
        at(p, s).seq = s;
        q.Push(&at(p, s));
      }
    });
  }
  go.store(true, std::memory_order_release);

  std::vector<int> next_seq(kProducers, 0);
  int received = 0;
  while (received < kProducers * kPerProducer) {
    Item* item = q.Pop();
    if (item == nullptr) {
      std::this_thread::yield();  // 2 cores: let the producers run
      continue;
    }
    ASSERT_GE(item->producer, 0);
    ASSERT_LT(item->producer, kProducers);
    // In order and exactly once: a duplicate or a skipped item breaks this.
    ASSERT_EQ(item->seq, next_seq[item->producer])
        << "producer " << item->producer;
    ASSERT_EQ(item, &at(item->producer, item->seq));
    ++next_seq[item->producer];
    ++received;
  }
  for (std::thread& t : producers) t.join();
  EXPECT_EQ(q.Pop(), nullptr);
  for (int p = 0; p < kProducers; ++p) EXPECT_EQ(next_seq[p], kPerProducer);
}

// The wake-up protocol the reactor uses: producers write an eventfd only when
// Push returns true; the consumer drains until Pop returns nullptr and then
// blocks on the eventfd. A lost wake-up leaves the consumer blocked with
// items queued, which the (generous) poll timeout turns into a failure
// instead of a hang.
TEST(MpscQueueTest, ConsumerSleepingOnEventfdNeverMissesAnItem) {
  constexpr int kProducers = 3;
  constexpr int kPerProducer = 100'000;
  constexpr int kLostWakeUpTimeoutMs = 10'000;
  const int efd = eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(efd, 0);
  // One flat array: Item is not copyable, so no vector of vectors.
  std::vector<Item> items(kProducers * kPerProducer);
  auto at = [&](int p, int s) -> Item& { return items[p * kPerProducer + s]; };
  Queue q;
  std::atomic<int> wake_ups{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      std::mt19937 rng(p);
      for (int s = 0; s < kPerProducer; ++s) {
        at(p, s).producer = p;
        at(p, s).seq = s;
        if (q.Push(&at(p, s))) {
          wake_ups.fetch_add(1, std::memory_order_relaxed);
          const uint64_t one = 1;
          ASSERT_EQ(write(efd, &one, sizeof(one)),
                    static_cast<ssize_t>(sizeof(one)));
        }
        // Pause now and then, so the consumer often drains the queue dry and
        // sleeps: the racy moment this test is about.
        if (rng() % 64 == 0) std::this_thread::yield();
      }
    });
  }

  std::vector<int> next_seq(kProducers, 0);
  int received = 0;
  int sleeps = 0;
  while (received < kProducers * kPerProducer) {
    while (Item* item = q.Pop()) {
      ASSERT_EQ(item->seq, next_seq[item->producer]);
      ++next_seq[item->producer];
      ++received;
    }
    if (received == kProducers * kPerProducer) break;
    // Pop returned nullptr: the queue is armed, and we may sleep.
    ++sleeps;
    pollfd pfd = {efd, POLLIN, 0};
    const int ready = poll(&pfd, 1, kLostWakeUpTimeoutMs);
    ASSERT_EQ(ready, 1) << "lost wake-up: " << received << " of "
                        << kProducers * kPerProducer << " items received";
    uint64_t count;
    ASSERT_EQ(read(efd, &count, sizeof(count)),
              static_cast<ssize_t>(sizeof(count)));
  }
  for (std::thread& t : producers) t.join();
  close(efd);
  // Each wake-up answered one arming, and a consumer that sleeps often is
  // still woken far less than once per item.
  EXPECT_LE(wake_ups.load(), sleeps + 1);
  EXPECT_LT(wake_ups.load(), kProducers * kPerProducer);
}

}  // namespace
}  // namespace nbio
