// Support for benchmark binaries that compare nbio with baselines in one
// run: after Google Benchmark's console table they print a summary (ratios
// against a baseline row) computed from the same rows. What every such
// binary shares lives here: which run stands for a row when the benchmark is
// repeated, that row's time per iteration, the reporter that prints the
// summary after the table, and the body of main().
//
//   class PairReporter : public bench::SummaryReporter {
//     void PrintSummary(std::FILE* out) override {
//       const std::optional<double> ours = rows().Seconds("BM_Ours");
//       const std::optional<double> base = rows().Seconds("BM_Baseline");
//       if (ours && base) std::fprintf(out, "%.2fx\n", *base / *ours);
//     }
//   };
//   int main(int argc, char** argv) {
//     PairReporter reporter;
//     return bench::RunBenchmarks(argc, argv, &reporter);
//   }
#ifndef NBIO_QUEUE_TESTING_SUMMARY_REPORTER_H_
#define NBIO_QUEUE_TESTING_SUMMARY_REPORTER_H_

#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"

namespace nbio {
namespace bench {

// Seconds per iteration of `run`: its wall time for rows that UseRealTime()
// (threaded rows, "/real_time" in the name), else its CPU time (on a shared
// machine the less noisy of the two, the code's own cost).
double SecondsPerIteration(const benchmark::BenchmarkReporter::Run& run);

// The run that stands for each benchmark row (a row is a full run name,
// run_name.str(), such as "BM_MpscQueue/producers:3/real_time"): its
// `aggregate` ("mean" or "median") when the row was repeated, else its last
// plain run. A failed run (SkipWithError) stands for its row until a good
// aggregate arrives, so a summary can say why a row has no time. Other
// aggregates (stddev, cv, BigO...) are ignored. Not thread-safe; the
// benchmark library reports from one thread.
class RowRuns {
 public:
  using Run = benchmark::BenchmarkReporter::Run;

  explicit RowRuns(std::string aggregate = "mean")
      : aggregate_(std::move(aggregate)) {}

  // Takes one reported run into account.
  void Add(const Run& run);

  // Row names in the order they were first reported.
  const std::vector<std::string>& names() const { return order_; }

  // The run standing for `row`, or nullptr if none was reported.
  const Run* Find(const std::string& row) const;

  // SecondsPerIteration of the run standing for `row`; nullopt when there is
  // none, it failed, or its time is not positive (nothing to divide by).
  std::optional<double> Seconds(const std::string& row) const;

 private:
  struct Entry {
    Run run;
    bool from_aggregate = false;
  };

  std::string aggregate_;
  std::map<std::string, Entry> rows_;
  std::vector<std::string> order_;
};

// A ConsoleReporter that prints the usual table and then, once every
// benchmark has run, the summary of a subclass (PrintSummary) written from
// rows(). Both go to stdout, the summary after the table, and are flushed.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  // `aggregate`: which statistic stands for a repeated row (see RowRuns).
  explicit SummaryReporter(OutputOptions options = OO_Defaults,
                           std::string aggregate = "mean")
      : ConsoleReporter(options), rows_(std::move(aggregate)) {}

  void ReportRuns(const std::vector<Run>& runs) override;
  void Finalize() override;

 protected:
  // Prints the summary to `out`, after the table.
  virtual void PrintSummary(std::FILE* out) = 0;

  const RowRuns& rows() const { return rows_; }

 private:
  RowRuns rows_;
};

// The body of a benchmark binary's main(): parses the benchmark flags, then
// runs every registered benchmark (as --benchmark_filter selects) reporting
// to `reporter`. Returns main's exit status: 1 for an unrecognised argument
// (after printing it), else 0.
int RunBenchmarks(int argc, char** argv,
                  benchmark::BenchmarkReporter* reporter);

}  // namespace bench
}  // namespace nbio

#endif  // NBIO_QUEUE_TESTING_SUMMARY_REPORTER_H_
