#include "queue/base/flags.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/internal/program_name.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace nbio {

bool AbslParseFlag(absl::string_view text, ByteSize* size, std::string* error) {
  struct Unit {
    const char* suffix;
    uint64_t factor;
  };
  static constexpr Unit kUnits[] = {
      {"GiB", uint64_t{1} << 30},
      {"MiB", uint64_t{1} << 20},
      {"KiB", uint64_t{1} << 10},
      {"B", 1},
  };
  text = absl::StripAsciiWhitespace(text);
  uint64_t factor = 1;
  for (const Unit& u : kUnits) {
    if (absl::EndsWith(text, u.suffix)) {
      factor = u.factor;
      text.remove_suffix(absl::string_view(u.suffix).size());
      break;
    }
  }
  uint64_t number = 0;
  if (text.empty() || !absl::ascii_isdigit(text[0]) ||
      !absl::SimpleAtoi(text, &number)) {
    *error = "expected a byte count such as 65536, 64KiB, 1MiB or 2GiB";
    return false;
  }
  if (number > std::numeric_limits<uint64_t>::max() / factor) {
    *error = "size too large";
    return false;
  }
  size->bytes = number * factor;
  return true;
}

std::string AbslUnparseFlag(ByteSize size) {
  const uint64_t b = size.bytes;
  if (b != 0 && b % (uint64_t{1} << 30) == 0)
    return absl::StrCat(b >> 30, "GiB");
  if (b != 0 && b % (uint64_t{1} << 20) == 0)
    return absl::StrCat(b >> 20, "MiB");
  if (b != 0 && b % (uint64_t{1} << 10) == 0)
    return absl::StrCat(b >> 10, "KiB");
  return absl::StrCat(b);
}

namespace {

// Flags of absl/flags/parse.cc and absl/flags/internal/usage.cc.
constexpr absl::string_view kBuiltinSwitches[] = {
    "help",        "helpfull", "helpshort",
    "helppackage", "version",  "only_check_args"};
constexpr absl::string_view kBuiltinWithValue[] = {
    "helpon", "helpmatch", "flagfile", "fromenv", "tryfromenv", "undefok"};

bool TakesValue(absl::string_view name) {
  for (absl::string_view b : kBuiltinWithValue) {
    if (name == b) return true;
  }
  return false;
}

bool IsAbslBuiltinFlag(absl::string_view name) {
  for (absl::string_view b : kBuiltinSwitches) {
    if (name == b) return true;
  }
  return TakesValue(name);
}

}  // namespace

absl::Status CheckCommandLine(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;  // the rest are positional
    if (arg.size() < 2 || arg[0] != '-') {
      return absl::InvalidArgumentError(absl::StrCat(
          "unexpected argument \"", arg, "\" (flags look like --name=value)"));
    }
    arg.remove_prefix(arg[1] == '-' ? 2 : 1);
    absl::string_view name = arg;
    absl::string_view value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    // Abseil's built-in flags are handled by ParseCommandLine() itself and
    // are not visible to FindCommandLineFlag() before it runs.
    if (IsAbslBuiltinFlag(name)) {
      if (!has_value && TakesValue(name)) ++i;
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    bool negated = false;
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      flag = absl::FindCommandLineFlag(name.substr(2));
      negated = flag != nullptr;
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    const bool is_bool = flag->IsOfType<bool>();
    if (negated && (!is_bool || has_value)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (is_bool && !has_value) continue;
    if (!has_value) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(
            absl::StrCat("missing value for --", name));
      }
      value = argv[++i];
    }
    // Parse into the flag: ParseCommandLine() will set the same value again.
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      // Abseil prefixes its own "Illegal value '...' specified for flag
      // '...'; " to the parser's reason: keep the reason only.
      if (const size_t semi = error.find("; ");
          semi != std::string::npos &&
          absl::StartsWith(error, "Illegal value")) {
        error.erase(0, semi + 2);
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid value \"", value, "\" for --", name, ": ", error));
    }
  }
  return absl::OkStatus();
}

void ExitWithUsageError(absl::string_view program, absl::string_view message) {
  std::fprintf(stderr, "%.*s: %.*s (see --help)\n",
               static_cast<int>(program.size()), program.data(),
               static_cast<int>(message.size()), message.data());
  std::exit(2);
}

bool AsksForHelp(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") return false;
    if (arg == "--help" || arg == "-help") return true;
  }
  return false;
}

void ParseCommandLineOrExit(int argc, char** argv, absl::string_view program,
                            absl::string_view usage) {
  absl::SetProgramUsageMessage(usage);
  if (AsksForHelp(argc, argv)) {
    // Abseil's own --help prints the same text but exits with status 1; a
    // user asking for help has made no error. The flags listed are those
    // defined in files whose name contains the program's (its main file),
    // as Abseil's --help does; --helpfull lists every flag (exit 1).
    // ParseCommandLine() would have set the name the help starts with.
    absl::flags_internal::SetProgramInvocationName(argv[0]);
    absl::flags_internal::FlagsHelp(
        std::cout, program, absl::flags_internal::HelpFormat::kHumanReadable,
        usage);
    std::cout.flush();
    std::exit(0);
  }
  absl::Status args = CheckCommandLine(argc, argv);
  if (!args.ok()) ExitWithUsageError(program, args.message());
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {  // after "--"
    ExitWithUsageError(program,
                       absl::StrCat("unexpected argument \"", rest[1], "\""));
  }
}

}  // namespace nbio
