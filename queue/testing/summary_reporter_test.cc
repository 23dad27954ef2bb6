#include "queue/testing/summary_reporter.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace nbio {
namespace bench {
namespace {

using BenchRun = benchmark::BenchmarkReporter::Run;

// A plain run of `iterations` that took `cpu` seconds of CPU and `real`
// seconds of wall time in all.
BenchRun PlainRun(const std::string& name, int64_t iterations, double cpu,
                  double real = 0) {
  BenchRun run;
  run.run_name.function_name = name;
  run.iterations = iterations;
  run.cpu_accumulated_time = cpu;
  run.real_accumulated_time = real;
  run.time_unit = benchmark::kNanosecond;
  return run;
}

BenchRun Aggregate(const std::string& name, const std::string& statistic,
                   int64_t iterations, double cpu) {
  BenchRun run = PlainRun(name, iterations, cpu);
  run.run_type = BenchRun::RT_Aggregate;
  run.aggregate_name = statistic;
  return run;
}

TEST(SecondsPerIterationTest, CpuTimeInSecondsWhateverTheDisplayUnit) {
  BenchRun run = PlainRun("BM_A", 1000, 2e-3, 9.0);
  EXPECT_DOUBLE_EQ(SecondsPerIteration(run), 2e-6);
  run.time_unit = benchmark::kMillisecond;
  EXPECT_DOUBLE_EQ(SecondsPerIteration(run), 2e-6);
}

TEST(SecondsPerIterationTest, WallTimeForRealTimeRows) {
  BenchRun run = PlainRun("BM_A", 100, 1.0, 3e-4);
  run.run_name.time_type = "real_time";
  EXPECT_DOUBLE_EQ(SecondsPerIteration(run), 3e-6);
}

TEST(RowRunsTest, SingleRunStandsForItsRow) {
  RowRuns rows;
  rows.Add(PlainRun("BM_A", 10, 1e-5));
  ASSERT_NE(rows.Find("BM_A"), nullptr);
  EXPECT_DOUBLE_EQ(*rows.Seconds("BM_A"), 1e-6);
  EXPECT_EQ(rows.Find("BM_B"), nullptr);
  EXPECT_FALSE(rows.Seconds("BM_B").has_value());
}

TEST(RowRunsTest, RowNamedByFullRunName) {
  RowRuns rows;
  BenchRun run = PlainRun("BM_A", 10, 1e-5);
  run.run_name.args = "producers:3";
  run.run_name.time_type = "real_time";
  rows.Add(run);
  EXPECT_EQ(rows.names(),
            std::vector<std::string>{"BM_A/producers:3/real_time"});
  EXPECT_EQ(rows.Find("BM_A"), nullptr);
}

TEST(RowRunsTest, ChosenAggregateReplacesRepetitionsAndStays) {
  RowRuns rows;  // mean
  rows.Add(PlainRun("BM_A", 10, 1e-5));
  rows.Add(PlainRun("BM_A", 10, 3e-5));
  EXPECT_DOUBLE_EQ(*rows.Seconds("BM_A"), 3e-6);  // the last plain run
  rows.Add(Aggregate("BM_A", "mean", 10, 2e-5));
  rows.Add(Aggregate("BM_A", "median", 10, 7e-5));
  rows.Add(Aggregate("BM_A", "stddev", 10, 1e-6));
  rows.Add(PlainRun("BM_A", 10, 5e-5));
  EXPECT_DOUBLE_EQ(*rows.Seconds("BM_A"), 2e-6);
  EXPECT_EQ(rows.names(), std::vector<std::string>{"BM_A"});
}

TEST(RowRunsTest, MedianWhenAskedFor) {
  RowRuns rows("median");
  rows.Add(Aggregate("BM_A", "mean", 10, 2e-5));
  EXPECT_EQ(rows.Find("BM_A"), nullptr);
  rows.Add(Aggregate("BM_A", "median", 10, 7e-5));
  EXPECT_DOUBLE_EQ(*rows.Seconds("BM_A"), 7e-6);
}

TEST(RowRunsTest, FailedRunIsFoundButHasNoTime) {
  RowRuns rows;
  BenchRun failed = PlainRun("BM_A", 0, 0);
  failed.error_occurred = true;
  failed.error_message = "select: fds >= FD_SETSIZE";
  rows.Add(failed);
  ASSERT_NE(rows.Find("BM_A"), nullptr);
  EXPECT_EQ(rows.Find("BM_A")->error_message, "select: fds >= FD_SETSIZE");
  EXPECT_FALSE(rows.Seconds("BM_A").has_value());
}

TEST(RowRunsTest, ZeroTimeHasNoSeconds) {
  RowRuns rows;
  rows.Add(PlainRun("BM_A", 10, 0));
  EXPECT_FALSE(rows.Seconds("BM_A").has_value());
}

TEST(RowRunsTest, NamesInFirstReportedOrder) {
  RowRuns rows;
  rows.Add(PlainRun("BM_Z", 1, 1));
  rows.Add(PlainRun("BM_A", 1, 1));
  rows.Add(Aggregate("BM_Z", "mean", 1, 1));
  EXPECT_EQ(rows.names(), (std::vector<std::string>{"BM_Z", "BM_A"}));
}

}  // namespace
}  // namespace bench
}  // namespace nbio
