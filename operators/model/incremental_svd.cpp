#include "operators/model/incremental_svd.hpp"

#include "operators/model/column_gram.hpp"
#include "operators/core/config_error.hpp"
#include "operators/core/channel_shift.hpp"
#include "operators/model/rank_selection.hpp"

#include <Eigen/QR>
#include <Eigen/SVD>
#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace specwatch {
namespace {

// model.basis and model.singular_values ← the left singular pairs of `scaled` (D x k, k ≤ D), a basis times its
// singular values after a change of channels: scaled = Q R, R = Ũ S̃ Ṽᵀ  ⇒  scaled = (Q Ũ) S̃ Ṽᵀ. The QR keeps the
// SVD at k x k.
void SetLeftSingularPairs(const Eigen::MatrixXd& scaled, PcaModel& model) {
  const Eigen::Index k = scaled.cols();
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(scaled);
  const Eigen::MatrixXd r = qr.matrixQR().topRows(k).triangularView<Eigen::Upper>();
  Eigen::JacobiSVD<Eigen::MatrixXd> svd(r, Eigen::ComputeFullU);
  Eigen::MatrixXd q = Eigen::MatrixXd::Identity(scaled.rows(), k);
  q.applyOnTheLeft(qr.householderQ());
  model.basis = (q * svd.matrixU()).cast<float>();
  model.singular_values = svd.singularValues();
}

}  // namespace

void SubspaceOptions::Validate() const {
  RequireOption(rank >= 1, "rank", ">= 1", rank);
  RequireOption(oversample >= 0, "oversample", ">= 0", oversample);
  RequireOption(block >= 1, "block", ">= 1", block);
  RequireOption(forgetting > 0.0 && forgetting <= 1.0, "forgetting", "in (0, 1]", forgetting);
  RequireOption(reorthonormalize_every >= 1, "reorthonormalize_every", ">= 1", reorthonormalize_every);
  RequireOption(!auto_rank || (rank_min >= 1 && rank_min <= rank), "rank_min", "in [1, rank]", rank_min);
  RequireOption(rank_hysteresis >= 0.0 && rank_hysteresis < 0.5, "rank_hysteresis", "in [0, 0.5)", rank_hysteresis);
  RequireOption(min_component_support >= 0, "min_component_support", ">= 0", min_component_support);
  RequireOption(implicit_residual_min_fraction > 0.0, "implicit_residual_min_fraction", "> 0",
                implicit_residual_min_fraction);
}

std::string SubspaceOptions::ChannelProblem(int channels) const {
  if (channels < 1) return "spectra must have at least 1 channel, got " + std::to_string(channels);
  if (int64_t{rank} + oversample > channels) {
    return "rank + oversample (" + std::to_string(int64_t{rank} + oversample) + ") must be <= the channel count (" +
           std::to_string(channels) + ")";
  }
  return {};
}

void SubspaceOptions::Validate(int channels) const {
  Validate();
  if (const std::string problem = ChannelProblem(channels); !problem.empty()) throw ConfigError("rank", problem);
}

Eigen::VectorXd PcaModel::ExplainedVarianceRatio() const {
  const int r = std::min<int>(rank, static_cast<int>(singular_values.size()));
  if (total_variance <= 0.0) return Eigen::VectorXd::Zero(r);
  return singular_values.head(r).array().square() / total_variance;
}

IncrementalSvd::IncrementalSvd(int channels, SubspaceOptions options)
    : channels_(channels), options_(options) {
  options_.Validate(channels_);
  effective_memory_ = options_.forgetting < 1.0 ? 1.0 / (1.0 - options_.forgetting) : 0.0;
  buffer_.resize(channels_, options_.block);
  block_mean_.resize(channels_);
  centred_.resize(channels_, options_.block + 1);
  Reset();
}

void IncrementalSvd::Reset() {
  auto empty = std::make_shared<PcaModel>();
  empty->mean = Eigen::VectorXf::Zero(channels_);
  empty->basis.resize(channels_, 0);
  empty->effective_memory = effective_memory_;
  empty->channel_scale = channel_scale_;
  mean_ = Eigen::VectorXd::Zero(channels_);
  buffered_ = 0;
  updates_since_qr_ = 0;
  Publish(std::move(empty));
}

