// Intrusive doubly linked list: O(1) everything, no allocation, ever.
//
// The list does not own its elements; each element embeds a ListHook and may
// sit on as many lists as it has hooks. It is libuv's queue.h and the Linux
// kernel's list_head, made type-safe:
//
//   struct Task {
//     ListHook hook;
//     int id;
//   };
//   IntrusiveList<Task, &Task::hook> ready;
//   Task t;
//   ready.PushBack(t);          // O(1), no allocation
//   t.hook.Unlink();            // O(1), from anywhere, without the list
//   for (Task& each : ready) {  // may Unlink() `each` (not others) while here
//   }
//
// Ownership and lifetime: the element owns its hook. A hook unlinks itself
// when it is destroyed, so an element may be destroyed while linked. A list
// unlinks every element when it is destroyed. Neither is copyable; both are
// movable only where noted.
//
// Thread safety: none. A list and the hooks on it belong to one thread (the
// loop's); see mpsc_queue.h for the cross-thread queue.
#ifndef NBIO_QUEUE_INTRUSIVE_LIST_H_
#define NBIO_QUEUE_INTRUSIVE_LIST_H_

#include <cstddef>
#include <iterator>
#include <type_traits>
#include <utility>

#include "queue/base/container_of.h"

namespace nbio {

// The link embedded in a list element. Not copyable or movable: a list points
// at the hook's address.
class ListHook {
 public:
  ListHook() noexcept = default;
  ~ListHook() { Unlink(); }

  ListHook(const ListHook&) = delete;
  ListHook& operator=(const ListHook&) = delete;

  // Whether the hook is on a list. O(1).
  bool is_linked() const noexcept { return next_ != nullptr; }

  // Removes the element from whatever list holds it; a no-op when unlinked.
  // O(1).
  void Unlink() noexcept {
    if (next_ == nullptr) return;
    prev_->next_ = next_;
    next_->prev_ = prev_;
    next_ = nullptr;
    prev_ = nullptr;
  }

 private:
  template <typename T, ListHook T::*Hook>
  friend class IntrusiveList;

  // Links this (unlinked) hook just before `pos`.
  void LinkBefore(ListHook* pos) noexcept {
    next_ = pos;
    prev_ = pos->prev_;
    prev_->next_ = this;
    pos->prev_ = this;
  }

  // Both null when unlinked; a list's sentinel points at itself when empty.
  ListHook* prev_ = nullptr;
  ListHook* next_ = nullptr;
};

// A circular list threaded through T::*Hook, with a sentinel in the list
// object. All operations are O(1) except clear() and size(), which are O(n).
template <typename T, ListHook T::*Hook>
class IntrusiveList {
 public:
  template <bool kConst>
  class Iterator;
  using iterator = Iterator<false>;
  using const_iterator = Iterator<true>;

  IntrusiveList() noexcept { head_.prev_ = head_.next_ = &head_; }
  ~IntrusiveList() { clear(); }

  IntrusiveList(const IntrusiveList&) = delete;
  IntrusiveList& operator=(const IntrusiveList&) = delete;

  // Takes every element of `other`, which is left empty. O(1).
  IntrusiveList(IntrusiveList&& other) noexcept : IntrusiveList() {
    Splice(other);
  }
  IntrusiveList& operator=(IntrusiveList&& other) noexcept {
    if (this != &other) {
      clear();
      Splice(other);
    }
    return *this;
  }

  bool empty() const noexcept { return head_.next_ == &head_; }

  // O(n): the list keeps no count, because an element may Unlink() itself
  // without the list knowing. Callers that need a count keep one.
  std::size_t size() const noexcept {
    std::size_t n = 0;
    for (const ListHook* h = head_.next_; h != &head_; h = h->next_) ++n;
    return n;
  }

  // The first / last element. The list must not be empty.
  T& front() noexcept { return *FromHook(head_.next_); }
  const T& front() const noexcept { return *FromHook(head_.next_); }
  T& back() noexcept { return *FromHook(head_.prev_); }
  const T& back() const noexcept { return *FromHook(head_.prev_); }

