// specwatch-bench: throughput, latency and resource benchmark of the full chain (specwatch-sim -> specwatch ->
// the bench's subscriber), with real processes on loopback. See --help and docs/benchmarks.md.

#include "stream/large_message_heap.hpp"
#include "tools/bench/bench_options.hpp"
#include "tools/bench/chain_run.hpp"
#include "tools/bench/report.hpp"

#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace {

using namespace specwatch::bench;

void OnSignal(int) { RequestAbort(); }

std::string OwnDirectory() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

/// Rates are tried in round numbers: to 1% of the upper end, at least 100 spectra/s.
double RoundRate(double rate, double top) {
  const double step = std::max(100.0, std::pow(10.0, std::floor(std::log10(std::max(1.0, top * 0.01)))));
  return std::max(step, std::round(rate / step) * step);
}

int Run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  BenchOptions o;
  try {
    o = ParseBenchArgs(args);
  } catch (const BenchConfigError& e) {
    std::fprintf(stderr, "specwatch-bench: %s\n", e.what());
    return 2;
  }
  if (o.help) {
    std::fputs(BenchUsage().c_str(), stdout);
    return 0;
  }
  const std::string bin_dir = o.bin_dir.empty() ? OwnDirectory() : o.bin_dir;
  for (const char* program : {"specwatch", "specwatch-sim"}) {
    const std::string path = bin_dir + "/" + program;
    if (access(path.c_str(), X_OK) != 0) {
      std::fprintf(stderr, "specwatch-bench: %s not found or not executable (see --bin-dir)\n", path.c_str());
      return 2;
    }
  }
  std::string log_dir = o.log_dir;
  const bool temporary_logs = log_dir.empty();
  if (temporary_logs) {
    char tmpl[] = "/tmp/specwatch-bench.XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      std::perror("specwatch-bench: mkdtemp");
      return 1;
    }
    log_dir = tmpl;
  } else {
    std::filesystem::create_directories(log_dir);
  }

  struct sigaction sa{};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const MachineInfo machine = ReadMachineInfo();
  std::vector<RunSpec> specs;
  if (o.find_max && !o.scenario_given) {
    // --find-max alone: only the bisection.
  } else if (o.scenario == "latency") {
    specs.push_back({"latency", o.rate_given ? o.rate : o.latency_rate, o.seconds});
  } else if (o.scenario == "throughput") {
    specs.push_back({"throughput", o.rate, o.seconds});
  } else {
    specs.push_back({"latency", o.latency_rate, o.seconds});
    specs.push_back({"throughput", o.rate, o.seconds});
  }

  bool all_ok = true;
  int run_number = 0;
  auto run = [&](const RunSpec& spec) {
    RunResult r = RunChain(o, spec, bin_dir, log_dir, run_number++);
    all_ok = all_ok && r.completed && r.service_stopped_clean && r.sim_stopped_clean;
    if (o.verbose) {
      std::fprintf(stderr, "specwatch-bench: %s at %.0f/s: %s%s\n", spec.scenario.c_str(), spec.rate,
                   r.completed ? (r.Sustained() ? "sustained" : "NOT sustained") : "FAILED: ",
                   r.completed ? "" : r.error.c_str());
    }
    return r;
  };

  std::vector<ScenarioReport> scenarios;
  for (const auto& spec : specs) {
    ScenarioReport sc{spec, {}};
    for (int i = 0; i < o.repeat && !AbortRequested(); ++i) sc.runs.push_back(run(spec));
    scenarios.push_back(std::move(sc));
  }

  FindMaxReport find_max;
  if (o.find_max && !AbortRequested()) {
    find_max.ran = true;
    auto trial = [&](double rate) {
      FindMaxTrial t{rate, run(RunSpec{"find-max", rate, o.seconds})};
      const bool ok = t.run.Sustained();
      find_max.trials.push_back(std::move(t));
      return ok;
    };
    double hi = o.rate;
    if (trial(hi)) {
      find_max.max_sustained_rate = hi;
    } else {
      find_max.lowest_failed_rate = hi;
      double lo = RoundRate(o.find_max_min, o.rate);
      if (trial(lo)) {
        find_max.max_sustained_rate = lo;
        while (!AbortRequested() && (hi - lo) / hi > o.find_max_resolution) {
          const double mid = RoundRate(0.5 * (lo + hi), o.rate);
          if (mid <= lo || mid >= hi) break;
          if (trial(mid)) {
            lo = mid;
            find_max.max_sustained_rate = mid;
          } else {
            hi = mid;
            find_max.lowest_failed_rate = mid;
          }
        }
      }
    }
  }

  const std::string report =
      o.json ? JsonReport(o, machine, scenarios, find_max) : TextReport(o, machine, scenarios, find_max);
  std::fputs(report.c_str(), stdout);
  std::fflush(stdout);
  if (!o.json_path.empty()) {
    std::FILE* f = std::fopen(o.json_path.c_str(), "w");
    if (f == nullptr) {
      std::perror(("specwatch-bench: " + o.json_path).c_str());
      all_ok = false;
    } else {
      const std::string json = o.json ? report : JsonReport(o, machine, scenarios, find_max);
      std::fputs(json.c_str(), f);
      std::fclose(f);
    }
  }
  if (temporary_logs && all_ok) {
    std::error_code ec;
    std::filesystem::remove_all(log_dir, ec);
  } else {
    std::fprintf(stderr, "specwatch-bench: process logs kept in %s\n", log_dir.c_str());
  }
  if (AbortRequested()) return 1;
  return all_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // The subscriber receives the service's whole output in 0.5 MB messages. Like the service, keep them off
  // fresh mmaps, or the bench's page faults take the cores it shares with the chain it measures.
  if (!specwatch::stream::RetainHeapForLargeMessages()) std::fprintf(stderr, "specwatch-bench: heap not tuned\n");
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "specwatch-bench: error: %s\n", e.what());
    return 1;
  }
}
