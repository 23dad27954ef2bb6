// ContainerOf: from a pointer to an embedded hook back to the object that
// embeds it, as the Linux kernel's container_of does, but typed and without
// offsetof on non-standard-layout types.
//
// Shared by the intrusive containers in //queue (and //timers): each element
// embeds a hook, the container stores hook pointers, and hands elements back
// with ContainerOf(hook, &Element::hook).
//
// Thread safety: pure functions. Complexity: O(1), no memory access beyond
// the pointer-to-member constant (which the compiler folds).
#ifndef NBIO_QUEUE_BASE_CONTAINER_OF_H_
#define NBIO_QUEUE_BASE_CONTAINER_OF_H_

#include <cstddef>
#include <cstring>

namespace nbio {
namespace internal {

// Byte offset of `member` inside T. Under the Itanium C++ ABI (GCC, Clang on
// Linux) a pointer to data member is represented as exactly that offset;
// reading it this way avoids the null-pointer arithmetic of offsetof-style
// tricks, which UBSan rightly flags on non-standard-layout types.
template <typename T, typename Hook>
std::ptrdiff_t MemberOffset(Hook T::*member) noexcept {
  static_assert(sizeof(member) == sizeof(std::ptrdiff_t),
                "pointer-to-member is not an offset on this ABI");
  std::ptrdiff_t offset;
  std::memcpy(&offset, &member, sizeof(offset));
  return offset;
}

// The T whose `member` is `*hook`. `hook` must point at that member of a live
// T (or of one whose storage is still valid).
template <typename T, typename Hook>
T* ContainerOf(const Hook* hook, Hook T::*member) noexcept {
  return reinterpret_cast<T*>(
      const_cast<char*>(reinterpret_cast<const char*>(hook)) -
      MemberOffset(member));
}

}  // namespace internal
}  // namespace nbio

#endif  // NBIO_QUEUE_BASE_CONTAINER_OF_H_
