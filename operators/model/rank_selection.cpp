#include "operators/model/rank_selection.hpp"

#include <algorithm>
#include <cmath>

namespace specwatch {

double GavishDonohoLambda(double beta) {
  beta = std::clamp(beta, 0.0, 1.0);
  return std::sqrt(2.0 * (beta + 1.0) + 8.0 * beta / ((beta + 1.0) + std::sqrt(beta * beta + 14.0 * beta + 1.0)));
}

double GavishDonohoThreshold(double rows, double cols, double sigma) {
  const double small = std::min(rows, cols), large = std::max(rows, cols);
  if (large <= 0.0) return 0.0;
  return GavishDonohoLambda(small / large) * std::sqrt(large) * sigma;
}

double NoiseSigmaFromResidual(double residual_energy, double rows, double cols, double captured) {
  // Noise of variance σ² fills min(rows, cols) directions with σ² · max(rows, cols) each (on average).
  const double free_dims = std::min(rows, cols) - captured;
  const double per_dim = std::max(rows, cols);
  if (free_dims <= 0.0 || per_dim <= 0.0 || residual_energy <= 0.0) return 0.0;
  return std::sqrt(residual_energy / (free_dims * per_dim));
}

int CountAbove(const Eigen::VectorXd& singular_values, double threshold) {
  int n = 0;
  while (n < singular_values.size() && singular_values(n) > threshold) ++n;
  return n;
}

}  // namespace specwatch
