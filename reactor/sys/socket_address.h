// SocketAddress: an IPv4 or IPv6 address and port, parsed from and printed
// as "127.0.0.1:7007", "[::1]:7007", ":7007" (all IPv4 interfaces) or
// "[::]:7007" (all IPv6 interfaces). A value type; thread-compatible.
#ifndef NBIO_REACTOR_SYS_SOCKET_ADDRESS_H_
#define NBIO_REACTOR_SYS_SOCKET_ADDRESS_H_

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nbio {

class SocketAddress {
 public:
  // 0.0.0.0:0.
  SocketAddress();

  // Parses "host:port" where host is a numeric IPv4 address, a numeric IPv6
  // address in brackets, or empty (0.0.0.0), and port is 0..65535 (0: any
  // free port). Names are not resolved: this is a server's listen address.
  // INVALID_ARGUMENT with the reason on anything else.
  static absl::StatusOr<SocketAddress> Parse(absl::string_view text);

  // From a kernel sockaddr (accept, getsockname). INVALID_ARGUMENT for a
  // family other than AF_INET / AF_INET6.
  static absl::StatusOr<SocketAddress> FromSockaddr(const sockaddr* sa,
                                                    socklen_t len);
  // The local / peer address of a socket (getsockname / getpeername).
  static absl::StatusOr<SocketAddress> LocalOf(int fd);
  static absl::StatusOr<SocketAddress> PeerOf(int fd);

  static SocketAddress Loopback4(uint16_t port);

  int family() const { return storage_.ss_family; }
  uint16_t port() const;
  void set_port(uint16_t port);
  const sockaddr* sockaddr_ptr() const {
    return reinterpret_cast<const sockaddr*>(&storage_);
  }
  socklen_t sockaddr_len() const;

  // "127.0.0.1:7007" or "[::1]:7007".
  std::string ToString() const;

  friend bool operator==(const SocketAddress& a, const SocketAddress& b) {
    return a.ToString() == b.ToString();
  }

 private:
  sockaddr_storage storage_;
};

}  // namespace nbio

#endif  // NBIO_REACTOR_SYS_SOCKET_ADDRESS_H_
