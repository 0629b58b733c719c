#pragma once
/// One benchmark run of the full chain: a fresh specwatch, the bench's own subscriber, a specwatch-sim sending
/// `rate x seconds` spectra; then drain, read the counters, stop everything cleanly.
///
///   1. pick free loopback ports (frames, publish, control, metrics)
///   2. start specwatch; wait until its control socket answers COMMAND_STATUS
///   3. connect the subscriber (topics "denoised", "snapshot", "status"); wait for the first periodic
///      status message, which proves the subscription has reached the service
///   4. start specwatch-sim (binds the frames endpoint; the service connects to it) with a start delay so the
///      service's SUB socket joins before the first frame
///   5. wait for the sim to exit, then for the service to publish everything (the "series_end" snapshot, or
///      counters that stop moving), read Status, /proc and the Prometheus histograms
///   6. SIGINT the service; it must exit 0 within 2 s
///
/// Not thread-safe; runs are sequential (the machine is shared by the three processes already).

#include "tools/bench/bench_options.hpp"
#include "tools/bench/child_process.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace specwatch::bench {

struct RunSpec {
  std::string scenario;  ///< "throughput", "latency", "find-max"
  double rate = 0.0;     ///< spectra/s requested from the sim
  double seconds = 0.0;
};

/// Summary of one Prometheus histogram (specwatch_stage_latency_seconds{stage=...}).
struct StageLatency {
  uint64_t count = 0;
  double mean_s = 0.0;
  double p50_s = 0.0;  ///< interpolated within buckets, as histogram_quantile() does
  double p99_s = 0.0;
  double sum_s = 0.0;
};

struct Quantiles {
  uint64_t n = 0;
  double p50 = 0, p99 = 0, max = 0, mean = 0;  ///< seconds
};

struct RunResult {
  RunSpec spec;
  bool completed = false;  ///< every step ran (losses or not)
  std::string error;       ///< why not
  std::string log_dir;
  std::string service_command, sim_command;
  double load_before = 0, load_after = 0;  ///< 1-minute load average of the machine

  // What the simulator says it did (its summary line).
  uint64_t requested_spectra = 0;
  uint64_t sim_frames = 0, sim_spectra = 0;
  double sim_elapsed_s = 0, sim_rate = 0, sim_max_lag_ms = 0;
  uint64_t sim_late_frames = 0, sim_generator_waits = 0;
  bool sim_interrupted = false, sim_summary_found = false;
  int sim_exit_code = -1;
  double sim_cpu_s = 0;

  // The service's Status at the end (control socket).
  uint64_t frames_received = 0, spectra_received = 0, spectra_published = 0, spectra_rejected = 0;
  uint64_t frames_rejected = 0, sequence_gaps = 0, denoised_messages_published = 0, model_version = 0;
  uint64_t spectra_in_model = 0;
  uint32_t rank = 0;

  // The bench's subscriber.
  uint64_t sub_messages = 0, sub_spectra = 0, sub_missing = 0, sub_bad_payload = 0, sub_restarts = 0;
  uint64_t sub_passthrough_messages = 0;  ///< rank 0: published before the model warmed up
  double publish_rate = 0;                ///< spectra/s between the first and the last denoised message
  double last_latency_s = 0;              ///< latency of the last denoised message: the backlog at the end
  bool series_end_seen = false;
  Quantiles latency;    ///< bench receive - acquisition_time_s (the sim's scheduled send time)
  Quantiles latency_steady;  ///< the same without the first second of frames (start-up transient)
  Quantiles in_service; ///< Envelope.publish_time_s - acquisition_time_s
  Quantiles transport;  ///< bench receive - Envelope.publish_time_s

  // Resources.
  double service_hwm_MiB = 0, service_rss_MiB = 0, service_cpu_s = 0, service_cpu_us_per_spectrum = 0;
  int service_threads = 0;
  double sim_cpu_window_s = 0;
  double bench_cpu_s = 0;  ///< in the window
  // Cores busy (CPU seconds / wall seconds) from the first denoised message to the end of the drain.
  double service_cores = 0, sim_cores = 0, bench_cores = 0;
  double other_cores = 0;  ///< machine CPU busy outside sim, service and bench (from /proc/stat)
  std::map<std::string, StageLatency> stages;
  std::vector<ThreadCpu> service_thread_cpu;  ///< per thread, whole life, at the end, busiest first
  double model_spectra = 0, model_spectra_skipped = 0;

  // Stopping.
  bool service_stopped_clean = false;  ///< exit 0 within 2 s of SIGINT
  double service_stop_s = 0;
  int service_exit_code = -1;
  bool sim_stopped_clean = false;      ///< it exited 0 by itself (or within 2 s of SIGINT)

  bool zero_loss = false;   ///< no gaps, rejects or bench gaps, and published == received == sent == requested
  bool kept_up = false;     ///< publish rate >= 97% of the sim's achieved rate
  bool rate_met = false;    ///< sim achieved >= 97% of the requested rate
  bool latency_bounded = false;  ///< steady-state p99 below --max-p99-ms
  bool pregenerated = false;     ///< the sim generated every frame before sending
  bool Sustained() const { return completed && zero_loss && kept_up && rate_met && latency_bounded; }
};

/// Runs the chain once. Never throws for a failed run: `completed` is false and `error` says why.
RunResult RunChain(const BenchOptions& options, const RunSpec& spec, const std::string& bin_dir,
                   const std::string& log_dir, int run_number);

/// Set by the bench's SIGINT handler: a run in progress stops its processes and returns.
void RequestAbort();
bool AbortRequested();

}  // namespace specwatch::bench
