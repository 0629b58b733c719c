#include "operators/model/model_merge.hpp"

#include "operators/core/config_error.hpp"

#include <Eigen/QR>
#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

namespace specwatch {
namespace {

void CheckShape(const PcaModel& model, const char* name) {
  if (model.basis.rows() != model.mean.size() || model.singular_values.size() != model.basis.cols()) {
    std::ostringstream message;
    message << "MergeModels: model " << name << " is inconsistent: mean of " << model.mean.size()
            << " channels, basis " << model.basis.rows() << " x " << model.basis.cols() << ", "
            << model.singular_values.size() << " singular values";
    throw std::invalid_argument(message.str());
  }
}

void CheckMergeable(const PcaModel& a, const PcaModel& b, const MergeOptions& options) {
  CheckShape(a, "a");
  CheckShape(b, "b");
  if (a.mean.size() != b.mean.size()) {
    throw std::invalid_argument("MergeModels: the models have " + std::to_string(a.mean.size()) + " and " +
                                std::to_string(b.mean.size()) + " channels");
  }
  // An empty model holds no data, in whatever space it would have learnt them: nothing else to compare.
  if (a.spectra_seen == 0.0 || b.spectra_seen == 0.0) return;
  if (a.channel_scale.size() != b.channel_scale.size()) {
    throw std::invalid_argument("MergeModels: one model is Poisson weighted (channel_scale of " +
                                std::to_string(std::max(a.channel_scale.size(), b.channel_scale.size())) +
                                " entries) and the other is not: their spectra live in different spaces");
  }
  if (a.channel_scale.size() > 0) {
    const double largest = a.channel_scale.cwiseAbs().maxCoeff();
    const double difference = (a.channel_scale - b.channel_scale).cwiseAbs().maxCoeff();
    if (!(difference <= options.channel_scale_tolerance * largest)) {
      std::ostringstream message;
      message << "MergeModels: the models were weighted with different channel_scale (largest difference "
              << difference << ", " << difference / largest << " of the largest entry, tolerance "
              << options.channel_scale_tolerance << "): re-express one basis in the other's weighting first";
      throw std::invalid_argument(message.str());
    }
  }
  const double memory_difference = std::abs(a.effective_memory - b.effective_memory);
  if (!(memory_difference <= 1e-9 * std::max(a.effective_memory, b.effective_memory))) {
    std::ostringstream message;
    message << "MergeModels: the models forget at different rates (effective_memory " << a.effective_memory
            << " and " << b.effective_memory << " spectra; 0 = infinite)";
    throw std::invalid_argument(message.str());
  }
}

double ForgettingFactor(const PcaModel& model) {
  return model.effective_memory > 0.0 ? 1.0 - 1.0 / model.effective_memory : 1.0;
}

}  // namespace

MergeOptions MergeOptions::From(const SubspaceOptions& subspace) {
  MergeOptions options;
  options.rank = subspace.rank;
  options.oversample = subspace.oversample;
  options.auto_rank = subspace.auto_rank;
  options.rank_min = subspace.rank_min;
  return options;
}

void MergeOptions::Validate() const {
  RequireOption(rank >= 1, "rank", ">= 1", rank);
  RequireOption(oversample >= 0, "oversample", ">= 0", oversample);
  RequireOption(!auto_rank || (rank_min >= 1 && rank_min <= rank), "rank_min", "in [1, rank]", rank_min);
  RequireOption(channel_scale_tolerance >= 0.0, "channel_scale_tolerance", ">= 0", channel_scale_tolerance);
}

PcaModel DecayModel(const PcaModel& model, double spectra_elapsed) {
  if (!(spectra_elapsed >= 0.0) || !std::isfinite(spectra_elapsed)) {
    throw std::invalid_argument("DecayModel: spectra_elapsed must be finite and >= 0, got " +
                                std::to_string(spectra_elapsed));
  }
  PcaModel decayed = model;
  const double lambda = ForgettingFactor(model);
  if (lambda == 1.0 || spectra_elapsed == 0.0) return decayed;
  // One convention with IncrementalSvd: the scatter C decays by λ per spectrum, so s by λ^{1/2}.
  const double decay = std::pow(lambda, spectra_elapsed);
  decayed.singular_values *= std::sqrt(decay);
  decayed.spectra_seen *= decay;
  decayed.total_variance *= decay;
  EstimateNoise(decayed);
  return decayed;
}

PcaModel MergeModels(const PcaModel& a, const PcaModel& b, const MergeOptions& options) {
  options.Validate();
  CheckMergeable(a, b, options);
  const uint64_t version = std::max(a.version, b.version) + 1;
  const Eigen::Index k_max = options.MaxComponents();

  if (a.spectra_seen == 0.0 || b.spectra_seen == 0.0) {
    PcaModel merged = b.spectra_seen == 0.0 ? a : b;
    if (merged.basis.cols() > k_max) {
      merged.basis.conservativeResize(Eigen::NoChange, k_max);
      merged.singular_values.conservativeResize(k_max);
    }
    merged.version = version;
    EstimateNoiseAndRank(merged, options.rank, options.auto_rank, options.rank_min);
    return merged;
  }

  const Eigen::Index d = a.mean.size();
  const Eigen::Index k_a = a.basis.cols(), k_b = b.basis.cols();
  const double n_a = a.spectra_seen, n_b = b.spectra_seen, n = n_a + n_b;
  const Eigen::VectorXd mean_a = a.mean.cast<double>(), mean_b = b.mean.cast<double>();
  const Eigen::VectorXd shift = mean_a - mean_b;

  // X = [U_a S_a, U_b S_b, sqrt(n_a n_b / n) (μ_a − μ_b)]: X Xᵀ is the scatter of the union (Chan et al.).
  const Eigen::Index m = k_a + k_b + 1;
  Eigen::MatrixXd x(d, m);
  x.leftCols(k_a) = a.basis.cast<double>() * a.singular_values.asDiagonal();
  x.middleCols(k_a, k_b) = b.basis.cast<double>() * b.singular_values.asDiagonal();
  x.col(m - 1) = std::sqrt(n_a * n_b / n) * shift;

  // Thin QR (Householder, orthonormal even when X is rank deficient, e.g. equal means), then the SVD of the
  // small R: X = Q R = (Q Ũ) S̃ Ṽᵀ. Everything in double: the inputs are float, the merge adds no error of note.
  const Eigen::Index p = std::min(d, m);
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(x);
  const Eigen::MatrixXd r = qr.matrixQR().topRows(p).triangularView<Eigen::Upper>();
  Eigen::JacobiSVD<Eigen::MatrixXd> svd(r, Eigen::ComputeFullU);
  const Eigen::VectorXd& s = svd.singularValues();

  // As IncrementalSvd's update: keep at most k_max components, dropping those at the rounding level of a
  // length-D float dot product (the inputs' own precision): their directions are arithmetic noise.
  const double negligible =
      s.size() > 0 ? s(0) * 8.0 * std::sqrt(static_cast<double>(d)) * std::numeric_limits<float>::epsilon() : 0.0;
  Eigen::Index k_new = 0;
  while (k_new < std::min<Eigen::Index>(s.size(), k_max) && s(k_new) > negligible) ++k_new;

  PcaModel merged;
  Eigen::MatrixXd basis = Eigen::MatrixXd::Zero(d, k_new);
  basis.topRows(p) = svd.matrixU().leftCols(k_new);
  basis.applyOnTheLeft(qr.householderQ());
  merged.basis = basis.cast<float>();
  merged.singular_values = s.head(k_new);
  merged.mean = ((n_a * mean_a + n_b * mean_b) / n).cast<float>();
  merged.spectra_seen = n;
  merged.total_variance = a.total_variance + b.total_variance + (n_a * n_b / n) * shift.squaredNorm();
  merged.version = version;
  merged.effective_memory = a.effective_memory;
  merged.channel_scale = a.channel_scale;
  EstimateNoiseAndRank(merged, options.rank, options.auto_rank, options.rank_min);
  return merged;
}

}  // namespace specwatch
