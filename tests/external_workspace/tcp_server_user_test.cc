// A user of the public TCP targets: README.md's kind of server, answering a
// client on another thread.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "reactor/event_loop.h"
#include "reactor/net/tcp_connection.h"
#include "reactor/net/tcp_server.h"
#include "reactor/sys/socket_address.h"

namespace {

class Echo : public nbio::ConnectionHandler {
 public:
  void OnAccept(nbio::TcpConnection* conn) override { conn->StartReading(); }
  void OnData(nbio::TcpConnection* conn, absl::string_view bytes) override {
    conn->Write(bytes);
  }
};

// Connects to 127.0.0.1:`port`, sends `text`, reads it back; "" on error.
std::string RoundTrip(int port, const std::string& text) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string got;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      send(fd, text.data(), text.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(text.size())) {
    char buf[256];
    while (got.size() < text.size()) {
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      got.append(buf, n);
    }
  }
  close(fd);
  return got;
}

TEST(TcpServerUserTest, EchoesThroughThePublicApi) {
  auto loop = nbio::EventLoop::Create();
  ASSERT_TRUE(loop.ok()) << loop.status();
  Echo handler;
  nbio::TcpServerOptions options;
  options.address = *nbio::SocketAddress::Parse("127.0.0.1:0");
  auto server =
      nbio::TcpServer::Create(loop->get(), &handler, std::move(options));
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->address().port();
  std::string answer;
  std::thread client([&] {
    answer = RoundTrip(port, "hello from another workspace\n");
    (*loop)->Stop();
  });
  ASSERT_TRUE((*loop)->Run().ok());
  client.join();
  EXPECT_EQ(answer, "hello from another workspace\n");
}

}  // namespace
