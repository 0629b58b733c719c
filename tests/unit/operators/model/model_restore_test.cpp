// Restoring the streaming model from a saved PcaModel: the restored model equals the saved one, and learning
// continues from it as if it had never stopped (in the truncation sense: the tracked tail is not saved).
#include "operators/model/denoiser.hpp"
#include "operators/model/streaming_model.hpp"
#include "tests/unit/operators/synthetic.hpp"

#include <doctest/doctest.h>

#include <random>

namespace specwatch {
namespace {

SubspaceOptions Options() {
  SubspaceOptions o;
  o.rank = 3;
  o.oversample = 4;
  o.block = 32;
  return o;
}

/// The model as a snapshot keeps it: the first `rank` components only.
PcaModel Truncated(const PcaModel& m) {
  PcaModel t = m;
  t.basis = m.basis.leftCols(m.rank);
  t.singular_values = m.singular_values.head(m.rank);
  return t;
}

Eigen::MatrixXd Poisson(const Eigen::MatrixXd& expected, std::mt19937_64& gen) {
  return expected.unaryExpr([&](double mu) { return static_cast<double>(std::poisson_distribution<int>(mu)(gen)); });
}

}  // namespace

TEST_CASE("IncrementalSvd::Restore: the restored model equals the saved one and learns on like the original") {
  test::LowRankSource source(64, (Eigen::VectorXd(3) << 30, 20, 10).finished(), 1.0, 11);
  IncrementalSvd original(64, Options());
  original.Add(source.Draw(640));
  const PcaModel saved = Truncated(*original.Model());

  IncrementalSvd restored(64, Options());
  restored.Restore(saved);
  const auto r = restored.Model();
  CHECK(r->version == saved.version);
  CHECK(r->rank == 3);
  CHECK(r->spectra_seen == saved.spectra_seen);
  CHECK(r->total_variance == saved.total_variance);
  CHECK((r->mean - saved.mean).norm() == doctest::Approx(0.0).epsilon(1e-6));
  CHECK((r->basis - saved.basis).norm() < 1e-4);  // re-orthonormalised, columns and signs kept
  CHECK((r->singular_values - saved.singular_values).norm() == doctest::Approx(0.0));

  // Both learn the same next spectra: the subspaces stay within a fraction of a degree, the versions agree.
  const Eigen::MatrixXf more = source.Draw(320);
  original.Add(more);
  restored.Add(more);
  CHECK(restored.Model()->version == original.Model()->version);
  CHECK(restored.Model()->spectra_seen == doctest::Approx(original.Model()->spectra_seen));
  CHECK(test::LargestPrincipalAngleDeg(restored.Model()->basis.leftCols(3).cast<double>(),
                                       original.Model()->basis.leftCols(3).cast<double>()) < 0.5);
  CHECK((restored.Model()->mean - original.Model()->mean).norm() < 1e-3 * original.Model()->mean.norm());
}

TEST_CASE("IncrementalSvd::Restore refuses a model that does not fit") {
  IncrementalSvd svd(16, Options());
  PcaModel m;
  m.mean = Eigen::VectorXf::Zero(8);
  CHECK_THROWS_AS(svd.Restore(m), std::invalid_argument);  // channels
  m.mean = Eigen::VectorXf::Zero(16);
  m.basis = Eigen::MatrixXf::Identity(16, 8);
  m.singular_values = Eigen::VectorXd::Ones(8);
  CHECK_THROWS_AS(svd.Restore(m), std::invalid_argument);  // 8 > k_max 7
  m.basis = Eigen::MatrixXf::Identity(16, 2);
  CHECK_THROWS_AS(svd.Restore(m), std::invalid_argument);  // 8 singular values for 2 columns
}

TEST_CASE("StreamingModel::Restore takes over the Poisson weights (frozen) and denoises like the original") {
  std::mt19937_64 gen(5);
  const int d = 48;
  Eigen::MatrixXd shapes(d, 3);
  const Eigen::ArrayXd e = Eigen::ArrayXd::LinSpaced(d, 0.0, 1.0);
  for (int k = 0; k < 3; ++k) {
    shapes.col(k) = (1.0 + 4.0 * (-(e - 0.25 * (k + 1)).square() / 0.002).exp()).matrix();
    shapes.col(k) *= 2000.0 / shapes.col(k).sum();
  }
  std::gamma_distribution<double> gamma(1.0, 1.0);
  auto draw = [&](int m) {
    Eigen::MatrixXd w(3, m);
    for (int i = 0; i < m; ++i) {
      for (int k = 0; k < 3; ++k) w(k, i) = gamma(gen);
      w.col(i) /= w.col(i).sum();
    }
    return Poisson(shapes * w, gen).cast<float>().eval();
  };
  WeightingOptions weighting;
  weighting.calibration_spectra = 64;
  StreamingModel original(d, Options(), weighting);
  original.Add(draw(512));
  const PcaModel saved = Truncated(*original.Model());
  REQUIRE(saved.Weighted());

  StreamingModel restored(d, Options(), weighting);
  CHECK(restored.calibrating());
  restored.Restore(saved);
  CHECK_FALSE(restored.calibrating());
  CHECK(restored.Model()->channel_scale == saved.channel_scale);
  CHECK(restored.Model()->version == saved.version);

  // Denoising with the restored model equals denoising with the saved one.
  const Eigen::MatrixXf x = draw(16);
  DenoiseResult a, b;
  Denoise(saved, x, &a);
  Denoise(*restored.Model(), x, &b);
  CHECK((a.denoised - b.denoised).norm() < 1e-3 * a.denoised.norm());
  CHECK((a.deviance_z - b.deviance_z).norm() < 1e-3 * (1.0 + a.deviance_z.norm()));

  // It learns on at once (no calibration window), weighting with the saved scale.
  restored.Add(draw(64));
  CHECK(restored.Model()->version == saved.version + 2);
  CHECK(restored.Model()->channel_scale == saved.channel_scale);

  // Weight refreshes resume after refresh_spectra spectra of the new session, with b from those spectra only.
  WeightingOptions refreshing = weighting;
  refreshing.refresh_spectra = 64;
  StreamingModel later(d, Options(), refreshing);
  later.Restore(saved);
  const Eigen::MatrixXf first = draw(32), second = draw(32);
  later.Add(first);
  CHECK(later.weight_refreshes() == 0);
  CHECK(later.Model()->channel_scale == saved.channel_scale);
  later.Add(second);
  CHECK(later.weight_refreshes() == 1);
  Eigen::VectorXd shape = first.cast<double>().rowwise().sum() + second.cast<double>().rowwise().sum();
  shape = (shape / shape.sum()).cwiseMax(weighting.floor_fraction / d);
  const Eigen::VectorXd expected_scale = shape.cwiseSqrt();
  CHECK((later.Model()->channel_scale.cast<double>() - expected_scale).norm() < 1e-5 * expected_scale.norm());

  // Weighting off but a weighted model (or the other way round): refused.
  WeightingOptions off = weighting;
  off.enabled = false;
  StreamingModel unweighted(d, Options(), off);
  CHECK_THROWS_AS(unweighted.Restore(saved), std::invalid_argument);
}

}  // namespace specwatch
