// README.md quotes echo/example_server.cc, which is compiled and run as
// //echo:example_server: keep the two identical.
#include <fstream>
#include <sstream>
#include <string>

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

}  // namespace
}  // namespace nbio
