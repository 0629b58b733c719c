#include "operators/model/denoiser.hpp"

#include "operators/core/poisson_deviance.hpp"
#include "operators/core/poisson_weighting.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace specwatch {
namespace {

// Spectra per chunk: the chunk of input and output (2 x D x chunk floats) stays in L2 between the GEMMs, the
// mean addition and the residual, instead of streaming the whole batch through memory four times.
constexpr Eigen::Index kChunk = 64;

}  // namespace

Eigen::ArrayXf ReconstructionFloor(const PcaModel& model, float total) {
  if (!model.Weighted()) return {};
  return (model.mean.array() * model.channel_scale.array()).max(0.0f) * kReconstructionFloorFraction *
         std::sqrt(std::max(total, 1.0f));
}

void Denoise(const PcaModel& model, const Eigen::Ref<const CountsMatrix>& spectra, DenoiseResult* out) {
  const Eigen::Index d = spectra.rows();
  const Eigen::Index m = spectra.cols();
  out->denoised.resize(d, m);
  out->residual_norm.resize(m);
  out->residual_chi2.resize(m);
  out->deviance_z.resize(m);
  out->hotelling_t2.resize(m);
  if (model.spectra_seen <= 0.0) {
    out->denoised = spectra;
    out->residual_norm.setZero();
    out->residual_chi2.setZero();
    out->deviance_z.setZero();
    out->hotelling_t2.setZero();
    out->scores.resize(0, m);
    out->totals.resize(0);
    return;
  }
  if (model.mean.size() != d || model.basis.rows() != d) {
    throw std::invalid_argument("Denoise: spectra have " + std::to_string(d) + " channels, the model " +
                                std::to_string(model.mean.size()));
  }
  const bool weighted = model.Weighted();
  const Eigen::Index r = std::clamp<Eigen::Index>(model.rank, 0, model.basis.cols());
  const auto u = model.basis.leftCols(r);
  // Uᵀ(x − mean) = Uᵀx − Uᵀmean: subtract on the r x m scores, not on the D x m data.
  const Eigen::VectorXf centre = u.transpose() * model.mean;
  out->scores.resize(r, m);
  Eigen::VectorXf& totals = out->totals;
  totals.resize(0);
  Eigen::MatrixXf weighted_chunk;
  DevianceWorkspace workspace;
  Eigen::ArrayXf mean_counts, lower;  // the model's mean spectrum per unit sqrt(total), and one spectrum's floor
  if (weighted) {
    totals = SpectrumTotals(spectra);
    mean_counts = ReconstructionFloor(model, 1.0f);
  }
  // Hotelling T²: each score over its variance s_i² / n in the learnt data. A component with s_i = 0 carries
  // no learnt variance (and no score either): weight 0 rather than an infinity.
  Eigen::ArrayXf inverse_variance(r);
  for (Eigen::Index i = 0; i < r; ++i) {
    const double s = i < model.singular_values.size() ? model.singular_values(i) : 0.0;
    inverse_variance(i) = s > 0.0 ? static_cast<float>(model.spectra_seen / (s * s)) : 0.0f;
  }
  for (Eigen::Index j = 0; j < m; j += kChunk) {
    const Eigen::Index w = std::min(kChunk, m - j);
    const auto x = spectra.middleCols(j, w);
    if (weighted) ApplyWeights(x, model.channel_scale, totals.segment(j, w), &weighted_chunk);
    const Eigen::Ref<const Eigen::MatrixXf> x_model = weighted ? Eigen::Ref<const Eigen::MatrixXf>(weighted_chunk)
                                                               : Eigen::Ref<const Eigen::MatrixXf>(x);
    auto x_hat = out->denoised.middleCols(j, w);
    auto score = out->scores.middleCols(j, w);
    score.noalias() = u.transpose() * x_model;
    score.colwise() -= centre;
    if (r > 0) {
      out->hotelling_t2.segment(j, w) = (score.array().square().colwise() * inverse_variance).colwise().sum();
    } else {
      out->hotelling_t2.segment(j, w).setZero();
    }
    // Start from the mean and accumulate the product: `x_hat = u * score` would zero-fill the destination
    // first, one more pass over D x w floats.
    for (Eigen::Index i = 0; i < w; ++i) x_hat.col(i) = model.mean;  // replicate() compiles to a scalar loop
    x_hat.noalias() += u * score;
    for (Eigen::Index i = 0; i < w; ++i) {  // one pass per column while it is in cache
      auto xh = x_hat.col(i);
      out->residual_chi2(j + i) = (x_model.col(i) - xh).squaredNorm();
      if (!weighted) {
        out->residual_norm(j + i) = std::sqrt(out->residual_chi2(j + i));
        out->deviance_z(j + i) = 0.0f;
        continue;
      }
      xh.array() *= model.channel_scale.array() * std::sqrt(totals(j + i));  // back to counts
      const auto xc = x.col(i).array();
      out->residual_norm(j + i) = (xc - xh.array()).matrix().norm();
      lower = mean_counts * std::sqrt(totals(j + i));
      out->deviance_z(j + i) = static_cast<float>(ScorePoissonDeviance(x.col(i), xh, &workspace, &lower).z);
    }
  }
}

}  // namespace specwatch
