// Test helpers for TcpConnection / TcpServer / TcpContext tests: a
// ConnectionHandler that records what happened. For tests only (testonly
// target).
#ifndef NBIO_REACTOR_TESTING_TCP_TEST_UTIL_H_
#define NBIO_REACTOR_TESTING_TCP_TEST_UTIL_H_

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "reactor/net/tcp_connection.h"
#include "reactor/sys/socket_address.h"

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

// A non-blocking loopback client socket with what it received so far.
class TestClient {
 public:
  explicit TestClient(const SocketAddress& to) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd_, 0);
    const int r = connect(fd_, to.sockaddr_ptr(), to.sockaddr_len());
    EXPECT_TRUE(r == 0 || errno == EINPROGRESS) << errno;
  }
  ~TestClient() {
    if (fd_ >= 0) close(fd_);
  }
  int fd() const { return fd_; }

  // Sends as much of `pending_` + `data` as the socket takes now.
  void Send(absl::string_view data) {
    pending_.append(data.data(), data.size());
    Flush();
  }
  void Flush() {
    while (!pending_.empty()) {
      const ssize_t n =
          send(fd_, pending_.data(), pending_.size(), MSG_NOSIGNAL);
      if (n <= 0) break;
      pending_.erase(0, n);
    }
  }
  bool all_sent() const { return pending_.empty(); }

  // Reads what is available. Returns false once EOF or an error was seen.
  bool Receive() {
    char buf[65536];
    for (;;) {
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n > 0) {
        received_.append(buf, n);
        continue;
      }
      if (n == 0) eof_ = true;
      if (n < 0 && errno != EAGAIN) error_ = errno;
      return !(eof_ || error_ != 0);
    }
  }
  const std::string& received() const { return received_; }
  bool eof() const { return eof_; }
  int error() const { return error_; }

  void ShutdownWrite() { shutdown(fd_, SHUT_WR); }
  // Close with RST instead of FIN.
  void Reset() {
    linger l{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::string pending_;
  std::string received_;
  bool eof_ = false;
  int error_ = 0;
};

}  // namespace nbio

#endif  // NBIO_REACTOR_TESTING_TCP_TEST_UTIL_H_
