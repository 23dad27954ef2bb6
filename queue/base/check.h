// NBIO_CHECK: abort with file, line and condition when an invariant is broken.
//
// For broken invariants only: a caller's contract violated, a state that
// cannot happen. Errors that can happen (a syscall failing, bad input from a
// peer or a flag) are returned as absl::Status instead. Abseil 20220623 has no
// absl/log, hence this macro. It lives in //queue because queue is the bottom
// layer that timers, reactor and echo all build on.
//
//   NBIO_CHECK(node->is_linked());
//   NBIO_CHECK_MSG(fd < FD_SETSIZE, "select backend cannot watch this fd");
//   NBIO_DCHECK(InLoopThread());   // compiled out under NDEBUG (-c opt)
#ifndef NBIO_QUEUE_BASE_CHECK_H_
#define NBIO_QUEUE_BASE_CHECK_H_

namespace nbio {
namespace internal {

// Prints "file:line: check failed: condition (message)" to stderr and aborts.
[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              const char* message);

}  // namespace internal
}  // namespace nbio

#define NBIO_CHECK_MSG(condition, message)                          \
  do {                                                              \
    if (__builtin_expect(!(condition), 0)) {                        \
      ::nbio::internal::CheckFailed(__FILE__, __LINE__, #condition, \
                                    (message));                     \
    }                                                               \
  } while (false)

#define NBIO_CHECK(condition) NBIO_CHECK_MSG(condition, nullptr)

#ifdef NDEBUG
#define NBIO_DCHECK(condition) \
  do {                         \
    if (false) {               \
      (void)(condition);       \
    }                          \
  } while (false)
#else
#define NBIO_DCHECK(condition) NBIO_CHECK(condition)
#endif

#endif  // NBIO_QUEUE_BASE_CHECK_H_