void IncrementalSvd::SetChannelScale(const Eigen::VectorXf& channel_scale) {
  if (current_->spectra_seen > 0 || buffered_ > 0) {
    throw std::logic_error("IncrementalSvd::SetChannelScale after learning started");
  }
  if (channel_scale.size() != 0 && channel_scale.size() != channels_) {
    throw std::invalid_argument("IncrementalSvd::SetChannelScale: " + std::to_string(channel_scale.size()) +
                                " entries for " + std::to_string(channels_) + " channels");
  }
  channel_scale_ = channel_scale;
  Reset();
}

void IncrementalSvd::Add(const Eigen::Ref<const Eigen::MatrixXf>& spectra) {
  if (spectra.rows() != channels_) {
    throw std::invalid_argument("IncrementalSvd::Add: spectra have " + std::to_string(spectra.rows()) +
                                " channels, the model " + std::to_string(channels_));
  }
  const Eigen::Index block = options_.block;
  Eigen::Index done = 0;
  while (done < spectra.cols()) {
    const Eigen::Index left = spectra.cols() - done;
    if (buffered_ == 0 && left >= block) {  // whole block straight from the input, no copy
      Update(spectra.middleCols(done, block));
      done += block;
      continue;
    }
    const Eigen::Index take = std::min<Eigen::Index>(block - buffered_, left);
    buffer_.middleCols(buffered_, take) = spectra.middleCols(done, take);
    buffered_ += static_cast<int>(take);
    done += take;
    if (buffered_ == block) Flush();
  }
}

void IncrementalSvd::Flush() {
  if (buffered_ == 0) return;
  const int b = buffered_;
  buffered_ = 0;
  Update(buffer_.leftCols(b));
}

