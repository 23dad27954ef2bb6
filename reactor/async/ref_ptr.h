// RefCounted and RefPtr: single-threaded intrusive reference counting for
// the loop's shared states (futures, cancellation), instead of
// std::shared_ptr: the count lives in the object, so a state costs one
// allocation and a reference is one pointer (it fits absl::AnyInvocable's
// inline storage, so a task that holds one allocates nothing).
//
//   class State : public RefCounted { ... };
//   RefPtr<State> a(new State);   // count 1
//   RefPtr<State> b = a;          // count 2
//
// Thread safety: none. The count is a plain integer; every reference to an
// object lives on one thread (its loop's).
#ifndef NBIO_REACTOR_ASYNC_REF_PTR_H_
#define NBIO_REACTOR_ASYNC_REF_PTR_H_

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace nbio {

// A base for intrusively counted objects, deleted (through the virtual
// destructor) when the last reference goes. Starts at zero references: hand
// it to a RefPtr straight after `new`.
class RefCounted {
 public:
  RefCounted() = default;
  RefCounted(const RefCounted&) = delete;
  RefCounted& operator=(const RefCounted&) = delete;

  void AddRef() { ++refs_; }
  void Release() {
    if (--refs_ == 0) delete this;
  }
  // Whether the caller's reference is the only one.
  bool HasOneRef() const { return refs_ == 1; }

 protected:
  virtual ~RefCounted() = default;

 private:
  uint32_t refs_ = 0;
};

// An owning pointer to a RefCounted object: copies add a reference, the
// destructor drops one.
template <typename T>
class RefPtr {
 public:
  RefPtr() = default;
  RefPtr(std::nullptr_t) {}  // NOLINT: implicit, like a null pointer
  // Adds a reference to `p` (may be null).
  explicit RefPtr(T* p) : p_(p) {
    if (p_ != nullptr) p_->AddRef();
  }
  // Takes over a reference the caller already holds (see release()).
  static RefPtr Adopt(T* p) {
    RefPtr r;
    r.p_ = p;
    return r;
  }

  RefPtr(const RefPtr& other) : RefPtr(other.p_) {}
  RefPtr(RefPtr&& other) noexcept : p_(std::exchange(other.p_, nullptr)) {}
  template <typename U,
            typename = std::enable_if_t<std::is_convertible<U*, T*>::value>>
  RefPtr(RefPtr<U>&& other) noexcept  // NOLINT: implicit, like U* -> T*
      : p_(other.release()) {}
  template <typename U,
            typename = std::enable_if_t<std::is_convertible<U*, T*>::value>>
  RefPtr(const RefPtr<U>& other)  // NOLINT: implicit, like U* -> T*
      : RefPtr(other.get()) {}

  RefPtr& operator=(RefPtr other) noexcept {
    std::swap(p_, other.p_);
    return *this;
  }
  ~RefPtr() {
    if (p_ != nullptr) p_->Release();
  }

  T* get() const { return p_; }
  T* operator->() const { return p_; }
  T& operator*() const { return *p_; }
  explicit operator bool() const { return p_ != nullptr; }

  // Gives up the reference without dropping it: the caller now holds it
  // (and hands it to Adopt() later).
  [[nodiscard]] T* release() { return std::exchange(p_, nullptr); }
  void reset() { RefPtr().swap(*this); }
  void swap(RefPtr& other) noexcept { std::swap(p_, other.p_); }

  friend bool operator==(const RefPtr& a, std::nullptr_t) {
    return a.p_ == nullptr;
  }
  friend bool operator!=(const RefPtr& a, std::nullptr_t) {
    return a.p_ != nullptr;
  }

 private:
  T* p_ = nullptr;
};

}  // namespace nbio

#endif  // NBIO_REACTOR_ASYNC_REF_PTR_H_
