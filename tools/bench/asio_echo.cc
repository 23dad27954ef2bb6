// asio_echo: the echo benchmark's Boost.Asio baseline, the shape of Asio's
// own async_tcp_echo_server example: async_read_some into the session's
// buffer, async_write of what was read (a composed operation that finishes
// partial writes), then read again. Accepting drains the accept queue on
// each completion (see Accept), as a server facing connection bursts must. One
// io_context on one thread (concurrency hint 1), sessions kept alive by the
// handlers that hold a shared_ptr.
#include <boost/asio.hpp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <utility>

#include "tools/bench/echo_baseline.h"

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

class Session : public std::enable_shared_from_this<Session> {
 public:
  explicit Session(tcp::socket socket) : socket_(std::move(socket)) {}

  void Read() {
    auto self = shared_from_this();
    socket_.async_read_some(
        asio::buffer(buf_),
        [this, self](boost::system::error_code ec, size_t n) {
          if (!ec) Write(n);
        });
  }

 private:
  void Write(size_t n) {
    auto self = shared_from_this();
    asio::async_write(socket_, asio::buffer(buf_, n),
                      [this, self](boost::system::error_code ec, size_t) {
                        if (!ec) Read();
                      });
  }

  tcp::socket socket_;
  char buf_[nbio::bench::kEchoBufferBytes];
};

void StartSession(tcp::socket socket) {
  boost::system::error_code ec;
  socket.set_option(tcp::no_delay(true), ec);
  std::make_shared<Session>(std::move(socket))->Read();
}

void Accept(tcp::acceptor& acceptor) {
  acceptor.async_accept(
      [&acceptor](boost::system::error_code ec, tcp::socket socket) {
        if (!ec) StartSession(std::move(socket));
        // One async_accept completes one connection per trip through the
        // handler queue, behind every pending read and write: under a burst
        // of thousands of connects the kernel's accept queue overflows and
        // clients wait seconds for SYN-ACK retransmits. So take everything
        // already queued now (the acceptor is non-blocking), then re-arm.
        while (true) {
          tcp::socket next = acceptor.accept(ec);
          if (ec) break;
          StartSession(std::move(next));
        }
        Accept(acceptor);
      });
}

}  // namespace

int main(int argc, char** argv) {
  const nbio::SocketAddress address =
      nbio::bench::ParseEchoBaselineArgs(argc, argv, "asio_echo");
  asio::io_context io(1);
  tcp::acceptor acceptor(io);
  boost::system::error_code ec;
  tcp::endpoint endpoint;
  endpoint.resize(address.sockaddr_len());
  std::memcpy(endpoint.data(), address.sockaddr_ptr(), address.sockaddr_len());
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    std::fprintf(stderr, "asio_echo: listen on %s: %s\n",
                 address.ToString().c_str(), ec.message().c_str());
    return 1;
  }
  acceptor.non_blocking(true, ec);
  nbio::bench::AnnounceListening(acceptor.native_handle());
  Accept(acceptor);
  io.run();
  return 0;
}
