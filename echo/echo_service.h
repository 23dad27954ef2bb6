// EchoService: the seed's echo server, done properly, on one event loop.
//
// Every byte a client sends comes back, in order, on the same connection.
// Built from the public TCP API only (TcpServer + ConnectionHandler), as a
// user would write it; the echo_server binary runs one EchoService per
// reactor thread.
//
//   EchoService::Options options;
//   options.server.address = *SocketAddress::Parse("127.0.0.1:7007");
//   absl::StatusOr<std::unique_ptr<EchoService>> echo =
//       EchoService::Create(loop, std::move(options));
//   loop->Run();
//
// Backpressure comes from the TCP layer: a client that sends without reading
// makes the service stop reading from it once `high_watermark` bytes wait to
// be echoed, so memory per connection stays bounded.
//
// Threading: loop thread only. Owns its TcpServer and connections.
#ifndef NBIO_ECHO_ECHO_SERVICE_H_
#define NBIO_ECHO_ECHO_SERVICE_H_

#include <cstdint>
#include <memory>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "reactor/event_loop.h"
#include "reactor/net/tcp_connection.h"
#include "reactor/net/tcp_server.h"

namespace nbio {

class EchoService : public ConnectionHandler {
 public:
  struct Options {
    // Listen address, limits, watermarks, idle timeout, SO_REUSEPORT.
    TcpServerOptions server;
  };

  // What the service has done, for stats lines and tests.
  struct Stats {
    TcpStats tcp;
    TcpServerStats server;
    uint64_t connections_reset = 0;  // ended with an error from the peer
  };

  static absl::StatusOr<std::unique_ptr<EchoService>> Create(EventLoop* loop,
                                                             Options options);
  ~EchoService() override;

  const SocketAddress& address() const { return server_->address(); }

  // Graceful end: stop accepting; every connection has what it already sent
  // echoed, then is half-closed, and closes once its peer closes. `done`
  // runs when the last connection is gone.
  void Drain(absl::AnyInvocable<void()> done) { server_->Drain(std::move(done)); }
  // Ends every connection now (CANCELLED).
  void CloseAll() { server_->context()->CloseAll(absl::CancelledError("shutting down")); }

  Stats stats() const;

  // ConnectionHandler.
  void OnAccept(TcpConnection* conn) override;
  void OnData(TcpConnection* conn, absl::string_view bytes) override;
  void OnClosed(TcpConnection* conn, const absl::Status& reason) override;

 private:
  EchoService() = default;

  std::unique_ptr<TcpServer> server_;
  uint64_t connections_reset_ = 0;
};

}  // namespace nbio

#endif  // NBIO_ECHO_ECHO_SERVICE_H_
