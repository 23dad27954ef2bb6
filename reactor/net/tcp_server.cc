#include "reactor/net/tcp_server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "reactor/sys/syscall.h"

namespace nbio {
namespace {

int OpenReserveFd() { return open("/dev/null", O_RDONLY | O_CLOEXEC); }

// Checks that `fd`, given by someone else, is a listening TCP socket, and
// makes it non-blocking and close-on-exec (systemd passes them blocking).
absl::Status PrepareInheritedListener(int fd) {
  const std::string what = absl::StrCat("inherited fd ", fd);
  int value = 0;
  socklen_t len = sizeof(value);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &len) != 0) {
    return ErrnoStatus(absl::StrCat("getsockopt(", what, ", SO_TYPE)"), errno);
  }
  if (value != SOCK_STREAM) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is not a stream socket"));
  }
  len = sizeof(value);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &value, &len) != 0) {
    return ErrnoStatus(absl::StrCat("getsockopt(", what, ", SO_DOMAIN)"),
                       errno);
  }
  if (value != AF_INET && value != AF_INET6) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is not an IPv4 or IPv6 socket"));
  }
  len = sizeof(value);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &len) != 0) {
    return ErrnoStatus(absl::StrCat("getsockopt(", what, ", SO_ACCEPTCONN)"),
                       errno);
  }
  if (value == 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not listening"));
  }
  // The file status flags belong to the open file description, which the
  // process that passed the socket shares: systemd does not mind, and a
  // blocking accept() would stall the loop.
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoStatus(absl::StrCat("fcntl(", what, ", O_NONBLOCK)"), errno);
  }
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    return ErrnoStatus(absl::StrCat("fcntl(", what, ", FD_CLOEXEC)"), errno);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpServer>> TcpServer::Create(
    EventLoop* loop, ConnectionHandler* handler, TcpServerOptions options) {
  if (options.listen_fd >= 0) {
    const int fd = options.listen_fd;
    absl::Status ready = PrepareInheritedListener(fd);
    absl::StatusOr<SocketAddress> bound =
        ready.ok() ? SocketAddress::LocalOf(fd) : ready;
    if (!bound.ok()) {
      close(fd);
      return bound.status();
    }
    std::unique_ptr<TcpServer> server(
        new TcpServer(loop, handler, std::move(options), fd, *bound));
    absl::Status status = server->StartEngineAccept();
    if (!status.ok()) return status;  // the server's destructor closes fd
    return server;
  }
  const SocketAddress& want = options.address;
  const std::string where = want.ToString();
  const int fd =
      socket(want.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus(absl::StrCat("socket(", where, ")"), errno);
  auto fail = [fd](absl::Status status) {
    close(fd);
    return status;
  };
  const int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) {
    return fail(ErrnoStatus("setsockopt(SO_REUSEADDR)", errno));
  }
  if (options.reuse_port &&
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    return fail(ErrnoStatus("setsockopt(SO_REUSEPORT)", errno));
  }
  if (bind(fd, want.sockaddr_ptr(), want.sockaddr_len()) != 0) {
    return fail(ErrnoStatus(absl::StrCat("bind(", where, ")"), errno));
  }
  if (listen(fd, options.backlog) != 0) {
    return fail(ErrnoStatus(absl::StrCat("listen(", where, ")"), errno));
  }
  absl::StatusOr<SocketAddress> bound = SocketAddress::LocalOf(fd);
  if (!bound.ok()) return fail(bound.status());
  std::unique_ptr<TcpServer> server(
      new TcpServer(loop, handler, std::move(options), fd, *bound));
  absl::Status status = server->StartEngineAccept();
  if (!status.ok()) return status;  // the server's destructor closes fd
  return server;
}