void IncrementalSvd::Update(const Eigen::Ref<const Eigen::MatrixXf>& block) {
  const PcaModel& old = *current_;
  const Eigen::Index d = channels_;
  const Eigen::Index b = block.cols();
  const Eigen::Index k = old.basis.cols();
  const double decay = std::pow(options_.forgetting, static_cast<double>(b));
  const double n_old = decay * old.spectra_seen;
  const double n_new = n_old + static_cast<double>(b);

  // Centre the block on its own mean; the offset between the running and the block mean enters as one more
  // column, so the centred scatter of old + new data is exact (Chan et al. pairwise variance update).
  // Column by column in double (vectorised; rowwise().sum() of a cast walks each row with a stride). Double,
  // not float: the mean's rounding is centred into every spectrum, and at float precision it would already pass
  // for a component of exactly low-rank data.
  block_mean_.setZero(d);
  for (Eigen::Index i = 0; i < b; ++i) block_mean_ += block.col(i).cast<double>();
  block_mean_ /= static_cast<double>(b);
  // The centred spectra sum to zero, so they span at most b − 1 dimensions. The Householder reflection H that
  // maps 1/√b onto the last unit vector turns C = [x_j − m] into C H, whose last column is exactly zero and whose
  // others are x_j − m' with m' = m + (x_b − m)/(1 + √b); C H Hᵀ Cᵀ = C Cᵀ, so the scatter, and with it every
  // left singular pair below, is unchanged. Dropping that column saves one in every GEMM and leaves the
  // residual of full rank, which the Cholesky below needs.
  const bool has_shift = n_old > 0.0;
  const Eigen::Index kept = b - 1;
  const Eigen::Index cols = kept + (has_shift ? 1 : 0);
  auto centred = centred_.leftCols(cols);
  // m' as a float pair, high + low: (x_j − high) − low is then exact to float rounding of the centred value,
  // whatever the size of the mean. (Subtracting m' rounded to float would add its rounding to every column,
  // a rank-one error of relative size eps·|m|/|x_j − m| in the scatter.)
  block_centre_ = block_mean_ + (block.col(kept).cast<double>() - block_mean_) / (1.0 + std::sqrt(double(b)));
  centre_high_ = block_centre_.cast<float>();
  centre_low_ = (block_centre_ - centre_high_.cast<double>()).cast<float>();
  centred.leftCols(kept) = (block.leftCols(kept).colwise() - centre_high_).colwise() - centre_low_;
  if (has_shift) {
    centred.col(kept) = (std::sqrt(n_old * static_cast<double>(b) / n_new) * (mean_ - block_mean_)).cast<float>();
  }
  const double added_variance = centred.squaredNorm();

  // P = Uᵀ B, R = B − U P. Classical Gram–Schmidt loses orthogonality to U when most of B lies in span(U);
  // a second pass when the norm drops by more than 1/sqrt(2) restores it ("twice is enough", DGKS). The norm
  // of R is the trace of its Gram matrix, needed next anyway.
  projection_.resize(k, cols);
  residual_gram_.resize(cols, cols);
  // ColumnGram: tiles of column pairs, about twice Eigen's symmetric rank update at these shapes.
  auto residual_gram = [&] { ColumnGram(centred, residual_gram_); };
  // Implicit residual: when most of the block lies outside span(U) (noisy spectra: the noise fills the D − k
  // dimensions U does not), RᵀR = CᵀC − PᵀP loses at most a factor added/residual of relative accuracy to the
  // cancellation, and R need not be formed: R·X = C·X − U·(P·X) is folded into the basis update below. This saves
  // the D x k x b GEMM U·P (a fifth of the update at k 16, b 32). Where the block is mostly inside span(U) (high
  // counts, exactly low-rank data) R is formed, with the second Gram–Schmidt pass.
  bool implicit_residual = false;
  if (k > 0) {
    projection_.noalias() = old.basis.transpose() * centred;
    const double projected_variance = projection_.cast<double>().squaredNorm();
    implicit_residual = added_variance - projected_variance > options_.implicit_residual_min_fraction * added_variance;
  }
  if (implicit_residual) {
    ++implicit_residual_updates_;
    residual_gram();  // CᵀC for now
    residual_gram_.selfadjointView<Eigen::Lower>().rankUpdate(projection_.transpose(), -1.0f);
  } else if (k > 0) {
    centred.noalias() -= old.basis * projection_;
    residual_gram();
    if (residual_gram_.trace() < 0.5 * added_variance) {
      correction_.noalias() = old.basis.transpose() * centred;
      centred.noalias() -= old.basis * correction_;
      projection_ += correction_;
      residual_gram();
    }
  } else {
    residual_gram();
  }

  // R = Q_r R_r without forming Q_r, from the Gram matrix G = RᵀR: all the D-long work is GEMMs (RᵀR here,
  // R·C below) instead of level-2 Householder steps. Q_r = R X is orthonormal to the accuracy of G, which float
  // rounding perturbs by E, ‖E‖ ~ eps·sqrt(D)·λ_max: Q_rᵀQ_r − I = XᵀE X, of norm up to ‖E‖/λ_min, ~eps·κ(R)²
  // (fine for the well-conditioned residual of noisy spectra; the periodic re-orthonormalisation of U bounds
  // what accumulates).
  // Fast path, Cholesky G = L Lᵀ: R_r = Lᵀ, X = L⁻ᵀ (Cholesky QR). Any R_r with R_rᵀR_r = G gives the same
  // [U Q_r]·Ũ below (two choices differ by an orthogonal W on the left of R_r, which the SVD of M absorbs), and
  // the error bound above is the same as for the eigen-decomposition, so where both apply they agree to
  // rounding. The Cholesky cannot drop directions, though: it is taken only when every eigenvalue of G is
  // provably above the floor of the eigen path below, λ_min ≥ 1/(‖L⁻¹‖₁‖L⁻¹‖_∞) against
  // λ_max ≤ ‖G‖_∞ (both bounds hold for any symmetric positive definite G, with a margin of 16).
  // Otherwise (rank-deficient residual, e.g. exactly low-rank data, or ill-conditioned): G = V Λ Vᵀ,
  // R_r = Λ^{1/2}Vᵀ and X = V Λ^{-1/2}, with the eigenpairs at float rounding level dropped: they carry no
  // energy, and their Q_r columns would not be orthogonal to the others.
  const double float_rounding = 8.0 * std::sqrt(static_cast<double>(d)) * std::numeric_limits<float>::epsilon();
  residual_gram_double_ = residual_gram_.cast<double>();
  residual_gram_double_.triangularView<Eigen::StrictlyUpper>() = residual_gram_double_.transpose();
  if (cols > 0) residual_llt_.compute(residual_gram_double_);
  bool cholesky = cols > 0 && residual_llt_.info() == Eigen::Success;
  if (cholesky) {
    residual_inverse_.setIdentity(cols, cols);
    residual_llt_.matrixL().solveInPlace(residual_inverse_);  // L⁻¹ for now
    const double inverse_norms = residual_inverse_.cwiseAbs().colwise().sum().maxCoeff() *
                                 residual_inverse_.cwiseAbs().rowwise().sum().maxCoeff();
    const double lambda_max_bound = residual_gram_double_.cwiseAbs().rowwise().sum().maxCoeff();
    cholesky = 1.0 / inverse_norms > 16.0 * float_rounding * lambda_max_bound;  // false for NaN
  }
  Eigen::Index p = cols;
  if (cholesky) {
    residual_factor_ = residual_llt_.matrixU();
    residual_inverse_.transposeInPlace();
  } else if (cols == 0) {  // a first block of one spectrum: nothing to factor
    residual_factor_.resize(0, 0);
    residual_inverse_.resize(0, 0);
  } else {
    residual_eigen_.compute(residual_gram_double_);
    if (residual_eigen_.info() != Eigen::Success) {
      ++rejected_blocks_;
      return;
    }
    const auto lambda = residual_eigen_.eigenvalues().reverse();  // decreasing
    const auto v = residual_eigen_.eigenvectors().rowwise().reverse();
    // G in float is exact to ~eps·sqrt(D)·λ_max: below that, an eigenpair is rounding, not data (exactly
    // low-rank spectra leave such a residual).
    const double lambda_floor = std::max(lambda.size() > 0 ? lambda(0) : 0.0, 0.0) * float_rounding;
    p = 0;
    while (p < lambda.size() && lambda(p) > lambda_floor && lambda(p) > 0.0) ++p;
    residual_factor_ = lambda.head(p).cwiseSqrt().asDiagonal() * v.leftCols(p).transpose();
    residual_inverse_ = v.leftCols(p) * lambda.head(p).cwiseSqrt().cwiseInverse().asDiagonal();
  }

  // M = [[λ^{b/2} diag(s), P], [0, R_r]], (k + p) x (k + cols), in double.
  small_.setZero(k + p, k + cols);
  small_.topLeftCorner(k, k).diagonal() = std::sqrt(decay) * old.singular_values;
  small_.topRightCorner(k, cols) = projection_.cast<double>();
  small_.bottomRightCorner(p, cols) = residual_factor_;
  if (!small_.allFinite()) {  // a NaN/Inf spectrum would poison the model for good: drop the block
    ++rejected_blocks_;
    return;
  }
  // Left singular pairs of M from the eigenpairs of M Mᵀ: ~10x faster than Eigen's SVDs at this size
  // (k + p ≈ 57). Squaring costs nothing here: in double, s_i is still accurate to ~1e-8 s_0, while M holds
  // float data whose components below ~1e-5 s_0 are arithmetic noise, dropped below.
  gram_.noalias() = small_ * small_.transpose();
  const Eigen::Index n_pairs = gram_.rows();
  if (n_pairs == 0) gram_.setZero(1, 1);  // nothing to decompose (all spectra equal so far): no component
  eigen_.compute(gram_);
  if (eigen_.info() != Eigen::Success) {
    ++rejected_blocks_;
    return;
  }
  const Eigen::VectorXd s = eigen_.eigenvalues().reverse().cwiseMax(0.0).cwiseSqrt().head(n_pairs);

  // Keep at most k_max components, dropping those at the rounding level of a length-D float dot product:
  // their directions are noise from the arithmetic, not from the data.
  const double negligible = n_pairs > 0 ? s(0) * 8.0 * std::sqrt(static_cast<double>(d)) *
                                              std::numeric_limits<float>::epsilon()
                                        : 0.0;
  Eigen::Index k_new = 0;
  while (k_new < std::min<Eigen::Index>(n_pairs, options_.MaxComponents()) && s(k_new) > negligible) ++k_new;
  // Ũ[:, :k'], decreasing s
  const auto left = eigen_.eigenvectors().topRightCorner(n_pairs, k_new).rowwise().reverse();

  // U ← [U Q_r] Ũ = U Ũ_top + R (X Ũ_bottom).
  auto next = std::make_shared<PcaModel>();
  Eigen::MatrixXf& basis = next->basis;
  residual_rotation_.noalias() = residual_inverse_ * left.bottomRows(p);
  rotation_ = residual_rotation_.cast<float>();
  basis.noalias() = centred * rotation_;
  if (k > 0) {
    basis_rotation_ = left.topRows(k);
    // U Ũ_top + (C − U P) X Ũ_bottom = U (Ũ_top − P X Ũ_bottom) + C X Ũ_bottom
    if (implicit_residual) basis_rotation_.noalias() -= projection_.cast<double>() * residual_rotation_;
    basis.noalias() += old.basis * basis_rotation_.cast<float>();
  }
  if (++updates_since_qr_ >= static_cast<uint64_t>(options_.reorthonormalize_every)) {
    Reorthonormalize(basis);
    updates_since_qr_ = 0;
  }

  mean_ += (static_cast<double>(b) / n_new) * (block_mean_ - mean_);
  next->mean = mean_.cast<float>();
  next->singular_values = s.head(k_new);
  next->spectra_seen = n_new;
  next->total_variance = decay * old.total_variance + added_variance;
  next->version = old.version + 1;
  Finish(*next);
  Publish(std::move(next));
}

