#include "tools/decompose/decompose_options.hpp"

#include "operators/core/config_error.hpp"
#include "tools/common/command_line.hpp"

#include <cmath>
#include <functional>
#include <map>

namespace specwatch::tools {
namespace {

using tools::ParseCommandLine;

int64_t ParseInteger(const std::string& name, const std::string& text, int64_t lo, int64_t hi) {
  return tools::ParseInteger<UsageError>(name, text, lo, hi);
}

double ParseNumber(const std::string& name, const std::string& text, double lo, double hi) {
  return tools::ParseNumber<UsageError>(name, text, lo, hi);
}

Modality ParseModality(const std::string& name, const std::string& text) {
  if (text == "eels") return Modality::kEels;
  if (text == "eds") return Modality::kEds;
  if (text == "xrd") return Modality::kXrd;
  if (text == "raman") return Modality::kRaman;
  throw UsageError(name + ": '" + text + "' is not one of eels, eds, xrd, raman");
}

void ParseScan(const std::string& name, const std::string& text, sim::SimOptions& o) {
  const auto x = text.find_first_of("xX");
  if (x == std::string::npos) throw UsageError(name + ": '" + text + "' is not WxH (e.g. 64x64)");
  o.scan_width = static_cast<uint32_t>(ParseInteger(name, text.substr(0, x), 1, 1 << 16));
  o.scan_height = static_cast<uint32_t>(ParseInteger(name, text.substr(x + 1), 1, 1 << 16));
}

sim::SimOptions DefaultSim() {
  sim::SimOptions o;
  o.modality = Modality::kEds;
  o.rate_spectra_per_s = 0.0;
  return o;
}

// Options that only make sense together, checked once everything is parsed.
void CheckCombination(const DecomposeOptions& o, bool sim_option_given) {
  if (o.simulate == !o.input_path.empty()) throw UsageError("give exactly one of --input FILE.npy and --sim");
  if (sim_option_given && !o.simulate) throw UsageError("simulator options (--modality ...) need --sim");
  if (!o.write_data_path.empty() && !o.simulate) throw UsageError("--write-data: only with --sim");
  if (o.simulate && o.sim.TotalSpectra() > (uint64_t{1} << 31)) throw UsageError("--scan x --passes: too many spectra");
  if (o.subspace.auto_rank && o.subspace.rank_min > o.subspace.rank) {
    throw UsageError("--rank-min: must be <= --rank");
  }
  try {
    o.weighting.Validate();
  } catch (const ConfigError& e) {
    throw UsageError(e.what());
  }
}

}  // namespace

std::string DecomposeUsage() {
  return R"(specwatch-decompose: runs the service's science offline on a data set (no sockets) and prints a JSON
report. The data go through the service's Session in frame order (as specwatch would run them, every frame
learnt): the model, rank, singular values, noise sigma and Gavish-Donoho threshold it ends with, what it reported
("session": novelty, regions, drift, pass maps), and the outputs below. Apart from that, the operators' speed:
throughput of the model update (StreamingModel::Add, every spectrum) and of Denoise with the final model, timed
separately after a warm-up. With --check-batch, principal angles against a batch SVD of the spectra the model
learnt (the monitor holds a few out, as in the service), weighted and centred.

usage: specwatch-decompose (--input FILE.npy | --sim [simulator options]) [options]

Input
  --input FILE.npy         C-order .npy, shape (N, D) or (H, W, D); uint16, uint32, int32,
                           int64, float32 or float64 (float32 in memory)
  --sim                    generate the data with the simulator, in-process
  --modality M             eels | eds | xrd | raman                               [eds]
  --channels N             16..65536                                               [2048]
  --phases N               1..5                                                    [3]
  --counts C               mean counts of a pure-phase spectrum                    [1000]
  --scan WxH               scan positions                                          [64x64]
  --passes N               passes over the scan                                    [1]
  --inclusion F            fraction of pixels with a rare inclusion, 0..0.5        [0]
  --seed N                 simulator seed                                          [1]

Model (the service's "pca" section)
  --rank K                 components used to denoise; with --auto-rank the most   [16]
  --oversample P           extra tracked components (k_max = K + P)                [8]
  --block B                spectra per incremental update                          [32]
  --forgetting L           per spectrum, (0, 1]; 1 = infinite memory               [1]
  --auto-rank              rank from the Gavish-Donoho threshold, in [rank-min, K]
  --rank-min N             fewest components with --auto-rank                      [1]
  --weighting W            poisson | none                                          [poisson]
  --calibration-spectra N  spectra whose mean shape fixes the Poisson weights      [256]
  --frame-spectra N        spectra per Add / Denoise call (a detector frame)       [64]

Run
  --threads N              threads for the timed Denoise (disjoint frames); the
                           single-thread figure is always reported too. With 2 or  [1]
                           more, update and denoise are also timed at once on 2
                           threads, as the service runs them (pipelined_*)
  --repeat N               timed runs of update and of denoise; medians reported   [1]
  --warmup-spectra N       spectra learnt and denoised untimed first               [4096]
  --check-batch            batch SVD (double, eigen-decomposition of the D x D
                           covariance) of the data weighted with the final model's
                           channel_scale, x / sqrt(a_i b_j), and centred; principal
                           angles (degrees) with the streaming top-k, k = 1..rank

Outputs (stdout: the JSON report)
  --write-model FILE.npz   mean_counts, eigenspectra_counts (k x D, in counts: the
                           weighted basis times channel_scale), singular_values,
                           basis and mean (weighted space), channel_scale, rank,
                           noise_sigma, rank_threshold
  --write-denoised FILE    float32 (N, D) .npy, denoised spectra in counts (every spectrum
                           scored again by the session with its final model)
  --write-data FILE        with --sim: the generated counts, uint16 (N, D) .npy
  --help                   this text

Exit status: 0 done, 2 bad command line, 1 unusable input or an output that cannot be written.
)";
}

