// LoadGenerator: drives a TCP echo server with many connections and checks
// every byte it echoes. The engine behind //tools:echo_load.
//
// It is an instrument for nbio's event loop, so it does not use it: each
// load thread runs its own raw, level-triggered epoll loop over its share of
// the connections (connection i belongs to thread i % threads).
//
// A run, in order:
//   ramp-up  connections open at `connect_rate` per second (0: all at once);
//            each starts its traffic as soon as it is established. Ends when
//            every connection is established or has failed, or at the ramp
//            cap (connections / connect_rate + 5 s): connects still pending
//            then count as timed out.
//   warmup   traffic, not measured.
//   measure  `duration` of traffic; messages whose last byte arrives in this
//            window are counted and their round trips recorded.
//   drain    no new messages; up to `drain_timeout` for echoes of what was
//            sent. Ends early once nothing is outstanding.
// Then every connection is closed. Should a run overrun its hard cap (ramp
// cap + warmup + duration + drain_timeout + 5 s) the process exits with
// status 4: that is a bug in the generator, never the server's doing.
//
// Traffic: each connection keeps `depth` messages of `size` bytes in flight
// (depth 1 is ping-pong): when message k's last byte has come back, message
// k + depth is sent. Connection c's bytes are its BytePattern stream.
//
// Verification, over the whole run (ramp-up, warmup and drain included):
//   mismatches  received bytes that differ from the byte sent at the same
//               stream position.
//   extra       bytes received while nothing was outstanding on the
//               connection (more came back than was sent). They are
//               discarded: the stream position does not move.
//   lost        bytes sent and never echoed, on connections the server had
//               echoed at least one byte on, counted when the peer closed or
//               reset the connection, or when the drain ended.
// A connection the server closed or reset before echoing a single byte is
// counted as `rejected`, one it kept open without echoing a byte until the
// end as `unanswered`: the server refused it (e.g. a select() server past
// FD_SETSIZE), which is a capacity limit, not lost data. Both count as
// failed connections.
//
// Hold mode (`hold`), for many mostly idle connections (C1M):
//   ramp-up  connections open at `connect_rate`, at most `max_connecting`
//            connects in flight per process; each sends one message of
//            `size` bytes as soon as it is established and checks its echo
//            byte for byte (a verified round trip). Ends when every
//            connection is verified or has failed, or at the ramp cap (as
//            above, plus `drain_timeout` for the last round trips).
//   hold     `hold_time` with every connection open and idle; a connection
//            the server closes or resets here counts as closed_by_peer.
//   close    every connection is shut down for writing (FIN) and waits for
//            the server's EOF; up to `drain_timeout` for all of them, after
//            which the rest count as `unclosed`.
//
// Processes (`processes` > 1): the run is split over that many fork()ed
// worker processes, each with its share of the connections (and threads
// within it as above) and its share of the source addresses, so that the
// client side is not bound by one process's RLIMIT_NOFILE. The parent
// aggregates their progress and results; the phases of all processes move
// together (a process that has finished its ramp-up waits for the others
// before warmup or hold starts).
//
// Source addresses (`sources` > 1): connection i of a process is bound to
// its (i % n)-th source address with IP_BIND_ADDRESS_NO_PORT, so the port
// is chosen at connect() time per 4-tuple and each address has its own
// ~28k ephemeral ports. Source k (from 0) is 127.0.(k / 254).(1 + k % 254):
// 127.0.0.1 .. 127.0.0.254, then 127.0.1.1 .., skipping .0 and .255.
//
// Thread-compatible: one Run() at a time; Run() blocks the calling thread,
// which coordinates the phases and reports progress.
#ifndef NBIO_TOOLS_LOAD_GENERATOR_H_
#define NBIO_TOOLS_LOAD_GENERATOR_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "reactor/sys/socket_address.h"
#include "tools/latency_histogram.h"

namespace nbio {
namespace load {

// The most bytes a connection may have in flight (size * depth).
inline constexpr uint64_t kMaxBytesInFlight = uint64_t{4} << 20;
// Source addresses 127.0.0.1 .. 127.0.255.254 (see the file comment).
inline constexpr int kMaxSources = 254 * 256;
inline constexpr int kMaxProcesses = 256;
// File descriptors the generator needs besides one per connection (epoll
// fds, stdio, what the process inherited).
inline constexpr int kSpareFds = 32;

// Source address k (from 0), in host byte order: 127.0.(k / 254).(1 + k % 254).
uint32_t SourceAddress(int k);

struct LoadOptions {
  SocketAddress target;
  int connections = 100;
  size_t size = 64;
  int depth = 1;
  absl::Duration duration = absl::Seconds(10);
  absl::Duration warmup = absl::Seconds(2);
  double connect_rate = 0;  // connections per second; 0 = as fast as possible
  // Connects in flight per process; 0 = no limit. A limit keeps a burst of
  // SYNs within the server's accept backlog, but a SYN that is dropped
  // anyway holds its slot until the retransmit (1 s, then 2 s, ...).
  int max_connecting = 0;
  int sources = 1;  // source addresses, see the file comment
  int threads = 1;  // per process
  int processes = 1;
  bool hold = false;  // hold mode, see the file comment
  absl::Duration hold_time = absl::Seconds(10);
  absl::Duration drain_timeout = absl::Seconds(2);
  // Without it, only 127.0.0.0/8 and ::1 are accepted as targets.
  bool allow_remote = false;

