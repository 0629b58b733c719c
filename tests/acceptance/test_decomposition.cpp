// The streaming decomposition on simulated detector data, judged against the simulator's ground truth.
#include "operators/denoiser.hpp"
#include "operators/streaming_model.hpp"
#include "tools/sim/simulator.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <vector>

namespace specwatch {
namespace {

/// Frames of a seeded simulation as D x m float counts (uint16 payload, as on the wire).
class SimFrames {
 public:
  explicit SimFrames(const sim::SimOptions& o) : sim_(o) {}
  uint64_t FrameCount() const { return sim_.FrameCount(); }
  const sim::Simulator& sim() const { return sim_; }
  Eigen::MatrixXf Frame(uint64_t k) {
    const sim::FrameInfo f = sim_.Frame(k);
    bytes_.resize(sim_.PayloadBytes(f.spectrum_count));
    sim_.GenerateFrame(k, ws_, bytes_);
    const Eigen::Map<const Eigen::Matrix<uint16_t, Eigen::Dynamic, Eigen::Dynamic>> counts(
        reinterpret_cast<const uint16_t*>(bytes_.data()), sim_.Channels(), f.spectrum_count);
    return counts.cast<float>();
  }

 private:
  sim::Simulator sim_;
  sim::FrameWorkspace ws_;
  std::vector<std::byte> bytes_;
};

sim::SimOptions Options(Modality modality, int channels, int phases, double counts, uint32_t side, uint32_t passes) {
  sim::SimOptions o;
  o.modality = modality;
  o.channels = channels;
  o.phases = phases;
  o.mean_counts = counts;
  o.scan_width = side;
  o.scan_height = side;
  o.passes = passes;
  o.seed = 20 + static_cast<uint64_t>(phases);
  return o;
}

}  // namespace

// The EDS catalogue has 5 phases, so 3 to 5 are tried (the issue asks 3 to 6). At the default calibration window
// (256 spectra: the first 4 scan lines) this passes only because b is refreshed: frozen after those lines, the
// lines of phases absent there weigh tens of times too much and every tracked component passes the threshold.
TEST_CASE("automatic rank: p phases at >= 300 counts per spectrum, 2048 channels, give p - 1 centred components") {
  // Mixtures of p phases with abundances summing to 1 lie in a (p − 1)-dimensional affine subspace: after mean
  // centring the model needs p − 1 components, and mean + p − 1 components describe p phases.
  for (int phases = 3; phases <= 5; ++phases) {
    CAPTURE(phases);
    SimFrames frames(Options(Modality::kEds, 2048, phases, 300.0, 64, 4));
    SubspaceOptions so;
    so.rank = 12;
    so.oversample = 8;
    so.block = 64;
    so.auto_rank = true;
    StreamingModel learner(2048, so, WeightingOptions{});
    for (uint64_t k = 0; k < frames.FrameCount(); ++k) learner.Add(frames.Frame(k));
    learner.Flush();
    const auto model = learner.Model();
    MESSAGE("phases ", phases, ": rank ", model->rank, ", sigma ", model->noise_sigma, ", tau ", model->rank_threshold,
            ", s = ", model->singular_values.head(std::min<Eigen::Index>(8, model->singular_values.size())).transpose());
    CHECK(model->rank == phases - 1);
  }
}

}  // namespace specwatch
