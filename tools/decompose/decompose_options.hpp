#pragma once
/// specwatch-decompose's command line: one options struct with its defaults and a small parser
/// ("--name value" or "--name=value") that validates everything once and throws UsageError naming the option.

#include "operators/model/incremental_svd.hpp"
#include "operators/core/poisson_weighting.hpp"
#include "tools/sim/sim_options.hpp"

#include <span>
#include <stdexcept>
#include <string>

namespace specwatch::tools {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct DecomposeOptions {
  // Input: a .npy file, or the simulator in-process.
  std::string input_path;
  bool simulate = false;
  sim::SimOptions sim;  ///< modality, channels, phases, counts, scan, passes, seed (with --sim)

  // The model, as the service's "pca" section.
  SubspaceOptions subspace;
  WeightingOptions weighting;
  int frame_spectra = 64;  ///< spectra per StreamingModel::Add and per Denoise call

  // The run.
  int threads = 1;            ///< denoise threads (the update is serial, as in the service)
  int repeat = 1;             ///< timed runs of update and of denoise; the median is reported
  int warmup_spectra = 4096;  ///< spectra learnt and denoised untimed before timing
  bool check_batch = false;

  // Outputs.
  std::string write_model_path;
  std::string write_denoised_path;
  std::string write_data_path;
  bool help = false;
};

/// Parses argv[1..]. Throws UsageError naming the option on any bad, missing or conflicting value.
DecomposeOptions ParseDecomposeArgs(std::span<const std::string> args);
std::string DecomposeUsage();

}  // namespace specwatch::tools
