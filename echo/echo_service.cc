#include "echo/echo_service.h"

#include <utility>

namespace nbio {

absl::StatusOr<std::unique_ptr<EchoService>> EchoService::Create(
    EventLoop* loop, Options options) {
  std::unique_ptr<EchoService> service(new EchoService());
  absl::StatusOr<std::unique_ptr<TcpServer>> server =
      TcpServer::Create(loop, service.get(), std::move(options.server));
  if (!server.ok()) return server.status();
  service->server_ = std::move(*server);
  return service;
}

EchoService::~EchoService() {
  // The server's connections call back into this handler while closing.
  server_.reset();
}

void EchoService::OnAccept(TcpConnection* conn) { conn->StartReading(); }

void EchoService::OnData(TcpConnection* conn, absl::string_view bytes) {
  conn->Write(bytes);
}

void EchoService::OnClosed(TcpConnection*, const absl::Status& reason) {
  if (!reason.ok() && !absl::IsCancelled(reason) &&
      !absl::IsDeadlineExceeded(reason)) {
    ++connections_reset_;
  }
}

EchoService::Stats EchoService::stats() const {
  Stats s;
  s.tcp = server_->context()->stats();
  s.server = server_->stats();
  s.connections_reset = connections_reset_;
  return s;
}

}  // namespace nbio
