#include "operators/model/first_fit_screen.hpp"

#include "operators/model/rank_selection.hpp"

#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace specwatch {
namespace {

/// Leverage of each spectrum of a block with uncentred Gram matrix `gram` (n x n, in D channels) on the rank its
/// centred SVD has by the model's rule; the rank out. In float: the leverage needs ~1e-3 relative accuracy, and
/// the decomposition is the screen's cost (it delays the first model, so the raw output, by that long).
Eigen::VectorXd Leverage(const Eigen::MatrixXf& gram, double d, const SubspaceOptions& options, int* rank) {
  const Eigen::Index n = gram.rows();
  *rank = 0;
  Eigen::VectorXd h = Eigen::VectorXd::Zero(n);
  // Centred: H G H with H = I − 11ᵀ/n.
  const Eigen::VectorXf row_mean = gram.rowwise().mean();
  const float all_mean = row_mean.mean();
  Eigen::MatrixXf centred = gram;
  centred.colwise() -= row_mean;
  centred.rowwise() -= row_mean.transpose();
  centred.array() += all_mean;
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXf> eig(centred);
  if (eig.info() != Eigen::Success) return h;
  // Decreasing; the Gram's eigenvalues are the squared singular values.
  const Eigen::VectorXd lambda = eig.eigenvalues().reverse().cast<double>().cwiseMax(0.0);
  const Eigen::Index tracked = std::min<Eigen::Index>(options.MaxComponents(), n);
  const double residual = lambda.sum() - lambda.head(tracked).sum();
  const double sigma = NoiseSigmaFromResidual(residual, d, static_cast<double>(n), static_cast<double>(tracked));
  if (!(sigma > 0.0)) return h;
  const int k = std::min(CountAbove(lambda.cwiseSqrt(), GavishDonohoThreshold(d, static_cast<double>(n), sigma)),
                         options.rank);
  *rank = k;
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
  // The uncentred Gram matrix once; each round centres the kept spectra's part of it.
  const Eigen::MatrixXf gram = weighted.transpose() * weighted;
  const double d = static_cast<double>(weighted.rows());
  Eigen::MatrixXf sub;
  // Rounds of fit, leverage, removal; a round that removes nothing (the common case: one decomposition) ends it,
  // and at most two removals (a second inclusion can hide behind a first).
  for (int round = 0; round < 3; ++round) {
    sub = gram(kept, kept);
    const Eigen::VectorXd h = Leverage(sub, d, options, &out.rank);
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
