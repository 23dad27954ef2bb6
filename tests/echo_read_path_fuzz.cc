// Fuzz target: the echo server's read path, end to end through the kernel.
//
// Each input is decoded into TCP options, a poller backend and a script for
// a client: a byte stream cut at arbitrary points, with loop iterations and
// client reads of arbitrary sizes in between, then an ending (half-close,
// stay open, or an abrupt close that the server sees as EOF / ECONNRESET /
// EPIPE). The server side is a real TcpContext on a real EventLoop with an
// echo handler that does what EchoService does (StartReading on accept,
// Write every byte it is given), and the client is the other end of a
// non-blocking AF_UNIX socketpair. The loop is pumped with RunOnce(kNoWait),
// so nothing blocks and a run is a pure function of the input.
//
// Checked on every input (abort on failure):
//   - the bytes echoed are exactly the bytes sent, in order (a prefix of
//     them when the client closed abruptly);
//   - the server never stalls: while there is work in flight, some bounded
//     number of loop iterations always moves a byte (no lost wake-up, no
//     backpressure pause that never lifts);
//   - OnClosed comes exactly once, with OK after a half-close and CANCELLED
//     when the context is destroyed; no callback after it;
//   - the context's counters agree with the client (bytes read and written,
//     nothing left queued);
//   - no descriptor is leaked (/proc/self/fd is counted before and after),
//     and no memory (LeakSanitizer under --config=fuzz / --config=asan).
//
// Input layout (missing bytes read as 0, so every input is valid):
//   byte 0   backend (% 3: epoll, poll, select) and ending (/ 3 % 3)
//   byte 1   high watermark (% 8 into kHighWatermarks), low mark (/ 8 % 4)
//   byte 2   read buffer size (% 8 into kReadBufferSizes), reads per event
//            (/ 8 % 4 + 1)
//   byte 3   output block size (% 4 into kBlockSizes), small socket buffers
//            (bit 2: server side, bit 3: client side)
//   then ops, each an opcode byte b and its arguments:
//     b % 5 == 0   send a literal chunk: a length byte L, then L + 1 bytes
//                  of the input (fewer if it ends)
//     b % 5 == 1   send a generated chunk of (2-byte length) % 16 KiB + 1
//                  bytes (a pattern seeded by the op's position)
//     b % 5 == 2   run the loop (b / 5 % 4 + 1) iterations
//     b % 5 == 3   the client reads up to (b / 5 + 1) * 61 bytes
//     b % 5 == 4   the client reads everything available
//   The client's unsent bytes stay pending and are retried at every op.
//
// Run it with libFuzzer:
//   tools/run_fuzzers.sh 30          (all fuzzers; see the script)
// or replay the corpus with any compiler: tools/bazel test
// //tests:echo_read_path_fuzz.
#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "reactor/event_loop.h"
#include "reactor/net/tcp_connection.h"

namespace nbio {
namespace {

constexpr const char* kBackends[] = {"epoll", "poll", "select"};
constexpr size_t kHighWatermarks[] = {0, 1, 7, 100, 1000, 4096, 65536, 1 << 20};
constexpr size_t kReadBufferSizes[] = {1, 2, 13, 64, 1000, 4096, 16384, 65536};
constexpr size_t kBlockSizes[] = {64, 100, 1000, 4096};
// The smallest buffer Linux grants is larger; asking for it gets the floor.
constexpr int kSmallSocketBuffer = 1;
// More than this many bytes sent per input, or more than kMaxReadsPerInput
// reads' worth at the largest read the options allow: stop sending (long inputs
// then explore cut points, not throughput, and tiny read buffers stay fast).
constexpr size_t kMaxStreamBytes = 128 * 1024;
constexpr size_t kMaxReadsPerInput = 512;
// Loop iterations without a byte moving before the run counts as stalled.
// One iteration always moves bytes when any can move; 64 leaves room for
// the deferred OnClosed and the backpressure resume.
constexpr int kStallIterations = 64;

enum class Ending { kHalfClose, kStayOpen, kAbruptClose };

[[noreturn]] void Fail(const char* what, size_t a = 0, size_t b = 0) {
  std::fprintf(stderr, "echo_read_path_fuzz: %s (%zu, %zu)\n", what, a, b);
  std::abort();
}

void Check(bool ok, const char* what, size_t a = 0, size_t b = 0) {
  if (!ok) Fail(what, a, b);
}

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  size_t pos() const { return pos_; }
  uint32_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint32_t Word() { return Byte() | (Byte() << 8); }
  // Up to `n` bytes of the input itself.
  absl::string_view Take(size_t n) {
    const size_t k = std::min(n, size_ - std::min(pos_, size_));
    absl::string_view out(reinterpret_cast<const char*>(data_) + pos_, k);
    pos_ += k;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

int CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int n = 0;
  while (readdir(dir) != nullptr) ++n;
  closedir(dir);
  return n;
}

// What EchoService does, plus bookkeeping of the contract.
class EchoHandler : public ConnectionHandler {
 public:
  void OnAccept(TcpConnection* conn) override {
    Check(conn_ == nullptr, "second OnAccept");
    conn_ = conn;
    conn->StartReading();
  }
  void OnData(TcpConnection* conn, absl::string_view bytes) override {
    Check(conn == conn_ && closed_ == 0,
          "OnData for an unknown or closed connection");
    Check(!bytes.empty(), "OnData with no bytes");
    // Write() may refuse only once our side is shut down or closing; the
    // echo handler never shuts down before the peer's EOF, so it must not.
    Check(conn->Write(bytes) || conn->is_closing(),
          "Write refused on an open connection");
  }
  void OnClosed(TcpConnection* conn, const absl::Status& reason) override {
    Check(conn == conn_, "OnClosed for an unknown connection");
    ++closed_;
    reason_ = reason;
  }

