// Merging streaming models (DecayModel, MergeModels) against a batch SVD of the concatenated spectra in double,
// against one IncrementalSvd over the concatenated stream, and against closed forms.
#include "operators/core/config_error.hpp"
#include "operators/model/incremental_svd.hpp"
#include "operators/model/model_merge.hpp"
#include "tests/unit/operators/synthetic.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>

namespace specwatch {
namespace {

using test::BatchPca;
using test::LargestPrincipalAngleDeg;
using test::LowRankSource;

using test::Leading;
using test::OrthonormalityError;
using test::RelativeError;

/// Largest relative error of the first k singular values.
double SingularValueError(const PcaModel& model, const Eigen::VectorXd& want, int k) {
  return (model.singular_values.head(k).array() / want.head(k).array() - 1.0).abs().maxCoeff();
}

/// The model of one IncrementalSvd fed `spectra` in chunks of 100 (then flushed).
std::shared_ptr<const PcaModel> Learn(const Eigen::MatrixXf& spectra, const SubspaceOptions& options,
                                      const Eigen::VectorXf& channel_scale = Eigen::VectorXf()) {
  IncrementalSvd svd(static_cast<int>(spectra.rows()), options);
  svd.SetChannelScale(channel_scale);
  for (Eigen::Index j = 0; j < spectra.cols(); j += 100) {
    svd.Add(spectra.middleCols(j, std::min<Eigen::Index>(100, spectra.cols() - j)));
  }
  svd.Flush();
  return svd.Model();
}

Eigen::MatrixXf Concatenate(const Eigen::MatrixXf& first, const Eigen::MatrixXf& second) {
  Eigen::MatrixXf both(first.rows(), first.cols() + second.cols());
  both << first, second;
  return both;
}

TEST_CASE("MergeModels: two halves with different means give the model of the concatenated stream") {
  // Four components (s ≈ 2530, 1900, 1260, 760 over 4000 spectra) and noise σ = 0.5 (edge ≈ (sqrt(4000) +
  // sqrt(384)) σ ≈ 42). The second half is shifted by |δ| = 35 along a random direction: in the concatenated
  // data that shift is a fifth component, s_5 = sqrt(n_a n_b / n) |δ| ≈ 1110, that neither half holds: only the
  // mean-shift column of the merge can supply it. Neither half tracked that direction either, so the noise
  // energy along it, n σ², is lost (to one tracker over the whole stream as well): s_5 comes out short by
  // ≈ n σ² / (2 s_5²) = 2 σ² / |δ|² = 4e-4 relative (2e-2 at |δ| = 10 σ, measured 1.9e-2).
  const int d = 384;
  LowRankSource source(d, (Eigen::VectorXd(4) << 40, 30, 20, 12).finished(), 0.5, 31);
  std::mt19937_64 gen(32);
  const Eigen::VectorXd shift = 35.0 * test::RandomOrthonormal(d, 1, gen).col(0);
  const Eigen::MatrixXf first = source.Draw(2000);
  const Eigen::MatrixXf second = (source.Draw(2000).cast<double>().colwise() + shift).cast<float>();
  const Eigen::MatrixXf both = Concatenate(first, second);

  SubspaceOptions options;
  options.rank = 8;
  options.oversample = 8;
  options.block = 32;  // 2000 is not a multiple: each half ends on a partial block
  options.auto_rank = true;
  const auto a = Learn(first, options);
  const auto b = Learn(second, options);
  const auto whole = Learn(both, options);
  const PcaModel merged = MergeModels(*a, *b, MergeOptions::From(options));
  const BatchPca batch(both);

  const int r = 5;
  const double mean_error = RelativeError(merged.mean.cast<double>(), batch.mean);
  const double variance_error = std::abs(merged.total_variance / batch.total_variance - 1.0);
  const double value_error = SingularValueError(merged, batch.singular_values, r);
  const double angle = LargestPrincipalAngleDeg(Leading(merged, r), batch.basis.leftCols(r));
  MESSAGE("merged vs batch SVD: mean ", mean_error, ", total variance ", variance_error, ", top-5 singular values ",
          value_error, ", top-5 angle ", angle, " deg");
  CHECK(merged.spectra_seen == 4000.0);
  CHECK(merged.version == a->version + 1);  // both halves ran ceil(2000 / 32) = 63 updates
  CHECK(merged.effective_memory == 0.0);
  CHECK(merged.basis.cols() == options.MaxComponents());
  CHECK(mean_error < 1e-5);
  CHECK(variance_error < 1e-5);
  CHECK(value_error < 1e-3);
  CHECK(angle < 0.1);
  CHECK(OrthonormalityError(merged) < 1e-5);
  // X Xᵀ is the batch scatter minus what each half truncated (positive semidefinite), so no merged singular
  // value can exceed the batch one (Weyl). The noise tail is underestimated more than by one tracker (each half
  // kept the largest of its own 2000-spectrum noise directions; measured ratio 0.71..0.78).
  for (int i = 0; i < merged.basis.cols(); ++i) {
    CAPTURE(i);
    CHECK(merged.singular_values(i) / batch.singular_values(i) < 1.0 + 1e-5);
    CHECK(merged.singular_values(i) / batch.singular_values(i) > 0.6);
  }
  // Gavish–Donoho counts the four components and the shift, and nothing of the noise.
  CHECK(merged.rank == r);
  CHECK(merged.noise_sigma == doctest::Approx(0.5).epsilon(0.05));

  // The same stream through one tracker.
  const double tracker_angle = LargestPrincipalAngleDeg(Leading(merged, r), Leading(*whole, r));
  MESSAGE("merged vs one tracker: top-5 singular values ", SingularValueError(merged, whole->singular_values, r),
          ", top-5 angle ", tracker_angle, " deg, noise sigma ", merged.noise_sigma, " vs ", whole->noise_sigma,
          ", rank threshold ", merged.rank_threshold, " vs ", whole->rank_threshold);
  CHECK(whole->rank == r);
  CHECK(merged.spectra_seen == whole->spectra_seen);
  CHECK(RelativeError(merged.mean.cast<double>(), whole->mean.cast<double>()) < 1e-5);
  CHECK(std::abs(merged.total_variance / whole->total_variance - 1.0) < 1e-5);
  CHECK(SingularValueError(merged, whole->singular_values, r) < 1e-3);
  CHECK(tracker_angle < 0.1);
  CHECK(merged.noise_sigma == doctest::Approx(whole->noise_sigma).epsilon(0.01));
  CHECK(merged.rank_threshold == doctest::Approx(whole->rank_threshold).epsilon(0.01));

  // A fixed rank and a smaller k_max cut the same decomposition.
  MergeOptions fixed;
  fixed.rank = 3;
  fixed.oversample = 2;
  const PcaModel small = MergeModels(*a, *b, fixed);
  CHECK(small.rank == 3);
  REQUIRE(small.basis.cols() == 5);
  CHECK(RelativeError(small.singular_values, merged.singular_values.head(5)) < 1e-12);
  CHECK(small.total_variance == merged.total_variance);
  CHECK(small.noise_sigma == doctest::Approx(0.5).epsilon(0.05));  // residual over D − 5 directions now
}

TEST_CASE("MergeModels: a component present in only one half is in the merged subspace") {
  // Same mean and two shared components; the third only in the first half, the fourth only in the second.
  // Neither half's model spans the four; the merge must. As with a mean shift, the noise of each half along the
  // component it lacks is lost: s_4² short by ≈ n_a σ² = 375 of 1500 · 20² (relative error of s_4 ≈ 3e-4).
  const int d = 256;
  LowRankSource source(d, (Eigen::VectorXd(4) << 60, 45, 30, 20).finished(), 0.5, 51);
  source.stddev(3) = 0.0;
  const Eigen::MatrixXf first = source.Draw(1500);
  source.stddev(2) = 0.0;
  source.stddev(3) = 20.0;
  const Eigen::MatrixXf second = source.Draw(1500);
  const Eigen::MatrixXf both = Concatenate(first, second);

  SubspaceOptions options;
  options.rank = 4;
  options.oversample = 8;
  options.block = 30;
  const auto a = Learn(first, options);
  const auto b = Learn(second, options);
  const PcaModel merged = MergeModels(*a, *b, MergeOptions::From(options));
  const BatchPca batch(both);

  const double angle = LargestPrincipalAngleDeg(Leading(merged, 4), batch.basis.leftCols(4));
  const double truth_angle = LargestPrincipalAngleDeg(Leading(merged, 4), source.basis);
  MESSAGE("phases: top-4 angle to the batch SVD ", angle, " deg, to the true subspace ", truth_angle,
          " deg; singular values ", SingularValueError(merged, batch.singular_values, 4));
  CHECK(LargestPrincipalAngleDeg(Leading(*a, 4), source.basis) > 45.0);  // the first half lacks the fourth
  CHECK(LargestPrincipalAngleDeg(Leading(*b, 4), source.basis) > 45.0);  // the second half lacks the third
  CHECK(angle < 0.1);
  CHECK(truth_angle < 1.0);
  CHECK(SingularValueError(merged, batch.singular_values, 4) < 1e-3);
  CHECK(RelativeError(merged.mean.cast<double>(), batch.mean) < 1e-5);
  CHECK(std::abs(merged.total_variance / batch.total_variance - 1.0) < 1e-5);
  CHECK(merged.rank == 4);
}

TEST_CASE("MergeModels: with forgetting, the decayed earlier model merged with the later one is one tracker") {
  // A tracker with forgetting λ and blocks of b weighs a spectrum of block t (of T) by λ^{b (T−1−t)}. A learnt
  // over T_a blocks weighs its block t by λ^{b (T_a−1−t)}; DecayModel(A, n_b = b T_b) multiplies that by
  // λ^{b T_b}, the weight the same block has in one tracker over A then B. B, learnt from scratch, already
  // weighs its blocks as that tracker does. The decayed scatters add (plus the mean-shift term), so the merge
  // is exact up to truncation when both halves are whole blocks.
  const int d = 256, block = 16, blocks_a = 100, blocks_b = 100;
  const double lambda = 0.999;  // N_eff = 1000: A is 1600 spectra old at the end, weight e^-1.6 ≈ 0.2
  LowRankSource source(d, (Eigen::VectorXd(4) << 30, 20, 12, 8).finished(), 0.5, 61);
  std::mt19937_64 gen(62);
  // Decayed n_a ≈ 161, n_b ≈ 798: the shift is a fifth component with s_5 = sqrt(n_a n_b / n) · 45 ≈ 520
  // (between s ≈ 620 and 370 of the others; noise edge ≈ 24). Its noise energy n σ² ≈ 240 is lost as in the
  // test without forgetting: s_5 short by ≈ 240 / (2 · 520²) = 4e-4.
  const Eigen::VectorXd shift = 45.0 * test::RandomOrthonormal(d, 1, gen).col(0);
  const Eigen::MatrixXf first = source.Draw(block * blocks_a);
  const Eigen::MatrixXf second = (source.Draw(block * blocks_b).cast<double>().colwise() + shift).cast<float>();
  const Eigen::MatrixXf both = Concatenate(first, second);

  SubspaceOptions options;
  options.rank = 5;
  options.oversample = 8;
  options.block = block;
  options.forgetting = lambda;
  const auto a = Learn(first, options);
  const auto b = Learn(second, options);
  const auto whole = Learn(both, options);

  // DecayModel alone: the closed form.
  const double elapsed = static_cast<double>(second.cols());
  const PcaModel decayed = DecayModel(*a, elapsed);
  CHECK(a->effective_memory == doctest::Approx(1000.0).epsilon(1e-12));
  CHECK(RelativeError(decayed.singular_values, a->singular_values * std::pow(lambda, elapsed / 2)) < 1e-12);
  CHECK(decayed.spectra_seen == doctest::Approx(a->spectra_seen * std::pow(lambda, elapsed)).epsilon(1e-12));
  CHECK(decayed.total_variance == doctest::Approx(a->total_variance * std::pow(lambda, elapsed)).epsilon(1e-12));
  CHECK(decayed.mean == a->mean);
  CHECK(decayed.basis == a->basis);
  CHECK(decayed.version == a->version);
  CHECK(decayed.rank == a->rank);
  CHECK(decayed.effective_memory == a->effective_memory);

  const PcaModel merged = MergeModels(decayed, *b, MergeOptions::From(options));
  Eigen::VectorXd weights(both.cols());
  const int blocks = blocks_a + blocks_b;
  for (int t = 0; t < blocks; ++t) {
    weights.segment(t * block, block).setConstant(std::pow(lambda, block * (blocks - 1 - t)));
  }
  const BatchPca batch(both, weights);
  const double per_block = std::pow(lambda, block);
  const int r = 5;  // four components and the shift
  const double value_error = SingularValueError(merged, batch.singular_values, r);
  const double angle = LargestPrincipalAngleDeg(Leading(merged, r), batch.basis.leftCols(r));
  MESSAGE("forgetting, merged vs weighted batch SVD: mean ",
          RelativeError(merged.mean.cast<double>(), batch.mean), ", total variance ",
          std::abs(merged.total_variance / batch.total_variance - 1.0), ", top-5 singular values ", value_error,
          ", top-5 angle ", angle, " deg; vs one tracker: singular values ",
          SingularValueError(merged, whole->singular_values, r), ", angle ",
          LargestPrincipalAngleDeg(Leading(merged, r), Leading(*whole, r)), " deg");
  CHECK(merged.spectra_seen ==
        doctest::Approx(block * (1 - std::pow(per_block, blocks)) / (1 - per_block)).epsilon(1e-12));
  CHECK(merged.spectra_seen == doctest::Approx(weights.sum()).epsilon(1e-12));
  CHECK(merged.effective_memory == a->effective_memory);
  CHECK(RelativeError(merged.mean.cast<double>(), batch.mean) < 1e-5);
  CHECK(std::abs(merged.total_variance / batch.total_variance - 1.0) < 1e-5);
  CHECK(value_error < 1e-3);
  CHECK(angle < 0.1);

  CHECK(merged.spectra_seen == doctest::Approx(whole->spectra_seen).epsilon(1e-12));
  CHECK(RelativeError(merged.mean.cast<double>(), whole->mean.cast<double>()) < 1e-5);
  CHECK(std::abs(merged.total_variance / whole->total_variance - 1.0) < 1e-5);
  CHECK(SingularValueError(merged, whole->singular_values, r) < 1e-3);
  CHECK(LargestPrincipalAngleDeg(Leading(merged, r), Leading(*whole, r)) < 0.1);
  CHECK(merged.rank == whole->rank);

  // Without the common clock A counts five times too much: not the model of the stream.
  const PcaModel undecayed = MergeModels(*a, *b, MergeOptions::From(options));
  CHECK(undecayed.spectra_seen > 1.5 * whole->spectra_seen);
  CHECK(RelativeError(undecayed.mean.cast<double>(), batch.mean) > 1e-3);
}

TEST_CASE("MergeModels: two single spectra give the closed-form mean, variance and direction") {
  // Each model has seen one spectrum: no direction, no variance. All of the merged model comes from the
  // mean-shift column: mean (x1 + x2) / 2, one direction along x2 − x1 with s = |x2 − x1| / sqrt(2).
  SubspaceOptions options;
  options.block = 4;
  const Eigen::VectorXf x1 = Eigen::VectorXf::LinSpaced(16, 1.0f, 16.0f);
  const Eigen::VectorXf x2 = x1 + Eigen::VectorXf::LinSpaced(16, -3.0f, 3.0f);
  const auto a = Learn(x1, options);
  const auto b = Learn(x2, options);
  REQUIRE(a->basis.cols() == 0);
  const PcaModel merged = MergeModels(*a, *b, MergeOptions::From(options));
  const Eigen::VectorXf difference = x2 - x1;
  CHECK(merged.spectra_seen == 2.0);
  CHECK(merged.version == 2);
  CHECK((merged.mean - (x1 + x2) / 2).cwiseAbs().maxCoeff() < 1e-6f);
  REQUIRE(merged.basis.cols() == 1);
  CHECK(merged.rank == 1);
  CHECK(std::abs(merged.basis.col(0).dot(difference.normalized())) == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(merged.singular_values(0) == doctest::Approx(difference.norm() / std::sqrt(2.0)).epsilon(1e-6));
  CHECK(merged.total_variance == doctest::Approx(difference.squaredNorm() / 2.0).epsilon(1e-6));
}

TEST_CASE("MergeModels: an empty model is the identity") {
  LowRankSource source(64, (Eigen::VectorXd(3) << 10, 5, 3).finished(), 0.5, 71);
  SubspaceOptions options;
  options.rank = 3;
  options.oversample = 4;
  options.auto_rank = true;
  const Eigen::VectorXf scale = Eigen::VectorXf::LinSpaced(64, 0.5f, 2.0f);
  const auto learnt = Learn(source.Draw(700), options, scale);
  IncrementalSvd fresh(64, options);  // unweighted: an empty model is not compared by its scale
  const auto empty = fresh.Model();
  REQUIRE(empty->spectra_seen == 0.0);

  for (const bool empty_first : {true, false}) {
    CAPTURE(empty_first);
    const PcaModel merged = empty_first ? MergeModels(*empty, *learnt, MergeOptions::From(options))
                                        : MergeModels(*learnt, *empty, MergeOptions::From(options));
    CHECK(merged.basis == learnt->basis);
    CHECK(merged.mean == learnt->mean);
    CHECK(merged.singular_values == learnt->singular_values);
    CHECK(merged.channel_scale == learnt->channel_scale);
    CHECK(merged.spectra_seen == learnt->spectra_seen);
    CHECK(merged.total_variance == learnt->total_variance);
    CHECK(merged.noise_sigma == learnt->noise_sigma);
    CHECK(merged.rank_threshold == learnt->rank_threshold);
    CHECK(merged.rank == learnt->rank);
    CHECK(merged.effective_memory == learnt->effective_memory);
    CHECK(merged.version == learnt->version + 1);
  }
  // Smaller options cut the other model to their k_max and rank it by their rule.
  MergeOptions fixed;
  fixed.rank = 2;
  fixed.oversample = 1;
  const PcaModel cut = MergeModels(*learnt, *empty, fixed);
  CHECK(cut.rank == 2);
  CHECK(cut.basis == learnt->basis.leftCols(3));
  const double residual = learnt->total_variance - learnt->singular_values.head(3).squaredNorm();
  CHECK(cut.noise_sigma == doctest::Approx(std::sqrt(residual / ((64 - 3) * 700.0))).epsilon(1e-12));

  const PcaModel nothing = MergeModels(*empty, *empty, MergeOptions::From(options));
  CHECK(nothing.spectra_seen == 0.0);
  CHECK(nothing.basis.cols() == 0);
  CHECK(nothing.rank == 0);
  CHECK(nothing.mean.isZero());
}

TEST_CASE("MergeModels: models of other channels, weighting or memory are refused") {
  LowRankSource source(64, (Eigen::VectorXd(2) << 10, 5).finished(), 0.5, 81);
  LowRankSource other(65, (Eigen::VectorXd(2) << 10, 5).finished(), 0.5, 82);
  SubspaceOptions options;
  options.rank = 2;
  const MergeOptions merge = MergeOptions::From(options);
  const Eigen::MatrixXf spectra = source.Draw(200);
  const auto plain = Learn(spectra, options);

  CHECK_THROWS_AS(MergeModels(*plain, *Learn(other.Draw(200), options), merge), std::invalid_argument);
  IncrementalSvd empty_other(65, options);  // the channel count is compared even for an empty model
  CHECK_THROWS_AS(MergeModels(*plain, *empty_other.Model(), merge), std::invalid_argument);

  const Eigen::VectorXf scale = Eigen::VectorXf::LinSpaced(64, 0.5f, 2.0f);
  const auto weighted = Learn(spectra, options, scale);
  CHECK_THROWS_WITH_AS(MergeModels(*plain, *weighted, merge), doctest::Contains("weighted"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(MergeModels(*weighted, *Learn(spectra, options, scale * 1.001f), merge),
                       doctest::Contains("channel_scale"), std::invalid_argument);
  Eigen::VectorXf rounded = scale;  // one float ulp in one channel: the same weighting
  rounded(10) = std::nextafter(rounded(10), 3.0f);
  CHECK_NOTHROW(MergeModels(*weighted, *Learn(spectra, options, rounded), merge));

  SubspaceOptions forgetting = options;
  forgetting.forgetting = 0.999;
  CHECK_THROWS_WITH_AS(MergeModels(*plain, *Learn(spectra, forgetting), merge),
                       doctest::Contains("effective_memory"), std::invalid_argument);

  MergeOptions bad = merge;
  bad.rank = 0;
  CHECK_THROWS_AS(MergeModels(*plain, *plain, bad), ConfigError);
  bad = merge;
  bad.auto_rank = true;
  bad.rank_min = bad.rank + 1;
  CHECK_THROWS_AS(MergeModels(*plain, *plain, bad), ConfigError);

  CHECK_THROWS_AS(DecayModel(*plain, -1.0), std::invalid_argument);
  CHECK_THROWS_AS(DecayModel(*plain, std::numeric_limits<double>::quiet_NaN()), std::invalid_argument);
  // Infinite memory: nothing decays.
  const PcaModel same = DecayModel(*plain, 1e6);
  CHECK(same.singular_values == plain->singular_values);
  CHECK(same.spectra_seen == plain->spectra_seen);
}

}  // namespace
}  // namespace specwatch