void EstimateNoise(PcaModel& model) {
  const double d = static_cast<double>(model.mean.size());
  const double k = static_cast<double>(model.basis.cols());
  const double residual_energy = std::max(0.0, model.total_variance - model.singular_values.squaredNorm());
  model.noise_sigma = NoiseSigmaFromResidual(residual_energy, d, model.spectra_seen, k);
  model.rank_threshold = GavishDonohoThreshold(d, model.spectra_seen, model.noise_sigma);
}

void EstimateNoiseAndRank(PcaModel& model, int rank, bool auto_rank, int rank_min, int previous_rank,
                          double hysteresis) {
  EstimateNoise(model);
  const int tracked = static_cast<int>(std::min<Eigen::Index>(rank, model.basis.cols()));
  model.rank = tracked;
  if (auto_rank && model.noise_sigma > 0.0) {
    int count = CountAbove(model.singular_values, model.rank_threshold);
    if (previous_rank >= 0 && hysteresis > 0.0) {
      const int up = CountAbove(model.singular_values, model.rank_threshold * (1.0 + hysteresis));
      const int down = CountAbove(model.singular_values, model.rank_threshold * (1.0 - hysteresis));
      count = std::clamp(previous_rank, up, down);
    }
    model.rank = std::clamp(count, std::min(rank_min, tracked), tracked);
  }
}

