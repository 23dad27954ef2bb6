// uring_facts: measures the kernel facts README.md reports, so they can be
// checked again on another kernel or machine:
//
//   tools/bazel run //reactor/uring:uring_facts
//
//   1. which setup mode UringStreamRing gets;
//   2. the largest sparse file table against RLIMIT_NOFILE, and what
//      liburing's io_uring_register_files_sparse does to the limit;
//   3. how many rings of RLIMIT_NOFILE slots fit under RLIMIT_MEMLOCK without
//      CAP_IPC_LOCK, per completion queue size, and the memory per ring;
//   4. which ways of waiting on several rings in one blocking call work.
//
// Parts 2 and 3 run in child processes (they lower limits and drop a
// capability for good). Part 3 needs root with CAP_IPC_LOCK to drop.
#include <liburing.h>
#include <linux/capability.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "reactor/uring/stream_ring.h"

namespace {

using nbio::UringStreamRing;

class NullHandler : public UringStreamRing::Handler {
 public:
  void OnAccept(uint32_t) override {}
  void OnData(uint32_t, const char*, size_t) override {}
  void OnReceiveEnd(uint32_t, int) override {}
  void OnSendDone(uint32_t, int) override {}
  void OnClosed(uint32_t) override {}
};

long StatusKb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key, 0) == 0) return std::atol(line.c_str() + strlen(key));
  }
  return -1;
}

long KmemBytes() {
  std::ifstream f("/sys/fs/cgroup/memory/memory.kmem.usage_in_bytes");
  long v = -1;
  f >> v;
  return v;
}

int RegisterSparse(int ring_fd, unsigned n) {
  io_uring_rsrc_register reg{};
  reg.flags = IORING_RSRC_REGISTER_SPARSE;
  reg.nr = n;
  return syscall(__NR_io_uring_register, ring_fd, IORING_REGISTER_FILES2, &reg,
                 sizeof(reg)) < 0
             ? -errno
             : 0;
}

// Runs `fn` in a child and waits for it.
template <typename Fn>
void InChild(Fn fn) {
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    fn();
    std::fflush(stdout);
    _exit(0);
  }
  waitpid(pid, nullptr, 0);
}

bool DropCapIpcLock() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct caps[2]{};
  if (syscall(SYS_capget, &header, caps) != 0) return false;
  if ((caps[0].effective & (1u << CAP_IPC_LOCK)) == 0) return false;
  caps[0].effective &= ~(1u << CAP_IPC_LOCK);
  caps[0].permitted &= ~(1u << CAP_IPC_LOCK);
  return syscall(SYS_capset, &header, caps) == 0;
}

void SetupMode() {
  NullHandler handler;
  UringStreamRing::Options options;
  options.slots = 16;
  auto ring = UringStreamRing::Create(options, &handler);
  if (!ring.ok()) {
    std::printf("1. io_uring unavailable: %s\n",
                ring.status().ToString().c_str());
    std::exit(1);
  }
  std::printf("1. setup mode: %s\n", (*ring)->setup_mode());
}

void TableSize() {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  io_uring ring;
  io_uring_queue_init(8, &ring, 0);
  const unsigned soft = static_cast<unsigned>(rl.rlim_cur);
  std::printf("2. RLIMIT_NOFILE %llu/%llu: sparse table of %u -> %s",
              static_cast<unsigned long long>(rl.rlim_cur),
              static_cast<unsigned long long>(rl.rlim_max), soft,
              strerror(-RegisterSparse(ring.ring_fd, soft)));
  io_uring_unregister_files(&ring);
  std::printf(", of %u -> %s, of %u (IORING_MAX_FIXED_FILES) -> %s\n", soft + 1,
              strerror(-RegisterSparse(ring.ring_fd, soft + 1)), 1u << 20,
              strerror(-RegisterSparse(ring.ring_fd, 1u << 20)));
  io_uring_queue_exit(&ring);
  InChild([] {
    rlimit low{};
    getrlimit(RLIMIT_NOFILE, &low);
    low.rlim_cur = 256;
    setrlimit(RLIMIT_NOFILE, &low);
    io_uring r;
    io_uring_queue_init(8, &r, 0);
    const int ret = io_uring_register_files_sparse(&r, 4096);
    getrlimit(RLIMIT_NOFILE, &low);
    std::printf(
        "   soft limit 256: liburing io_uring_register_files_sparse(4096) -> "
        "%s, and the soft limit is now %llu\n",
        strerror(-ret), static_cast<unsigned long long>(low.rlim_cur));
  });
}

