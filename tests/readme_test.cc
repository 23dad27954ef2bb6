// README.md's example server, kept honest twice over:
//  - README.md quotes echo/example_server.cc verbatim (so the quoted code is
//    the code Bazel compiles as //echo:example_server);
//  - the compiled example runs and does what the README says: a line comes
//    back upper-cased, and Ctrl-C (SIGINT) drains and exits 0.
// The example listens on the fixed port 7008, as a reader would type it. To
// stay hermetic the run happens in a network namespace of this test's own
// (a fresh loopback where 7008 is free); where namespaces are refused, it
// runs on the shared loopback if 7008 is free there, and otherwise says so
// and skips.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/server_process.h"

namespace nbio {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(testing::RunfilePath(path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ReadmeTest, QuotesTheCompiledExampleVerbatim) {
  const std::string readme = Slurp("README.md");
  const std::string example = Slurp("echo/example_server.cc");
  ASSERT_FALSE(readme.empty());
  ASSERT_FALSE(example.empty());
  EXPECT_NE(readme.find("```cpp\n" + example + "```"), std::string::npos)
      << "README.md's example differs from echo/example_server.cc";
}

// Whether 127.0.0.1:`port` can be bound here now.
bool PortIsFree(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool free =
      bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return free;
}

TEST(ReadmeTest, TheExampleRunsAsTheReadmeSays) {
  const std::string netns_error = testing::EnterOwnNetworkNamespace();
  ASSERT_FALSE(absl::StartsWith(netns_error, "FAIL")) << netns_error;
  if (!netns_error.empty()) {
    std::fprintf(stderr,
                 "readme_test: no network namespace of its own (%s); "
                 "using the shared loopback\n",
                 netns_error.c_str());
    if (!PortIsFree(7008)) {
      GTEST_SKIP() << "cannot run the README example: no network namespace ("
                   << netns_error << ") and 127.0.0.1:7008 is in use";
    }
  }
  testing::ServerProcess server({"echo/example_server"});
  ASSERT_TRUE(server.WaitListening()) << server.Stderr();
  EXPECT_EQ(server.address().ToString(), "127.0.0.1:7008");

  const int fd = server.Connect();
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(testing::WriteAll(fd, "hello, nbio\nsecond line\n"));
  EXPECT_EQ(testing::ReadN(fd, 24), "HELLO, NBIO\nSECOND LINE\n");

  // Ctrl-C with the connection still open: the drain half-closes it, the
  // client sees EOF, closes, and the example returns 0.
  server.Signal(SIGINT);
  bool eof = false;
  EXPECT_EQ(testing::ReadToEof(fd, &eof), "");
  EXPECT_TRUE(eof);
  close(fd);
  EXPECT_EQ(server.WaitExit(absl::Seconds(10)), 0) << server.Stderr();
}

}  // namespace
}  // namespace nbio