  // Set by the process layer for each worker process, not by flags: the
  // run's start (steady clock, ns; 0 = when Run() starts), the first
  // connection's global index, the first source address, and the pipes to
  // the parent (-1: none).
  int64_t start_ns = 0;
  int index_offset = 0;
  int source_offset = 0;
  int progress_fd = -1;
  int control_fd = -1;
};

// Checks the options against each other and the limits above (a loopback
// target unless allow_remote), and against the process's file-descriptor
// limit (for one process's share of the connections), raising the soft
// limit towards the hard one when the connections need it: this is the one
// side effect. INVALID_ARGUMENT / RESOURCE_EXHAUSTED with a one-line reason.
absl::Status ValidateOptions(const LoadOptions& options);

// What Run() reports every ~250 ms, for a progress display.
struct LoadProgress {
  double elapsed_seconds = 0;
  const char* phase = "";    // "ramp-up", "warmup", "measure", "drain";
                             // hold mode: "ramp-up", "hold", "close"
  uint64_t open = 0;         // connections established and not closed
  uint64_t failed = 0;       // connections that failed so far
  uint64_t messages = 0;     // messages echoed in full so far, all phases
  uint64_t errors = 0;       // resets + other I/O errors so far
  uint64_t data_errors = 0;  // mismatched + extra bytes so far
  uint64_t established = 0;  // connections established so far (cumulative)
  uint64_t verified = 0;     // hold mode: round trips verified so far
  uint64_t closed = 0;       // hold mode: closed cleanly (EOF seen) so far
};

struct LoadResult {
  // --- connections (they add up to `connections`)
  uint64_t connections_ok = 0;  // established, served to the end
  uint64_t refused = 0;         // ECONNREFUSED
  uint64_t timed_out = 0;       // not established by the ramp cap
  uint64_t out_of_fds = 0;      // socket() failed with EMFILE / ENFILE, or
                                // not attempted after that
  uint64_t no_ports = 0;        // EADDRNOTAVAIL: ephemeral ports exhausted
  uint64_t connect_errors = 0;  // any other connect failure
  uint64_t rejected = 0;        // closed / reset by the server, nothing echoed
  uint64_t unanswered = 0;      // open to the end, nothing echoed
  uint64_t closed_by_peer = 0;  // closed / reset by the server mid-run
  uint64_t unclosed = 0;        // hold mode: no EOF from the server by the
                                // end of the close phase
  // --- events
  uint64_t resets = 0;     // ECONNRESET / EPIPE seen on established connections
  uint64_t io_errors = 0;  // other read/write errors
  // --- traffic
  uint64_t messages = 0;  // echoed in full inside the measured window
  uint64_t messages_total = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  // --- hold mode (also counted in the other modes where they apply)
  uint64_t established = 0;    // connections that were established
  uint64_t verified = 0;       // connections whose first message came back
                               // in full and byte for byte
  double window_seconds = 0;   // the measured window: `duration`
  double ramp_up_seconds = 0;  // from start until ramp-up ended
  double last_established_seconds = 0;  // from start to the last connect
  double round_trip_all_seconds = 0;    // from start to the last verified
                                        // round trip (hold mode)
  double hold_seconds = 0;              // hold mode: the hold phase
  double close_seconds = 0;  // hold mode: from the end of the hold until
                             // the last connection closed
  double run_seconds = 0;    // from start until every connection closed
  // CPU time (user + system) the generator used over the run, all threads
  // and processes: near run_seconds * threads * processes means the
  // generator, not the server, set the pace.
  double cpu_seconds = 0;
  LatencyHistogram latency_ns;  // round trips of the measured messages
  // --- verification
  uint64_t mismatches = 0;
  uint64_t lost = 0;
  uint64_t extra = 0;
  // The first connect error seen, e.g. "connect(127.0.0.1:7007): Connection
  // refused [ECONNREFUSED]"; empty if none.
  std::string first_connect_error;

  uint64_t connections_failed() const;
  // Connections per second over the ramp-up (established / the time of the
  // last one); 0 when none was established.
  double ramp_rate() const;
};

class LoadGenerator {
 public:
  // `options` must have passed ValidateOptions().
  explicit LoadGenerator(const LoadOptions& options);

  // Runs the load (see the file comment) and blocks until it is over.
  // `on_progress` is called on the calling thread about every 250 ms.
  // Errors only for setup failures (epoll_create1, thread creation, fork, a
  // worker process that died); everything the server does is reported in
  // the result. With processes > 1 it fork()s: call it before starting
  // threads of your own.
  absl::StatusOr<LoadResult> Run(
      absl::FunctionRef<void(const LoadProgress&)> on_progress);

 private:
  absl::StatusOr<LoadResult> RunHere(
      absl::FunctionRef<void(const LoadProgress&)> on_progress);
  absl::StatusOr<LoadResult> RunProcesses(
      absl::FunctionRef<void(const LoadProgress&)> on_progress);

  LoadOptions options_;
};

}  // namespace load
}  // namespace nbio

#endif  // NBIO_TOOLS_LOAD_GENERATOR_H_