void Memlock() {
  rlimit ml{};
  getrlimit(RLIMIT_MEMLOCK, &ml);
  for (unsigned cq : {65536u, 16384u, 4096u}) {
    // Ring memory is given back asynchronously after a ring closes: let the
    // previous child's rings go first.
    sleep(1);
    InChild([cq, &ml] {
      if (!DropCapIpcLock()) {
        std::printf("3. cannot drop CAP_IPC_LOCK: skipped\n");
        return;
      }
      NullHandler handler;
      UringStreamRing::Options options;  // slots: RLIMIT_NOFILE
      options.cq_entries = cq;
      std::vector<std::unique_ptr<UringStreamRing>> rings;
      const long rss0 = StatusKb("VmRSS:");
      const long kmem0 = KmemBytes();
      std::string why;
      while (rings.size() < 200) {
        auto ring = UringStreamRing::Create(options, &handler);
        if (!ring.ok()) {
          why = ring.status().ToString();
          break;
        }
        rings.push_back(std::move(ring).value());
      }
      const long n = static_cast<long>(rings.size());
      if (n == 0) {
        std::printf("3. CQ %u: no ring fits: %s\n", cq, why.c_str());
        return;
      }
      std::printf(
          "3. RLIMIT_MEMLOCK %llu KiB, no CAP_IPC_LOCK: %ld rings of %u slots "
          "with %u SQ / %u CQ entries fit (%ld KiB of memlock each); per "
          "ring %ld KiB resident here, %ld KiB kernel memory\n",
          static_cast<unsigned long long>(ml.rlim_cur / 1024), n,
          rings[0]->slots(), rings[0]->sq_entries(), rings[0]->cq_entries(),
          static_cast<long>(ml.rlim_cur / 1024) / n,
          (StatusKb("VmRSS:") - rss0) / n,
          kmem0 < 0 ? -1 : (KmemBytes() - kmem0) / 1024 / n);
    });
  }
}

// Does `fd` become readable within 200 ms of data arriving for a receive
// queued on a ring set up with `flags`? How: 0 epoll on the ring fd, 1
// POLL_ADD of the ring fd on another ring, 2 epoll on a registered eventfd.
const char* Wakes(unsigned flags, int how) {
  io_uring ring;
  io_uring_params p{};
  p.flags = flags;
  if (io_uring_queue_init_params(8, &ring, &p) != 0) return "setup failed";
  int sv[2];
  socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
  int efd = -1;
  if (how == 2) {
    efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    io_uring_register_eventfd(&ring, efd);
  }
  static char buf[16];
  io_uring_prep_recv(io_uring_get_sqe(&ring), sv[0], buf, sizeof(buf), 0);
  io_uring_submit(&ring);
  // The first poll of a SINGLE_ISSUER ring fd activates its poll wait
  // queue with one wake-up of its own (io_activate_pollwq): consume that
  // before the data, or it would pass for a real one.
  bool woke = false;
  if (how == 1) {
    io_uring main;
    io_uring_queue_init(8, &main, 0);
    __kernel_timespec settle{0, 50'000'000};
    io_uring_cqe* cqe = nullptr;
    io_uring_prep_poll_add(io_uring_get_sqe(&main), ring.ring_fd, POLLIN);
    io_uring_submit(&main);
    if (io_uring_wait_cqe_timeout(&main, &cqe, &settle) == 0) {
      io_uring_cqe_seen(&main, cqe);
      io_uring_prep_poll_add(io_uring_get_sqe(&main), ring.ring_fd, POLLIN);
      io_uring_submit(&main);
    }
    (void)!write(sv[1], "x", 1);
    __kernel_timespec ts{0, 200'000'000};
    woke = io_uring_wait_cqe_timeout(&main, &cqe, &ts) == 0;
    io_uring_queue_exit(&main);
  } else {
    const int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    epoll_ctl(ep, EPOLL_CTL_ADD, how == 2 ? efd : ring.ring_fd, &ev);
    epoll_wait(ep, &ev, 1, 50);
    (void)!write(sv[1], "x", 1);
    woke = epoll_wait(ep, &ev, 1, 200) == 1;
    close(ep);
  }
  io_uring_queue_exit(&ring);
  close(sv[0]);
  close(sv[1]);
  if (efd >= 0) close(efd);
  return woke ? "wakes" : "does NOT wake";
}

void MultiRing() {
  const unsigned defer =
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  const unsigned coop = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  std::printf(
      "4. DEFER_TASKRUN ring: epoll on the ring fd %s; POLL_ADD of the ring "
      "fd on a main ring %s; epoll on a registered eventfd %s\n"
      "   COOP_TASKRUN ring: epoll on the ring fd %s; POLL_ADD on a main "
      "ring %s\n",
      Wakes(defer, 0), Wakes(defer, 1), Wakes(defer, 2), Wakes(coop, 0),
      Wakes(coop, 1));
}

}  // namespace

int main() {
  SetupMode();
  TableSize();
  Memlock();
  MultiRing();
  return 0;
}