void IncrementalSvd::Finish(PcaModel& next) const {
  // The rank in use so far, for the hysteresis; none before anything was learnt, nor while the previous rank came
  // from too few spectra to mean anything (kRankHysteresisMinSpectraPerComponent): the first blocks' ranks are
  // noise, and the hysteresis would hold them.
  const double min_spectra = kRankHysteresisMinSpectraPerComponent * options_.MaxComponents();
  const int previous = current_ && current_->spectra_seen >= min_spectra ? current_->rank : -1;
  EstimateNoiseAndRank(next, options_.rank, options_.auto_rank, options_.rank_min, previous,
                       options_.rank_hysteresis);
  next.effective_memory = effective_memory_;
  next.channel_scale = channel_scale_;
}

void IncrementalSvd::RescaleChannels(const Eigen::VectorXf& factor, const Eigen::VectorXf& new_channel_scale) {
  if (factor.size() != channels_ || new_channel_scale.size() != channels_) {
    throw std::invalid_argument("IncrementalSvd::RescaleChannels: " + std::to_string(factor.size()) + " and " +
                                std::to_string(new_channel_scale.size()) + " entries for " +
                                std::to_string(channels_) + " channels");
  }
  channel_scale_ = new_channel_scale;
  if (buffered_ > 0) buffer_.leftCols(buffered_) = factor.asDiagonal() * buffer_.leftCols(buffered_);
  const PcaModel& old = *current_;
  auto next = std::make_shared<PcaModel>(old);
  next->version = old.version + 1;
  next->channel_scale = channel_scale_;
  const Eigen::VectorXd f = factor.cast<double>();
  mean_ = mean_.cwiseProduct(f);
  next->mean = mean_.cast<float>();
  const Eigen::Index k = old.basis.cols();
  if (k > 0) {
    // diag(f)·U·diag(s) = Q R, R = Ũ S̃ Ṽᵀ  ⇒  diag(f)·U·diag(s) = (Q Ũ) S̃ Ṽᵀ.
    const Eigen::MatrixXd scaled = f.asDiagonal() * old.basis.cast<double>() * old.singular_values.asDiagonal();
    SetLeftSingularPairs(scaled, *next);
  }
  const double residual = std::max(0.0, old.total_variance - old.singular_values.squaredNorm());
  const double harmonic_mean_f2 = static_cast<double>(channels_) / f.array().square().inverse().sum();
  next->total_variance = next->singular_values.squaredNorm() + residual * harmonic_mean_f2;
  updates_since_qr_ = 0;  // the basis is freshly orthonormal
  Finish(*next);
  Publish(std::move(next));
}

