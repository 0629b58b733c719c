// The streaming decomposition on simulated detector data, judged against the simulator's ground truth.
#include "operators/model/denoiser.hpp"
#include "operators/model/streaming_model.hpp"
#include "tests/acceptance/acceptance_support.hpp"

#include <doctest/doctest.h>

#include <algorithm>

namespace specwatch {

using acceptance::Options;
using acceptance::SimFrames;

// 3 to 6 phases (the EDS catalogue's sixth, CaCO3, exists for this test). At the default calibration window
// (256 spectra: the first 4 scan lines) this passes only because b is refreshed: frozen after those lines, the
// lines of phases absent there weigh tens of times too much and every tracked component passes the threshold.
TEST_CASE("automatic rank: p phases at >= 300 counts per spectrum, 2048 channels, give p - 1 centred components") {
  // Mixtures of p phases with abundances summing to 1 lie in a (p − 1)-dimensional affine subspace: after mean
  // centring the model needs p − 1 components, and mean + p − 1 components describe p phases.
  for (int phases = 3; phases <= 6; ++phases) {
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
