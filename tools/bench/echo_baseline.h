// What the echo benchmark's baseline servers share: the command line
// (`--listen=127.0.0.1:PORT`, port 0 for any free port), the listening
// socket for those built on raw sockets, and the "listening on" line that
// echo_bench.sh waits for. Each baseline (raw_epoll_echo, raw_uring_echo,
// libev_echo, libuv_echo, asio_echo) is one single-threaded process; every
// one echoes through a fixed buffer of kEchoBufferBytes per connection and
// stops reading a connection while its echo is not fully written (so a slow
// reader costs memory for one buffer, never more), and sets TCP_NODELAY on
// accepted connections, so that they differ only in their event loop.
// raw_uring_echo is the exception where io_uring's own way is the point: one
// shared ring of provided buffers, and a bounded backlog instead of one
// buffer (see its file comment).
#ifndef NBIO_TOOLS_BENCH_ECHO_BASELINE_H_
#define NBIO_TOOLS_BENCH_ECHO_BASELINE_H_

#include <cstddef>

#include "reactor/sys/socket_address.h"

namespace nbio {
namespace bench {

// Per-connection echo buffer of every baseline (libuv's suggested read size).
inline constexpr size_t kEchoBufferBytes = 64 * 1024;

// Parses `--listen=HOST:PORT` (default 127.0.0.1:7007) and `--help`. Prints a
// one-line error and exits with status 2 on anything else. Also ignores
// SIGPIPE: a peer that resets must not kill the server.
SocketAddress ParseEchoBaselineArgs(int argc, char** argv, const char* name);

// A non-blocking listening socket on `address` (SO_REUSEADDR, backlog
// SOMAXCONN). Prints the error and exits with status 1 on failure.
int ListenOrDie(const SocketAddress& address);

// Sets TCP_NODELAY on an accepted connection.
void SetNoDelay(int fd);

// Prints "listening on <address>" (with the port the kernel chose for port 0)
// and flushes stdout: echo_bench.sh starts the load when it sees the line.
void AnnounceListening(int listen_fd);

}  // namespace bench
}  // namespace nbio

#endif  // NBIO_TOOLS_BENCH_ECHO_BASELINE_H_
