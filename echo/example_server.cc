// A line-based "shout" server on nbio's public API: every line a client
// sends comes back upper-cased. Quoted in README.md (a test keeps it so).
#include <cctype>
#include <cstdio>
#include <string>

#include "reactor/event_loop.h"
#include "reactor/net/tcp_server.h"

class Shout : public nbio::ConnectionHandler {
 public:
  void OnAccept(nbio::TcpConnection* conn) override { conn->StartReading(); }

  void OnData(nbio::TcpConnection* conn, absl::string_view bytes) override {
    std::string upper(bytes);
    for (char& c : upper) c = std::toupper(static_cast<unsigned char>(c));
    conn->Write(std::move(upper));  // queued if the socket is full
  }

  void OnClosed(nbio::TcpConnection*, const absl::Status& why) override {
    if (!why.ok()) std::fprintf(stderr, "closed: %s\n", why.ToString().c_str());
  }
};

int main() {
  auto loop = nbio::EventLoop::Create();  // epoll, or the best available
  if (!loop.ok()) return 1;
  Shout handler;
  nbio::TcpServerOptions options;
  options.address = *nbio::SocketAddress::Parse("127.0.0.1:7008");
  options.tcp.idle_timeout = absl::Seconds(30);
  auto server = nbio::TcpServer::Create(loop->get(), &handler, std::move(options));
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 1;
  }
  // Ctrl-C: stop accepting, let open connections finish, then return.
  auto drain = [&](int) { (*server)->Drain([&] { (*loop)->Stop(); }); };
  if (!(*loop)->OnSignal(SIGINT, drain).ok()) return 1;
  std::printf("listening on %s\n", (*server)->address().ToString().c_str());
  std::fflush(stdout);  // now, even when stdout is a pipe
  return (*loop)->Run().ok() ? 0 : 1;
}
