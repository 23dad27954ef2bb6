#include "queue/testing/summary_reporter.h"

#include <ostream>
#include <utility>

namespace nbio {
namespace bench {

double SecondsPerIteration(const benchmark::BenchmarkReporter::Run& run) {
  const double per_iteration = run.run_name.time_type == "real_time"
                                   ? run.GetAdjustedRealTime()
                                   : run.GetAdjustedCPUTime();
  return per_iteration / benchmark::GetTimeUnitMultiplier(run.time_unit);
}

void RowRuns::Add(const Run& run) {
  const bool aggregate = run.run_type == Run::RT_Aggregate;
  if (aggregate && run.aggregate_name != aggregate_) return;
  const std::string name = run.run_name.str();
  auto [it, inserted] = rows_.try_emplace(name);
  if (inserted) order_.push_back(name);
  Entry& entry = it->second;
  // Once the aggregate is in, plain runs of the row (and failed aggregates,
  // which the library does not produce) no longer replace it.
  if (entry.from_aggregate && !(aggregate && !run.error_occurred)) return;
  entry.run = run;
  entry.from_aggregate = aggregate && !run.error_occurred;
}

const RowRuns::Run* RowRuns::Find(const std::string& row) const {
  const auto it = rows_.find(row);
  return it == rows_.end() ? nullptr : &it->second.run;
}

std::optional<double> RowRuns::Seconds(const std::string& row) const {
  const Run* run = Find(row);
  if (run == nullptr || run->error_occurred) return std::nullopt;
  const double seconds = SecondsPerIteration(*run);
  if (!(seconds > 0)) return std::nullopt;
  return seconds;
}

void SummaryReporter::ReportRuns(const std::vector<Run>& runs) {
  for (const Run& run : runs) rows_.Add(run);
  ConsoleReporter::ReportRuns(runs);
}

void SummaryReporter::Finalize() {
  ConsoleReporter::Finalize();
  GetOutputStream().flush();
  PrintSummary(stdout);
  std::fflush(stdout);
}

int RunBenchmarks(int argc, char** argv,
                  benchmark::BenchmarkReporter* reporter) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks(reporter);
  benchmark::Shutdown();
  return 0;
}

}  // namespace bench
}  // namespace nbio
