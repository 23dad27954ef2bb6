// TcpServer: a listening socket that feeds accepted connections to a
// TcpContext.
//
//   TcpServerOptions options;
//   options.address = *SocketAddress::Parse("127.0.0.1:7007");
//   absl::StatusOr<std::unique_ptr<TcpServer>> server =
//       TcpServer::Create(loop, &handler, std::move(options));
//   if (!server.ok()) ...  // "bind(127.0.0.1:7007): Address already in use
//                          //  [EADDRINUSE]"
//
// Accepting: at most max_accepts_per_wakeup per readiness event, so a connect
// flood cannot starve established connections. Beyond max_connections a new
// connection is accepted and closed at once (counted). ECONNABORTED and EINTR
// are retried quietly.
//
// Descriptor exhaustion (EMFILE / ENFILE, also ENOBUFS / ENOMEM): the server
// keeps one reserve descriptor open. When accept() runs out, it releases the
// reserve, accepts and closes every pending connection (so those peers are
// refused cleanly instead of waiting in the backlog), takes the reserve back,
// and stops accepting for `accept_backoff`; existing connections keep being
// served, nothing spins, and accepting resumes by itself once descriptors are
// free again. (muduo's reserve-fd technique plus libuv-style backoff.)
//
// On a completion backend (EventLoop::streams(), "io_uring") the kernel
// accepts: connections go straight into the backend's tables (io_uring
// direct descriptors), take no process descriptor, and are not limited by
// RLIMIT_NOFILE; the descriptor-exhaustion handling above is then not
// needed. Should the backend be unable to accept (it cannot set up more
// rings), the server says why through on_refused and accepts by itself.
//
// Serving a socket someone else bound (systemd socket activation, a dup of
// another server's listener): set `listen_fd` instead of binding `address`.
//
// Closing a listener resets the connections still queued on it (the kernel
// completed their handshakes, the peers may have sent data), unless the
// socket is in an SO_REUSEPORT group and net.ipv4.tcp_migrate_req=1, in
// which case the kernel moves them to another listener of the group. So
// Drain() and StopAcceptingKeepQueued() first accept what is queued and
// serve it, then close.
//
// Threading: loop thread only. Ownership: the server owns its socket and its
// connections (through its TcpContext); the handler must outlive it.
#ifndef NBIO_REACTOR_NET_TCP_SERVER_H_
#define NBIO_REACTOR_NET_TCP_SERVER_H_

#include <cstdint>
#include <memory>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "reactor/event_loop.h"
#include "reactor/net/tcp_connection.h"
#include "reactor/sys/socket_address.h"

namespace nbio {

struct TcpServerOptions {
  // Port 0 picks a free port; address() tells which.
  SocketAddress address = SocketAddress::Loopback4(0);
  // The accept queue's length. The default asks for as much as the system
  // allows (the kernel caps it at net.core.somaxconn, 4096 by default): a
  // burst of connects that finds the queue full has its SYNs or final ACKs
  // dropped, and those clients wait seconds for retransmits while the
  // server is busy.
  int backlog = 65535;
  // SO_REUSEPORT: several servers (one per thread) share the address and the
  // kernel spreads connections among them.
  bool reuse_port = false;
  // An already listening stream socket to serve instead of binding
  // `address` (socket activation). The server owns it from Create() on, even
  // when Create() fails, makes it non-blocking and close-on-exec, and checks
  // that it is a listening TCP socket. `address`, `backlog` and `reuse_port`
  // are then unused. -1: bind `address`.
  int listen_fd = -1;
  // 0: no limit.
  size_t max_connections = 0;
  int max_accepts_per_wakeup = 64;
  // How long accepting pauses after running out of descriptors.
  absl::Duration accept_backoff = absl::Milliseconds(100);
  // Told of every refused connection and accept error, with the reason
  // (RESOURCE_EXHAUSTED for the fd limit or the select ceiling,
  // UNAVAILABLE for max_connections). May be empty. Rate-limit in it.
  absl::AnyInvocable<void(const absl::Status&)> on_refused;
  TcpOptions tcp;
};

struct TcpServerStats {
  uint64_t accepted = 0;
  uint64_t refused_over_limit = 0;  // max_connections
  uint64_t refused_no_fds =
      0;  // EMFILE/ENFILE: accepted with the reserve, closed
  uint64_t refused_unwatchable = 0;  // the poller cannot watch the fd (select)
  uint64_t fd_exhaustion_events = 0;
  uint64_t accept_errors = 0;  // anything else
};

class TcpServer {
 public:
  // socket, bind, listen and register (or, with options.listen_fd, check
  // and register that socket); each failure names the syscall, the address
  // and errno.
  static absl::StatusOr<std::unique_ptr<TcpServer>> Create(
      EventLoop* loop, ConnectionHandler* handler, TcpServerOptions options);
  // Closes the listening socket and every connection (OnClosed: CANCELLED).
  ~TcpServer();

  TcpServer(const TcpServer&) = delete;
  TcpServer& operator=(const TcpServer&) = delete;

  // The bound address (with the real port when 0 was asked for).
  const SocketAddress& address() const { return address_; }

  // Closes the listening socket; existing connections are unaffected.
  // Connections still queued on it are reset (see the file comment).
  void StopAccepting();
  // Accepts every connection already queued on the listening socket (each
  // becomes a connection like any other: OnAccept runs for it, within
  // max_connections), then closes the socket. Returns how many it accepted.
  size_t StopAcceptingKeepQueued();
  bool is_accepting() const { return listen_fd_ >= 0; }

  // StopAcceptingKeepQueued(), then drains every connection
  // (TcpContext::Drain); `done` runs once all of them have closed.
  void Drain(absl::AnyInvocable<void()> done);

  TcpContext* context() { return &context_; }
  const TcpContext* context() const { return &context_; }
  const TcpServerStats& stats() const { return stats_; }

 private:
  TcpServer(EventLoop* loop, ConnectionHandler* handler,
            TcpServerOptions options, int listen_fd, SocketAddress address);

  void OnListenReady();
  // Accepting through the loop's stream engine (a completion backend).
  absl::Status StartEngineAccept();
  static void* OnEngineAccept(void* server, StreamEngine::Handle h);
  static void OnEngineListenFailed(void* server, const absl::Status& why);
  // Up to `max` accept() calls; returns how many took a connection off the
  // queue (adopted or refused), so 0 means the queue is empty.
  size_t AcceptSome(int max);
  void OnFdExhaustion(int err);
  void ResumeAccepting();
  void Refuse(const absl::Status& reason);
  // At max_connections: counts and reports the refusal (the caller closes
  // the connection) and returns true.
  bool RefuseOverLimit();

  TcpServerOptions options_;
  int listen_fd_;
  SocketAddress address_;
  int reserve_fd_ = -1;
  bool engine_accepts_ = false;  // the stream engine accepts for us
  FdWatcher listen_watcher_;
  Timer backoff_timer_;
  TcpContext context_;
  TcpServerStats stats_;
};

}  // namespace nbio

#endif  // NBIO_REACTOR_NET_TCP_SERVER_H_
