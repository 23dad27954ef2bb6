// Test helpers for TcpConnection / TcpServer / TcpContext tests: a
// ConnectionHandler that records what happened. For tests only (testonly
// target).
#ifndef NBIO_REACTOR_TESTING_TCP_TEST_UTIL_H_
#define NBIO_REACTOR_TESTING_TCP_TEST_UTIL_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "reactor/net/tcp_connection.h"

namespace nbio {

// Counts accepts and drains, keeps each connection's close reason, starts
// reading on every accepted connection and, as configured, echoes and keeps
// the bytes it reads. Loop thread only, like any handler; it must outlive the
// contexts that call it.
class RecordingHandler : public ConnectionHandler {
 public:
  // Increments `accepted`, calls StartReading(), then runs on_accept if set.
  void OnAccept(TcpConnection* conn) override;
  // Appends the bytes to `data` when keep_data; then runs on_data if set, or
  // else, when echo, writes the bytes back (expecting Write to accept them).
  void OnData(TcpConnection* conn, absl::string_view bytes) override;
  void OnDrained(TcpConnection*) override { ++drained; }
  // Appends the reason to `closed`, then runs on_closed if set.
  void OnClosed(TcpConnection* conn, const absl::Status& reason) override {
    closed.push_back(reason);
    if (on_closed) on_closed(conn, reason);
  }

  bool echo = false;
  bool keep_data = false;
  std::function<void(TcpConnection*)> on_accept;
  // Runs instead of the echo.
  std::function<void(TcpConnection*, absl::string_view)> on_data;
  std::function<void(TcpConnection*, const absl::Status&)> on_closed;

  int accepted = 0;
  int drained = 0;
  std::string data;  // every byte read, over all connections, if keep_data
  std::vector<absl::Status> closed;
};

}  // namespace nbio

#endif  // NBIO_REACTOR_TESTING_TCP_TEST_UTIL_H_
