#include "operators/model/denoiser.hpp"
#include "operators/model/incremental_svd.hpp"
#include "tests/unit/operators/synthetic.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

namespace specwatch {
namespace {

using test::BatchPca;
using test::LargestPrincipalAngleDeg;
using test::LowRankSource;

using test::Leading;
using test::OrthonormalityError;
using test::RelativeError;

void AddInChunks(IncrementalSvd& svd, const Eigen::MatrixXf& spectra, int chunk) {
  for (Eigen::Index j = 0; j < spectra.cols(); j += chunk) {
    svd.Add(spectra.middleCols(j, std::min<Eigen::Index>(chunk, spectra.cols() - j)));
  }
}

TEST_CASE("IncrementalSvd: matches a batch SVD of the same centred data") {
  // Five components well above the noise (singular values ~775..3100 vs a noise edge ~95).
  LowRankSource source(256, (Eigen::VectorXd(5) << 40, 30, 20, 15, 10).finished(), 1.0, 11);
  const Eigen::MatrixXf spectra = source.Draw(6000);  // not a multiple of the block: the last update is partial
  SubspaceOptions options;
  options.rank = 5;
  options.oversample = 8;
  options.block = 32;
  IncrementalSvd svd(256, options);
  AddInChunks(svd, spectra, 500);
  svd.Flush();
  const PcaModel& model = *svd.Model();
  const BatchPca batch(spectra);

  CHECK(model.spectra_seen == 6000.0);
  CHECK(model.version == 188);  // ceil(6000 / 32)
  CHECK(svd.implicit_residual_updates() == 0);  // blocks mostly inside span(U): R formed, second pass
  CHECK(model.rank == 5);
  CHECK(model.basis.cols() == 13);
  CHECK(model.effective_memory == 0.0);
  CHECK(RelativeError(model.mean.cast<double>(), batch.mean) < 1e-5);
  CHECK(std::abs(model.total_variance / batch.total_variance - 1.0) < 1e-5);
  CHECK(LargestPrincipalAngleDeg(Leading(model, 5), batch.basis.leftCols(5)) < 0.05);
  for (int i = 0; i < 5; ++i) {
    CAPTURE(i);
    CHECK(std::abs(model.singular_values(i) / batch.singular_values(i) - 1.0) < 1e-4);
  }
  // The noise tail is truncated at every update, so it is underestimated, but not by much.
  for (int i = 5; i < 13; ++i) {
    CAPTURE(i);
    CHECK(model.singular_values(i) / batch.singular_values(i) > 0.85);
    CHECK(model.singular_values(i) / batch.singular_values(i) < 1.0 + 1e-6);
  }
  const Eigen::VectorXd ratio = model.ExplainedVarianceRatio();
  REQUIRE(ratio.size() == 5);
  CHECK(RelativeError(ratio, batch.singular_values.head(5).array().square() / batch.total_variance) < 2e-4);
  CHECK(OrthonormalityError(model) < 1e-5);
}

TEST_CASE("IncrementalSvd: noisy blocks (residual left implicit) match the explicit update and a batch SVD") {
  // Noise carries about half of every block's variance (signal 261 per spectrum, noise 256), as in low-dose
  // spectra: R is never formed, RᵀR = CᵀC − PᵀP. The same updates with R formed must agree to float rounding,
  // and both with the batch SVD at the explicit path's tolerances above.
  LowRankSource source(256, (Eigen::VectorXd(3) << 12, 9, 6).finished(), 1.0, 12);
  const Eigen::MatrixXf spectra = source.Draw(20000);
  SubspaceOptions options;
  options.rank = 3;
  options.oversample = 8;
  options.block = 32;
  IncrementalSvd implicit(256, options);
  options.implicit_residual_min_fraction = 2.0;  // never
  IncrementalSvd explicit_residual(256, options);
  AddInChunks(implicit, spectra, 64);
  AddInChunks(explicit_residual, spectra, 64);
  implicit.Flush();
  explicit_residual.Flush();
  const PcaModel& model = *implicit.Model();
  const PcaModel& reference = *explicit_residual.Model();
  const BatchPca batch(spectra);

  CHECK(implicit.implicit_residual_updates() + 1 == model.version);  // all but the first (no basis yet)
  CHECK(explicit_residual.implicit_residual_updates() == 0);
  CHECK(LargestPrincipalAngleDeg(Leading(model, 11), Leading(reference, 11)) < 1e-2);
  CHECK(RelativeError(model.singular_values, reference.singular_values) < 1e-5);

  CHECK(RelativeError(model.mean.cast<double>(), batch.mean) < 1e-5);
  CHECK(std::abs(model.total_variance / batch.total_variance - 1.0) < 1e-5);
  CHECK(LargestPrincipalAngleDeg(Leading(model, 3), batch.basis.leftCols(3)) < 0.05);
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(std::abs(model.singular_values(i) / batch.singular_values(i) - 1.0) < 1e-4);
  }
  for (int i = 3; i < 11; ++i) {
    CAPTURE(i);
    CHECK(model.singular_values(i) / batch.singular_values(i) > 0.85);
    CHECK(model.singular_values(i) / batch.singular_values(i) < 1.0 + 1e-6);
  }
  CHECK(OrthonormalityError(model) < 1e-5);
}

TEST_CASE("IncrementalSvd: forgetting weights each block by forgetting^age, as a weighted batch SVD does") {
  LowRankSource source(128, (Eigen::VectorXd(4) << 30, 20, 12, 8).finished(), 1.0, 5);
  const int block = 16, blocks = 200;
  const double lambda = 0.999;  // N_eff = 1000, the oldest block weighs e^-3.2
  const Eigen::MatrixXf spectra = source.Draw(block * blocks);
  SubspaceOptions options;
  options.rank = 4;
  options.oversample = 8;
  options.block = block;
  options.forgetting = lambda;
  IncrementalSvd svd(128, options);
  AddInChunks(svd, spectra, 100);
  const PcaModel& model = *svd.Model();

  // Convention C ← λ^b C + B Bᵀ: every spectrum of block t (of T) weighs λ^{b (T−1−t)}.
  Eigen::VectorXd weights(spectra.cols());
  for (int t = 0; t < blocks; ++t) weights.segment(t * block, block).setConstant(std::pow(lambda, block * (blocks - 1 - t)));
  const BatchPca batch(spectra, weights);
  const double decay = std::pow(lambda, block);
  CHECK(model.spectra_seen == doctest::Approx(block * (1 - std::pow(decay, blocks)) / (1 - decay)).epsilon(1e-12));
  CHECK(model.spectra_seen == doctest::Approx(weights.sum()).epsilon(1e-12));
  CHECK(model.effective_memory == doctest::Approx(1000.0).epsilon(1e-9));
  CHECK(RelativeError(model.mean.cast<double>(), batch.mean) < 1e-5);
  CHECK(std::abs(model.total_variance / batch.total_variance - 1.0) < 1e-5);
  CHECK(LargestPrincipalAngleDeg(Leading(model, 4), batch.basis.leftCols(4)) < 0.05);
  for (int i = 0; i < 4; ++i) {
    CAPTURE(i);
    CHECK(std::abs(model.singular_values(i) / batch.singular_values(i) - 1.0) < 1e-4);
  }
}

TEST_CASE("IncrementalSvd: with forgetting the model follows an abrupt change of subspace within 3 N_eff") {
  const Eigen::VectorXd stddev = (Eigen::VectorXd(4) << 40, 30, 25, 20).finished();
  LowRankSource before(128, stddev, 1.0, 1);
  LowRankSource after(128, stddev, 1.0, 2);  // same mean, new random subspace
  const Eigen::MatrixXf old_regime = before.Draw(4000);
  const Eigen::MatrixXf new_regime = after.Draw(1200);  // 3 N_eff
  auto angle_after_change = [&](double forgetting) {
    SubspaceOptions options;
    options.rank = 4;
    options.oversample = 8;
    options.forgetting = forgetting;
    IncrementalSvd svd(128, options);
    AddInChunks(svd, old_regime, 64);
    CHECK(LargestPrincipalAngleDeg(Leading(*svd.Model(), 4), before.basis) < 3.0);  // learnt the old regime
    AddInChunks(svd, new_regime, 64);
    return LargestPrincipalAngleDeg(Leading(*svd.Model(), 4), after.basis);
  };
  const double with_forgetting = angle_after_change(1.0 - 1.0 / 400.0);
  const double without = angle_after_change(1.0);
  MESSAGE("angle to the new subspace 1200 spectra after the change: forgetting N_eff=400 ", with_forgetting,
          " deg, none ", without, " deg");
  CHECK(with_forgetting < 5.0);
  CHECK(without > 45.0);
}

TEST_CASE("IncrementalSvd: the first spectra give the closed-form mean, variance and direction") {
  SubspaceOptions options;
  options.block = 4;
  IncrementalSvd svd(16, options);
  const PcaModel& empty = *svd.Model();
  CHECK(empty.spectra_seen == 0.0);
  CHECK(empty.version == 0);
  CHECK(empty.rank == 0);
  CHECK(empty.basis.rows() == 16);
  CHECK(empty.basis.cols() == 0);
  CHECK(empty.mean.isZero());
  CHECK(empty.ExplainedVarianceRatio().size() == 0);

  const Eigen::VectorXf x1 = Eigen::VectorXf::LinSpaced(16, 1.0f, 16.0f);
  const Eigen::VectorXf x2 = x1 + Eigen::VectorXf::LinSpaced(16, -3.0f, 3.0f);
  svd.Add(x1);
  CHECK(svd.buffered() == 1);
  CHECK(svd.Model()->version == 0);
  svd.Flush();
  CHECK(svd.buffered() == 0);
  const PcaModel& one = *svd.Model();
  CHECK(one.spectra_seen == 1.0);
  CHECK((one.mean - x1).cwiseAbs().maxCoeff() < 1e-6f);
  CHECK(one.basis.cols() == 0);  // a single centred spectrum is zero: no direction yet
  CHECK(one.rank == 0);
  CHECK(one.total_variance == 0.0);

  // Second spectrum in a separate update: only the mean-shift column carries the variance.
  svd.Add(x2);
  svd.Flush();
  const PcaModel& two = *svd.Model();
  const Eigen::VectorXf difference = x2 - x1;
  CHECK(two.spectra_seen == 2.0);
  CHECK(two.version == 2);
  CHECK((two.mean - (x1 + x2) / 2).cwiseAbs().maxCoeff() < 1e-5f);
  REQUIRE(two.basis.cols() == 1);
  CHECK(two.rank == 1);
  CHECK(std::abs(two.basis.col(0).dot(difference.normalized())) == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(two.singular_values(0) == doctest::Approx(difference.norm() / std::sqrt(2.0)).epsilon(1e-6));
  CHECK(two.total_variance == doctest::Approx(difference.squaredNorm() / 2.0).epsilon(1e-6));
  CHECK(two.ExplainedVarianceRatio()(0) == doctest::Approx(1.0).epsilon(1e-6));
}

TEST_CASE("IncrementalSvd: the result does not depend on how Add calls slice the stream") {
  LowRankSource source(64, (Eigen::VectorXd(3) << 10, 5, 3).finished(), 0.5, 3);
  const Eigen::MatrixXf spectra = source.Draw(1000);
  SubspaceOptions options;
  options.rank = 3;
  options.block = 24;
  IncrementalSvd whole(64, options), sliced(64, options);
  whole.Add(spectra);
  for (Eigen::Index j = 0, step = 1; j < spectra.cols(); j += step, step = step % 50 + 7) {
    sliced.Add(spectra.middleCols(j, std::min(step, spectra.cols() - j)));
  }
  CHECK(whole.buffered() == 1000 % 24);
  CHECK(sliced.buffered() == whole.buffered());
  whole.Flush();
  sliced.Flush();
  const PcaModel& a = *whole.Model();
  const PcaModel& b = *sliced.Model();
  CHECK(a.version == b.version);
  REQUIRE(a.basis.cols() == b.basis.cols());
  CHECK((a.basis - b.basis).cwiseAbs().maxCoeff() < 1e-6f);
  CHECK((a.mean - b.mean).cwiseAbs().maxCoeff() < 1e-6f);
  CHECK(RelativeError(a.singular_values, b.singular_values) < 1e-9);
}

TEST_CASE("IncrementalSvd: data in a low-dimensional affine subspace give an exact low-rank model") {
  LowRankSource source(64, (Eigen::VectorXd(3) << 5, 3, 2).finished(), 0.0, 7);
  const Eigen::MatrixXf spectra = source.Draw(500);
  SubspaceOptions options;
  options.rank = 8;
  options.oversample = 4;
  IncrementalSvd svd(64, options);
  svd.Add(spectra);
  svd.Flush();
  const PcaModel& model = *svd.Model();
  // Components at the rounding level are dropped, so rank falls to the true dimension.
  REQUIRE(model.basis.cols() == 3);
  CHECK(model.rank == 3);
  CHECK(LargestPrincipalAngleDeg(Leading(model, 3), source.basis) < 1e-3);
  CHECK(OrthonormalityError(model) < 1e-6);
  DenoiseResult out;
  Denoise(model, spectra, &out);
  CHECK((out.denoised - spectra).cwiseAbs().maxCoeff() / spectra.cwiseAbs().maxCoeff() < 1e-5f);
}

TEST_CASE("IncrementalSvd: blocks of repeated spectra (rank-deficient residual) among noisy ones match a batch SVD") {
  // Every other block holds 16 spectra twice: its residual has rank <= 17 of 32 columns, which the Cholesky QR
  // of the update cannot factor, so those blocks take the eigen-decomposition path and the others the Cholesky.
  LowRankSource source(128, (Eigen::VectorXd(4) << 30, 20, 12, 8).finished(), 1.0, 17);
  const int block = 32, blocks = 60;
  Eigen::MatrixXf spectra(128, block * blocks);
  for (int t = 0; t < blocks; ++t) {
    if (t % 2 == 0) {
      spectra.middleCols(t * block, block) = source.Draw(block);
    } else {
      const Eigen::MatrixXf distinct = source.Draw(block / 2);
      spectra.middleCols(t * block, block) << distinct, distinct;
    }
  }
  SubspaceOptions options;
  options.rank = 4;
  options.oversample = 8;
  options.block = block;
  IncrementalSvd svd(128, options);
  svd.Add(spectra);
  const PcaModel& model = *svd.Model();
  const BatchPca batch(spectra);
  CHECK(svd.rejected_blocks() == 0);
  REQUIRE(model.basis.cols() == 12);
  CHECK(RelativeError(model.mean.cast<double>(), batch.mean) < 1e-5);
  CHECK(std::abs(model.total_variance / batch.total_variance - 1.0) < 1e-5);
  CHECK(LargestPrincipalAngleDeg(Leading(model, 4), batch.basis.leftCols(4)) < 0.05);
  for (int i = 0; i < 4; ++i) {
    CAPTURE(i);
    CHECK(std::abs(model.singular_values(i) / batch.singular_values(i) - 1.0) < 1e-4);
  }
  CHECK(OrthonormalityError(model) < 1e-5);
}

TEST_CASE("IncrementalSvd: blocks of two spectra give the closed-form scatter") {
  // b = 2: the centred block keeps b − 1 = 1 column, x_1 − m' with m' = m + (x_2 − m)/(1 + √2), which must carry
  // exactly the scatter of the two centred spectra, ‖x_1 − x_2‖²/2, along x_1 − x_2.
  SubspaceOptions options;
  options.rank = 2;
  options.oversample = 0;
  options.block = 2;
  IncrementalSvd svd(8, options);
  Eigen::MatrixXf pair(8, 2);
  pair.col(0) = Eigen::VectorXf::LinSpaced(8, 100.0f, 107.0f);
  pair.col(1) = pair.col(0) + Eigen::VectorXf::LinSpaced(8, 2.0f, -1.5f);
  svd.Add(pair);
  const PcaModel& model = *svd.Model();
  const Eigen::VectorXf difference = pair.col(0) - pair.col(1);
  REQUIRE(model.basis.cols() == 1);
  CHECK(std::abs(model.basis.col(0).dot(difference.normalized())) == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(model.singular_values(0) == doctest::Approx(difference.norm() / std::sqrt(2.0)).epsilon(1e-6));
  CHECK(model.total_variance == doctest::Approx(difference.squaredNorm() / 2.0).epsilon(1e-6));
}

TEST_CASE("IncrementalSvd: the basis stays orthonormal over many updates of high-SNR data") {
  // Most of each block lies in span(U): the case where a single Gram–Schmidt pass loses orthogonality
  // (without the second pass this data gives ||UᵀU − I|| = 1, a duplicated direction).
  LowRankSource source(256, (Eigen::VectorXd(4) << 1000, 500, 200, 100).finished(), 0.01, 9);
  const Eigen::MatrixXf spectra = source.Draw(2000);
  SubspaceOptions options;
  options.rank = 4;
  options.oversample = 4;
  options.block = 8;
  options.reorthonormalize_every = std::numeric_limits<int>::max();  // rely on the update alone
  IncrementalSvd never(256, options);
  options.reorthonormalize_every = 1000;
  IncrementalSvd periodic(256, options);
  options.reorthonormalize_every = 1;
  IncrementalSvd always(256, options);
  for (int pass = 0; pass < 5; ++pass) {  // 1250 updates
    never.Add(spectra);
    periodic.Add(spectra);
    always.Add(spectra);
  }
  CHECK(never.Model()->version == 1250);
  // Float rounding alone makes the error a random walk, ~1e-5 after 1250 updates; QR resets it.
  CHECK(OrthonormalityError(*never.Model()) < 5e-5);
  CHECK(OrthonormalityError(*periodic.Model()) < 1e-5);
  CHECK(OrthonormalityError(*always.Model()) < 1e-6);
  CHECK(LargestPrincipalAngleDeg(Leading(*never.Model(), 4), Leading(*always.Model(), 4)) < 1e-3);
  CHECK(LargestPrincipalAngleDeg(Leading(*never.Model(), 4), source.basis) < 0.01);
}

TEST_CASE("IncrementalSvd: Reset forgets everything") {
  LowRankSource source(32, (Eigen::VectorXd(2) << 4, 2).finished(), 0.3, 4);
  const Eigen::MatrixXf spectra = source.Draw(300);
  SubspaceOptions options;
  options.rank = 2;
  options.oversample = 2;
  IncrementalSvd reused(32, options), fresh(32, options);
  reused.Add(source.Draw(200));
  reused.Add(spectra.leftCols(5));  // leaves spectra buffered
  reused.Reset();
  CHECK(reused.buffered() == 0);
  CHECK(reused.Model()->version == 0);
  CHECK(reused.Model()->spectra_seen == 0.0);
  CHECK(reused.Model()->basis.cols() == 0);
  reused.Add(spectra);
  fresh.Add(spectra);
  CHECK(reused.Model()->version == fresh.Model()->version);
  CHECK((reused.Model()->basis - fresh.Model()->basis).cwiseAbs().maxCoeff() < 1e-6f);
  CHECK((reused.Model()->mean - fresh.Model()->mean).cwiseAbs().maxCoeff() < 1e-6f);
}

TEST_CASE("IncrementalSvd: a block holding non-finite values is dropped and counted") {
  LowRankSource source(32, (Eigen::VectorXd(2) << 4, 2).finished(), 0.3, 8);
  SubspaceOptions options;
  options.rank = 2;
  options.block = 8;
  IncrementalSvd svd(32, options);
  svd.Add(source.Draw(64));
  const auto before = svd.Model();
  Eigen::MatrixXf bad = source.Draw(8);
  bad(3, 5) = std::numeric_limits<float>::quiet_NaN();
  svd.Add(bad);
  CHECK(svd.rejected_blocks() == 1);
  CHECK(svd.Model() == before);
  bad(3, 5) = std::numeric_limits<float>::infinity();
  svd.Add(bad);
  CHECK(svd.rejected_blocks() == 2);
  svd.Add(source.Draw(8));
  CHECK(svd.Model()->version == before->version + 1);
  CHECK(svd.Model()->basis.allFinite());
  CHECK(svd.Model()->mean.allFinite());
}

TEST_CASE("IncrementalSvd: Add rejects spectra with the wrong number of channels") {
  IncrementalSvd svd(32, SubspaceOptions{});
  CHECK_THROWS_AS(svd.Add(Eigen::MatrixXf::Zero(31, 4)), std::invalid_argument);
  CHECK_NOTHROW(svd.Add(Eigen::MatrixXf::Zero(32, 0)));
}

TEST_CASE("IncrementalSvd: published snapshots never change and can be read while updates run") {
  LowRankSource source(128, (Eigen::VectorXd(4) << 20, 10, 5, 3).finished(), 1.0, 21);
  const Eigen::MatrixXf spectra = source.Draw(4096);
  SubspaceOptions options;
  options.rank = 4;
  options.oversample = 4;
  options.block = 16;
  IncrementalSvd svd(128, options);
  svd.Add(spectra.leftCols(256));

  // A held snapshot keeps its values while later updates run.
  const auto held = svd.Model();
  const PcaModel copy = *held;
  svd.Add(spectra.middleCols(256, 256));
  CHECK(held->version == copy.version);
  CHECK(held->basis == copy.basis);
  CHECK(held->mean == copy.mean);
  CHECK(held->singular_values == copy.singular_values);

  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  auto reader = [&] {
    DenoiseResult out;
    uint64_t last_version = 0;
    const Eigen::MatrixXf probe = spectra.leftCols(32);
    while (!done.load()) {
      const auto model = svd.Model();
      const Eigen::MatrixXf basis = model->basis;
      Denoise(*model, probe, &out);
      const bool ok = model->version >= last_version && model->basis.cols() <= options.MaxComponents() &&
                      model->basis == basis && out.denoised.allFinite();
      if (!ok) failures.fetch_add(1);
      last_version = model->version;
    }
  };
  std::vector<std::thread> readers;
  for (int i = 0; i < 2; ++i) readers.emplace_back(reader);
  AddInChunks(svd, spectra.rightCols(3584), 64);
  done.store(true);
  for (auto& thread : readers) thread.join();
  CHECK(failures.load() == 0);
  CHECK(svd.Model()->version == 256);
}

}  // namespace
}  // namespace specwatch
