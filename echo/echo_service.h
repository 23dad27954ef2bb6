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
// Ending: Drain() half-closes every connection at once (fast);
// DrainWaitingForPeers() keeps serving them until their peers close, and
// CutRemaining() ends what is left at a deadline.
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
    // Since DrainWaitingForPeers() began: connections that ended (by their
    // peers or otherwise) and those cut by CutRemaining().
    uint64_t drain_closed = 0;
    uint64_t drain_cut = 0;
  };

  // What CutRemaining() cut.
  struct CutReport {
    uint64_t connections = 0;
    uint64_t queued_bytes = 0;  // echo waiting in our output queues
    // Received by the kernel, not read yet (FIONREAD). On io_uring, bytes
    // already in the ring's buffers are delivered and echoed first, so they
    // count as queued.
    uint64_t unread_bytes = 0;
  };

  static absl::StatusOr<std::unique_ptr<EchoService>> Create(EventLoop* loop,
                                                             Options options);
  ~EchoService() override;

  const SocketAddress& address() const { return server_->address(); }

  // Fast end (echo_server --drain=shutdown): stop accepting (taking what is
  // queued on the listener); every connection has what it already sent
  // echoed, then is half-closed, and closes once its peer closes. `done`
  // runs when the last connection is gone.
  void Drain(absl::AnyInvocable<void()> done);

  // Soft stop (HAProxy's soft-stop, nginx's graceful quit): stop accepting
  // (taking what is queued on the listener), and keep serving every
  // connection as before, reading and echoing, until its peer ends it (EOF:
  // the rest is echoed, then our side closes) or it ends otherwise. `done`
  // runs once no connection is left, at once if there is none. Nothing a
  // peer sends before it closes is dropped. Call once.
  void DrainWaitingForPeers(absl::AnyInvocable<void()> done);

  // Ends every connection now (CANCELLED) and says what they still held.
  // A drain in progress then finishes (its `done` runs). From outside the
  // connections' callbacks (a deadline timer): on io_uring it first runs
  // the completions already in, which a callback is one of.
  CutReport CutRemaining();

  // Connections open now (not counting those whose OnClosed already ran).
  size_t open_connections() const { return open_count_; }

  Stats stats() const;

  // ConnectionHandler.
  void OnAccept(TcpConnection* conn) override;
  void OnData(TcpConnection* conn, absl::string_view bytes) override;
  void OnClosed(TcpConnection* conn, const absl::Status& reason) override;

 private:
  EchoService() = default;
  // The last connection of a DrainWaitingForPeers() is gone.
  void FinishWaiting();

  std::unique_ptr<TcpServer> server_;
  uint64_t connections_reset_ = 0;
  // Connections between OnAccept and OnClosed. A count, not a set: a cut
  // walks the context's connections instead (TcpContext::ForEachConnection),
  // which keeps an idle connection within its memory budget.
  size_t open_count_ = 0;
  bool draining_ = false;  // either kind of drain began
  bool waiting_for_peers_ = false;
  absl::AnyInvocable<void()> drain_done_;
  uint64_t drain_closed_ = 0;
  uint64_t drain_cut_ = 0;
};

}  // namespace nbio

#endif  // NBIO_ECHO_ECHO_SERVICE_H_