DecomposeOptions ParseDecomposeArgs(std::span<const std::string> args) {
  DecomposeOptions o;
  o.sim = DefaultSim();
  o.subspace.rank = 16;
  bool sim_option_given = false;
  using Setter = std::function<void(const std::string& name, const std::string& value)>;
  auto sim_setter = [&](Setter s) -> Setter {
    return [&sim_option_given, s](const std::string& n, const std::string& v) {
      sim_option_given = true;
      s(n, v);
    };
  };
  const std::map<std::string, Setter> valued = {
      {"--input", [&](auto& n, auto& v) { if (v.empty()) throw UsageError(n + ": empty path"); o.input_path = v; }},
      {"--modality", sim_setter([&](auto& n, auto& v) { o.sim.modality = ParseModality(n, v); })},
      {"--channels", sim_setter([&](auto& n, auto& v) { o.sim.channels = ParseInteger(n, v, 16, 65536); })},
      {"--phases", sim_setter([&](auto& n, auto& v) { o.sim.phases = ParseInteger(n, v, 1, 5); })},
      {"--counts", sim_setter([&](auto& n, auto& v) { o.sim.mean_counts = ParseNumber(n, v, 1e-3, 1e9); })},
      {"--scan", sim_setter([&](auto& n, auto& v) { ParseScan(n, v, o.sim); })},
      {"--passes", sim_setter([&](auto& n, auto& v) { o.sim.passes = ParseInteger(n, v, 1, 1 << 20); })},
      {"--inclusion", sim_setter([&](auto& n, auto& v) { o.sim.inclusion_fraction = ParseNumber(n, v, 0, 0.5); })},
      {"--seed", sim_setter([&](auto& n, auto& v) {
         o.sim.seed = static_cast<uint64_t>(ParseInteger(n, v, 0, std::numeric_limits<int64_t>::max()));
       })},
      {"--rank", [&](auto& n, auto& v) { o.subspace.rank = ParseInteger(n, v, 1, 4096); }},
      {"--oversample", [&](auto& n, auto& v) { o.subspace.oversample = ParseInteger(n, v, 0, 4096); }},
      {"--block", [&](auto& n, auto& v) { o.subspace.block = ParseInteger(n, v, 1, 1 << 16); }},
      {"--forgetting", [&](auto& n, auto& v) {
         o.subspace.forgetting = ParseNumber(n, v, 0, 1);
         if (o.subspace.forgetting <= 0) throw UsageError(n + ": must be in (0, 1]");
       }},
      {"--rank-min", [&](auto& n, auto& v) { o.subspace.rank_min = ParseInteger(n, v, 1, 4096); }},
      {"--weighting", [&](const std::string& n, const std::string& v) {
         if (v != "poisson" && v != "none") throw UsageError(n + ": '" + v + "' is not poisson or none");
         o.weighting.enabled = v == "poisson";
       }},
      {"--calibration-spectra",
       [&](auto& n, auto& v) { o.weighting.calibration_spectra = ParseInteger(n, v, 1, 1 << 30); }},
      {"--frame-spectra", [&](auto& n, auto& v) { o.frame_spectra = ParseInteger(n, v, 1, 1 << 20); }},
      {"--threads", [&](auto& n, auto& v) { o.threads = ParseInteger(n, v, 1, 256); }},
      {"--repeat", [&](auto& n, auto& v) { o.repeat = ParseInteger(n, v, 1, 100); }},
      {"--warmup-spectra", [&](auto& n, auto& v) { o.warmup_spectra = ParseInteger(n, v, 0, 1 << 30); }},
      {"--write-model", [&](auto&, auto& v) { o.write_model_path = v; }},
      {"--write-denoised", [&](auto&, auto& v) { o.write_denoised_path = v; }},
      {"--write-data", [&](auto&, auto& v) { o.write_data_path = v; }},
  };
  const std::map<std::string, std::function<void()>> flags = {
      {"--sim", [&] { o.simulate = true; }},
      {"--auto-rank", [&] { o.subspace.auto_rank = true; }},
      {"--check-batch", [&] { o.check_batch = true; }},
      {"--help", [&] { o.help = true; }},
      {"-h", [&] { o.help = true; }},
  };
  ParseCommandLine<UsageError>(args, flags, valued);
  if (!o.help) CheckCombination(o, sim_option_given);
  return o;
}

}  // namespace specwatch::tools
