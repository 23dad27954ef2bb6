// Intrusive multi-producer single-consumer queue: how other threads hand work
// to the loop.
//
// Any thread pushes; only the loop's thread pops. Push() reports whether the
// consumer may be asleep, so that a burst of pushes costs the waker (an
// eventfd write, say) once:
//
//   struct Job {
//     MpscNode node;
//     absl::AnyInvocable<void()> fn;
//   };
//   MpscQueue<Job, &Job::node> incoming;
//
//   // Any thread:
//   if (incoming.Push(job)) WakeLoop();   // only the first push of a burst
//
//   // Loop thread, after a wake-up:
//   while (Job* job = incoming.Pop()) job->fn();   // drain until nullptr
//
// Design: a lock-free intrusive stack that producers push onto with one
// compare-and-swap, and that the consumer takes whole with one exchange, then
// reverses into a private oldest-first batch it pops from without touching
// shared memory. Chosen over Vyukov's intrusive MPSC queue because Vyukov's
// producer publishes its node (exchange on the tail) before linking it (store
// to the predecessor's next): a consumer that meets that half-linked node must
// either report "empty" while an item is in flight (and the producer, having
// seen a non-empty queue, sends no wake-up: a lost wake-up) or wait for a
// producer that may have been preempted (unbounded). Here a node is linked
// before the CAS that publishes it, so there is no such window: whatever the
// consumer takes is complete, and the consumer never waits for a producer.
// The price is that Push is lock-free rather than wait-free (the CAS retries
// when another push, or the consumer's take, got in between).
//
// Ownership: the queue does not own items. An item belongs to the queue from
// Push until Pop returns it; meanwhile nobody may touch it or its node.
// Destroying a non-empty queue forgets its items without touching them.
//
// Thread safety: Push from any number of threads at once; Pop and empty()
// from one consumer thread at a time (normally the loop's).
//
// Complexity: Push O(1) plus CAS retries under contention. Pop O(1) amortized:
// the call that takes a batch reverses it, O(batch size). No allocation.
#ifndef NBIO_QUEUE_MPSC_QUEUE_H_
#define NBIO_QUEUE_MPSC_QUEUE_H_

#include <atomic>

#include "queue/base/container_of.h"

namespace nbio {

// The link embedded in an item. Owned by the item; not copyable or movable,
// because the queue points at its address while the item is queued.
class MpscNode {
 public:
  MpscNode() noexcept = default;
  MpscNode(const MpscNode&) = delete;
  MpscNode& operator=(const MpscNode&) = delete;

 private:
  template <typename T, MpscNode T::*Node>
  friend class MpscQueue;

  // Atomic only so that a misuse (touching a queued item) is a data race
  // TSan reports rather than silent UB; every access is relaxed, and the
  // ordering comes from the queue's head_ (see below).
  std::atomic<MpscNode*> next_{nullptr};
};

template <typename T, MpscNode T::*Node>
class MpscQueue {
 public:
  MpscQueue() noexcept = default;
  MpscQueue(const MpscQueue&) = delete;
  MpscQueue& operator=(const MpscQueue&) = delete;

  // Any thread, lock-free. Enqueues `item` (not null, not already queued).
  //
  // Returns true iff the consumer may be asleep and must be woken: its last
  // look at the queue (Pop() returning nullptr, or empty() returning true, or
  // none yet) found it empty, and nothing has been pushed since. So a burst
  // of pushes returns true once. If Push returns false, a consumer that keeps
  // popping until Pop() returns nullptr is guaranteed to get this item
  // without another wake-up: it has not yet seen the queue empty, and before
  // it can, it takes this item.
  bool Push(T* item) noexcept {
    MpscNode* node = &(item->*Node);
    MpscNode* top = head_.load(std::memory_order_relaxed);
    do {
      // Link before publishing: once the CAS succeeds the node is complete.
      node->next_.store(top, std::memory_order_relaxed);
      // release: the item's contents and node->next_ happen-before the
      // consumer's acquire exchange that takes this node (directly, or
      // through the release sequence that later pushes' RMWs extend).
      // Failure needs no ordering: we only re-link and retry.
    } while (!head_.compare_exchange_weak(top, node, std::memory_order_release,
                                          std::memory_order_relaxed));
    return top == nullptr;
  }

