// libuv_echo: the echo benchmark's libuv baseline, written the way Node.js
// writes to a stream: uv_try_write first (no extra syscalls or callbacks when
// the socket takes it all, the common case), and only for a partial write a
// uv_write of the rest, with reading stopped until its callback. One buffer
// and one uv_write_t per connection, reused: nothing is allocated per echo.
#include <uv.h>

#include <cstdio>
#include <cstdlib>

#include "tools/bench/echo_baseline.h"

namespace {

struct Conn {
  uv_tcp_t tcp;  // first member: the handle pointer is the connection pointer
  uv_write_t write_req;
  char buf[nbio::bench::kEchoBufferBytes];
};

void OnClosed(uv_handle_t* handle) { delete reinterpret_cast<Conn*>(handle); }

void Close(Conn* c) {
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), OnClosed);
}

void OnAlloc(uv_handle_t* handle, size_t /*suggested*/, uv_buf_t* buf) {
  Conn* c = reinterpret_cast<Conn*>(handle);
  *buf = uv_buf_init(c->buf, sizeof(c->buf));
}

void OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);

void OnWritten(uv_write_t* req, int status) {
  Conn* c = static_cast<Conn*>(req->data);
  if (status < 0) {
    Close(c);
    return;
  }
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), OnAlloc, OnRead);
}

void OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  Conn* c = reinterpret_cast<Conn*>(stream);
  if (nread < 0) {  // UV_EOF or an error
    Close(c);
    return;
  }
  if (nread == 0) return;  // EAGAIN
  uv_buf_t out = uv_buf_init(buf->base, static_cast<unsigned>(nread));
  const int written = uv_try_write(stream, &out, 1);
  if (written == nread) return;
  if (written < 0 && written != UV_EAGAIN) {
    Close(c);
    return;
  }
  // A partial write: the rest goes out when the socket drains; meanwhile
  // read nothing more, so the buffer is not overwritten.
  const size_t done = written > 0 ? static_cast<size_t>(written) : 0;
  out = uv_buf_init(buf->base + done, static_cast<unsigned>(nread - done));
  uv_read_stop(stream);
  c->write_req.data = c;
  if (uv_write(&c->write_req, stream, &out, 1, OnWritten) != 0) Close(c);
}

void OnConnection(uv_stream_t* server, int status) {
  if (status < 0) return;
  Conn* c = new Conn;
  uv_tcp_init(server->loop, &c->tcp);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    Close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), OnAlloc, OnRead);
}

}  // namespace

int main(int argc, char** argv) {
  const nbio::SocketAddress address =
      nbio::bench::ParseEchoBaselineArgs(argc, argv, "libuv_echo");
  uv_loop_t* loop = uv_default_loop();
  uv_tcp_t server;
  uv_tcp_init(loop, &server);
  int rc = uv_tcp_bind(&server, address.sockaddr_ptr(), 0);
  if (rc == 0) {
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(&server), SOMAXCONN,
                   OnConnection);
  }
  if (rc != 0) {
    std::fprintf(stderr, "libuv_echo: listen on %s: %s\n",
                 address.ToString().c_str(), uv_strerror(rc));
    return 1;
  }
  uv_os_fd_t fd;
  uv_fileno(reinterpret_cast<uv_handle_t*>(&server), &fd);
  nbio::bench::AnnounceListening(fd);
  return uv_run(loop, UV_RUN_DEFAULT);
}
