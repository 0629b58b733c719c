#include "operators/model/first_fit_screen.hpp"

#include "operators/model/rank_selection.hpp"

#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace specwatch {
namespace {

/// Leverage of each column of `x` (D x n) on the rank its centred SVD has by the model's rule; the rank out.
Eigen::VectorXd Leverage(const Eigen::MatrixXf& x, const SubspaceOptions& options, int* rank) {
  const Eigen::Index n = x.cols();
  const Eigen::VectorXf mean = x.rowwise().mean();
  const Eigen::MatrixXf centred = x.colwise() - mean;
  // In float: the leverage needs ~1e-3 relative accuracy, and the decomposition is the screen's cost (it delays
  // the first model, so the raw output, by that long).
  const Eigen::MatrixXf gram = centred.transpose() * centred;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXf> eig(gram);
  *rank = 0;
  if (eig.info() != Eigen::Success) return Eigen::VectorXd::Zero(n);
  // Decreasing; the Gram's eigenvalues are the squared singular values.
  const Eigen::VectorXd lambda = eig.eigenvalues().reverse().cast<double>().cwiseMax(0.0);
  const Eigen::VectorXd s = lambda.cwiseSqrt();
  const double d = static_cast<double>(x.rows());
  const Eigen::Index tracked = std::min<Eigen::Index>(options.MaxComponents(), n);
  const double residual = lambda.sum() - lambda.head(tracked).sum();
  const double sigma = NoiseSigmaFromResidual(residual, d, static_cast<double>(n), static_cast<double>(tracked));
  if (!(sigma > 0.0)) return Eigen::VectorXd::Zero(n);
  const int k = std::min(CountAbove(s, GavishDonohoThreshold(d, static_cast<double>(n), sigma)), options.rank);
  *rank = k;
  Eigen::VectorXd h = Eigen::VectorXd::Zero(n);
  for (int c = 0; c < k; ++c) h += eig.eigenvectors().col(n - 1 - c).cast<double>().array().square().matrix();
  return h;
}

}  // namespace

FirstFitScreen ScreenFirstBlock(const Eigen::Ref<const Eigen::MatrixXf>& weighted, const SubspaceOptions& options) {
  const Eigen::Index n = weighted.cols();
  FirstFitScreen out;
  out.keep.assign(static_cast<size_t>(n), 1);
  const int support = options.min_component_support;
  if (support <= 0 || n < 4 * static_cast<Eigen::Index>(support)) return out;
  const double max_leverage = 1.0 / support;
  const auto cap = static_cast<int>(kFirstFitMaxHeldOutFraction * static_cast<double>(n));
  std::vector<Eigen::Index> kept(static_cast<size_t>(n));
  std::iota(kept.begin(), kept.end(), Eigen::Index{0});
  Eigen::MatrixXf x;
  // Rounds of fit, leverage, removal; a round that removes nothing (the common case: one decomposition) ends it,
  // and at most two removals (a second inclusion can hide behind a first).
  for (int round = 0; round < 3; ++round) {
    x.resize(weighted.rows(), static_cast<Eigen::Index>(kept.size()));
    for (size_t j = 0; j < kept.size(); ++j) x.col(static_cast<Eigen::Index>(j)) = weighted.col(kept[j]);
    const Eigen::VectorXd h = Leverage(x, options, &out.rank);
    std::vector<size_t> over;
    for (size_t j = 0; j < kept.size(); ++j) {
      if (h(static_cast<Eigen::Index>(j)) > max_leverage) over.push_back(j);
    }
    std::sort(over.begin(), over.end(), [&](size_t a, size_t b) {
      return h(static_cast<Eigen::Index>(a)) > h(static_cast<Eigen::Index>(b));
    });
    const size_t room = static_cast<size_t>(std::max(0, cap - out.held_out));
    if (round == 2 || over.empty() || room == 0) {
      out.max_leverage = h.size() > 0 ? h.maxCoeff() : 0.0;
      break;
    }
    over.resize(std::min(over.size(), room));
    std::vector<uint8_t> drop(kept.size(), 0);
    for (size_t j : over) {
      drop[j] = 1;
      out.keep[static_cast<size_t>(kept[j])] = 0;
      ++out.held_out;
    }
    std::vector<Eigen::Index> next;
    for (size_t j = 0; j < kept.size(); ++j) {
      if (!drop[j]) next.push_back(kept[j]);
    }
    kept = std::move(next);
  }
  return out;
}

}  // namespace specwatch
