#pragma once
/// Turns RunResults into the human-readable tables and the single JSON object of specwatch-bench.
/// Every figure is a named Metric, so tables, JSON and medians use one list and cannot disagree.

#include "tools/bench/chain_run.hpp"

#include <string>
#include <vector>

namespace specwatch::bench {

struct Metric {
  std::string key;    ///< JSON name, with its unit (latency_p99_ms)
  std::string label;  ///< table row
  double value = 0;
  int precision = 0;  ///< decimals in the table
  bool is_bool = false;
};

/// The figures of one run, in report order.
std::vector<Metric> RunMetrics(const RunResult& r);

struct ScenarioReport {
  RunSpec spec;
  std::vector<RunResult> runs;
};

struct FindMaxTrial {
  double rate = 0;
  RunResult run;
};

struct FindMaxReport {
  bool ran = false;
  double max_sustained_rate = 0;  ///< 0: none of the tried rates was sustained
  double lowest_failed_rate = 0;  ///< 0: the top rate passed
  std::vector<FindMaxTrial> trials;
};

struct MachineInfo {
  std::string cpu_model, kernel, hostname;
  unsigned cores = 0;
  double mem_GiB = 0;
  double load_at_start = 0;
};
MachineInfo ReadMachineInfo();

std::string TextReport(const BenchOptions& o, const MachineInfo& m, const std::vector<ScenarioReport>& scenarios,
                       const FindMaxReport& find_max);
std::string JsonReport(const BenchOptions& o, const MachineInfo& m, const std::vector<ScenarioReport>& scenarios,
                       const FindMaxReport& find_max);

}  // namespace specwatch::bench
