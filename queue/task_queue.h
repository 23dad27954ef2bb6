// TaskQueue: the loop's FIFO of posted callbacks.
//
// A ring buffer of absl::AnyInvocable<void()> that grows by doubling and
// never shrinks, so a steady stream of posts allocates nothing after warm-up
// (AnyInvocable stores callables of up to two pointers inline). O(1) push and
// pop. Single-threaded: the loop's.
#ifndef NBIO_QUEUE_TASK_QUEUE_H_
#define NBIO_QUEUE_TASK_QUEUE_H_

#include <cstddef>
#include <memory>
#include <utility>

#include "absl/functional/any_invocable.h"

namespace nbio {

class TaskQueue {
 public:
  using Task = absl::AnyInvocable<void()>;

  TaskQueue() = default;
  TaskQueue(const TaskQueue&) = delete;
  TaskQueue& operator=(const TaskQueue&) = delete;

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }

  void Push(Task task) {
    if (size_ == capacity_) Grow();
    slots_[(head_ + size_) & (capacity_ - 1)] = std::move(task);
    ++size_;
  }

  // The queue must not be empty.
  Task Pop() {
    Task task = std::move(slots_[head_]);
    head_ = (head_ + 1) & (capacity_ - 1);
    --size_;
    return task;
  }

 private:
  void Grow() {
    const size_t new_capacity = capacity_ == 0 ? 64 : capacity_ * 2;
    auto bigger = std::make_unique<Task[]>(new_capacity);
    for (size_t i = 0; i < size_; ++i) {
      bigger[i] = std::move(slots_[(head_ + i) & (capacity_ - 1)]);
    }
    slots_ = std::move(bigger);
    capacity_ = new_capacity;
    head_ = 0;
  }

  std::unique_ptr<Task[]> slots_;
  size_t capacity_ = 0;  // a power of two, or 0
  size_t head_ = 0;
  size_t size_ = 0;
};

}  // namespace nbio

#endif  // NBIO_QUEUE_TASK_QUEUE_H_
