// A user of @nbio//queue:mpsc_queue alone: producers on threads, one consumer.
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "queue/mpsc_queue.h"

namespace {

struct Item {
  nbio::MpscNode node;
  int producer = 0;
  int seq = 0;
};

TEST(MpscQueueUserTest, EveryItemOnceInEachProducersOrder) {
  constexpr int kProducers = 3;
  constexpr int kPerProducer = 2000;
  nbio::MpscQueue<Item, &Item::node> queue;
  std::vector<Item> items(kProducers * kPerProducer);
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        Item& item = items[p * kPerProducer + i];
        item.producer = p;
        item.seq = i;
        queue.Push(&item);
      }
    });
  }
  std::vector<int> next(kProducers, 0);
  int popped = 0;
  while (popped < kProducers * kPerProducer) {
    if (Item* item = queue.Pop()) {
      ASSERT_EQ(item->seq, next[item->producer]);
      ++next[item->producer];
      ++popped;
    }
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(queue.Pop(), nullptr);
}

}  // namespace
