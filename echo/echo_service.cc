#include "echo/echo_service.h"

#include <sys/ioctl.h>

#include <utility>

#include "absl/status/status.h"
#include "reactor/poller/stream_engine.h"

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

void EchoService::OnAccept(TcpConnection* conn) {
  ++open_count_;
  conn->StartReading();
}

void EchoService::OnData(TcpConnection* conn, absl::string_view bytes) {
  conn->Write(bytes);
}

void EchoService::OnClosed(TcpConnection* conn, const absl::Status& reason) {
  --open_count_;
  if (!reason.ok() && !absl::IsCancelled(reason) &&
      !absl::IsDeadlineExceeded(reason)) {
    ++connections_reset_;
  }
  if (draining_) ++drain_closed_;
  if (waiting_for_peers_ && open_count_ == 0) FinishWaiting();
}

void EchoService::Drain(absl::AnyInvocable<void()> done) {
  draining_ = true;
  server_->Drain(std::move(done));
}

void EchoService::DrainWaitingForPeers(absl::AnyInvocable<void()> done) {
  draining_ = true;
  waiting_for_peers_ = true;
  drain_done_ = std::move(done);
  // Before the listener closes: the kernel would reset what it queued.
  server_->StopAcceptingKeepQueued();
  if (open_count_ == 0) FinishWaiting();
}

void EchoService::FinishWaiting() {
  waiting_for_peers_ = false;
  // No connection is left to half-close: the context's drain only waits for
  // the OnClosed calls still under way (this one, when called from
  // OnClosed), then runs `done` from outside any connection callback.
  server_->Drain(std::move(drain_done_));
}

EchoService::CutReport EchoService::CutRemaining() {
  CutReport report;
  // On io_uring the kernel may have received bytes into ring buffers that
  // were not delivered yet: they are echoed (queued) first, so that what is
  // counted below is all a peer sent and will not get back.
  if (StreamEngine* streams = server_->context()->loop()->streams()) {
    streams->RunPending();
  }
  server_->context()->ForEachConnection([&](TcpConnection* conn) {
    // Closing ones are already ending: not cut.
    ++report.connections;
    report.queued_bytes += conn->queued_bytes();
    int unread = 0;
    const absl::Status asked = conn->WithFd(
        [&unread](int fd) { ioctl(fd, FIONREAD, &unread); });
    if (asked.ok() && unread > 0) {
      report.unread_bytes += static_cast<uint64_t>(unread);
    }
  });
  drain_cut_ += report.connections;
  server_->context()->CloseAll(absl::CancelledError("drain timeout"));
  return report;
}

EchoService::Stats EchoService::stats() const {
  Stats s;
  s.tcp = server_->context()->stats();
  s.server = server_->stats();
  s.connections_reset = connections_reset_;
  s.drain_closed = drain_closed_;
  s.drain_cut = drain_cut_;
  return s;
}

}  // namespace nbio
