// libev_echo: the echo benchmark's libev baseline. Single-threaded, the
// default loop (epoll on Linux), one ev_io per connection whose interest
// flips between EV_READ and EV_WRITE: read into the connection's buffer,
// write it back, and while the echo is not fully written wait for EV_WRITE
// instead of reading more. libev has no socket layer, so the sockets are
// plain non-blocking fds, as in any libev program.
#include <ev.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "tools/bench/echo_baseline.h"

namespace {

struct Conn {
  ev_io io;  // first member: the watcher pointer is the connection pointer
  size_t len = 0;
  size_t off = 0;
  char buf[nbio::bench::kEchoBufferBytes];
};

void Close(struct ev_loop* loop, Conn* c) {
  ev_io_stop(loop, &c->io);
  close(c->io.fd);
  delete c;
}

void SetInterest(struct ev_loop* loop, Conn* c, int events) {
  if ((c->io.events & (EV_READ | EV_WRITE)) == events) return;
  ev_io_stop(loop, &c->io);
  ev_io_set(&c->io, c->io.fd, events);
  ev_io_start(loop, &c->io);
}

void OnConnection(struct ev_loop* loop, ev_io* w, int /*revents*/) {
  Conn* c = reinterpret_cast<Conn*>(w);
  if (c->off == c->len) {
    const ssize_t n = read(w->fd, c->buf, sizeof(c->buf));
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      Close(loop, c);
      return;
    }
    if (n < 0) return;
    c->len = static_cast<size_t>(n);
    c->off = 0;
  }
  const ssize_t n = write(w->fd, c->buf + c->off, c->len - c->off);
  if (n < 0 && errno != EAGAIN && errno != EINTR) {
    Close(loop, c);
    return;
  }
  if (n > 0) c->off += static_cast<size_t>(n);
  SetInterest(loop, c, c->off < c->len ? EV_WRITE : EV_READ);
}

void OnAccept(struct ev_loop* loop, ev_io* w, int /*revents*/) {
  int fd;
  while ((fd = accept4(w->fd, nullptr, nullptr,
                       SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
    nbio::bench::SetNoDelay(fd);
    Conn* c = new Conn;
    ev_io_init(&c->io, OnConnection, fd, EV_READ);
    ev_io_start(loop, &c->io);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const nbio::SocketAddress address =
      nbio::bench::ParseEchoBaselineArgs(argc, argv, "libev_echo");
  struct ev_loop* loop = ev_default_loop(EVBACKEND_EPOLL);
  if (loop == nullptr) {
    std::fprintf(stderr, "libev_echo: ev_default_loop failed\n");
    return 1;
  }
  const int listener = nbio::bench::ListenOrDie(address);
  ev_io accept_watcher;
  ev_io_init(&accept_watcher, OnAccept, listener, EV_READ);
  ev_io_start(loop, &accept_watcher);
  nbio::bench::AnnounceListening(listener);
  ev_run(loop, 0);
  return 0;
}
