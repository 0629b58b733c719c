#include "tools/bench/bench_options.hpp"
#include "tools/common/command_line.hpp"

#include <cmath>
#include <functional>
#include <map>

namespace specwatch::bench {
namespace {

using tools::ParseCommandLine;

double ParseDouble(const std::string& name, const std::string& text) {
  return tools::ParseNumber<BenchConfigError>(name, text);
}

int64_t ParseInt(const std::string& name, const std::string& text, int64_t lo, int64_t hi) {
  return tools::ParseInteger<BenchConfigError>(name, text, lo, hi);
}

}  // namespace

std::string BenchUsage() {
  return R"(specwatch-bench: benchmark of the full specwatch chain with real processes.
Starts specwatch and specwatch-sim (from the directory holding specwatch-bench) on free loopback ports,
subscribes to the service's publish socket itself, and measures per run:
  throughput  sim input rate achieved, service publish rate, loss (frames missing at the service =
              Status.sequence_gaps, spectra received/rejected/published, denoised messages missing at the
              bench's subscriber = envelope sequence gaps); "zero loss" = all zero and published == sent
  latency     per denoised message: bench receive Unix time - DenoisedBatch.acquisition_time_s (the sim's
              scheduled send time), p50/p99/max; includes the bench's own receive
  resources   service peak RSS (VmHWM), RSS at the end, CPU time (utime+stime) per spectrum
Every run uses a fresh service. Medians over --repeat runs are reported.

usage: specwatch-bench [--scenario throughput|latency|both] [--rate R] [--seconds S] [--channels N]
                       [--frame-spectra N] [--rank K] [--repeat N] [--find-max] [--json] [options]

Scenarios
  --scenario S          throughput | latency | both                                    [both]
  --rate R              spectra/s of the throughput scenario (with --scenario latency:
                        of the latency scenario)                                        [100000]
  --latency-rate R      spectra/s of the latency scenario when both run                 [10000]
  --seconds S           sending time per run (total spectra = rate x S)                 [10]
  --repeat N            runs per scenario, medians reported                             [1]
  --find-max            bisect the highest rate sustained with zero loss (throughput
                        runs between --find-max-min and --rate); runs the scenarios first
                        only if --scenario is given
  --find-max-min R      lowest rate tried by --find-max                                  [5000]
  --find-max-resolution F  stop bisecting when (hi - lo)/hi < F                      [0.05]
  --max-p99-ms MS       latency bound of "sustained" (below)                            [1000]

Data
  --channels N          channels per spectrum                                           [2048]
  --frame-spectra N     spectra per frame                                               [64]
  --scan WxH            scan shape; passes are added until rate x S spectra are sent    [64x64]
  --modality M          eels | eds | xrd | raman                                        [eels]

Service and simulator
  --rank K              specwatch --rank K                                       [service default]
  --threads N           specwatch --threads N                                    [service default]
  --socket S            pub: sim PUB -> service SUB (drops at high-water marks, the
                        headline figure); push: sim PUSH -> service --frames-socket pull
                        (backpressure, lossless)                                        [pub]
  --transport T         tcp: loopback TCP; ipc: Unix domain sockets in /tmp (frames,
                        results, control; metrics stay on HTTP)                       [tcp]
  --denoised-payload P  specwatch --denoised-payload P: spectra (float32 spectra in every
                        denoised message) or scores (scores only, a snapshot per model
                        version; the bench checks each message's version arrived first) [spectra]
  --service-arg=ARG     one more argument for specwatch (repeat for several, e.g.
                        --service-arg=--config --service-arg=FILE)
  --sim-arg=ARG         one more argument for specwatch-sim (e.g. --sim-arg=--hwm
                        --sim-arg=100000)
  --service-env NAME=VALUE  add to specwatch's environment (e.g. GLIBC_TUNABLES=...)
  --sim-threads N       specwatch-sim --threads (generator threads)                     [1]
  --sim-pregenerate M   on | off | auto: specwatch-sim --pregenerate (frames generated
                        before sending, so generation does not compete with the service
                        for the CPU while frames flow); auto = on when the run's payload
                        fits in 25% of physical memory                                  [auto]
  --start-delay-s S     specwatch-sim --start-delay-s (SUB sockets join meanwhile)      [1]
  --drain-timeout-s S   time the service may take to publish the rest after the sim
                        has finished                                                    [30]
  --bin-dir DIR         where specwatch and specwatch-sim are         [specwatch-bench's dir]

Output
  --json                one JSON object on stdout instead of tables
  --json-out FILE       also write that JSON object to FILE (tables still on stdout)
  --log-dir DIR         keep the processes' logs in DIR (default: a temporary directory,
                        removed unless a run failed or a process did not stop cleanly)
  --samples FILE        append one CSV line per denoised message to FILE: run, scenario, rate,
                        frame, spectra, latency_s, in_service_s (acquisition->publish),
                        transport_s (publish->bench receive)
  --verbose             progress on stderr
  --help                this text

A run is "sustained" when it has zero loss, the sim achieved >= 97% of the requested rate, the
service's publish rate kept up (>= 97% of the sim's achieved rate) and the latency p99 after the
first second stayed below --max-p99-ms [1000] (no backlog hidden in the sockets' queues).
Exit status: 0 if every run completed and every process stopped cleanly (exit 0 within 2 s of
SIGINT), 1 otherwise, 2 on bad options. Loss is reported, not an error.
)";
}

BenchOptions ParseBenchArgs(std::span<const std::string> args) {
  BenchOptions o;
  using Setter = std::function<void(const std::string& name, const std::string& value)>;
  const std::map<std::string, Setter> valued = {
      {"--scenario",
       [&](const std::string& n, const std::string& v) {
         if (v != "throughput" && v != "latency" && v != "both") {
           throw BenchConfigError(n + ": '" + v + "' is not throughput, latency or both");
         }
         o.scenario = v;
         o.scenario_given = true;
       }},
      {"--rate",
       [&](const std::string& n, const std::string& v) {
         o.rate = ParseDouble(n, v);
         o.rate_given = true;
         if (!(o.rate > 0)) throw BenchConfigError(n + ": must be > 0");
       }},
      {"--latency-rate",
       [&](const std::string& n, const std::string& v) {
         o.latency_rate = ParseDouble(n, v);
         if (!(o.latency_rate > 0)) throw BenchConfigError(n + ": must be > 0");
       }},
      {"--seconds",
       [&](const std::string& n, const std::string& v) {
         o.seconds = ParseDouble(n, v);
         if (!(o.seconds > 0)) throw BenchConfigError(n + ": must be > 0");
       }},
      {"--channels", [&](auto& n, auto& v) { o.channels = static_cast<int>(ParseInt(n, v, 16, 65536)); }},
      {"--frame-spectra", [&](auto& n, auto& v) { o.frame_spectra = static_cast<uint32_t>(ParseInt(n, v, 1, 1 << 20)); }},
      {"--scan",
       [&](const std::string& n, const std::string& v) {
         const auto x = v.find_first_of("xX");
         if (x == std::string::npos) throw BenchConfigError(n + ": '" + v + "' is not WxH (e.g. 64x64)");
         o.scan_width = static_cast<uint32_t>(ParseInt(n, v.substr(0, x), 1, 1 << 20));
         o.scan_height = static_cast<uint32_t>(ParseInt(n, v.substr(x + 1), 1, 1 << 20));
       }},
      {"--modality",
       [&](const std::string& n, const std::string& v) {
         if (v != "eels" && v != "eds" && v != "xrd" && v != "raman") {
           throw BenchConfigError(n + ": '" + v + "' is not eels, eds, xrd or raman");
         }
         o.modality = v;
       }},
      {"--rank", [&](auto& n, auto& v) { o.rank = static_cast<int>(ParseInt(n, v, 1, 4096)); }},
      {"--threads", [&](auto& n, auto& v) { o.service_threads = static_cast<int>(ParseInt(n, v, 0, 256)); }},
      {"--transport",
       [&](const std::string& n, const std::string& v) {
         if (v != "tcp" && v != "ipc") throw BenchConfigError(n + ": '" + v + "' is not tcp or ipc");
         o.transport = v;
       }},
      {"--denoised-payload",
       [&](const std::string& n, const std::string& v) {
         if (v != "spectra" && v != "scores") throw BenchConfigError(n + ": '" + v + "' is not spectra or scores");
         o.denoised_payload = v;
       }},
      {"--socket",
       [&](const std::string& n, const std::string& v) {
         if (v != "pub" && v != "push") throw BenchConfigError(n + ": '" + v + "' is not pub or push");
         o.socket = v;
       }},
      {"--repeat", [&](auto& n, auto& v) { o.repeat = static_cast<int>(ParseInt(n, v, 1, 100)); }},
      {"--find-max-min",
       [&](const std::string& n, const std::string& v) {
         o.find_max_min = ParseDouble(n, v);
         if (!(o.find_max_min > 0)) throw BenchConfigError(n + ": must be > 0");
       }},
      {"--find-max-resolution",
       [&](const std::string& n, const std::string& v) {
         o.find_max_resolution = ParseDouble(n, v);
         if (!(o.find_max_resolution > 0 && o.find_max_resolution < 1)) throw BenchConfigError(n + ": must be in (0, 1)");
       }},
      {"--sim-pregenerate",
       [&](const std::string& n, const std::string& v) {
         if (v != "on" && v != "off" && v != "auto") throw BenchConfigError(n + ": '" + v + "' is not on, off or auto");
         o.sim_pregenerate = v;
       }},
      {"--max-p99-ms",
       [&](const std::string& n, const std::string& v) {
         o.max_p99_ms = ParseDouble(n, v);
         if (!(o.max_p99_ms > 0)) throw BenchConfigError(n + ": must be > 0");
       }},
      {"--sim-threads", [&](auto& n, auto& v) { o.sim_threads = static_cast<int>(ParseInt(n, v, 1, 64)); }},
      {"--start-delay-s",
       [&](const std::string& n, const std::string& v) {
         o.start_delay_s = ParseDouble(n, v);
         if (o.start_delay_s < 0) throw BenchConfigError(n + ": must be >= 0");
       }},
      {"--drain-timeout-s",
       [&](const std::string& n, const std::string& v) {
         o.drain_timeout_s = ParseDouble(n, v);
         if (!(o.drain_timeout_s > 0)) throw BenchConfigError(n + ": must be > 0");
       }},
      {"--service-arg", [&](auto&, auto& v) { o.service_args.push_back(v); }},
      {"--sim-arg", [&](auto&, auto& v) { o.sim_args.push_back(v); }},
      {"--service-env",
       [&](const std::string& n, const std::string& v) {
         if (v.find('=') == std::string::npos || v.front() == '=') throw BenchConfigError(n + ": '" + v + "' is not NAME=VALUE");
         o.service_env.push_back(v);
       }},
      {"--bin-dir", [&](auto&, auto& v) { o.bin_dir = v; }},
      {"--log-dir", [&](auto&, auto& v) { o.log_dir = v; }},
      {"--samples", [&](auto&, auto& v) { o.samples_path = v; }},
      {"--json-out", [&](auto&, auto& v) { o.json_path = v; }},
  };
  const std::map<std::string, std::function<void()>> flags = {
      {"--find-max", [&] { o.find_max = true; }},
      {"--json", [&] { o.json = true; }},
      {"--verbose", [&] { o.verbose = true; }},
      {"--help", [&] { o.help = true; }},
      {"-h", [&] { o.help = true; }},
  };
  ParseCommandLine<BenchConfigError>(args, flags, valued);
  if (o.help) return o;
  if (o.find_max && o.find_max_min >= o.rate) {
    throw BenchConfigError("--find-max-min must be below --rate (the bisection's upper end)");
  }
  return o;
}

}  // namespace specwatch::bench
