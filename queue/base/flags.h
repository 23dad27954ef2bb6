// Command-line helpers for nbio binaries.
//
// ByteSize: a flag type for sizes, "65536", "64KiB", "1MiB", "2GiB".
//
// CheckCommandLine(): Abseil's ParseCommandLine() exits with status 1 on a
// bad flag, and this project promises status 2 for usage errors (the usual
// convention of command-line tools). CheckCommandLine() finds the same
// errors first (unknown flag, missing value, a value that does not parse)
// and returns them as one line, so main() can print it and exit 2 before
// handing argv to ParseCommandLine(), which then cannot fail.
// ParseCommandLineOrExit() does all of that for a main().
#ifndef NBIO_QUEUE_BASE_FLAGS_H_
#define NBIO_QUEUE_BASE_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace nbio {

struct ByteSize {
  uint64_t bytes = 0;
};

// Abseil flag hooks (found by ADL).
bool AbslParseFlag(absl::string_view text, ByteSize* size, std::string* error);
std::string AbslUnparseFlag(ByteSize size);

// OK, or INVALID_ARGUMENT "unknown flag --foo" / "missing value for --listen"
// / "invalid value for --reactors: ..." for the first error in argv.
absl::Status CheckCommandLine(int argc, char** argv);

// Prints "PROGRAM: MESSAGE (see --help)" to stderr and exits with status 2.
[[noreturn]] void ExitWithUsageError(absl::string_view program,
                                     absl::string_view message);

// Whether argv asks for --help (or -help) before any "--".
bool AsksForHelp(int argc, char** argv);

// A main()'s flag handling: sets `usage` as the program's usage message
// (once per process); on --help prints the usage and the flags defined in
// the program's main file (a file whose name contains `program`) to stdout
// and exits 0; checks argv with CheckCommandLine(), then parses it with
// absl::ParseCommandLine() (which handles Abseil's other usage flags,
// --helpfull, --version, and exits). A bad flag or a positional argument
// exits through ExitWithUsageError().
void ParseCommandLineOrExit(int argc, char** argv, absl::string_view program,
                            absl::string_view usage);

}  // namespace nbio

#endif  // NBIO_QUEUE_BASE_FLAGS_H_
