#include "reactor/testing/tcp_test_util.h"

#include "gtest/gtest.h"

namespace nbio {

void RecordingHandler::OnAccept(TcpConnection* conn) {
  ++accepted;
  conn->StartReading();
  if (on_accept) on_accept(conn);
}

void RecordingHandler::OnData(TcpConnection* conn, absl::string_view bytes) {
  if (keep_data) data.append(bytes.data(), bytes.size());
  if (on_data) {
    on_data(conn, bytes);
  } else if (echo) {
    EXPECT_TRUE(conn->Write(bytes));
  }
}

}  // namespace nbio
