#include "reactor/sys/socket_address.h"

#include <unistd.h>

#include "gtest/gtest.h"

namespace nbio {
namespace {

TEST(SocketAddressTest, ParsesAndPrintsIpv4AndIpv6) {
  struct Case {
    const char* in;
    const char* out;
    int family;
    uint16_t port;
  } cases[] = {
      {"127.0.0.1:7007", "127.0.0.1:7007", AF_INET, 7007},
      {":80", "0.0.0.0:80", AF_INET, 80},
      {"0.0.0.0:0", "0.0.0.0:0", AF_INET, 0},
      {"[::1]:7007", "[::1]:7007", AF_INET6, 7007},
      {"[::]:65535", "[::]:65535", AF_INET6, 65535},
      {"[fe80::1]:1", "[fe80::1]:1", AF_INET6, 1},
  };
  for (const Case& c : cases) {
    absl::StatusOr<SocketAddress> a = SocketAddress::Parse(c.in);
    ASSERT_TRUE(a.ok()) << c.in << ": " << a.status();
    EXPECT_EQ(a->ToString(), c.out);
    EXPECT_EQ(a->family(), c.family);
    EXPECT_EQ(a->port(), c.port);
  }
}

TEST(SocketAddressTest, RejectsWithReason) {
  struct Case {
    const char* in;
    const char* reason;
  } cases[] = {
      {"127.0.0.1", "no port"},
      {"127.0.0.1:", "not a number"},
      {"127.0.0.1:65536", "not a number from 0 to 65535"},
      {"127.0.0.1:-1", "not a number"},
      {"127.0.0.1:+5", "not a number"},
      {"127.0.0.1:7x", "not a number"},
      {"localhost:7007", "not a numeric IPv4 address"},
      {"256.1.1.1:7007", "not a numeric IPv4 address"},
      {"::1:7007", "brackets"},
      {"[::1:7007", "unbalanced brackets"},
      {"[zz::1]:7007", "not an IPv6 address"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<SocketAddress> a = SocketAddress::Parse(c.in);
    ASSERT_FALSE(a.ok()) << c.in;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(a.status().message().find(c.reason), absl::string_view::npos)
        << c.in << ": " << a.status();
  }
}

TEST(SocketAddressTest, LocalOfBoundSocket) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  SocketAddress any = SocketAddress::Loopback4(0);
  ASSERT_EQ(bind(fd, any.sockaddr_ptr(), any.sockaddr_len()), 0);
  absl::StatusOr<SocketAddress> local = SocketAddress::LocalOf(fd);
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_NE(local->port(), 0);
  EXPECT_EQ(local->ToString().rfind("127.0.0.1:", 0), 0u);
  EXPECT_FALSE(SocketAddress::PeerOf(fd).ok());  // not connected
  close(fd);
}

}  // namespace
}  // namespace nbio