  // Consumer thread only. The oldest item, or nullptr when the queue is
  // empty. Items from one producer come out in that producer's push order.
  // Returning nullptr arms the wake-up: the next Push returns true.
  // Never waits for a producer: a bounded number of atomic operations plus,
  // when it takes a new batch, one pass over that batch.
  T* Pop() noexcept {
    MpscNode* node = batch_;
    if (node == nullptr) {
      if (ArmIfEmpty()) return nullptr;
      node = TakeAll();
    }
    batch_ = node->next_.load(std::memory_order_relaxed);
    return internal::ContainerOf(node, Node);
  }

  // Consumer thread only. Whether Pop() would return nullptr now. Like a
  // nullptr from Pop(), a true here arms the wake-up (hence the mutable
  // head_): a consumer may go to sleep after either.
  bool empty() const noexcept { return batch_ == nullptr && ArmIfEmpty(); }

 private:
  // head_ is the top of the stack that producers push onto (newest first).
  // Its chain ends in one of two markers that tell producers whether the
  // consumer needs waking:
  //   nullptr     the consumer has seen the queue empty ("armed"): the next
  //               push must wake it, and returns true.
  //   Draining()  the consumer took a batch and has not yet seen the queue
  //               empty: it will look again, so pushes return false.
  // A pushed node's next_ is the head_ it replaced, so the chain under head_
  // runs newest to oldest down to one of the markers.
  MpscNode* Draining() const noexcept {
    return const_cast<MpscNode*>(&draining_);
  }

  // With batch_ empty: true, having armed head_, if nothing has been pushed;
  // false if TakeAll() has nodes to take.
  bool ArmIfEmpty() const noexcept {
    // relaxed: we compare pointers and dereference nothing here; TakeAll()'s
    // exchange acquires before any pushed node is read. A stale nullptr is
    // harmless: the push that replaced it returned true and its wake-up
    // synchronizes with us before we look again.
    MpscNode* top = head_.load(std::memory_order_relaxed);
    if (top == nullptr) return true;
    if (top != Draining()) return false;
    // Draining -> armed, unless a push got in first. Publishes nothing, so
    // relaxed; head_'s single modification order decides the race: the push
    // either precedes this CAS (the CAS fails and we take it) or follows it
    // (it sees nullptr and returns true).
    return head_.compare_exchange_strong(
        top, nullptr, std::memory_order_relaxed, std::memory_order_relaxed);
  }

  // With batch_ empty and head_ holding pushed nodes: takes them all, leaves
  // head_ as Draining(), and returns the oldest with the rest, oldest first,
  // linked behind it.
  MpscNode* TakeAll() noexcept {
    // acquire: every node in the chain was published by a release CAS whose
    // release sequence (all later writes to head_ are RMWs) this exchange
    // reads from, so their next_ links and items are visible.
    MpscNode* top = head_.exchange(Draining(), std::memory_order_acquire);
    MpscNode* oldest_first = nullptr;
    while (top != nullptr && top != Draining()) {
      MpscNode* older = top->next_.load(std::memory_order_relaxed);
      top->next_.store(oldest_first, std::memory_order_relaxed);
      oldest_first = top;
      top = older;
    }
    return oldest_first;
  }

  // Producers hammer head_; keep the consumer's private state off its cache
  // line. 64 bytes is the line size on the x86-64 and arm64 machines nbio
  // targets (std::hardware_destructive_interference_size makes GCC warn
  // about ABI stability in headers).
  alignas(64) mutable std::atomic<MpscNode*> head_{nullptr};
  // Consumer only: the batch being popped, oldest first, nullptr-terminated.
  alignas(64) MpscNode* batch_ = nullptr;
  // Its address is the Draining() marker; never linked.
  MpscNode draining_;
};

}  // namespace nbio

#endif  // NBIO_QUEUE_MPSC_QUEUE_H_
