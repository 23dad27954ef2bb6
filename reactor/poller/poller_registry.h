// Creating a poller backend by name, at run time.
//
//   absl::StatusOr<std::unique_ptr<Poller>> p = CreatePoller("epoll");
//
// Names: "epoll" (the default where available), "poll", "select". The empty
// name and "default" pick the best available. An unknown name is an
// INVALID_ARGUMENT error that lists the known ones. Adding a backend means one
// line in the table in poller_registry.cc; the loop does not change.
#ifndef NBIO_REACTOR_POLLER_POLLER_REGISTRY_H_
#define NBIO_REACTOR_POLLER_POLLER_REGISTRY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "reactor/poller/poller.h"

namespace nbio {

absl::StatusOr<std::unique_ptr<Poller>> CreatePoller(absl::string_view name);

// Every backend name, best first.
std::vector<std::string> PollerNames();

// The name CreatePoller("") picks on this machine.
std::string DefaultPollerName();

}  // namespace nbio

#endif  // NBIO_REACTOR_POLLER_POLLER_REGISTRY_H_