  int closed() const { return closed_; }
  const absl::Status& reason() const { return reason_; }

 private:
  TcpConnection* conn_ = nullptr;
  int closed_ = 0;
  absl::Status reason_;
};

// The client end of the socketpair, with what it sent and received.
class Client {
 public:
  explicit Client(int fd) : fd_(fd) {}
  ~Client() { CloseNow(); }

  bool open() const { return fd_ >= 0; }
  size_t pending() const { return pending_.size() - pending_off_; }
  const std::string& sent() const { return sent_; }
  const std::string& received() const { return received_; }
  bool eof() const { return eof_; }

  void Queue(absl::string_view bytes) {
    pending_.append(bytes.data(), bytes.size());
  }

  // Sends what the socket takes now; true if a byte moved.
  bool Flush() {
    if (fd_ < 0 || pending() == 0) return false;
    const ssize_t n = send(fd_, pending_.data() + pending_off_, pending(),
                           MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) {
      Check(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK),
            "client send failed", static_cast<size_t>(errno));
      return false;
    }
    sent_.append(pending_, pending_off_, n);
    pending_off_ += n;
    if (pending_off_ == pending_.size()) {
      pending_.clear();
      pending_off_ = 0;
    }
    return true;
  }

  // Reads up to `limit` bytes; true if a byte (or EOF) arrived.
  bool Read(size_t limit) {
    if (fd_ < 0 || eof_) return false;
    bool moved = false;
    char buf[4096];
    while (limit > 0) {
      const ssize_t n =
          recv(fd_, buf, std::min(limit, sizeof(buf)), MSG_DONTWAIT);
      if (n == 0) {
        eof_ = true;
        return true;
      }
      if (n < 0) {
        Check(errno == EAGAIN || errno == EWOULDBLOCK, "client recv failed",
              static_cast<size_t>(errno));
        break;
      }
      received_.append(buf, n);
      Check(received_.size() <= sent_.size(), "more echoed than sent",
            received_.size(), sent_.size());
      // Checked as it arrives, so a failure points at the first bad byte.
      const size_t from = received_.size() - n;
      Check(absl::string_view(received_).substr(from) ==
                absl::string_view(sent_).substr(from, n),
            "echoed bytes differ from the bytes sent", from, n);
      limit -= n;
      moved = true;
    }
    return moved;
  }

  void ShutdownWrite() {
    Check(shutdown(fd_, SHUT_WR) == 0, "client shutdown");
  }

  void CloseNow() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
  std::string pending_;
  size_t pending_off_ = 0;
  std::string sent_;
  std::string received_;
  bool eof_ = false;
};

void Pump(EventLoop* loop, int iterations) {
  for (int i = 0; i < iterations; ++i) {
    Check(loop->RunOnce(EventLoop::RunMode::kNoWait).ok(), "RunOnce failed");
  }
}

// Runs the loop and the client until `done()`; aborts when no byte moves for
// kStallIterations iterations.
template <typename Done>
void RunUntil(EventLoop* loop, Client* client, const char* what, Done done) {
  int idle = 0;
  while (!done()) {
    Pump(loop, 1);
    bool moved = client->Flush();
    moved |= client->Read(SIZE_MAX);
    idle = moved ? 0 : idle + 1;
    if (idle > kStallIterations) {
      Fail(what, client->sent().size(), client->received().size());
    }
  }
}

void SetSmallBuffers(int fd) {
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kSmallSocketBuffer, sizeof(int));
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kSmallSocketBuffer, sizeof(int));
}

