// FaultyEchoServer: a test-only TCP echo server on a thread, correct or with
// one deliberate fault per connection, to check that //tools:echo_load
// catches every kind of wrong echo.
//
// Each connection's received bytes are numbered from 0; the fault hits byte
// `offset` (and for kReorder also offset + 1) of every connection, once.
// With echo_load's --size=64 ping-pong, offset 127 is the last byte of the
// second message and 100 lies inside it.
//
// Serves on its own thread with poll(); the destructor stops and joins it.
// Not thread-safe beyond that: construct, read port(), destroy.
#ifndef NBIO_TOOLS_FAULTY_ECHO_SERVER_H_
#define NBIO_TOOLS_FAULTY_ECHO_SERVER_H_

#include <cstdint>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"

namespace nbio {
namespace load {

enum class Fault {
  kNone,     // a correct echo server
  kDrop,     // byte `offset` is not echoed
  kReorder,  // bytes `offset` and `offset + 1` are echoed swapped
  kCorrupt,  // byte `offset` is echoed with its bits flipped
  kExtra,    // one byte more is echoed right after byte `offset`
  kReset,    // the connection is reset (RST) when byte `offset` arrives,
             // without echoing the bytes read with it
  kReject,   // every connection is closed as soon as it is accepted
  kSilent,   // reads everything, echoes nothing
};

class FaultyEchoServer {
 public:
  // Listens on 127.0.0.1 (any free port) and starts serving.
  static absl::StatusOr<std::unique_ptr<FaultyEchoServer>> Start(
      Fault fault, uint64_t offset = 0);

  ~FaultyEchoServer();
  FaultyEchoServer(const FaultyEchoServer&) = delete;
  FaultyEchoServer& operator=(const FaultyEchoServer&) = delete;

  uint16_t port() const { return port_; }

 private:
  FaultyEchoServer(Fault fault, uint64_t offset, int listen_fd, int stop_fd,
                   int stop_write_fd, uint16_t port);
  void Serve();

  const Fault fault_;
  const uint64_t offset_;
  const int listen_fd_;
  const int stop_fd_;        // read end of the stop pipe
  const int stop_write_fd_;  // write end
  const uint16_t port_;
  std::thread thread_;
};

}  // namespace load
}  // namespace nbio

#endif  // NBIO_TOOLS_FAULTY_ECHO_SERVER_H_
