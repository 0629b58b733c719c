#include "operators/model/denoiser.hpp"
#include "operators/model/incremental_svd.hpp"
#include "operators/core/poisson_deviance.hpp"
#include "tests/unit/operators/synthetic.hpp"

#include <doctest/doctest.h>

#include <random>
#include <stdexcept>

namespace specwatch {
namespace {

using test::LowRankSource;
using test::RandomOrthonormal;

/// A model built by hand: `columns` orthonormal directions, the first `rank` used.
PcaModel HandModel(int d, int columns, int rank, uint64_t seed) {
  std::mt19937_64 gen(seed);
  PcaModel model;
  model.basis = RandomOrthonormal(d, columns, gen).cast<float>();
  model.singular_values = Eigen::VectorXd::LinSpaced(columns, 100.0, 10.0);
  model.mean = (Eigen::VectorXd::Random(d).array() * 10.0 + 50.0).cast<float>().matrix();
  model.spectra_seen = 1000;
  model.total_variance = model.singular_values.squaredNorm();
  model.version = 1;
  model.rank = rank;
  return model;
}

TEST_CASE("Denoise: matches a direct double-precision projection") {
  // D not a multiple of the SIMD width, m spanning several internal chunks, rank below the basis width.
  const int d = 300, m = 150;
  const PcaModel model = HandModel(d, 10, 7, 1);
  const Eigen::MatrixXf spectra = (Eigen::MatrixXf::Random(d, m).array() * 20.0f + 50.0f).matrix();
  DenoiseResult out;
  Denoise(model, spectra, &out);
  REQUIRE(out.denoised.rows() == d);
  REQUIRE(out.denoised.cols() == m);
  REQUIRE(out.residual_norm.size() == m);
  REQUIRE(out.scores.rows() == 7);
  REQUIRE(out.scores.cols() == m);

  const Eigen::MatrixXd u = model.basis.leftCols(7).cast<double>();
  const Eigen::VectorXd mean = model.mean.cast<double>();
  for (int j = 0; j < m; ++j) {
    const Eigen::VectorXd x = spectra.col(j).cast<double>();
    const Eigen::VectorXd score = u.transpose() * (x - mean);
    const Eigen::VectorXd x_hat = mean + u * score;
    CAPTURE(j);
    CHECK((out.scores.col(j).cast<double>() - score).cwiseAbs().maxCoeff() < 1e-5 * x.norm());
    CHECK((out.denoised.col(j).cast<double>() - x_hat).cwiseAbs().maxCoeff() < 1e-5 * x.cwiseAbs().maxCoeff());
    CHECK(out.residual_norm(j) == doctest::Approx((x - x_hat).norm()).epsilon(1e-4));
    // Hotelling T²: Σ score_i² / (s_i² / n) over the 7 components used.
    const Eigen::ArrayXd variance = model.singular_values.head(7).array().square() / model.spectra_seen;
    CHECK(out.hotelling_t2(j) == doctest::Approx((score.array().square() / variance).sum()).epsilon(1e-4));
    CHECK(out.deviance_z(j) == 0.0f);  // unweighted: not count data
  }
}

TEST_CASE("Denoise: a weighted model's deviance_z is the exact standardised deviance against the reconstruction") {
  const int d = 200, m = 70;
  PcaModel model = HandModel(d, 6, 4, 8);
  model.channel_scale = Eigen::VectorXf::Constant(d, 1.0f / std::sqrt(static_cast<float>(d)));
  model.mean = Eigen::VectorXf::Constant(d, 1.0f);  // weighted space: x̃ = x / sqrt(a / D) ≈ sqrt(level)
  std::mt19937_64 gen(9);
  Eigen::MatrixXf spectra(d, m);
  for (int j = 0; j < m; ++j) {
    std::poisson_distribution<int> draw(j % 2 == 0 ? 0.3 : 20.0);  // low and high dose
    for (int i = 0; i < d; ++i) spectra(i, j) = static_cast<float>(draw(gen));
  }
  DenoiseResult out;
  Denoise(model, spectra, &out);
  for (int j = 0; j < m; ++j) {
    CAPTURE(j);
    // The floor: 3 % of the model's mean spectrum at the spectrum's total (denoiser.hpp).
    const Eigen::ArrayXf lower = (model.mean.array() * model.channel_scale.array()).max(0.0f) *
                                 kReconstructionFloorFraction * std::sqrt(out.totals(j));
    CHECK((ReconstructionFloor(model, out.totals(j)) - lower).abs().maxCoeff() < 1e-6f);
    const DevianceScore s = ScorePoissonDeviance(spectra.col(j), out.denoised.col(j), nullptr, &lower);
    CHECK(out.deviance_z(j) == doctest::Approx(s.z).epsilon(1e-4).scale(1.0));
    // ... which is (Dev − Σf)/sqrt(Σg) recomputed here in double from the moments.
    double dev = 0, f = 0, g = 0;
    for (int i = 0; i < d; ++i) {
      const double mu = std::max<double>({out.denoised(i, j), kDevianceFloor, lower(i)});
      const double x = spectra(i, j);
      dev += x > 0 ? 2 * (x * std::log(x / mu) - (x - mu)) : 2 * mu;
      f += PoissonDevianceMean(mu);
      g += PoissonDevianceVariance(mu);
    }
    CHECK(out.deviance_z(j) == doctest::Approx((dev - f) / std::sqrt(g)).epsilon(1e-3).scale(1.0));
  }
}

TEST_CASE("Denoise: reproduces spectra that lie in the model subspace") {
  const int d = 512;
  const PcaModel model = HandModel(d, 12, 12, 2);
  const Eigen::MatrixXf scores = Eigen::MatrixXf::Random(12, 200) * 30.0f;
  const Eigen::MatrixXf spectra = (model.basis * scores).colwise() + model.mean;
  DenoiseResult out;
  Denoise(model, spectra, &out);
  CHECK((out.denoised - spectra).cwiseAbs().maxCoeff() < 1e-5f * spectra.cwiseAbs().maxCoeff());
  CHECK((out.scores - scores).cwiseAbs().maxCoeff() < 1e-4f * scores.cwiseAbs().maxCoeff());
  const Eigen::VectorXf offset_norm = (spectra.colwise() - model.mean).colwise().norm().transpose();
  CHECK((out.residual_norm.array() / offset_norm.array()).maxCoeff() < 1e-5f);
}

TEST_CASE("Denoise: removes most of the noise from low-rank spectra") {
  // Truth of rank 5 in 256 channels plus unit Gaussian noise: projecting on the learnt 5-dimensional subspace
  // keeps about 5/256 of the noise, i.e. cuts the MSE some 50-fold.
  const int d = 256, k = 5;
  const double sigma = 1.0;
  LowRankSource source(d, (Eigen::VectorXd(k) << 40, 30, 20, 15, 10).finished(), sigma, 31);
  SubspaceOptions options;
  options.rank = k;
  IncrementalSvd svd(d, options);
  svd.Add(source.Draw(4000));
  svd.Flush();

  Eigen::MatrixXf truth;
  const Eigen::MatrixXf noisy = source.Draw(1000, &truth);  // not used for training
  DenoiseResult out;
  Denoise(*svd.Model(), noisy, &out);
  const double mse_noisy = (noisy - truth).squaredNorm() / noisy.size();
  const double mse_denoised = (out.denoised - truth).squaredNorm() / noisy.size();
  MESSAGE("MSE noisy ", mse_noisy, ", denoised ", mse_denoised, ": ", mse_noisy / mse_denoised, "x lower");
  CHECK(mse_denoised < 0.04 * mse_noisy);
  // What is left is the noise outside the subspace: E||x − x̂||² = (D − K) σ².
  const double mean_residual2 = out.residual_norm.cast<double>().squaredNorm() / noisy.cols();
  CHECK(mean_residual2 == doctest::Approx((d - k) * sigma * sigma).epsilon(0.02));
}

TEST_CASE("Denoise: a model that has seen nothing passes spectra through; rank 0 returns the mean") {
  const Eigen::MatrixXf spectra = Eigen::MatrixXf::Random(64, 10);
  DenoiseResult out;

  IncrementalSvd svd(64, SubspaceOptions{});
  Denoise(*svd.Model(), spectra, &out);
  CHECK(out.denoised == spectra);
  CHECK(out.residual_norm.isZero());
  CHECK(out.hotelling_t2.size() == spectra.cols());
  CHECK(out.hotelling_t2.isZero());
  CHECK(out.scores.rows() == 0);
  CHECK(out.scores.cols() == spectra.cols());

  PcaModel model = HandModel(64, 4, 4, 3);
  model.rank = 0;
  Denoise(model, spectra, &out);
  CHECK(out.hotelling_t2.isZero());
  for (int j = 0; j < spectra.cols(); ++j) {
    CHECK((out.denoised.col(j) - model.mean).cwiseAbs().maxCoeff() < 1e-6f);
    CHECK(out.residual_norm(j) == doctest::Approx((spectra.col(j) - model.mean).norm()).epsilon(1e-5));
  }
  model.basis.resize(64, 0);
  model.rank = 3;  // larger than the basis: clamped
  Denoise(model, spectra, &out);
  CHECK((out.denoised.col(0) - model.mean).cwiseAbs().maxCoeff() < 1e-6f);
}

TEST_CASE("Denoise: batches of any size, output reused between calls") {
  const PcaModel model = HandModel(128, 6, 6, 4);
  DenoiseResult out;
  Denoise(model, Eigen::MatrixXf::Zero(128, 0), &out);
  CHECK(out.denoised.cols() == 0);
  CHECK(out.residual_norm.size() == 0);
  const Eigen::MatrixXf spectra = Eigen::MatrixXf::Random(128, 65);
  Denoise(model, spectra, &out);
  const CountsMatrix first = out.denoised;
  Denoise(model, spectra.leftCols(1), &out);
  CHECK(out.denoised.cols() == 1);
  CHECK((out.denoised.col(0) - first.col(0)).cwiseAbs().maxCoeff() < 1e-6f);
}

TEST_CASE("Denoise: spectra with a different channel count than the model are refused") {
  const PcaModel model = HandModel(128, 6, 6, 5);
  DenoiseResult out;
  CHECK_THROWS_AS(Denoise(model, Eigen::MatrixXf::Zero(127, 3), &out), std::invalid_argument);
}

}  // namespace
}  // namespace specwatch