void RunOne(const uint8_t* data, size_t size) {
  Input in(data, size);
  const uint32_t b0 = in.Byte();
  const char* backend = kBackends[b0 % 3];
  const Ending ending = static_cast<Ending>(b0 / 3 % 3);
  const uint32_t b1 = in.Byte();
  const uint32_t b2 = in.Byte();
  const uint32_t b3 = in.Byte();
  TcpOptions options;
  options.high_watermark = kHighWatermarks[b1 % 8];
  options.low_watermark = options.high_watermark * (b1 / 8 % 4) / 4;  // 0: half
  options.read_buffer_size = kReadBufferSizes[b2 % 8];
  options.max_reads_per_event = static_cast<int>(b2 / 8 % 4 + 1);
  options.output_block_size = kBlockSizes[b3 % 4];

  EventLoop::Options loop_options;
  loop_options.backend = backend;
  absl::StatusOr<std::unique_ptr<EventLoop>> loop =
      EventLoop::Create(loop_options);
  Check(loop.ok(), "EventLoop::Create failed");

  int fds[2];
  Check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   fds) == 0,
        "socketpair", static_cast<size_t>(errno));
  if (b3 & 4) SetSmallBuffers(fds[0]);
  if (b3 & 8) SetSmallBuffers(fds[1]);

  EchoHandler handler;
  Client client(fds[1]);
  {
    TcpContext context(loop->get(), &handler, options);
    Check(context.Adopt(fds[0]).ok(), "Adopt failed");
    // The most one read can take: the buffer, or the room under the mark.
    const size_t max_read =
        options.high_watermark == 0
            ? options.read_buffer_size
            : std::min(options.read_buffer_size, options.high_watermark);
    const size_t max_stream =
        std::min(kMaxStreamBytes, max_read * kMaxReadsPerInput);
    size_t queued = 0;
    while (!in.done()) {
      const size_t op_pos = in.pos();
      const uint32_t op = in.Byte();
      switch (op % 5) {
        case 0: {
          absl::string_view chunk = in.Take(in.Byte() + 1);
          if (queued + chunk.size() <= max_stream) {
            client.Queue(chunk);
            queued += chunk.size();
          }
          break;
        }
        case 1: {
          const size_t n = in.Word() % (16 * 1024) + 1;
          if (queued + n <= max_stream) {
            std::string chunk(n, '\0');
            uint32_t x = static_cast<uint32_t>(op_pos) * 2654435761u + 1;
            for (char& c : chunk) {
              x ^= x << 13;
              x ^= x >> 17;
              x ^= x << 5;
              c = static_cast<char>(x);
            }
            client.Queue(chunk);
            queued += n;
          }
          break;
        }
        case 2:
          Pump(loop->get(), static_cast<int>(op / 5 % 4 + 1));
          break;
        case 3:
          client.Read((op / 5 + 1) * 61);
          break;
        case 4:
          client.Read(SIZE_MAX);
          break;
      }
      client.Flush();
      Check(handler.closed() == 0, "the server closed a healthy connection");
    }

    switch (ending) {
      case Ending::kHalfClose:
        RunUntil(loop->get(), &client, "stalled before the half-close",
                 [&] { return client.pending() == 0; });
        client.ShutdownWrite();
        RunUntil(loop->get(), &client, "stalled after the half-close",
                 [&] { return client.eof(); });
        Check(client.received() == client.sent(), "half-close: echo differs",
              client.received().size(), client.sent().size());
        // Both sides shut down: the server closes by itself, with OK.
        RunUntil(loop->get(), &client, "not closed after both FINs",
                 [&] { return handler.closed() != 0; });
        Check(handler.reason().ok(), "half-close ended with an error");
        Check(context.connection_count() == 0, "connection left open");
        break;
      case Ending::kStayOpen:
        RunUntil(loop->get(), &client, "stalled while open", [&] {
          return client.pending() == 0 &&
                 client.received().size() == client.sent().size();
        });
        Check(client.received() == client.sent(), "echo differs");
        Check(handler.closed() == 0, "closed while open");
        break;
      case Ending::kAbruptClose: {
        // Unread echo in the client's socket makes the server's next recv
        // fail with ECONNRESET; otherwise it reads EOF, and a send to the
        // closed peer fails with EPIPE. Either way it must close.
        client.CloseNow();
        int iterations = 0;
        while (handler.closed() == 0) {
          Pump(loop->get(), 1);
          Check(++iterations <= kStallIterations,
                "the server kept a connection its peer closed");
        }
        Check(client.sent().substr(0, client.received().size()) ==
                  client.received(),
              "abrupt close: echo is not a prefix of what was sent");
        break;
      }
    }
    const TcpStats& stats = context.stats();
    Check(stats.bytes_read <= client.sent().size(), "read more than was sent",
          stats.bytes_read, client.sent().size());
    Check(stats.bytes_written >= client.received().size(),
          "the client received more than was written", stats.bytes_written,
          client.received().size());
    if (ending != Ending::kAbruptClose) {
      Check(stats.bytes_read == client.sent().size(), "bytes_read",
            stats.bytes_read, client.sent().size());
      Check(stats.bytes_written == client.received().size(), "bytes_written",
            stats.bytes_written, client.received().size());
      Check(stats.queued_bytes == 0, "bytes still queued", stats.queued_bytes);
    }
  }  // the context closes what is still open, with CANCELLED
  Check(handler.closed() == 1, "OnClosed not called exactly once",
        static_cast<size_t>(handler.closed()));
  if (ending == Ending::kStayOpen) {
    Check(absl::IsCancelled(handler.reason()),
          "destroyed context: not CANCELLED");
  }
}

}  // namespace
}  // namespace nbio

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fds_before = nbio::CountOpenFds();
  nbio::RunOne(data, size);
  const int fds_after = nbio::CountOpenFds();
  nbio::Check(fds_before == fds_after, "descriptor leak",
              static_cast<size_t>(fds_before), static_cast<size_t>(fds_after));
  return 0;
}
