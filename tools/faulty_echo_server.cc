// FaultyEchoServer: see faulty_echo_server.h.
#include "tools/faulty_echo_server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>
#include <vector>

#include "reactor/sys/socket_address.h"
#include "reactor/sys/syscall.h"

namespace nbio {
namespace load {
namespace {

struct Conn {
  int fd = -1;
  uint64_t received = 0;  // bytes read so far: the position of the next one
  std::string pending;    // transformed bytes not yet written back
  bool has_held = false;  // kReorder: byte `offset` waits for its neighbour
  char held = 0;
};

// Closes with an RST instead of a FIN.
void Reset(int fd) {
  linger l{};
  l.l_onoff = 1;
  l.l_linger = 0;
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  close(fd);
}

}  // namespace

absl::StatusOr<std::unique_ptr<FaultyEchoServer>> FaultyEchoServer::Start(
    Fault fault, uint64_t offset) {
  const SocketAddress address = SocketAddress::Loopback4(0);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("socket", errno);
  if (bind(fd, address.sockaddr_ptr(), address.sockaddr_len()) != 0 ||
      listen(fd, SOMAXCONN) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoStatus("bind/listen(127.0.0.1:0)", err);
  }
  absl::StatusOr<SocketAddress> local = SocketAddress::LocalOf(fd);
  int pipe_fds[2];
  if (!local.ok() || pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    close(fd);
    return local.ok() ? ErrnoStatus("pipe2", errno) : local.status();
  }
  return std::unique_ptr<FaultyEchoServer>(new FaultyEchoServer(
      fault, offset, fd, pipe_fds[0], pipe_fds[1], local->port()));
}

FaultyEchoServer::FaultyEchoServer(Fault fault, uint64_t offset, int listen_fd,
                                   int stop_fd, int stop_write_fd,
                                   uint16_t port)
    : fault_(fault),
      offset_(offset),
      listen_fd_(listen_fd),
      stop_fd_(stop_fd),
      stop_write_fd_(stop_write_fd),
      port_(port),
      thread_([this] { Serve(); }) {}

FaultyEchoServer::~FaultyEchoServer() {
  const char byte = 0;
  (void)!write(stop_write_fd_, &byte, 1);
  thread_.join();
  close(listen_fd_);
  close(stop_fd_);
  close(stop_write_fd_);
}

void FaultyEchoServer::Serve() {
  std::vector<Conn> conns;
  std::vector<pollfd> fds;
  char buf[64 * 1024];
  while (true) {
    fds.clear();
    fds.push_back({stop_fd_, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (const Conn& c : conns) {
      // Like the baselines: no reading while an echo is pending.
      fds.push_back(
          {c.fd, static_cast<short>(c.pending.empty() ? POLLIN : POLLOUT), 0});
    }
    if (RetryOnEintr([&] { return poll(fds.data(), fds.size(), -1); }) < 0) {
      break;
    }
    if (fds[0].revents != 0) break;
    // Accepted now, polled from the next round on (fds has no slot yet).
    std::vector<Conn> fresh;
    if (fds[1].revents != 0) {
      int fd;
      while ((fd = accept4(listen_fd_, nullptr, nullptr,
                           SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        if (fault_ == Fault::kReject) {
          close(fd);
        } else {
          Conn c;
          c.fd = fd;
          fresh.push_back(std::move(c));
        }
      }
    }
    // fds[2 + i] is conns[i]: walk both, dropping closed connections.
    std::vector<Conn> kept;
    for (size_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      bool alive = true;
      if (fds[2 + i].revents & (POLLIN | POLLHUP | POLLERR)) {
        const ssize_t n = read(c.fd, buf, sizeof(buf));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
          alive = false;
          close(c.fd);
        } else if (n > 0) {
          const uint64_t first = c.received;
          c.received += static_cast<uint64_t>(n);
          if (fault_ == Fault::kReset && first <= offset_ &&
              offset_ < c.received) {
            Reset(c.fd);
            alive = false;
          } else if (fault_ != Fault::kSilent) {
            for (ssize_t j = 0; j < n; ++j) {
              const uint64_t at = first + static_cast<uint64_t>(j);
              char b = buf[j];
              if (at == offset_) {
                if (fault_ == Fault::kDrop) continue;
                if (fault_ == Fault::kCorrupt) b = static_cast<char>(~b);
                if (fault_ == Fault::kReorder) {
                  c.has_held = true;
                  c.held = b;
                  continue;
                }
              }
              c.pending.push_back(b);
              if (at == offset_ && fault_ == Fault::kExtra) {
                c.pending.push_back('!');
              }
              if (at == offset_ + 1 && c.has_held) {
                c.pending.push_back(c.held);
                c.has_held = false;
              }
            }
          }
        }
      }
      if (alive && !c.pending.empty()) {
        // MSG_NOSIGNAL: a client that reset must not kill the test.
        const ssize_t n =
            send(c.fd, c.pending.data(), c.pending.size(), MSG_NOSIGNAL);
        if (n > 0) {
          c.pending.erase(0, static_cast<size_t>(n));
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
          alive = false;
          close(c.fd);
        }
      }
      if (alive) kept.push_back(std::move(c));
    }
    for (Conn& c : fresh) kept.push_back(std::move(c));
    conns.swap(kept);
  }
  for (const Conn& c : conns) close(c.fd);
}

}  // namespace load
}  // namespace nbio
