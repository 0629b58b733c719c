#include "operators/denoiser.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace specwatch {
namespace {

// Spectra per chunk: the chunk of input and output (2 x D x chunk floats) stays in L2 between the GEMMs, the
// mean addition and the residual, instead of streaming the whole batch through memory four times.
constexpr Eigen::Index kChunk = 64;

}  // namespace

void Denoise(const PcaModel& model, const Eigen::Ref<const CountsMatrix>& spectra, DenoiseResult* out) {
  const Eigen::Index d = spectra.rows();
  const Eigen::Index m = spectra.cols();
  out->denoised.resize(d, m);
  out->residual_norm.resize(m);
  if (model.spectra_seen <= 0.0) {
    out->denoised = spectra;
    out->residual_norm.setZero();
    out->scores.resize(0, m);
    return;
  }
  if (model.mean.size() != d || model.basis.rows() != d) {
    throw std::invalid_argument("Denoise: spectra have " + std::to_string(d) + " channels, the model " +
                                std::to_string(model.mean.size()));
  }
  const Eigen::Index r = std::clamp<Eigen::Index>(model.rank, 0, model.basis.cols());
  const auto u = model.basis.leftCols(r);
  // Uᵀ(x − mean) = Uᵀx − Uᵀmean: subtract on the r x m scores, not on the D x m data.
  const Eigen::VectorXf centre = u.transpose() * model.mean;
  out->scores.resize(r, m);
  for (Eigen::Index j = 0; j < m; j += kChunk) {
    const Eigen::Index w = std::min(kChunk, m - j);
    const auto x = spectra.middleCols(j, w);
    auto x_hat = out->denoised.middleCols(j, w);
    auto score = out->scores.middleCols(j, w);
    score.noalias() = u.transpose() * x;
    score.colwise() -= centre;
    // Start from the mean and accumulate the product: `x_hat = u * score` would zero-fill the destination
    // first, one more pass over D x w floats.
    for (Eigen::Index i = 0; i < w; ++i) x_hat.col(i) = model.mean;  // replicate() compiles to a scalar loop
    x_hat.noalias() += u * score;
    for (Eigen::Index i = 0; i < w; ++i) out->residual_norm(j + i) = (x.col(i) - x_hat.col(i)).norm();
  }
}

}  // namespace specwatch