  // Links `item`, which must not be on any list through this hook. To move an
  // element between lists, Unlink() it first (or use MoveToBack()).
  void PushBack(T& item) noexcept { HookOf(item).LinkBefore(&head_); }
  void PushFront(T& item) noexcept { HookOf(item).LinkBefore(head_.next_); }
  // Links `item` just before `pos` (end() appends).
  void InsertBefore(const_iterator pos, T& item) noexcept {
    HookOf(item).LinkBefore(pos.cur_);
  }

  // Unlinks `item` from wherever it is and appends it here.
  void MoveToBack(T& item) noexcept {
    HookOf(item).Unlink();
    PushBack(item);
  }

  // Unlinks and returns the first / last element, or nullptr when empty.
  T* PopFront() noexcept { return Pop(head_.next_); }
  T* PopBack() noexcept { return Pop(head_.prev_); }

  // Unlinks `item`, which must be on this list (or on none). Same as
  // item.*Hook.Unlink(); here for symmetry with PushBack().
  static void Remove(T& item) noexcept { HookOf(item).Unlink(); }

  // Appends every element of `other` in order; `other` is left empty. O(1).
  void Splice(IntrusiveList& other) noexcept {
    if (other.empty() || &other == this) return;
    ListHook* first = other.head_.next_;
    ListHook* last = other.head_.prev_;
    other.head_.next_ = other.head_.prev_ = &other.head_;
    first->prev_ = head_.prev_;
    head_.prev_->next_ = first;
    last->next_ = &head_;
    head_.prev_ = last;
  }

  // Unlinks every element. O(n).
  void clear() noexcept {
    while (PopFront() != nullptr) {
    }
  }

  // Iteration in list order. The current element may be unlinked (or
  // destroyed) inside the loop body, because the iterator has already read
  // its successor; unlinking any *other* element during iteration is not
  // allowed, as with list_for_each_safe.
  template <bool kConst>
  class Iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using pointer = std::conditional_t<kConst, const T*, T*>;
    using reference = std::conditional_t<kConst, const T&, T&>;

    Iterator() = default;
    // iterator converts to const_iterator.
    template <bool kOtherConst,
              typename = std::enable_if_t<kConst && !kOtherConst>>
    Iterator(const Iterator<kOtherConst>& other)  // NOLINT: implicit
        : cur_(other.cur_), next_(other.next_) {}

    reference operator*() const { return *FromHook(cur_); }
    pointer operator->() const { return FromHook(cur_); }
    Iterator& operator++() {
      cur_ = next_;
      next_ = cur_->next_;
      return *this;
    }
    Iterator operator++(int) {
      Iterator old = *this;
      ++*this;
      return old;
    }
    friend bool operator==(const Iterator& a, const Iterator& b) {
      return a.cur_ == b.cur_;
    }
    friend bool operator!=(const Iterator& a, const Iterator& b) {
      return a.cur_ != b.cur_;
    }

   private:
    friend class IntrusiveList;
    template <bool>
    friend class Iterator;
    explicit Iterator(ListHook* cur) : cur_(cur), next_(cur->next_) {}

    ListHook* cur_ = nullptr;
    ListHook* next_ = nullptr;
  };

  iterator begin() noexcept { return iterator(head_.next_); }
  iterator end() noexcept { return iterator(&head_); }
  const_iterator begin() const noexcept {
    return const_iterator(const_cast<ListHook*>(head_.next_));
  }
  const_iterator end() const noexcept {
    return const_iterator(const_cast<ListHook*>(&head_));
  }

  // The iterator at `item`, which must be on this list.
  iterator IteratorTo(T& item) noexcept { return iterator(&HookOf(item)); }

 private:
  static ListHook& HookOf(T& item) noexcept { return item.*Hook; }

  static T* FromHook(const ListHook* hook) noexcept {
    return internal::ContainerOf(hook, Hook);
  }

  T* Pop(ListHook* hook) noexcept {
    if (hook == &head_) return nullptr;
    hook->Unlink();
    return FromHook(hook);
  }

  ListHook head_;
};

}  // namespace nbio

#endif  // NBIO_QUEUE_INTRUSIVE_LIST_H_
