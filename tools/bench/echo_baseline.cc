// The echo baselines' shared command line and socket setup.
#include "tools/bench/echo_baseline.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/match.h"
#include "reactor/sys/syscall.h"

namespace nbio {
namespace bench {
namespace {

[[noreturn]] void Die(const absl::Status& status) {
  std::fprintf(stderr, "%s\n", status.ToString().c_str());
  std::exit(1);
}

}  // namespace

SocketAddress ParseEchoBaselineArgs(int argc, char** argv, const char* name) {
  std::signal(SIGPIPE, SIG_IGN);
  std::string listen = "127.0.0.1:7007";
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::printf(
          "%s: a single-threaded echo server, a baseline for nbio's echo "
          "benchmark.\n  --listen=HOST:PORT  address to listen on, port 0 "
          "for any (default 127.0.0.1:7007)\nPrints \"listening on "
          "HOST:PORT\" when ready.\n",
          name);
      std::exit(0);
    }
    if (absl::StartsWith(arg, "--listen=")) {
      listen = std::string(arg.substr(9));
    } else {
      std::fprintf(stderr, "%s: unknown argument \"%s\" (see --help)\n", name,
                   argv[i]);
      std::exit(2);
    }
  }
  absl::StatusOr<SocketAddress> address = SocketAddress::Parse(listen);
  if (!address.ok()) {
    std::fprintf(stderr, "%s: --listen: %s\n", name,
                 std::string(address.status().message()).c_str());
    std::exit(2);
  }
  return *address;
}

int ListenOrDie(const SocketAddress& address) {
  const int fd =
      socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) Die(ErrnoStatus("socket", errno));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, address.sockaddr_ptr(), address.sockaddr_len()) != 0) {
    Die(ErrnoStatus("bind(" + address.ToString() + ")", errno));
  }
  if (listen(fd, SOMAXCONN) != 0) Die(ErrnoStatus("listen", errno));
  return fd;
}

void SetNoDelay(int fd) {
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void AnnounceListening(int listen_fd) {
  absl::StatusOr<SocketAddress> local = SocketAddress::LocalOf(listen_fd);
  if (!local.ok()) Die(local.status());
  std::printf("listening on %s\n", local->ToString().c_str());
  std::fflush(stdout);
}

}  // namespace bench
}  // namespace nbio
