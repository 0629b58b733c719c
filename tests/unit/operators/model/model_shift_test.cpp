// StreamingModel::ShiftChannels (IncrementalSvd and PoissonWeighting underneath): a model learnt on spectra
// and then shifted by δ, against a model learnt on the same spectra generated on an axis shifted by δ.
#include "operators/model/streaming_model.hpp"
#include "tests/unit/operators/synthetic.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>

namespace specwatch {
namespace {

constexpr int kChannels = 256;
constexpr int kPhases = 4;

/// D x kPhases pure spectra with features at channel j + shift: Gaussian lines (3-5 channels σ, integrated over
/// each channel exactly), kept away from the ends, on a weak smooth background (1% of the lines' height) that
/// vanishes at the ends.
Eigen::MatrixXd Phases(double shift) {
  const double centre[kPhases][2] = {{70, 150}, {95, 180}, {120, 160}, {135, 190}};
  const double sigma[kPhases] = {3.0, 4.0, 3.5, 5.0};
  Eigen::MatrixXd p(kChannels, kPhases);
  for (int k = 0; k < kPhases; ++k) {
    for (int j = 0; j < kChannels; ++j) {
      double line = 0.0;
      for (int l = 0; l < 2; ++l) {
        const double c = centre[k][l] + shift, s = sigma[k] * std::sqrt(2.0);
        line += (l == 0 ? 1.0 : 0.6) * 0.5 * (std::erf((j + 0.5 - c) / s) - std::erf((j - 0.5 - c) / s));
      }
      // The background tapers to zero at the ends, where the shifted model has no data to come from.
      const double taper = std::pow(std::sin(M_PI * std::clamp((j - shift) / kChannels, 0.0, 1.0)), 2);
      p(j, k) = 40.0 * line + 0.1 * taper * (1.0 + 0.5 * std::cos((j - shift) * (k + 1) / 60.0));
    }
  }
  return p;
}

/// Expected counts (no noise, so the two models differ only by what the shift does): random mixtures with a
/// random intensity, the same coefficients whatever the shift.
Eigen::MatrixXf Spectra(double shift, int m, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::gamma_distribution<double> gamma(2.0, 1.0);
  const Eigen::MatrixXd c = Eigen::MatrixXd::NullaryExpr(kPhases, m, [&] { return gamma(gen); });
  return (Phases(shift) * c).cast<float>();
}

struct Pair {
  double angle_deg;      // largest principal angle between the top-kPhases subspaces
  double mean_error;     // relative, in the weighted space
  double scale_error;    // max relative difference of channel_scale
};

Pair Compare(const PcaModel& a, const PcaModel& b) {
  Pair p{};
  p.angle_deg = test::LargestPrincipalAngleDeg(test::Leading(a, kPhases), test::Leading(b, kPhases));
  p.mean_error = test::RelativeError(a.mean.cast<double>(), b.mean.cast<double>());
  p.scale_error = a.Weighted() ? ((a.channel_scale - b.channel_scale).array() / b.channel_scale.array())
                                     .abs()
                                     .maxCoeff()
                               : 0.0;
  return p;
}

}  // namespace

TEST_CASE("StreamingModel::ShiftChannels matches a model learnt on the shifted axis, and stays consistent") {
  SubspaceOptions subspace;
  subspace.rank = kPhases;
  subspace.oversample = 4;
  subspace.block = 64;
  WeightingOptions weighting;
  weighting.calibration_spectra = 256;
  for (bool weighted : {true, false}) {
    for (double delta : {0.5, -1.3, 2.0}) {
      CAPTURE(weighted);
      CAPTURE(delta);
      weighting.enabled = weighted;
      StreamingModel moved(kChannels, subspace, weighting), learnt(kChannels, subspace, weighting);
      moved.Add(Spectra(0.0, 1500, 5));
      learnt.Add(Spectra(delta, 1500, 5));
      // Spectra still buffered in the SVD are counts on the axis they were measured on and are not moved (in
      // service they are the latest, already drifted); learn them first so the two models saw the same thing.
      moved.Flush();
      learnt.Flush();
      const auto before = moved.Model();
      moved.ShiftChannels(delta);
      const auto after = moved.Model();
      CHECK(after->version == before->version + 1);
      CHECK(test::OrthonormalityError(*after) < 1e-5);
      CHECK(after->rank == kPhases);
      const Pair now = Compare(*after, *learnt.Model());
      // Unshifted, the models are far apart: the comparison can tell.
      const Pair unshifted = Compare(*before, *learnt.Model());
      CHECK(unshifted.angle_deg > 3.0);
      CHECK(unshifted.mean_error > 0.02);
      MESSAGE("weighted " << weighted << ", delta " << delta << ": angle " << now.angle_deg << " deg, mean "
                          << now.mean_error << ", scale " << now.scale_error << " (unshifted: "
                          << unshifted.angle_deg << " deg, mean " << unshifted.mean_error << ")");
      // Observed: integer δ ~1e-5° and ~1e-7 (float rounding: cubic convolution interpolates exactly at whole
      // channels and the data vanish at the ends); fractional δ up to 0.05°, mean 5e-4, scale 3e-3: the error of
      // cubic interpolation of lines 3-5 channels wide (relatively largest in the scale, sqrt(b), on the tails of
      // the lines, where b changes by a large factor per channel). Tolerances ~3x that.
      CHECK(now.angle_deg < 0.15);
      CHECK(now.mean_error < 2e-3);
      CHECK(now.scale_error < 1e-2);
      if (delta == std::round(delta)) {
        CHECK(now.angle_deg < 1e-3);
        CHECK(now.mean_error < 1e-5);
        CHECK(now.scale_error < 1e-5);
      }
      // The singular values too: the shift moves the components, it does not change their energy.
      const PcaModel& l = *learnt.Model();
      CHECK(test::RelativeError(after->singular_values.head(kPhases), l.singular_values.head(kPhases)) < 2e-3);

      // Both go on learning spectra on the shifted axis, through weight refreshes (1500 learnt -> refreshes at
      // 2048 and 4096 learnt since calibration): the refreshed b comes from shifted sums in both.
      const uint64_t refreshes = moved.weight_refreshes();
      moved.Add(Spectra(delta, 3000, 6));
      learnt.Add(Spectra(delta, 3000, 6));
      moved.Flush();
      learnt.Flush();
      if (weighted) CHECK(moved.weight_refreshes() > refreshes);
      const Pair later = Compare(*moved.Model(), *learnt.Model());
      MESSAGE("  after 3000 more: angle " << later.angle_deg << " deg, mean " << later.mean_error << ", scale "
                                          << later.scale_error);
      CHECK(later.angle_deg < 0.15);
      CHECK(later.mean_error < 2e-3);
      CHECK(later.scale_error < 1e-2);
    }
  }
}

}  // namespace specwatch
