// Socket activation the way systemd passes sockets, without libsystemd:
// sd_listen_fds(3) semantics.
//
//   absl::StatusOr<std::vector<ListenFd>> fds = TakeListenFds();
//   if (!fds.ok()) ...             // "LISTEN_FDS=x: not a number"
//   for (const ListenFd& s : *fds) // s.fd is 3, 4, ...; s.name from
//   LISTEN_FDNAMES
//
// The service manager (systemd, or anything that does the same) binds the
// sockets, passes them as descriptors 3, 4, ... and sets LISTEN_FDS (how
// many), LISTEN_PID (the pid they are meant for: a process that inherited
// the environment but is not that pid must not take them) and optionally
// LISTEN_FDNAMES (colon-separated names, FileDescriptorName= in the unit).
//
// Threading: call once, at start-up, before any thread is started (it
// changes the environment). Not thread-safe.
#ifndef NBIO_ECHO_SOCKET_ACTIVATION_H_
#define NBIO_ECHO_SOCKET_ACTIVATION_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace nbio {

// sd_listen_fds' SD_LISTEN_FDS_START.
constexpr int kListenFdsStart = 3;

struct ListenFd {
  int fd;
  std::string name;  // from LISTEN_FDNAMES, or "unknown" as systemd says
};

// Reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES and unsets all three
// (whatever the outcome, as sd_listen_fds(1) does, so that children do not
// see them). Returns no descriptor when LISTEN_PID is unset or names
// another process, or LISTEN_FDS is unset or 0. Otherwise marks descriptors
// first_fd .. first_fd + LISTEN_FDS - 1 close-on-exec and returns them;
// the caller owns them. An unparsable variable, a name list of the wrong
// length or a descriptor that is not open is INVALID_ARGUMENT (or the
// fcntl error), and no descriptor is returned.
//
// `first_fd` is for tests; systemd always starts at 3.
absl::StatusOr<std::vector<ListenFd>> TakeListenFds(
    int first_fd = kListenFdsStart);

}  // namespace nbio

#endif  // NBIO_ECHO_SOCKET_ACTIVATION_H_
