// The client side of TcpContext: Connect() and the connect in progress.
// A non-blocking connect() is watched for writability, SO_ERROR says how it
// ended, and a connected socket is adopted like an accepted one.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "reactor/net/tcp_connection.h"
#include "reactor/sys/syscall.h"

namespace nbio {

TcpContext::PendingConnect::PendingConnect(TcpContext* ctx, int socket_fd,
                                           std::string where_text)
    : context(ctx),
      fd(socket_fd),
      where(std::move(where_text)),
      promise(ctx->loop_),
      watcher(ctx->loop_, socket_fd, [this](uint32_t) { OnWritable(); }) {}

void TcpContext::PendingConnect::OnWritable() {
  CallbackScope scope(context);  // OnAccept may run in here
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) {
    Finish(ErrnoStatus(where, err));
    return;
  }
  watcher.Stop();
  // Connected: the connect is no longer pending, so neither its token nor
  // the context's destructor may finish it from here on. OnAccept (inside
  // AdoptConnection) may well cancel the token, e.g. one shared by several
  // racing connects: that must not finish this one a second time.
  on_cancel.Unregister();
  hook.Unlink();
  const int connected = fd;
  fd = -1;  // Adopt owns it now, and closes it on failure
  absl::StatusOr<TcpConnection*> conn = context->AdoptConnection(connected);
  if (conn.ok() && (*conn)->is_closing()) {
    // Closed by the handler's OnAccept: its pointer would dangle soon.
    conn = absl::CancelledError("connection closed in OnAccept");
  }
  Finish(std::move(conn));
}

void TcpContext::PendingConnect::Finish(absl::StatusOr<TcpConnection*> result) {
  on_cancel.Unregister();
  watcher.Stop();
  if (fd >= 0) close(fd);
  fd = -1;
  hook.Unlink();
  promise.Set(std::move(result));
  // Usually inside the watcher's or the token's callback: destroyed later.
  context->loop_->DeleteLater(std::unique_ptr<PendingConnect>(this));
}

Future<TcpConnection*> TcpContext::Connect(const SocketAddress& to,
                                           const CancellationToken& token) {
  if (destroying_) {
    // Called from a handler inside the destructor (a reconnect from
    // OnClosed): the pending connects have already been failed, and a
    // connect started now would complete into a destroyed context.
    return MakeReadyFuture<TcpConnection*>(
        loop_, absl::CancelledError("shutting down"));
  }
  const std::string where = absl::StrCat("connect(", to.ToString(), ")");
  if (token.is_cancelled()) {
    return MakeReadyFuture<TcpConnection*>(loop_, token.reason());
  }
  const int fd =
      socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return MakeReadyFuture<TcpConnection*>(loop_, ErrnoStatus("socket", errno));
  }
  if (RetryOnEintr([&] {
        return connect(fd, to.sockaddr_ptr(), to.sockaddr_len());
      }) != 0 &&
      errno != EINPROGRESS) {
    const int err = errno;
    close(fd);
    return MakeReadyFuture<TcpConnection*>(loop_, ErrnoStatus(where, err));
  }
  // Connected or in progress: either way the socket turns writable, and the
  // connection is made from the loop, never inside this call.
  auto* pending = new PendingConnect(this, fd, where);
  Future<TcpConnection*> future = pending->promise.GetFuture();
  absl::Status watched = pending->watcher.SetInterest(kWritable);
  pending_connects_.PushBack(*pending);
  if (!watched.ok()) {
    pending->Finish(watched);
    return future;
  }
  if (token.can_be_cancelled()) {
    pending->on_cancel = token.Register(
        [pending](const absl::Status& why) { pending->Finish(why); });
  }
  return future;
}

}  // namespace nbio
