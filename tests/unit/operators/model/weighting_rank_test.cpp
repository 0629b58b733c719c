// Poisson weighting, the Gavish–Donoho rank and the weighted denoiser, against closed forms and direct
// double-precision computations.
#include "operators/model/denoiser.hpp"
#include "operators/core/config_error.hpp"
#include "operators/core/poisson_weighting.hpp"
#include "operators/model/rank_selection.hpp"
#include "operators/model/streaming_model.hpp"
#include "tests/unit/operators/synthetic.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <random>

namespace specwatch {
namespace {

/// m Poisson spectra: columns of `shapes` (D x p, expected counts) mixed with Dirichlet-like random weights.
Eigen::MatrixXf PoissonMixtures(const Eigen::MatrixXd& shapes, int m, std::mt19937_64& gen,
                                Eigen::MatrixXd* expected = nullptr) {
  std::gamma_distribution<double> gamma(1.0, 1.0);
  Eigen::MatrixXf counts(shapes.rows(), m);
  if (expected) expected->resize(shapes.rows(), m);
  for (int i = 0; i < m; ++i) {
    Eigen::VectorXd w(shapes.cols());
    for (int k = 0; k < w.size(); ++k) w(k) = gamma(gen);
    w /= w.sum();
    const Eigen::VectorXd mu = shapes * w;
    if (expected) expected->col(i) = mu;
    for (int j = 0; j < mu.size(); ++j) counts(j, i) = static_cast<float>(std::poisson_distribution<int>(mu(j))(gen));
  }
  return counts;
}

/// p smooth, distinct spectral shapes on D channels: a common background plus phase-specific Gaussian lines.
Eigen::MatrixXd LineShapes(int d, int p, double counts_per_spectrum) {
  Eigen::MatrixXd s(d, p);
  const Eigen::ArrayXd e = Eigen::ArrayXd::LinSpaced(d, 0.0, 1.0);
  for (int k = 0; k < p; ++k) {
    const double c = (k + 1.0) / (p + 1.0);
    s.col(k) = (2.0 * (-e * 3.0).exp() + 3.0 * (-(e - c).square() / (2 * 0.01 * 0.01)).exp()).matrix();
    s.col(k) *= counts_per_spectrum / s.col(k).sum();
  }
  return s;
}

}  // namespace

TEST_CASE("Gavish–Donoho: lambda*(1) = 4/sqrt(3), the threshold's closed form, and the count above it") {
  CHECK(GavishDonohoLambda(1.0) == doctest::Approx(4.0 / std::sqrt(3.0)).epsilon(1e-12));
  // β → 0: λ* → sqrt(2)
  CHECK(GavishDonohoLambda(1e-9) == doctest::Approx(std::sqrt(2.0)).epsilon(1e-6));
  const double beta = 0.25;
  const double lambda = std::sqrt(2 * (beta + 1) + 8 * beta / ((beta + 1) + std::sqrt(beta * beta + 14 * beta + 1)));
  CHECK(GavishDonohoLambda(beta) == doctest::Approx(lambda).epsilon(1e-12));
  // m x n = 100 x 400 (β = 1/4), σ = 2: τ = λ*(1/4) · sqrt(400) · 2; the orientation does not matter.
  CHECK(GavishDonohoThreshold(100, 400, 2.0) == doctest::Approx(lambda * 20.0 * 2.0).epsilon(1e-12));
  CHECK(GavishDonohoThreshold(400, 100, 2.0) == doctest::Approx(lambda * 20.0 * 2.0).epsilon(1e-12));
  const Eigen::VectorXd s = (Eigen::VectorXd(5) << 9, 7, 5, 3, 1).finished();
  CHECK(CountAbove(s, 4.0) == 3);
  CHECK(CountAbove(s, 9.0) == 0);
  CHECK(CountAbove(s, 0.5) == 5);
  CHECK(NoiseSigmaFromResidual(0.0, 10, 10, 2) == 0.0);
  CHECK(NoiseSigmaFromResidual(1.0, 10, 10, 10) == 0.0);
}

TEST_CASE("rank hysteresis: a component joins above tau(1 + h) and leaves below tau(1 - h)") {
  // A model whose noise is sigma = 1 exactly: the energy beyond the 4 tracked components is what sigma = 1 gives.
  const double d = 100, n = 10000;
  const double tau = GavishDonohoThreshold(d, n, 1.0);
  auto ranked = [&](std::initializer_list<double> over_tau, int previous) {
    PcaModel m;
    m.spectra_seen = n;
    m.singular_values = Eigen::VectorXd(static_cast<Eigen::Index>(over_tau.size()));
    int i = 0;
    for (double r : over_tau) m.singular_values(i++) = r * tau;
    m.mean = Eigen::VectorXf::Zero(static_cast<Eigen::Index>(d));
    m.basis = Eigen::MatrixXf::Zero(static_cast<Eigen::Index>(d), m.singular_values.size());
    m.total_variance = m.singular_values.squaredNorm() + (d - static_cast<double>(m.basis.cols())) * n;
    EstimateNoiseAndRank(m, 8, true, 1, previous, 0.1);
    REQUIRE(m.rank_threshold == doctest::Approx(tau));
    return m.rank;
  };
  CHECK(ranked({10, 1.05, 0.95, 0.5}, -1) == 2);  // no previous rank: the count above tau
  CHECK(ranked({10, 1.05, 0.95, 0.5}, 1) == 1);   // 1.05 tau has not passed tau(1 + h): not joined
  CHECK(ranked({10, 1.15, 0.95, 0.5}, 1) == 2);   // it has
  CHECK(ranked({10, 1.05, 0.95, 0.5}, 2) == 2);   // inside the band: held
  CHECK(ranked({10, 1.05, 0.95, 0.5}, 3) == 3);   // 0.95 tau is above tau(1 - h): held
  CHECK(ranked({10, 1.05, 0.85, 0.5}, 3) == 2);   // 0.85 tau is not: it leaves
}

TEST_CASE("auto rank finds the number of components in Gaussian noise, streaming") {
  // Components well above the noise edge σ(sqrt(n) + sqrt(D)) for n up to ~20,000 spectra, D = 256.
  for (int true_rank : {3, 4, 5, 6}) {
    CAPTURE(true_rank);
    Eigen::VectorXd sd = Eigen::VectorXd::LinSpaced(true_rank, 12.0, 4.0);
    test::LowRankSource source(256, sd, 1.0, 100 + true_rank);
    SubspaceOptions o;
    o.rank = 12;
    o.oversample = 8;
    o.block = 64;
    o.auto_rank = true;
    IncrementalSvd svd(256, o);
    for (int i = 0; i < 40; ++i) svd.Add(source.Draw(256));
    const auto model = svd.Model();
    CHECK(model->rank == true_rank);
    CHECK(model->noise_sigma == doctest::Approx(1.0).epsilon(0.05));  // the noise the source added
    CHECK(model->singular_values(true_rank - 1) > model->rank_threshold);
    CHECK(model->singular_values(true_rank) < model->rank_threshold);
  }
}

TEST_CASE("Poisson weighting: b is the calibrated mean shape, floored; x~ = x / sqrt(a b)") {
  const int d = 64;
  WeightingOptions o;
  o.calibration_spectra = 100;
  o.floor_fraction = 0.05;
  PoissonWeighting w(d, o);
  Eigen::MatrixXf spectra = Eigen::MatrixXf::Zero(d, 150);
  for (int i = 0; i < 150; ++i) {
    for (int j = 0; j < d; ++j) spectra(j, i) = static_cast<float>(j < 8 ? 0 : (j % 7) + 1 + i % 3);
  }
  CHECK_FALSE(w.Calibrate(spectra.leftCols(60)));
  CHECK(w.CalibrationLeft() == 40);
  CHECK(w.Calibrate(spectra.rightCols(90)));  // only the first 40 of these count
  REQUIRE(w.frozen());
  const Eigen::VectorXd sums = spectra.leftCols(100).cast<double>().rowwise().sum();
  const Eigen::VectorXd b = (sums / sums.sum()).cwiseMax(0.05 / d);
  for (int j = 0; j < d; ++j) CHECK(w.channel_scale()(j) == doctest::Approx(std::sqrt(b(j))).epsilon(1e-6));
  CHECK(w.channel_scale()(0) == doctest::Approx(std::sqrt(0.05 / d)).epsilon(1e-6));  // empty channel: floor

  const Eigen::VectorXf totals = SpectrumTotals(spectra);
  Eigen::MatrixXf weighted;
  ApplyWeights(spectra, w.channel_scale(), totals, &weighted);
  for (int i : {0, 77, 149}) {
    for (int j : {0, 9, 40}) {
      CHECK(weighted(j, i) == doctest::Approx(spectra(j, i) / std::sqrt(totals(i) * b(j))).epsilon(1e-5));
    }
  }
  CHECK(SpectrumTotals(Eigen::MatrixXf::Zero(d, 1))(0) == 1.0f);  // empty spectrum: 0/0 avoided
}

TEST_CASE("Poisson weighting: VarianceImbalance is max(b'/b) / mean(b'/b) for the accumulated shape b'") {
  const int d = 32;
  WeightingOptions o;
  o.calibration_spectra = 10;
  PoissonWeighting w(d, o);
  Eigen::VectorXf calibrated = Eigen::VectorXf::Constant(d, 100.0f);
  REQUIRE(w.Calibrate(calibrated.replicate(1, 10)));
  CHECK(w.VarianceImbalance() == doctest::Approx(1.0));  // nothing new: b fits
  // 30 spectra of a shape with a peak of 9x in channel 5: the sums are 10 x flat + 30 x peaked.
  Eigen::VectorXf peaked = calibrated;
  peaked(5) = 900.0f;
  w.Accumulate(peaked.replicate(1, 30), 1.0);
  Eigen::VectorXd sums = Eigen::VectorXd::Constant(d, 4000.0);
  sums(5) = 1000.0 + 27000.0;
  const Eigen::ArrayXd b_new = sums.array() / sums.sum();
  const Eigen::ArrayXd ratio = b_new / (1.0 / d);
  CHECK(w.VarianceImbalance() == doctest::Approx(ratio.maxCoeff() / ratio.mean()).epsilon(1e-5));
  CHECK(w.VarianceImbalance() > 5.0);
  w.Refresh();
  CHECK(w.VarianceImbalance() == doctest::Approx(1.0));  // the scale fits the sums again
  WeightingOptions bad = o;
  bad.refresh_imbalance = 0.5;
  CHECK_THROWS_AS(bad.Validate(), ConfigError);
}

TEST_CASE("Poisson weighting makes the noise uniform: unit variance per channel, whatever the intensity") {
  std::mt19937_64 gen(5);
  const Eigen::MatrixXd shape = LineShapes(128, 1, 2000.0);  // one phase: the noise is all there is
  const Eigen::MatrixXf counts = PoissonMixtures(shape, 4000, gen);
  WeightingOptions o;
  o.calibration_spectra = 4000;
  PoissonWeighting w(128, o);
  REQUIRE(w.Calibrate(counts));
  Eigen::MatrixXf x;
  ApplyWeights(counts, w.channel_scale(), SpectrumTotals(counts), &x);
  const Eigen::VectorXd mean = x.cast<double>().rowwise().mean();
  const Eigen::VectorXd var = (x.cast<double>().colwise() - mean).rowwise().squaredNorm() / 3999.0;
  const Eigen::VectorXd raw_var = (counts.cast<double>().colwise() - counts.cast<double>().rowwise().mean())
                                      .rowwise().squaredNorm() / 3999.0;
  CHECK(raw_var.maxCoeff() / raw_var.minCoeff() > 20.0);  // raw: variance follows intensity
  CHECK(var.minCoeff() > 0.85);                             // weighted: ~1 everywhere (4000 samples: ±5%)
  CHECK(var.maxCoeff() < 1.15);
}

TEST_CASE("weighted Denoise matches a direct double computation; chi2 and deviance of explained spectra") {
  std::mt19937_64 gen(6);
  const int d = 200;
  const Eigen::MatrixXd shapes = LineShapes(d, 3, 5000.0);
  WeightingOptions wo;
  wo.calibration_spectra = 512;
  SubspaceOptions so;
  so.rank = 3;
  so.oversample = 4;
  StreamingModel learner(d, so, wo);
  learner.Add(PoissonMixtures(shapes, 4096, gen));
  const auto model = learner.Model();
  REQUIRE(model->Weighted());
  REQUIRE(model->rank == 3);

  Eigen::MatrixXd expected;
  const Eigen::MatrixXf x = PoissonMixtures(shapes, 100, gen, &expected);
  DenoiseResult out;
  Denoise(*model, x, &out);
  const Eigen::MatrixXd u = model->basis.leftCols(3).cast<double>();
  const Eigen::ArrayXd scale = model->channel_scale.cast<double>().array();
  double chi2_sum = 0, z_sum = 0, err_raw = 0, err_denoised = 0;
  for (int i = 0; i < x.cols(); ++i) {
    const Eigen::VectorXd xi = x.col(i).cast<double>();
    const double a = std::max(xi.sum(), 1.0);
    const Eigen::VectorXd xw = (xi.array() / (scale * std::sqrt(a))).matrix();
    const Eigen::VectorXd s = u.transpose() * (xw - model->mean.cast<double>());
    const Eigen::VectorXd xw_hat = model->mean.cast<double>() + u * s;
    const Eigen::VectorXd x_hat = (xw_hat.array() * scale * std::sqrt(a)).matrix();
    CAPTURE(i);
    CHECK((out.scores.col(i).cast<double>() - s).cwiseAbs().maxCoeff() < 1e-3 * s.norm());
    CHECK((out.denoised.col(i).cast<double>() - x_hat).cwiseAbs().maxCoeff() < 1e-4 * x_hat.cwiseAbs().maxCoeff());
    CHECK(out.residual_norm(i) == doctest::Approx((xi - x_hat).norm()).epsilon(1e-3));
    CHECK(out.residual_chi2(i) == doctest::Approx((xw - xw_hat).squaredNorm()).epsilon(1e-3));
    CHECK(out.totals(i) == doctest::Approx(a));
    chi2_sum += out.residual_chi2(i);
    z_sum += out.deviance_z(i);
    err_raw += (xi - expected.col(i)).squaredNorm();
    err_denoised += (x_hat - expected.col(i)).squaredNorm();
  }
  // An explained spectrum at ~25 counts/channel: χ² ≈ ν = D − 3 on average, deviance z ≈ 0.
  CHECK(chi2_sum / 100 == doctest::Approx(d - 3).epsilon(0.1));
  CHECK(std::abs(z_sum / 100) < 1.0);
  CHECK(err_denoised < err_raw / 20);  // rank 3 of 200 channels keeps little of the noise
}

TEST_CASE("StreamingModel: nothing is learnt while calibrating; the calibration spectra are learnt after") {
  std::mt19937_64 gen(7);
  const Eigen::MatrixXd shapes = LineShapes(64, 2, 1000.0);
  WeightingOptions wo;
  wo.calibration_spectra = 300;
  SubspaceOptions so;
  so.rank = 2;
  so.block = 50;
  StreamingModel learner(64, so, wo);
  learner.Add(PoissonMixtures(shapes, 200, gen));
  CHECK(learner.calibrating());
  CHECK(learner.Model()->spectra_seen == 0);
  learner.Add(PoissonMixtures(shapes, 200, gen));  // calibration completes inside this batch
  CHECK_FALSE(learner.calibrating());
  learner.Flush();
  CHECK(learner.Model()->spectra_seen == doctest::Approx(400));
  learner.Reset();
  CHECK(learner.calibrating());
  learner.Add(PoissonMixtures(shapes, 20, gen));
  learner.Flush();  // a series that ended early: weights frozen on what came, and learnt
  CHECK_FALSE(learner.calibrating());
  CHECK(learner.Model()->spectra_seen == doctest::Approx(20));
  CHECK(learner.Model()->Weighted());

  WeightingOptions off;
  off.enabled = false;
  StreamingModel plain(64, so, off);
  plain.Add(PoissonMixtures(shapes, 100, gen));
  CHECK(plain.Model()->spectra_seen == doctest::Approx(100));
  CHECK_FALSE(plain.Model()->Weighted());
}

TEST_CASE("RescaleChannels re-expresses a learnt model exactly: equal to learning the rescaled data") {
  // Exactly rank-3 data (no untracked energy): learning x then rescaling by f must give the model of diag(f)·x.
  const int d = 200;
  std::mt19937_64 gen(41);
  test::LowRankSource source(d, Eigen::Vector3d(30.0, 12.0, 5.0), 0.0, 41);
  const Eigen::MatrixXf x = source.Draw(1000);
  std::uniform_real_distribution<float> uniform(0.3f, 3.0f);
  const Eigen::VectorXf f = Eigen::VectorXf::NullaryExpr(d, [&] { return uniform(gen); });
  const Eigen::VectorXf old_scale = Eigen::VectorXf::Constant(d, 0.5f);
  const Eigen::VectorXf new_scale = old_scale.cwiseQuotient(f);
  SubspaceOptions so;
  so.rank = 3;
  so.oversample = 2;
  so.block = 50;
  IncrementalSvd rescaled(d, so);
  rescaled.SetChannelScale(old_scale);
  rescaled.Add(x.leftCols(975));  // 25 left in the buffer: rescaled too
  rescaled.RescaleChannels(f, new_scale);
  rescaled.Add(f.asDiagonal() * x.rightCols(25));
  rescaled.Flush();
  IncrementalSvd direct(d, so);
  direct.SetChannelScale(new_scale);
  direct.Add(f.asDiagonal() * x);
  direct.Flush();
  const auto a = rescaled.Model();
  const auto b = direct.Model();
  CHECK(a->channel_scale.isApprox(new_scale));
  CHECK(a->spectra_seen == doctest::Approx(1000));
  CHECK((a->mean - b->mean).norm() <= 1e-5 * b->mean.norm());
  for (int i = 0; i < 3; ++i) CHECK(a->singular_values(i) == doctest::Approx(b->singular_values(i)).epsilon(1e-4));
  CHECK(test::LargestPrincipalAngleDeg(a->basis.leftCols(3).cast<double>(), b->basis.leftCols(3).cast<double>()) <
        0.01);
  CHECK(a->total_variance == doctest::Approx(b->total_variance).epsilon(1e-4));
  CHECK(a->version > 0);
}

TEST_CASE("weight refresh: a phase missing from the calibration window no longer inflates the rank") {
  // Three phases with lines at different energies; the first 400 spectra hold only phases 0 and 1 (the first
  // scan lines of a field where phase 2 lies further down). Calibrated there, b is at its floor on phase 2's
  // line, whose Poisson noise then weighs ~(line / floor) times too much and passes the rank threshold.
  const int d = 512;
  const Eigen::MatrixXd shapes = LineShapes(d, 3, 400.0);
  std::mt19937_64 gen(7);
  const Eigen::MatrixXf first = PoissonMixtures(shapes.leftCols(2), 400, gen);
  const Eigen::MatrixXf rest = PoissonMixtures(shapes, 12000, gen);
  auto learn = [&](int refresh_spectra) {
    SubspaceOptions so;
    so.rank = 8;
    so.oversample = 8;
    so.block = 64;
    so.auto_rank = true;
    WeightingOptions wo;
    wo.calibration_spectra = 256;
    wo.refresh_spectra = refresh_spectra;
    auto learner = std::make_unique<StreamingModel>(d, so, wo);
    for (int j = 0; j < first.cols(); j += 100) learner->Add(first.middleCols(j, 100));
    for (int j = 0; j < rest.cols(); j += 100) learner->Add(rest.middleCols(j, 100));
    learner->Flush();
    return learner;
  };
  const auto frozen = learn(0);
  const auto refreshed = learn(4096);
  const auto fm = frozen->Model();
  const auto rm = refreshed->Model();
  MESSAGE("frozen b: rank ", fm->rank, ", s = ", fm->singular_values.head(5).transpose(), ", tau ", fm->rank_threshold);
  MESSAGE("refreshed b (", refreshed->weight_refreshes(), " refreshes): rank ", rm->rank,
          ", s = ", rm->singular_values.head(5).transpose(), ", tau ", rm->rank_threshold);
  CHECK(frozen->weight_refreshes() == 0);
  CHECK(fm->rank > 2);  // the failure the refresh exists for
  // Refreshes when 256, 512, 1024, 2048, 4096 (then every 4096: 8192) spectra were learnt after the
  // calibration window; 12144 were.
  CHECK(refreshed->weight_refreshes() == 6);
  CHECK(rm->rank == 2);  // 3 phases, mean-centred: 2 components
  // b is the floored mean shape of the spectra seen up to the last refresh. Refreshes fall at the end of the Add
  // that crosses the mark: calibration ends 56 spectra into the third Add of 100, so 44 + 100 k were learnt after
  // each Add, and the last refresh came at 8244 ≥ 8192: 256 + 8244 spectra.
  const Eigen::VectorXd sums = first.cast<double>().rowwise().sum() +
                               rest.leftCols(256 + 8244 - first.cols()).cast<double>().rowwise().sum();
  const Eigen::VectorXd b = (sums / sums.sum()).cwiseMax(0.05 / d);
  const Eigen::VectorXd scale = rm->channel_scale.cast<double>();
  CHECK(((scale.array().square() - b.array()).abs() / b.array()).maxCoeff() < 1e-4);
}

}  // namespace specwatch
