#include "reactor/poller/poller_registry.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "reactor/poller/epoll_poller.h"
#include "reactor/poller/poll_poller.h"
#include "reactor/poller/select_poller.h"
#include "reactor/poller/uring_poller.h"
#include "reactor/poller/uring_stream_poller.h"

namespace nbio {
namespace {

struct Backend {
  const char* name;
  absl::StatusOr<std::unique_ptr<Poller>> (*create)();
};

// Best first: the default is the first one that can be created.
constexpr Backend kBackends[] = {
    {"epoll",
     []() -> absl::StatusOr<std::unique_ptr<Poller>> {
       absl::StatusOr<std::unique_ptr<EpollPoller>> p = EpollPoller::Create();
       if (!p.ok()) return p.status();
       return std::unique_ptr<Poller>(std::move(*p));
     }},
    {"poll",
     []() -> absl::StatusOr<std::unique_ptr<Poller>> {
       return std::unique_ptr<Poller>(new PollPoller());
     }},
    {"select",
     []() -> absl::StatusOr<std::unique_ptr<Poller>> {
       return std::unique_ptr<Poller>(new SelectPoller());
     }},
    // Not the default (see README.md, "Backends"). Stream I/O on direct
    // descriptors: connections a TcpServer accepts take no process fd.
    {"io_uring",
     []() -> absl::StatusOr<std::unique_ptr<Poller>> {
       absl::StatusOr<std::unique_ptr<UringStreamPoller>> p =
           UringStreamPoller::Create();
       if (!p.ok()) return p.status();
       return std::unique_ptr<Poller>(std::move(*p));
     }},
    // Readiness only, over IORING_OP_POLL_ADD: everything built on the
    // Poller contract runs over io_uring too. It costs a request per event
    // where epoll re-arms nothing.
    {"io_uring_poll",
     []() -> absl::StatusOr<std::unique_ptr<Poller>> {
       absl::StatusOr<std::unique_ptr<UringPoller>> p = UringPoller::Create();
       if (!p.ok()) return p.status();
       return std::unique_ptr<Poller>(std::move(*p));
     }},
};

}  // namespace

absl::StatusOr<std::unique_ptr<Poller>> CreatePoller(absl::string_view name) {
  if (name.empty() || name == "default") {
    absl::Status first_error;
    for (const Backend& b : kBackends) {
      absl::StatusOr<std::unique_ptr<Poller>> p = b.create();
      if (p.ok()) return p;
      if (first_error.ok()) first_error = p.status();
    }
    return first_error;
  }
  for (const Backend& b : kBackends) {
    if (name == b.name) return b.create();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown poller backend \"", name,
      "\"; expected one of: ", absl::StrJoin(PollerNames(), ", ")));
}

std::vector<std::string> PollerNames() {
  std::vector<std::string> names;
  for (const Backend& b : kBackends) names.push_back(b.name);
  return names;
}

std::string DefaultPollerName() {
  absl::StatusOr<std::unique_ptr<Poller>> p = CreatePoller("");
  return p.ok() ? (*p)->name() : "";
}

}  // namespace nbio
