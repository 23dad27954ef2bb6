// raw_epoll_echo: the floor of the echo benchmark. A minimal level-triggered
// epoll echo loop, one buffer per connection: read, write back, and while
// the echo is not fully written wait for EPOLLOUT instead of reading more.
// No abstraction at all, so any event loop's cost shows against it.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "tools/bench/echo_baseline.h"

namespace {

struct Conn {
  int fd;
  size_t len = 0;  // bytes in buf
  size_t off = 0;  // bytes of buf already echoed
  char buf[nbio::bench::kEchoBufferBytes];
};

void Watch(int ep, int op, Conn* c, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = c;
  epoll_ctl(ep, op, c->fd, &ev);
}

// Reads when the buffer is empty, then writes what is left of it; watches
// EPOLLOUT instead of EPOLLIN while an echo is pending. False when the
// connection is done (EOF or error).
bool Serve(int ep, Conn* c) {
  const bool was_pending = c->off < c->len;
  if (!was_pending) {
    const ssize_t n = read(c->fd, c->buf, sizeof(c->buf));
    if (n == 0) return false;
    if (n < 0) return errno == EAGAIN || errno == EINTR;
    c->len = static_cast<size_t>(n);
    c->off = 0;
  }
  const ssize_t n = write(c->fd, c->buf + c->off, c->len - c->off);
  if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
  if (n > 0) c->off += static_cast<size_t>(n);
  const bool pending = c->off < c->len;
  if (pending != was_pending) {
    Watch(ep, EPOLL_CTL_MOD, c, pending ? EPOLLOUT : EPOLLIN);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const nbio::SocketAddress address =
      nbio::bench::ParseEchoBaselineArgs(argc, argv, "raw_epoll_echo");
  const int listener = nbio::bench::ListenOrDie(address);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.ptr = nullptr;  // the listener
  epoll_ctl(ep, EPOLL_CTL_ADD, listener, &lev);
  nbio::bench::AnnounceListening(listener);

  epoll_event events[256];
  while (true) {
    const int n = epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < n; ++i) {
      Conn* c = static_cast<Conn*>(events[i].data.ptr);
      if (c == nullptr) {
        // Accept all that wait. (At the fd limit accept4 fails with EMFILE
        // and, level-triggered, this spins until a connection closes: the
        // benchmark stays below the limit.)
        int fd;
        while ((fd = accept4(listener, nullptr, nullptr,
                             SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          nbio::bench::SetNoDelay(fd);
          Conn* fresh = new Conn;
          fresh->fd = fd;
          Watch(ep, EPOLL_CTL_ADD, fresh, EPOLLIN);
        }
        continue;
      }
      if (!Serve(ep, c)) {
        close(c->fd);
        delete c;
      }
    }
  }
}
