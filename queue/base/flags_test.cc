#include "queue/base/flags.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "gtest/gtest.h"

ABSL_FLAG(int, test_count, 1, "an int");
ABSL_FLAG(bool, test_switch, false, "a bool");
ABSL_FLAG(nbio::ByteSize, test_size, nbio::ByteSize{0}, "a size");

namespace nbio {
namespace {

// A command line as main() gets it: argc() and a mutable argv().
class Argv {
 public:
  explicit Argv(std::vector<std::string> args) : args_(std::move(args)) {
    for (std::string& a : args_) pointers_.push_back(a.data());
  }
  int argc() const { return static_cast<int>(pointers_.size()); }
  char** argv() { return pointers_.data(); }

 private:
  std::vector<std::string> args_;
  std::vector<char*> pointers_;
};

absl::Status Check(std::vector<std::string> args) {
  args.insert(args.begin(), "prog");
  Argv a(std::move(args));
  return CheckCommandLine(a.argc(), a.argv());
}

TEST(ByteSizeTest, ParsesSuffixesAndRejectsJunk) {
  struct Case {
    const char* text;
    uint64_t bytes;
  } good[] = {{"0", 0},
              {"65536", 65536},
              {"64KiB", 65536},
              {"1MiB", 1 << 20},
              {"2GiB", uint64_t{2} << 30},
              {"10B", 10}};
  for (const Case& c : good) {
    ByteSize size;
    std::string error;
    ASSERT_TRUE(AbslParseFlag(c.text, &size, &error))
        << c.text << ": " << error;
    EXPECT_EQ(size.bytes, c.bytes) << c.text;
  }
  for (const char* bad : {"", "KiB", "-1", "1.5MiB", "12kb", "1 TiB", "x1",
                          "99999999999999999999GiB"}) {
    ByteSize size;
    std::string error;
    EXPECT_FALSE(AbslParseFlag(bad, &size, &error)) << bad;
    EXPECT_FALSE(error.empty());
  }
  EXPECT_EQ(AbslUnparseFlag(ByteSize{262144}), "256KiB");
  EXPECT_EQ(AbslUnparseFlag(ByteSize{1000}), "1000");
}

TEST(CheckCommandLineTest, AcceptsGoodFlagsInEveryForm) {
  EXPECT_TRUE(
      Check({"--test_count=3", "--test_switch", "--test_size=1MiB"}).ok());
  EXPECT_TRUE(Check({"--test_count", "3", "--notest_switch"}).ok());
  EXPECT_TRUE(Check({"-test_count=4", "--test_switch=false"}).ok());
  EXPECT_TRUE(Check({}).ok());
  // Abseil's own flags are left to ParseCommandLine().
  EXPECT_TRUE(Check({"--help"}).ok());
  EXPECT_TRUE(Check({"--helpfull", "--helpon", "flags"}).ok());
  EXPECT_TRUE(Check({"--flagfile=/dev/null", "--test_count=2"}).ok());
}

TEST(CheckCommandLineTest, ReportsTheFirstErrorInOneLine) {
  struct Case {
    std::vector<std::string> args;
    const char* message;
  } cases[] = {
      {{"--bogus=1"}, "unknown flag --bogus"},
      {{"--nobogus"}, "unknown flag --nobogus"},
      {{"--notest_count"}, "unknown flag --notest_count"},
      {{"--test_count"}, "missing value for --test_count"},
      {{"--test_count=many"}, "invalid value \"many\" for --test_count"},
      {{"--test_size=1TB"}, "invalid value \"1TB\" for --test_size"},
      {{"stray"}, "unexpected argument \"stray\""},
  };
  for (const Case& c : cases) {
    absl::Status s = Check(c.args);
    ASSERT_FALSE(s.ok()) << c.args[0];
    EXPECT_NE(s.message().find(c.message), absl::string_view::npos) << s;
    EXPECT_EQ(s.message().find('\n'), absl::string_view::npos) << s;
  }
}

TEST(ParseCommandLineOrExitTest, ExitsWithStatus2AndOneLine) {
  // Each child starts afresh: the usage message may be set once a process.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Argv bad({"prog", "--test_count=many"});
  EXPECT_EXIT(
      ParseCommandLineOrExit(bad.argc(), bad.argv(), "prog", "usage"),
      ::testing::ExitedWithCode(2),
      "^prog: invalid value \"many\" for --test_count: .* \\(see --help\\)\n$");
  Argv stray({"prog", "--test_count=2", "--", "stray"});
  EXPECT_EXIT(
      ParseCommandLineOrExit(stray.argc(), stray.argv(), "prog", "usage"),
      ::testing::ExitedWithCode(2),
      "^prog: unexpected argument \"stray\" \\(see --help\\)\n$");
}

TEST(AsksForHelpTest, OnlyABareHelpBeforeTheEndOfFlags) {
  auto asks = [](std::vector<std::string> args) {
    Argv a(std::move(args));
    return AsksForHelp(a.argc(), a.argv());
  };
  EXPECT_TRUE(asks({"prog", "--help"}));
  EXPECT_TRUE(asks({"prog", "--test_count=2", "-help"}));
  EXPECT_FALSE(asks({"prog"}));
  EXPECT_FALSE(asks({"prog", "--helpfull"}));
  EXPECT_FALSE(asks({"prog", "--", "--help"}));
  EXPECT_FALSE(asks({"--help"}));  // argv[0] is the program
}

TEST(ParseCommandLineOrExitTest, HelpExits0) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Argv help({"prog", "--help"});
  EXPECT_EXIT(ParseCommandLineOrExit(help.argc(), help.argv(), "prog", "usage"),
              ::testing::ExitedWithCode(0), "");
}

TEST(ParseCommandLineOrExitTest, SetsTheFlags) {
  Argv a({"prog", "--test_count=7", "--test_switch"});
  ParseCommandLineOrExit(a.argc(), a.argv(), "prog", "usage");
  EXPECT_EQ(absl::GetFlag(FLAGS_test_count), 7);
  EXPECT_TRUE(absl::GetFlag(FLAGS_test_switch));
}

}  // namespace
}  // namespace nbio
