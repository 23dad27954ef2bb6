#include "reactor/async/future.h"

#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"

namespace nbio {
namespace {

constexpr absl::string_view kBrokenPromiseUrl = "nbio.dev/broken-promise";

}  // namespace

absl::Status BrokenPromiseError() {
  absl::Status status = absl::CancelledError("broken promise");
  status.SetPayload(kBrokenPromiseUrl, absl::Cord());
  return status;
}

bool IsBrokenPromise(const absl::Status& status) {
  return absl::IsCancelled(status) &&
         status.GetPayload(kBrokenPromiseUrl).has_value();
}

}  // namespace nbio