absl::Status TcpServer::StartEngineAccept() {
  StreamEngine* streams = context_.loop()->streams();
  if (streams == nullptr) return listen_watcher_.SetInterest(kReadable);
  static const StreamEngine::Upcalls kUpcalls = {
      &TcpServer::OnEngineAccept,
      &TcpConnection::OnEngineReceiveLimit,
      &TcpConnection::OnEngineData,
      &TcpConnection::OnEngineReceiveEnd,
      &TcpConnection::OnEngineSendDone,
      &TcpConnection::OnEngineShutdownDone,
      &TcpConnection::OnEngineReleased,
      &TcpServer::OnEngineListenFailed,
  };
  if (options_.tcp.no_delay) {
    // The kernel accepts for us: accepted sockets inherit TCP_NODELAY from
    // the listener.
    const int one = 1;
    setsockopt(listen_fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  absl::Status status = streams->Listen(listen_fd_, &kUpcalls, this);
  if (!status.ok()) {
    Refuse(status);
    return listen_watcher_.SetInterest(kReadable);
  }
  engine_accepts_ = true;
  return absl::OkStatus();
}

void* TcpServer::OnEngineAccept(void* s, StreamEngine::Handle h) {
  auto* self = static_cast<TcpServer*>(s);
  if (self->RefuseOverLimit()) return nullptr;  // the engine closes it
  TcpContext::CallbackScope scope(&self->context_);
  TcpConnection* conn = self->context_.AdoptHandle(h);
  if (conn != nullptr) ++self->stats_.accepted;
  return conn;
}

void TcpServer::OnEngineListenFailed(void* s, const absl::Status& why) {
  auto* self = static_cast<TcpServer*>(s);
  ++self->stats_.accept_errors;
  self->Refuse(why);
  // Accept by ourselves from here (the engine's rings keep what they hold).
  self->engine_accepts_ = false;
  if (self->listen_fd_ >= 0) {
    absl::Status status = self->listen_watcher_.SetInterest(kReadable);
    if (!status.ok()) self->Refuse(status);
  }
}

TcpServer::TcpServer(EventLoop* loop, ConnectionHandler* handler,
                     TcpServerOptions options, int listen_fd,
                     SocketAddress address)
    : options_(std::move(options)),
      listen_fd_(listen_fd),
      address_(address),
      reserve_fd_(OpenReserveFd()),
      listen_watcher_(loop, listen_fd, [this](uint32_t) { OnListenReady(); }),
      backoff_timer_(loop, [this] { ResumeAccepting(); }),
      context_(loop, handler, options_.tcp) {}

TcpServer::~TcpServer() {
  StopAccepting();
  if (reserve_fd_ >= 0) close(reserve_fd_);
}

void TcpServer::StopAccepting() {
  if (listen_fd_ < 0) return;
  if (engine_accepts_) {
    // Connections the kernel has already taken are closed (as closing the
    // listener resets those still queued).
    context_.loop()->streams()->StopListening(this, /*deliver=*/false);
  }
  listen_watcher_.Stop();
  backoff_timer_.Cancel();
  close(listen_fd_);
  listen_fd_ = -1;
}

size_t TcpServer::StopAcceptingKeepQueued() {
  if (listen_fd_ < 0) return 0;
  // Bounded by the backlog: once the queue is empty, EAGAIN ends it (a peer
  // connecting meanwhile is accepted too; that is still finite). During an
  // fd-exhaustion backoff the accept fails again and the rest is reset.
  const uint64_t accepted_before = stats_.accepted;
  if (engine_accepts_) {
    // What the kernel has accepted becomes connections now; what is still
    // queued is taken below, as ordinary descriptors.
    context_.loop()->streams()->StopListening(this, /*deliver=*/true);
  }
  while (listen_fd_ >= 0 && AcceptSome(options_.max_accepts_per_wakeup) > 0) {
  }
  StopAccepting();
  return static_cast<size_t>(stats_.accepted - accepted_before);
}

void TcpServer::Drain(absl::AnyInvocable<void()> done) {
  StopAcceptingKeepQueued();
  context_.Drain(std::move(done));
}

void TcpServer::Refuse(const absl::Status& reason) {
  if (options_.on_refused) options_.on_refused(reason);
}

bool TcpServer::RefuseOverLimit() {
  if (options_.max_connections == 0 ||
      context_.connection_count() < options_.max_connections) {
    return false;
  }
  ++stats_.refused_over_limit;
  Refuse(absl::UnavailableError(
      absl::StrCat("connection refused: max_connections (",
                   options_.max_connections, ") reached")));
  return true;
}

void TcpServer::OnListenReady() {
  // OnAccept runs in there, with the server in use.
  TcpContext::CallbackScope scope(&context_);
  AcceptSome(options_.max_accepts_per_wakeup);
}

size_t TcpServer::AcceptSome(int max) {
  // Counts every accept() that took a connection off the queue, adopted or
  // refused, so that the caller can tell an empty queue (0) apart.
  size_t taken = 0;
  for (int i = 0; i < max && listen_fd_ >= 0; ++i) {
    const int fd = RetryOnEintr([&] {
      return accept4(listen_fd_, nullptr, nullptr,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    });
    if (fd < 0) {
      const int err = errno;
      switch (err) {
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
          return taken;
        case ECONNABORTED:  // the peer gave up while queued: next one
        case EPROTO:
        case EPERM:  // a firewall said no
          ++taken;
          continue;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
          OnFdExhaustion(err);
          return taken;
        default:
          ++stats_.accept_errors;
          Refuse(ErrnoStatus("accept4", err));
          return taken;
      }
    }
    ++taken;
    if (RefuseOverLimit()) {
      close(fd);
      continue;
    }
    absl::Status status = context_.Adopt(fd);  // closes fd on failure
    if (!status.ok()) {
      ++stats_.refused_unwatchable;
      Refuse(status);
      continue;
    }
    ++stats_.accepted;
  }
  return taken;
}

void TcpServer::OnFdExhaustion(int err) {
  ++stats_.fd_exhaustion_events;
  Refuse(ErrnoStatus("accept4", err));
  // Spend the reserve on refusing what waits in the backlog, cleanly: the
  // peers see their connection closed instead of hanging until they time out.
  if (reserve_fd_ >= 0) {
    close(reserve_fd_);
    reserve_fd_ = -1;
    for (int i = 0; i < options_.max_accepts_per_wakeup; ++i) {
      const int fd = RetryOnEintr(
          [&] { return accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC); });
      if (fd < 0) break;
      close(fd);
      ++stats_.refused_no_fds;
    }
    reserve_fd_ = OpenReserveFd();  // may fail: retried on resume
  }
  // Stop listening for a while: the backlog cannot make us spin.
  listen_watcher_.SetInterest(0).IgnoreError();
  backoff_timer_.Start(options_.accept_backoff);
}

void TcpServer::ResumeAccepting() {
  if (listen_fd_ < 0) return;
  if (reserve_fd_ < 0) reserve_fd_ = OpenReserveFd();
  absl::Status status = listen_watcher_.SetInterest(kReadable);
  if (!status.ok()) {
    Refuse(status);
    backoff_timer_.Start(options_.accept_backoff);
  }
}

}  // namespace nbio
