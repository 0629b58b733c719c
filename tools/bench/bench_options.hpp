#pragma once
/// specwatch-bench's command line: one options struct with its defaults, parsed once ("--name value" or
/// "--name=value"), validated, then read-only. Throws BenchConfigError naming the option.

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace specwatch::bench {

class BenchConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct BenchOptions {
  std::string scenario = "both";          ///< throughput | latency | both
  bool scenario_given = false;            ///< with --find-max, scenarios run only when asked for
  double rate = 100000.0;                 ///< spectra/s of the throughput scenario (of the only one if not both)
  bool rate_given = false;
  double latency_rate = 10000.0;          ///< spectra/s of the latency scenario
  double seconds = 10.0;                  ///< sending time per run, each scenario
  int channels = 2048;
  uint32_t frame_spectra = 64;
  uint32_t scan_width = 64;
  uint32_t scan_height = 64;
  int rank = 0;                           ///< 0: the service's default
  int service_threads = -1;               ///< -1: the service's default
  std::string transport = "tcp";          ///< tcp (loopback TCP) | ipc (Unix domain sockets)
  std::string denoised_payload = "spectra";  ///< specwatch --denoised-payload: spectra | scores
  std::string socket = "pub";             ///< pub (sim PUB -> service SUB) | push (PUSH -> PULL, lossless)
  int repeat = 1;                         ///< runs per scenario; medians are reported
  bool find_max = false;                  ///< bisect the highest rate sustained with zero loss
  double find_max_min = 5000.0;           ///< lowest rate the bisection tries
  double find_max_resolution = 0.05;      ///< stop when (hi - lo) / hi is below this
  bool json = false;
  std::string json_path;                  ///< also write the JSON object to this file
  std::string modality = "eels";
  int sim_threads = 1;                    ///< specwatch-sim --threads
  std::string sim_pregenerate = "auto";   ///< on | off | auto (on when the payload fits in 25% of memory)
  double max_p99_ms = 1000.0;             ///< "sustained" also needs the steady-state p99 latency below this
  double start_delay_s = 1.0;             ///< specwatch-sim --start-delay-s
  double drain_timeout_s = 30.0;          ///< after the sim ends, how long the service may take to publish the rest
  std::vector<std::string> service_args;  ///< passed to specwatch verbatim
  std::vector<std::string> sim_args;      ///< passed to specwatch-sim verbatim
  std::vector<std::string> service_env;   ///< NAME=VALUE added to specwatch's environment
  std::string bin_dir;                    ///< empty: the directory holding specwatch-bench
  std::string log_dir;                    ///< empty: a temporary directory, removed unless a run failed
  std::string samples_path;               ///< CSV of every denoised message's timestamps; empty: none
  bool verbose = false;                   ///< progress lines on stderr
  bool help = false;
};

BenchOptions ParseBenchArgs(std::span<const std::string> args);
std::string BenchUsage();

}  // namespace specwatch::bench