void IncrementalSvd::ShiftChannels(double delta_channels) {
  const PcaModel& old = *current_;
  auto next = std::make_shared<PcaModel>(old);
  next->version = old.version + 1;
  if (channel_scale_.size() > 0) {
    // A cubic can undershoot at a sharp step of the scale; never below the smallest scale there was (the
    // weighting's floor lies below it, and PoissonWeighting::ShiftChannels clamps the same way).
    const Eigen::VectorXd scale = channel_scale_.cast<double>();
    channel_scale_ = ShiftByCubic(scale, delta_channels, ShiftEdge::kHold).cwiseMax(scale.minCoeff()).cast<float>();
  }
  next->channel_scale = channel_scale_;
  mean_ = ShiftByCubic(mean_, delta_channels, ShiftEdge::kHold);
  next->mean = mean_.cast<float>();
  const Eigen::Index k = old.basis.cols();
  if (k > 0) {
    // shift(U·diag(s)) = Q R, R = Ũ S̃ Ṽᵀ  ⇒  shift(U·diag(s)) = (Q Ũ) S̃ Ṽᵀ.
    Eigen::MatrixXd shifted(channels_, k);
    for (Eigen::Index i = 0; i < k; ++i) {
      const Eigen::VectorXd column = old.basis.col(i).cast<double>() * old.singular_values(i);
      shifted.col(i) = ShiftByCubic(column, delta_channels, ShiftEdge::kZero);
    }
    SetLeftSingularPairs(shifted, *next);
  }
  const double residual = std::max(0.0, old.total_variance - old.singular_values.squaredNorm());
  next->total_variance = next->singular_values.squaredNorm() + residual;
  updates_since_qr_ = 0;  // the basis is freshly orthonormal
  Finish(*next);
  Publish(std::move(next));
}

void IncrementalSvd::Reorthonormalize(Eigen::MatrixXf& basis) const {
  // basis = Q R with R ≈ I; keep Q with the signs that make diag(R) positive, so columns stay in place.
  const Eigen::Index k = basis.cols();
  Eigen::HouseholderQR<Eigen::MatrixXf> qr(basis);
  const Eigen::VectorXf signs = (qr.matrixQR().diagonal().array() < 0.0f).select(-1.0f, Eigen::VectorXf::Ones(k));
  basis.setIdentity(basis.rows(), k);
  basis.applyOnTheLeft(qr.householderQ());
  basis *= signs.asDiagonal();
}

std::shared_ptr<const PcaModel> IncrementalSvd::Model() const {
  std::lock_guard lock(published_mutex_);
  return published_;
}

void IncrementalSvd::Publish(std::shared_ptr<const PcaModel> model) {
  current_ = model;
  std::lock_guard lock(published_mutex_);
  published_ = std::move(model);
}

}  // namespace specwatch
