#include "echo/socket_activation.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "reactor/sys/syscall.h"

namespace nbio {
namespace {

// Unsets the three variables when it goes out of scope, on every path.
class UnsetListenEnvironment {
 public:
  ~UnsetListenEnvironment() {
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
  }
};

absl::StatusOr<std::vector<ListenFd>> Take(int first_fd) {
  std::vector<ListenFd> none;
  const char* pid_text = std::getenv("LISTEN_PID");
  if (pid_text == nullptr) return none;
  int64_t pid = 0;
  if (!absl::SimpleAtoi(pid_text, &pid) || pid <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LISTEN_PID=", pid_text, ": not a process id"));
  }
  // Meant for another process (ours inherited the environment): not ours.
  if (pid != static_cast<int64_t>(getpid())) return none;
  const char* count_text = std::getenv("LISTEN_FDS");
  if (count_text == nullptr) return none;
  int count = 0;
  if (!absl::SimpleAtoi(count_text, &count) || count < 0 ||
      count > INT_MAX - first_fd) {
    return absl::InvalidArgumentError(
        absl::StrCat("LISTEN_FDS=", count_text, ": not a descriptor count"));
  }
  if (count == 0) return none;
  std::vector<std::string> names(count, "unknown");
  if (const char* names_text = std::getenv("LISTEN_FDNAMES")) {
    std::vector<std::string> given = absl::StrSplit(names_text, ':');
    if (given.size() != static_cast<size_t>(count)) {
      return absl::InvalidArgumentError(
          absl::StrCat("LISTEN_FDNAMES=", names_text, ": ", given.size(),
                       " names for LISTEN_FDS=", count));
    }
    names = std::move(given);
  }
  std::vector<ListenFd> fds;
  for (int i = 0; i < count; ++i) {
    const int fd = first_fd + i;
    // The flag is ours to set: systemd passes them inheritable, and a child
    // we start must not keep our listeners open.
    const int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0) {
      return ErrnoStatus(
          absl::StrCat("LISTEN_FDS=", count, ": fcntl(", fd, ", FD_CLOEXEC)"),
          errno);
    }
    fds.push_back({fd, std::move(names[i])});
  }
  return fds;
}

}  // namespace

absl::StatusOr<std::vector<ListenFd>> TakeListenFds(int first_fd) {
  UnsetListenEnvironment unset;
  return Take(first_fd);
}

}  // namespace nbio
